"""Hostile inputs, part 2 (issue #24): nothing outside --out is touched, nothing of the user's is
lost, nothing on disk is trusted unchecked. Each case ends with exit 2, one `error:` line naming
the problem, no traceback — and every file under the test folder (the user's files beside the run,
a 'victim' file outside it) byte for byte as it was."""

from __future__ import annotations

import json

import pytest
from test_hostile_inputs import BASE, assert_refused, _finished_run, _yaml

from distillab.cli import main


def _unfinished_run(t):
    """A run folder stopped after its last checkpoint (summary and model removed): what --resume reads."""
    cfg, run = _finished_run(t)
    (run / "summary.json").unlink()
    (run / "model.safetensors").unlink()
    return cfg, run


def _state(run, **change):
    s = json.loads((run / "state.json").read_text())
    s.update(change)
    (run / "state.json").write_text(json.dumps(s))


def _resume(t, cfg):
    return ["run", cfg, "--out", str(t / "out"), "--resume"]


# ---- class 1: paths from configs and run files
def c_name_dotdot(t):
    return ["run", _yaml(t, {**BASE, "name": "../../x"}), "--out", str(t / "out")], "name"
def c_name_absolute(t):
    return ["run", _yaml(t, {**BASE, "name": str(t / "abs")}), "--out", str(t / "out")], "name"
def c_name_nul(t):
    return ["run", _yaml(t, BASE), "--out", str(t / "out"), "name=a\x00b"], "name"
def c_name_hidden(t):
    return ["run", _yaml(t, {**BASE, "name": ".distillab"}), "--out", str(t / "out")], "name"
def c_name_backslash(t):
    return ["run", _yaml(t, {**BASE, "name": "..\\..\\x"}), "--out", str(t / "out")], "name"
def c_name_empty(t):
    return ["run", _yaml(t, {**BASE, "name": ""}), "--out", str(t / "out")], "name"
def c_name_inner_dotdot(t):
    return ["run", _yaml(t, {**BASE, "name": "a/../../b"}), "--out", str(t / "out")], "name"
def c_name_newline(t):
    return ["run", _yaml(t, {**BASE, "name": "a\nb"}), "--out", str(t / "out")], "name"
def c_name_too_long(t):
    return ["run", _yaml(t, {**BASE, "name": "n" * 300}), "--out", str(t / "out")], "name"
def c_benchmark_label_dotdot(t):
    bench = {"recipe": "benchmark", "data": BASE["data"], "seeds": [0],
             "teacher": {"model": {"name": "mlp:8"}, "train": {"epochs": 1}},
             "student": {"model": {"name": "mlp:4"}, "train": {"epochs": 1}}, "methods": {"..": {"name": "kd"}}}
    return ["run", _yaml(t, bench), "--out", str(t / "out")], "label '..'"
def c_state_file_outside(t):
    cfg, run = _unfinished_run(t)
    victim = t / "victim.safetensors"
    victim.write_bytes((run / json.loads((run / "state.json").read_text())["file"]).read_bytes())
    _state(run, file="../../../victim.safetensors")
    return _resume(t, cfg), "state.json"
def c_state_file_absolute(t):
    cfg, run = _unfinished_run(t)
    _state(run, file=str(t / "base.yaml"))
    return _resume(t, cfg), "state.json"
def c_state_epoch_999(t):
    cfg, run = _unfinished_run(t)
    _state(run, epoch=999, file="ckpt-0999.safetensors")
    (run / "ckpt-0002.safetensors").rename(run / "ckpt-0999.safetensors")
    return _resume(t, cfg), "epoch 999"
def c_state_epoch_null(t):
    cfg, run = _unfinished_run(t)
    _state(run, epoch=None)
    return _resume(t, cfg), "state.json"
def c_state_epoch_string(t):
    cfg, run = _unfinished_run(t)
    _state(run, epoch="2")
    return _resume(t, cfg), "state.json"
def c_state_epoch_zero(t):
    cfg, run = _unfinished_run(t)
    _state(run, epoch=0)
    return _resume(t, cfg), "state.json"
def c_state_epoch_file_mismatch(t):
    cfg, run = _unfinished_run(t)
    _state(run, epoch=1)  # file still names epoch 2's checkpoint
    return _resume(t, cfg), "state.json"
def c_state_param_groups_garbage(t):
    cfg, run = _unfinished_run(t)
    _state(run, param_groups="garbage")
    return _resume(t, cfg), "param_groups"
def c_state_param_groups_wrong_keys(t):
    cfg, run = _unfinished_run(t)
    _state(run, param_groups=[{"params": [0]}, {"params": [1]}, {"params": [2]}, {"params": [3]}, {"params": [9]}])
    return _resume(t, cfg), "state.json"
def c_state_scalars_list(t):
    cfg, run = _unfinished_run(t)
    _state(run, optim_scalars=[1, 2])
    return _resume(t, cfg), "optim_scalars"
def c_state_not_utf8(t):
    cfg, run = _unfinished_run(t)
    (run / "state.json").write_bytes(b"\xff\xfe{")
    return _resume(t, cfg), "state.json"
def c_state_file_nul(t):
    cfg, run = _unfinished_run(t)
    _state(run, file="ckpt-0002.safetensors\x00")
    return _resume(t, cfg), "state.json"
def c_state_epoch_float(t):
    cfg, run = _unfinished_run(t)
    _state(run, epoch=2.0)
    return _resume(t, cfg), "state.json"
def c_state_epoch_true(t):
    cfg, run = _unfinished_run(t)
    _state(run, epoch=True)
    return _resume(t, cfg), "state.json"
def c_state_scalars_bad_key(t):
    cfg, run = _unfinished_run(t)
    _state(run, optim_scalars={"x": {}})
    return _resume(t, cfg), "optim_scalars"
def c_metrics_line_is_list(t):
    cfg, run = _unfinished_run(t)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(["[1, 2]", *lines[1:]]) + "\n")
    return _resume(t, cfg), "metrics.jsonl"
def c_metrics_nan(t):
    cfg, run = _unfinished_run(t)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text(lines[0].replace('"seconds":', '"val_acc": NaN, "seconds":') + "\n"
                                       + "\n".join(lines[1:]) + "\n")
    return _resume(t, cfg), "metrics.jsonl"
def c_metrics_infinity(t):
    cfg, run = _unfinished_run(t)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    rec = json.loads(lines[0])
    rec["train_loss"] = float("inf")
    (run / "metrics.jsonl").write_text("\n".join([json.dumps(rec), *lines[1:]]) + "\n")
    return _resume(t, cfg), "metrics.jsonl"
def c_metrics_no_seconds(t):
    cfg, run = _unfinished_run(t)
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    for rec in lines:
        rec.pop("seconds")
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return _resume(t, cfg), "metrics.jsonl"
def c_metrics_missing_epoch(t):
    cfg, run = _unfinished_run(t)
    (run / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text().splitlines()[1] + "\n")
    return _resume(t, cfg), "metrics.jsonl"


# ---- class 2: the user's own files
def c_out_dot_in_project(t):
    for name in ("results.md", "results.csv", "study.json"):
        (t / name).write_text(f"my own {name}\n")
    return ["run", _yaml(t, BASE), "--out", "."], "not made by distillab"
def c_out_with_user_files(t):
    (t / "mine").mkdir()
    (t / "mine" / "notes.txt").write_text("keep me")
    return ["run", _yaml(t, BASE), "--out", str(t / "mine")], "not made by distillab"
def c_out_with_user_study_json(t):
    (t / "mine").mkdir()
    (t / "mine" / "study.json").write_text('{"my": "study"}')
    return ["run", _yaml(t, BASE), "--out", str(t / "mine")], "not made by distillab"
def c_restart_user_config_and_tb(t):
    run = t / "out" / "mlp" / "seed0"
    (run / "tb").mkdir(parents=True)
    (run / "config.yaml").write_text("my: own config\n")
    (run / "tb" / "events.out.tfevents.1.mine").write_bytes(b"my events")
    return ["run", _yaml(t, BASE), "--out", str(t / "out"), "--restart"], "not made by distillab"
def c_run_folder_user_files(t):
    run = t / "out" / "mlp" / "seed0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("recipe: mine\n")
    (run / "metrics.jsonl").write_text("mine\n")
    return ["run", _yaml(t, BASE), "--out", str(t / "out"), "--resume"], "not made by distillab"
def c_user_file_in_study_folder(t):
    cfg, run = _finished_run(t)
    marker = t / "out" / ".distillab"
    m = json.loads(marker.read_text())
    m["files"].remove("results.csv")  # a results.csv the user put there after the study
    marker.write_text(json.dumps(m))
    (t / "out" / "results.csv").write_text("the user's table\n")
    return ["run", cfg, "--out", str(t / "out")], "results.csv"
def c_out_with_garbage_marker(t):
    (t / "mine").mkdir()
    (t / "mine" / ".distillab").write_text("not distillab's")
    (t / "mine" / "results.md").write_text("mine")
    return ["run", _yaml(t, BASE), "--out", str(t / "mine")], "not made by distillab"
def c_run_folder_with_study_marker(t):
    run = t / "out" / "mlp" / "seed0"
    run.mkdir(parents=True)
    (run / ".distillab").write_text('{"kind": "study", "files": []}')
    (run / "config.yaml").write_text("mine: 1\n")
    return ["run", _yaml(t, BASE), "--out", str(t / "out"), "--restart"], "not made by distillab"
def c_export_over_symlink_to_model(t):
    cfg, run = _finished_run(t)
    (t / "link.pt").symlink_to(run / "model.safetensors")
    return ["export", str(run), "--torchscript", str(t / "link.pt")], "already exists"
def c_report_html_over_user_file(t):
    cfg, run = _finished_run(t)
    (t / "index.html").write_text("<html>my home page</html>")
    return ["report", str(t / "out"), "--html", str(t / "index.html")], "not a distillab report"
def c_pack_over_hidden_file(t):
    (t / "shards").mkdir()
    (t / "shards" / ".keep").write_text("")
    return ["data", "pack", "digits", str(t / "shards")], "not empty"
def c_pack_over_user_meta(t):
    (t / "shards").mkdir()
    (t / "shards" / "meta.json").write_text('{"mine": true}')
    return ["data", "pack", "digits", str(t / "shards")], "not empty"
def c_pack_over_user_file_in_folder(t):
    (t / "shards").mkdir()
    (t / "shards" / "train-000000.txt").write_text("mine")
    return ["data", "pack", "digits", str(t / "shards")], "not empty"
def c_pack_onto_file(t):
    (t / "shards").write_text("a file")
    return ["data", "pack", "digits", str(t / "shards")], "is a file"
def c_pack_image_size_0(t):
    return ["data", "pack", "digits", str(t / "shards"), "--image-size", "0"], "--image-size"
def c_pack_seed_negative(t):
    return ["data", "pack", "digits", str(t / "shards"), "--seed", "-1"], "--seed"
def c_export_over_run_model(t):
    cfg, run = _finished_run(t)
    return ["export", str(run), "--torchscript", str(run / "model.safetensors")], "already exists"
def c_export_over_user_file(t):
    cfg, run = _finished_run(t)
    (t / "student.onnx").write_text("my own model")
    return ["export", str(run), "--onnx", str(t / "student.onnx")], "already exists"
def c_export_same_target_twice(t):
    cfg, run = _finished_run(t)
    return ["export", str(run), "--onnx", str(t / "m"), "--torchscript", str(t / "m")], "same file"


# ---- class 4 and 6 at the config boundary: statistics and values that cannot be right
def c_duplicate_seeds(t):
    return ["run", _yaml(t, {**BASE, "seeds": [0, 0]})], "listed twice"
def c_seed_2_64(t):
    return ["run", _yaml(t, {**BASE, "seeds": [2**64]})], "seeds"
def c_seed_negative(t):
    return ["run", _yaml(t, {**BASE, "seeds": [-1]})], "seeds"
def c_weight_decay_inf(t):
    return ["run", _yaml(t, BASE), "train.optim.weight_decay=.inf"], "weight_decay"
def c_lr_nan(t):
    return ["run", _yaml(t, BASE), "train.optim.lr=.nan"], "lr"
def c_warmup_inf(t):
    return ["run", _yaml(t, BASE), "train.optim.warmup_epochs=.inf"], "warmup_epochs"
def c_temperature_inf(t):
    cfg, run = _finished_run(t)
    return ["run", cfg, "--out", str(t / "o2"), "method.name=kd", f"method.teacher=[{run}]",
            "method.temperature=.inf"], "temperature"
def c_resize_huge(t):
    return ["run", _yaml(t, BASE), "data.resize=3000000"], "resize"
def c_jitter_huge(t):
    return ["run", _yaml(t, BASE), "data.augment.jitter=1000000000"], "jitter"
def c_image_size_huge(t):
    return ["run", _yaml(t, BASE), "data.image_size=100000"], "image_size"
def c_class_split_seed_huge(t):
    return ["run", _yaml(t, BASE), "data.classes={split: random, part: A, seed: 18446744073709551616}"], "seed"


CASES = [v for k, v in sorted(globals().items()) if k.startswith("c_")]


@pytest.mark.parametrize("case", CASES, ids=lambda f: f.__name__[2:])
def test_hostile_case_is_one_line_exit_2_and_changes_nothing(case, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DISTILLAB_NO_DOWNLOAD", "1")
    monkeypatch.chdir(tmp_path)
    argv, needle = case(tmp_path)
    assert_refused(argv, needle, tmp_path, capsys)


def test_restart_deletes_only_what_the_run_wrote(tmp_path, capsys):
    """--restart in a distillab run folder keeps the user's own files there (also inside tb/)."""
    cfg, run = _unfinished_run(tmp_path)
    (run / "notes.txt").write_text("mine")
    (run / "tb" / "my-plot.png").write_bytes(b"mine")
    assert main(["run", cfg, "--out", str(tmp_path / "out"), "--restart", "--quiet"]) == 0
    assert (run / "notes.txt").read_text() == "mine" and (run / "tb" / "my-plot.png").read_bytes() == b"mine"
    assert (run / "summary.json").is_file()


def test_a_study_folder_from_before_markers_is_read_back(tmp_path, capsys):
    """Folders written by an older distillab (no marker) are recognised by their own records."""
    cfg, run = _finished_run(tmp_path)
    out = tmp_path / "out"
    (out / ".distillab").unlink()
    (run / ".distillab").unlink()
    before = (run / "summary.json").read_bytes()
    assert main(["run", cfg, "--out", str(out), "--quiet"]) == 0
    assert (run / "summary.json").read_bytes() == before
    assert json.loads((out / ".distillab").read_text())["kind"] == "study"


def test_an_owned_study_folder_keeps_the_users_other_files(tmp_path, capsys):
    cfg, run = _finished_run(tmp_path)
    (tmp_path / "out" / "notes.md").write_text("mine")
    assert main(["run", cfg, "--out", str(tmp_path / "out"), "--quiet", "seeds=[0,1]"]) == 0
    assert (tmp_path / "out" / "notes.md").read_text() == "mine"
    assert "2" in (tmp_path / "out" / "results.csv").read_text()


def test_report_html_reads_past_a_metrics_line_of_infinity(tmp_path, capsys):
    cfg, run = _finished_run(tmp_path)
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": Infinity, "val_acc": 1.0, "seconds": 1}\n')
    assert main(["report", str(tmp_path / "out"), "--html", str(tmp_path / "r.html")]) == 0
    assert main(["report", str(tmp_path / "out"), "--html", str(tmp_path / "r.html")]) == 0  # its own: replaced


def test_corpus_size():
    assert len(CASES) >= 55
