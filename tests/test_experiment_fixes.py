"""The four fixes of the "experiments that can answer" issue, each a test that fails on the code
before it: black (not grey) padding, the equivalence verdict, a well-conditioned random-frozen
control, and BiT's tuning given to both arms."""

import torch

from distillab.config import AugmentConfig, DataConfig
from distillab.data import prepare_data
from distillab.data.loader import BatchLoader
from distillab.models import create_model, get_blocks
from distillab.results.stats import Comparison
from distillab.transfer import InitConfig, apply_init


def test_jitter_pads_with_black_not_the_normalised_zero():
    # An all-black image shifted by up to 2 px stays all black: the border is raw 0, which after
    # normalisation is -mean/std, not 0 (raw 0.286 for Fashion-MNIST's mean: a grey).
    x = torch.zeros(64, 1, 10, 10, dtype=torch.uint8)
    mean, std = torch.tensor([0.286]), torch.tensor([0.353])
    loader = BatchLoader(x, torch.zeros(64, dtype=torch.long), 64, mean=mean, std=std,
                         augment=AugmentConfig(jitter=2), shuffle=True)
    out = next(iter(loader)).x
    assert torch.allclose(out, torch.full_like(out, -0.286 / 0.353), atol=1e-5)
    # and the same for the padded crop that falls back to constant mode (padding ≥ image side)
    small = BatchLoader(x[:, :, :3, :3].contiguous(), torch.zeros(64, dtype=torch.long), 64, mean=mean, std=std,
                        augment=AugmentConfig(crop_padding=4), shuffle=True)
    out = next(iter(small)).x
    assert torch.allclose(out, torch.full_like(out, -0.286 / 0.353), atol=1e-5)


def test_cached_views_are_padded_like_training_batches():
    x = torch.zeros(16, 1, 8, 8, dtype=torch.uint8)
    loader = BatchLoader(x, torch.zeros(16, dtype=torch.long), 16, mean=torch.tensor([0.5]), std=torch.tensor([0.25]),
                         augment=AugmentConfig(jitter=3), shuffle=True)
    view = loader.view_batch(torch.arange(16), torch.zeros(16, dtype=torch.long))
    assert torch.allclose(view, torch.full_like(view, -2.0))


def test_equivalence_needs_the_interval_inside_the_margin_not_outside_zero():
    # [+0.1, +0.3] points: not 0, but well within ±1 point: the two arms are equal within the margin.
    close = Comparison("x", (0.0010, 0.0030, 0.0020, 0.0020, 0.0015), 0)
    assert close.verdict == "consistent"
    # 1.1 points apart, interval crossing the margin: neither equal nor shown different by > 1 pt
    assert Comparison("x", (0.010, 0.012, 0.011), 0).verdict == "inconclusive"
    # wholly outside the margin: the claim of no difference is contradicted
    assert Comparison("x", (0.030, 0.032, 0.031), 0).verdict == "not reproduced"


def _feature_std(model, x, n):
    blocks = get_blocks(model)
    h = x
    with torch.no_grad():
        model.eval()
        for b in blocks[:n]:
            h = b(h)
    return h.std().item()


def test_random_frozen_control_is_well_conditioned():
    data = prepare_data(DataConfig(source="digits", val_size=200, batch_size=64), 0)
    torch.manual_seed(0)
    model = create_model("cnn:16-16-16-16-16", data.num_classes, 1, 8, norm="bn", pool_every=5)
    before = {k: v.clone() for k, v in model.named_parameters()}
    apply_init(model, InitConfig(source=None, blocks=5, freeze=True), load=lambda p: None, train=data.train)
    x = next(iter(data.val)).x
    # Each frozen random block's output is normalised by statistics of these images: the signal
    # keeps its scale through five blocks instead of fading to ~0.01.
    assert _feature_std(model, x, 5) > 0.3
    assert all(torch.equal(before[k], v) for k, v in model.named_parameters())  # weights still random
    assert not any(p.requires_grad for b in get_blocks(model)[:5] for p in b.parameters())
    model.train()
    bn = [m for m in get_blocks(model)[0].modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    assert not bn.training  # statistics stay frozen during training
