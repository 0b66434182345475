"""What makes a study's comparison fair: each run its own seed, a model option for init, the
layer-transfer sweep up to every block, fixed input normalisation saved with models, BiT's
step-based sampling and evaluation view, and the paired interval behind each verdict."""

from __future__ import annotations


import pytest
import torch
import yaml
from safetensors.torch import load_file

from distillab.cli import main
from distillab.config import AugmentConfig, DataConfig
from distillab.data import prepare_data
from distillab.engine.checkpoint import read_model_spec, save_model
from distillab.engine.run import derive_seed
from distillab.models import create_model, get_blocks
from distillab.models.cnn import gn_groups
from distillab.results.stats import Comparison, assess, overall_verdict

DATA = {"source": "digits", "val_size": 100, "batch_size": 64}


def _study(tmp_path, cfg, name="c"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / name
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    return out


def _weights(run_dir):
    return load_file(str(run_dir / "model.safetensors"))


def _conv_weights(run_dir):
    return {k: v for k, v in _weights(run_dir).items() if k.endswith("weight") and v.ndim == 4}


def test_every_run_of_a_study_has_its_own_init_and_the_same_command_gives_the_same_weights(tmp_path):
    # lr 1e-9: after training, weights are their initial values to ~1e-9, so equal inits would show.
    cfg = {"recipe": "born-again", "data": DATA, "model": {"name": "cnn:4-4"}, "generations": 2,
           "variants": ["ban"], "train": {"epochs": 1, "optim": {"lr": 1e-9}}, "seeds": [0]}
    out = _study(tmp_path, cfg)
    runs = ["teacher", "gen1-ban", "BAN-1", "BAN-2"]
    ws = {r: _conv_weights(out / r / "seed0") for r in runs}
    for i, a in enumerate(runs):
        for b in runs[i + 1:]:
            diff = max((ws[a][k] - ws[b][k]).abs().max().item() for k in ws[a])
            assert diff > 0.05, f"{a} and {b} start from the same weights"
    seeds = {r: yaml.safe_load((out / r / "seed0" / "config.yaml").read_text())["run_seed"] for r in runs}
    assert len(set(seeds.values())) == len(runs) and seeds["BAN-1"] == derive_seed(0, "BAN-1")
    again = _study(tmp_path, cfg, "again")  # the same command, another folder: identical weights
    for r in runs:
        a, b = _weights(out / r / "seed0"), _weights(again / r / "seed0")
        assert all(torch.equal(a[k], b[k]) for k in a), r


def test_paired_runs_share_their_seed_on_purpose(tmp_path):
    cfg = {"recipe": "hinton", "data": DATA, "seeds": [0],
           "teacher": {"model": {"name": "mlp:32"}, "train": {"epochs": 1}},
           "student": {"model": {"name": "mlp:16"}, "train": {"epochs": 1}}}
    out = _study(tmp_path, cfg)
    seed = {r: yaml.safe_load((out / r / "seed0" / "config.yaml").read_text())["run_seed"]
            for r in ("teacher", "student", "distilled")}
    assert seed["student"] == seed["distilled"] != seed["teacher"]
    md = (out / "results.md").read_text()
    assert "distilled − student alone" in md and "Verdict:" in md


def test_a_runs_seed_sets_its_batch_order_but_not_its_data():
    cfg = DataConfig(source="digits", val_size=100, train_subset=300, batch_size=32)
    a, b = prepare_data(cfg, 0, order_seed=derive_seed(0, "a")), prepare_data(cfg, 0, order_seed=derive_seed(0, "b"))
    assert torch.equal(a.train.y.sort().values, b.train.y.sort().values)  # the same examples …
    assert not torch.equal(next(iter(a.train)).index, next(iter(b.train)).index)  # … in another order
    assert derive_seed(0, "a") == derive_seed(0, "a") != derive_seed(1, "a")


def test_kaiming_init_keeps_a_thin_deep_nets_signal_where_the_default_fades():
    name, kw = "cnn:8-8-16-16-16-16-32-32", {"norm": "none", "pool_every": 3}
    x = torch.randn(64, 1, 28, 28)

    def last_std(init):
        torch.manual_seed(0)
        h = x
        for block in get_blocks(create_model(name, 10, 1, 28, init=init, **kw)):
            h = block(h)
        return h.std().item()

    assert last_std("default") < 0.05 < 0.15 < last_std("kaiming")
    torch.manual_seed(0)
    conv = get_blocks(create_model(name, 10, 1, 28, **kw))[3][0]  # unset: auto = kaiming (no norm layers)
    assert conv.weight.std().item() == pytest.approx((2 / (16 * 9)) ** 0.5, rel=0.1) and not conv.bias.any()
    torch.manual_seed(0)
    lin = get_blocks(create_model("mlp:300-300", 10, 1, 8, init="xavier"))[1][0]
    bound = (6 / 600) ** 0.5
    assert lin.weight.abs().max().item() <= bound and lin.weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.05)


def test_auto_init_keeps_pytorchs_default_where_normalisation_follows():
    torch.manual_seed(0)
    a = create_model("cnn:8-16", 10, 1, 8, norm="bn")
    torch.manual_seed(0)
    b = create_model("cnn:8-16", 10, 1, 8, norm="bn", init="default")
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_model_init_is_a_config_key(tmp_path):
    base = {"recipe": "train", "name": "m", "data": DATA, "train": {"epochs": 1, "optim": {"lr": 1e-9}}, "seeds": [0]}
    for init in ("default", "kaiming"):
        out = _study(tmp_path, {**base, "model": {"name": "cnn:8-8", "kwargs": {"norm": "none"}, "init": init}}, init)
        w = _conv_weights(out / "m" / "seed0")["blocks.1.0.weight"]
        expected = (2 / 72) ** 0.5 if init == "kaiming" else (1 / (3 * 72)) ** 0.5
        assert w.std().item() == pytest.approx(expected, rel=0.15), init


def test_groupnorm_keeps_several_channels_per_group():
    assert [gn_groups(c) for c in (16, 32, 64, 256, 512)] == [2, 4, 8, 32, 32]
    gn = create_model("cnn:16-32", 10, 1, 8, norm="gn").blocks[0][1]
    assert isinstance(gn, torch.nn.GroupNorm) and gn.num_groups == 2


def test_layer_transfer_sweeps_every_block_up_to_the_head(tmp_path):
    cfg = {"recipe": "layer-transfer", "data": DATA, "split": {"split": "random", "seed": 0},
           "model": {"name": "cnn:8-8", "kwargs": {"fc": 16}}, "train": {"epochs": 1, "optim": {"lr": 0.05}},
           "variants": ["AnB"], "seeds": [0]}
    out = _study(tmp_path, cfg)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("n")) == ["n1", "n2", "n3"]  # L = 3 blocks
    base, top = _weights(out / "baseA" / "seed0"), _weights(out / "n3" / "AnB" / "seed0")
    assert all(torch.equal(base[k], top[k]) for k in base if k.startswith("blocks."))  # all frozen and copied
    assert not torch.equal(base["head.weight"][:5], top["head.weight"][:5])  # only the head retrained
    md = (out / "results.md").read_text()
    assert "AnB (n=3) − base B" in md and "Δ vs base B" in md


def test_normalisation_is_fixed_per_source_and_saved_with_the_model(tmp_path):
    def norm(**kw):
        b = prepare_data(DataConfig(**{**DATA, **kw}), seed=kw.pop("seed", 0))
        return b.mean, b.std

    whole = norm()
    assert norm(shots=1) == norm(classes={"split": "random", "seed": 0, "part": "A"}) == norm(train_subset=50) == whole
    # A run saves the normalisation it used; a transfer run from a model trained with another one
    # (here: BiT's fixed 0.5 / 0.5) uses that model's, and saves it in turn.
    src = create_model("cnn:8", 10, 1, 8)
    other = {"mean": [0.5], "std": [0.5]}
    save_model(tmp_path / "src.safetensors", src, {"name": "cnn:8", "kwargs": {}, "num_classes": 10, "in_chans": 1,
                                                   "img_size": 8, "data": "digits", "normalize": other})
    base = {"recipe": "train", "name": "m", "data": DATA, "model": {"name": "cnn:8"}, "train": {"epochs": 1},
            "seeds": [0]}
    plain = _study(tmp_path, base, "plain")
    assert read_model_spec(plain / "m" / "seed0")[1]["normalize"] == {"mean": list(whole[0]), "std": list(whole[1])}
    moved = _study(tmp_path, {**base, "init": {"source": str(tmp_path / "src.safetensors"), "blocks": 1}}, "moved")
    assert read_model_spec(moved / "m" / "seed0")[1]["normalize"] == other
    # a transfer source and a teacher trained with different normalisations: refused, named
    clash = {**base, "name": "c", "init": {"source": str(tmp_path / "src.safetensors"), "blocks": 1},
             "method": {"name": "kd", "teacher": [str(plain / "m" / "seed0")]}}
    path = tmp_path / "clash.yaml"
    path.write_text(yaml.safe_dump(clash))
    assert main(["run", str(path), "--out", str(tmp_path / "clash"), "--quiet"]) == 2
    assert not (tmp_path / "clash").exists()


def test_steps_per_epoch_fills_every_batch_from_a_tiny_set():
    cfg = DataConfig(**{**DATA, "batch_size": 16, "shots": 1, "steps_per_epoch": 4})
    data = prepare_data(cfg, 0)
    assert len(data.train.y) == 10 and len(data.train) == 4
    batches = list(data.train)
    assert [len(b.y) for b in batches] == [16] * 4
    seen = torch.cat([b.index for b in batches])
    assert torch.bincount(seen, minlength=10).min() >= 6  # 64 draws of 10 examples: each ~6 times
    again = list(prepare_data(cfg, 0).train)
    assert all(torch.equal(a.index, b.index) for a, b in zip(batches, again, strict=True))  # seeded by (seed, epoch)


def test_eval_view_resize_shows_the_whole_image():
    aug = AugmentConfig(crop=6)
    crop = prepare_data(DataConfig(**DATA, augment=aug), 0)
    whole = prepare_data(DataConfig(**DATA, augment=aug, eval_view="resize"), 0)
    a, b = next(iter(crop.test)).x, next(iter(whole.test)).x
    assert a.shape == b.shape == (len(a), 1, 6, 6) and not torch.allclose(a, b)
    assert crop.shape == whole.shape == (1, 6, 6)


def test_verdicts_follow_the_interval_and_the_papers_direction():
    up = Comparison("x", (0.010, 0.012, 0.011), +1)
    assert up.verdict == "reproduced" and Comparison("x", up.diffs, -1).verdict == "not reproduced"
    noisy = Comparison("x", (0.01, -0.012, 0.004), +1)
    assert noisy.verdict == "inconclusive" and Comparison("x", noisy.diffs, 0).verdict == "inconclusive"  # too wide
    assert Comparison("x", (0.001, -0.001, 0.0005), 0).verdict == "consistent"  # within ±1 point
    assert Comparison("x", (0.030, 0.032, 0.031), 0).verdict == "not reproduced"  # 3 points apart
    primary = Comparison("p", up.diffs, +1, primary=True)
    assert overall_verdict([up, noisy]) == "partly reproduced" and overall_verdict([up]) == "reproduced"
    assert overall_verdict([noisy]) == "inconclusive"
    assert overall_verdict([noisy, Comparison("x", up.diffs, -1)]) == "not reproduced"
    assert overall_verdict([noisy, primary]) == "reproduced"  # the headline is the primary claim's
    assert assess([up])[0].row()[2].startswith("+1.10 [")  # points, with the interval
