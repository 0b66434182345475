"""Runs move with their folder: inputs are identified by what they are (content digests), not how
their paths were spelled; a study validates all its runs before the first trains; --restart is
the way out of an unfinished run; report groups a study's runs by role."""

import json
import shutil

import yaml

from distillab.cli import main

HINTON = {"recipe": "hinton", "data": {"source": "digits", "val_size": 200, "batch_size": 64}, "seeds": [0, 1],
          "teacher": {"model": {"name": "mlp:64"}, "train": {"epochs": 2}},
          "student": {"model": {"name": "mlp:16"}, "train": {"epochs": 2}},
          "distill": {"temperature": 4, "alpha": 0.9}}


def _cfg(tmp, data=HINTON, name="h.yaml"):
    (tmp / name).write_text(yaml.safe_dump(data))
    return str(tmp / name)


def _mtimes(root):
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("metrics.jsonl")}


def test_a_moved_study_with_absolute_out_and_data_dir_is_read_back(tmp_path, monkeypatch, capsys):
    cfg = _cfg(tmp_path)
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    assert main(["run", cfg, "--out", "study", "--quiet"]) == 0  # relative --out: teacher paths as typed
    shutil.move(str(tmp_path / "a" / "study"), str(tmp_path / "moved"))
    before = _mtimes(tmp_path / "moved")
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "b")
    capsys.readouterr()
    assert main(["run", cfg, "--out", str(tmp_path / "moved"), "--data-dir", str(tmp_path), "--quiet"]) == 0
    assert _mtimes(tmp_path / "moved") == before  # nothing retrained


def test_a_different_config_names_the_keys(tmp_path, capsys):
    cfg = _cfg(tmp_path)
    assert main(["run", cfg, "--out", str(tmp_path / "o"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["run", cfg, "--out", str(tmp_path / "o"), "teacher.train.epochs=3", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "train.epochs (2 → 3)" in err


def test_a_retrained_teacher_invalidates_its_students(tmp_path, capsys):
    cfg = _cfg(tmp_path, {**HINTON, "seeds": [0]})
    out = tmp_path / "o"
    assert main(["run", cfg, "--out", str(out), "--quiet"]) == 0
    # Swap the teacher's weights for another model's of the same architecture (a retrained teacher).
    other = _cfg(tmp_path, {**HINTON, "seeds": [1]}, "other.yaml")
    assert main(["run", other, "--out", str(tmp_path / "o1"), "--quiet"]) == 0
    shutil.copy(
        tmp_path / "o1" / "teacher" / "seed1" / "model.safetensors", out / "teacher" / "seed0" / "model.safetensors"
    )
    capsys.readouterr()
    assert main(["run", cfg, "--out", str(out), "--quiet"]) == 2
    assert "teachers weights" in capsys.readouterr().err


def test_a_typo_in_the_student_fails_before_the_teacher_trains(tmp_path, capsys):
    cfg = _cfg(tmp_path, {**HINTON, "student": {"model": {"name": "mlp:abc"}}})
    assert main(["run", cfg, "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "mlp:abc" in capsys.readouterr().err
    assert not (tmp_path / "o" / "teacher").exists()


def test_restart_is_the_way_out_of_an_unfinished_run(tmp_path, capsys):
    base = {"recipe": "train", "name": "r", "data": {"source": "digits", "val_size": 200},
            "model": {"name": "mlp:16"}, "train": {"epochs": 2, "optim": {"lr": 0.05}}}
    cfg = _cfg(tmp_path, base)
    out = tmp_path / "o"
    assert main(["run", cfg, "--out", str(out), "--keep-checkpoints", "--quiet"]) == 0
    run = out / "r" / "seed0"
    (run / "summary.json").unlink()
    (run / "model.safetensors").unlink()  # now unfinished, as after a NaN loss
    capsys.readouterr()
    assert main(["run", cfg, "--out", str(out), "train.optim.lr=0.01", "--quiet"]) == 2
    assert "--restart" in capsys.readouterr().err
    assert main(["run", cfg, "--out", str(out), "train.optim.lr=0.01", "--restart", "--quiet"]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["optim"]["lr"] == 0.01 and (run / "model.safetensors").is_file()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == [1, 2]
    # A finished run is never discarded, --restart or not.
    capsys.readouterr()
    assert main(["run", cfg, "--out", str(out), "train.optim.lr=0.2", "--restart", "--quiet"]) == 2


def test_report_groups_a_studys_runs_by_role(tmp_path, capsys):
    cfg = _cfg(tmp_path)
    assert main(["run", cfg, "--out", str(tmp_path / "o"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "o")]) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| ") and not ln.startswith("| run")]
    assert sorted(r.split("|")[1].strip() for r in rows) == ["distilled", "student", "teacher"]
    assert all(r.split("|")[6].strip() == "2" for r in rows)  # both seeds in each row


def test_a_run_folder_from_before_a_new_default_key_is_read_back(tmp_path, capsys):
    base = {"recipe": "train", "name": "r", "data": {"source": "digits", "val_size": 200},
            "model": {"name": "mlp:16"}, "train": {"epochs": 1}}
    cfg = _cfg(tmp_path, base)
    assert main(["run", cfg, "--out", str(tmp_path / "o"), "--quiet"]) == 0
    saved = tmp_path / "o" / "r" / "seed0" / "config.yaml"
    old = yaml.safe_load(saved.read_text())
    del old["train"]["precision"], old["train"]["channels_last"]  # as written before those keys existed
    saved.write_text(yaml.safe_dump(old, sort_keys=False))
    assert main(["run", cfg, "--out", str(tmp_path / "o"), "--quiet"]) == 0


def test_a_run_folder_from_before_image_folders_kept_their_size_is_read_back(tmp_path, capsys):
    """Runs saved ``data.image_size: 32`` (the old default) for every source; only image folders are
    read at a size, so a digits run from then is still this run."""
    base = {"recipe": "train", "name": "r", "data": {"source": "digits", "val_size": 200},
            "model": {"name": "mlp:16"}, "train": {"epochs": 1}}
    cfg = _cfg(tmp_path, base)
    assert main(["run", cfg, "--out", str(tmp_path / "o"), "--quiet"]) == 0
    saved = tmp_path / "o" / "r" / "seed0" / "config.yaml"
    old = yaml.safe_load(saved.read_text())
    old["data"]["image_size"] = 32
    old["data"].pop("channels", None)
    saved.write_text(yaml.safe_dump(old, sort_keys=False))
    before = _mtimes(tmp_path / "o")
    assert main(["run", cfg, "--out", str(tmp_path / "o"), "--quiet"]) == 0
    assert _mtimes(tmp_path / "o") == before
