"""Every model family builds, runs, exposes blocks, and taps features without changing outputs."""

import pytest
import torch

from distillab.errors import UserError
from distillab.models import count_params, create_model, get_blocks, tap_features

FAMILIES = ["mlp:32-16", "cnn:8-16", "resnet8", "resnet8x4", "timm:resnet10t", "torchvision:resnet18"]


@pytest.mark.parametrize("name", FAMILIES)
def test_forward_blocks_and_taps(name):
    torch.manual_seed(0)
    m = create_model(name, num_classes=7, in_chans=1, img_size=16).eval()
    x = torch.randn(3, 1, 16, 16)
    plain = m(x)
    assert plain.shape == (3, 7)
    blocks = get_blocks(m)
    assert len(blocks) >= 2
    logits, feats = tap_features(m, x, [0, len(blocks) - 1])
    assert torch.equal(logits, plain)  # taps observe, they do not change the model
    assert all(f.shape[0] == 3 for f in feats)
    # the state dict holds each parameter once (the block view registers nothing twice)
    assert len(m.state_dict()) == len(dict(m.named_parameters())) + len(dict(m.named_buffers()))
    assert count_params(m) > 0


def test_tap_index_out_of_range():
    m = create_model("mlp:8-8", 3, 1, 4)
    with pytest.raises(UserError, match="out of range"):
        tap_features(m, torch.randn(1, 1, 4, 4), [5])


def test_mlp_hidden_blocks_and_dropout():
    m = create_model("mlp:1200-1200", 10, dropout=0.5, input_dropout=0.2)
    assert len(m.blocks) == 2 and m.head.in_features == 1200
    assert count_params(m) == 784 * 1200 + 1200 + 1200 * 1200 + 1200 + 1200 * 10 + 10


@pytest.mark.parametrize("name", ["nope", "mlp:12-x", "resnet9", "cnn:"])
def test_bad_names(name):
    with pytest.raises(UserError):
        create_model(name, 10)


def test_bad_kwarg_is_user_error():
    with pytest.raises(UserError, match="dropuot"):
        create_model("mlp:8", 10, dropuot=0.1)


def test_timm_checkpoint_from_local_file_replaces_head(tmp_path):
    import timm
    from safetensors.torch import save_file

    src = timm.create_model("resnetv2_18", pretrained=False, num_classes=1000)
    path = tmp_path / "rn.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    m = create_model("timm:resnetv2_18", 7, in_chans=3, img_size=32, checkpoint=str(path))
    assert m.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 7)
    assert torch.equal(m.net.stages[0].blocks[0].conv1.weight, src.stages[0].blocks[0].conv1.weight)
    with pytest.raises(UserError, match="timm:resnetv2_34"):
        create_model("timm:resnetv2_34", 7, in_chans=3, img_size=32, checkpoint=str(path))
    with pytest.raises(UserError, match="not found"):
        create_model("timm:resnetv2_18", 7, checkpoint=str(tmp_path / "missing.npz"))
