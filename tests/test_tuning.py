"""Equal-effort tuning: every arm gets the same validation trials at a pilot seed, the best point
on validation is what the table's seeds run, and the plan stops where the choice needs results."""

import json

import yaml

from distillab.cli import main
from distillab.config import validate
from distillab.recipes.plan import plan_study
from distillab.recipes import RECIPES

CFG = {"recipe": "benchmark", "data": {"source": "digits", "val_size": 200, "batch_size": 64}, "seeds": [0],
       "teacher": {"model": {"name": "mlp:64"}, "train": {"epochs": 2, "optim": {"lr": 0.1}}},
       "student": {"model": {"name": "mlp:16"}, "train": {"epochs": 2, "optim": {"lr": 0.1}}},
       "methods": {"KD": {"name": "kd"}},
       "tune": {"seed": 100, "grid": {"student": {"train.optim.lr": [0.001, 0.2]},
                                      "KD": {"method.temperature": [2, 4]}}}}


def test_each_arm_runs_its_grid_on_validation_and_the_seeds_use_the_best_point(tmp_path, capsys):
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(CFG))
    out = tmp_path / "o"
    assert main(["run", str(tmp_path / "b.yaml"), "--out", str(out), "--quiet"]) == 0
    trials = {arm: [json.loads((out / "tune" / arm / f"t{i}" / "seed100" / "summary.json").read_text())
                    for i in range(2)] for arm in ("student", "KD")}
    best_lr = [0.001, 0.2][max(range(2), key=lambda i: trials["student"][i]["val_acc"])]
    final = yaml.safe_load((out / "student" / "seed0" / "config.yaml").read_text())
    assert final["train"]["optim"]["lr"] == best_lr
    best_t = [2, 4][max(range(2), key=lambda i: trials["KD"][i]["val_acc"])]
    kd = yaml.safe_load((out / "KD" / "seed0" / "config.yaml").read_text())
    assert kd["method"]["temperature"] == best_t and kd["method"]["teacher"] == [str(out / "teacher" / "seed0")]
    md = (out / "results.md").read_text()
    assert "Tuning on validation (pilot seed 100" in md and "train.optim.lr=0.2" in md and "✓" in md
    assert not (out / "tune" / "student" / "t0" / "seed0").exists()  # trials only at the pilot seed


def test_planning_stops_where_the_choice_needs_results(tmp_path):
    cls, module = RECIPES["benchmark"].config, RECIPES["benchmark"].module
    plan = plan_study(validate(cls, CFG), module, tmp_path / "o")
    assert not plan.complete
    names = [r.name for r in plan]
    # every arm's trials are planned before the choice that needs their results
    assert names == ["teacher", "tune/student/t0", "tune/student/t1", "tune/KD/t0", "tune/KD/t1"]


def test_unequal_effort_is_refused(tmp_path, capsys):
    bad = {**CFG, "tune": {"grid": {"student": {"train.optim.lr": [0.01]}, "KD": {"method.temperature": [2, 4]}}}}
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(bad))
    assert main(["run", str(tmp_path / "b.yaml"), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "same number of trials" in err and "Traceback" not in err
    typo = {**CFG, "tune": {"grid": {"student": {"train.optim.lrr": [0.01, 0.1]}}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(typo))
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "p"), "--quiet"]) == 2
    assert "train.optim.lrr: no such key" in capsys.readouterr().err


def test_an_executor_trains_the_grid_then_plans_the_chosen_runs(tmp_path, monkeypatch):
    # run_study_on_ray with Ray replaced by in-process training: the first plan stops at the
    # choice, the second (with the trials' real results) plans the table's runs at the chosen point.
    from distillab.recipes import plan as plan_mod
    from distillab.engine.run import execute_run

    parts = []

    def train_locally(plan, **_):
        parts.append([r.name for r in plan])
        for r in plan:
            execute_run(r.spec, r.seed, r.run_dir, run_seed=r.run_seed)

    monkeypatch.setattr(plan_mod, "run_on_ray", train_locally)
    cls, module = RECIPES["benchmark"].config, RECIPES["benchmark"].module
    out = tmp_path / "o"
    plan_mod.run_study_on_ray(validate(cls, CFG), module, out)
    assert len(parts) == 2 and parts[0][-1] == "tune/KD/t1"
    assert {"student", "KD", "teacher"} <= set(parts[1])
    trials = [json.loads((out / "tune" / "student" / f"t{i}" / "seed100" / "summary.json").read_text())
              for i in range(2)]
    best_lr = [0.001, 0.2][max(range(2), key=lambda i: trials[i]["val_acc"])]
    assert yaml.safe_load((out / "student" / "seed0" / "config.yaml").read_text())["train"]["optim"]["lr"] == best_lr


def test_hinton_shared_teacher_and_equal_effort_grid(tmp_path):
    # One teacher serves both seeds; the student alone and the distilled student each get two
    # trials at the pilot seed, and the table's runs use the point with the best validation.
    import yaml

    from distillab.cli import main

    data = {"source": "digits", "val_size": 200, "batch_size": 64}
    train = {"epochs": 2, "optim": {"lr": 0.1}}
    cfg = {"recipe": "hinton", "data": data, "seeds": [0, 1], "shared_teacher": True,
           "teacher": {"model": {"name": "mlp:64"}, "train": train},
           "student": {"model": {"name": "mlp:16"}, "train": train},
           "distill": {"temperature": 4, "alpha": 0.9, "cache": {"views": 1}},
           "tune": {"seed": 100, "grid": {"student": {"train.optim.lr": [0.001, 0.1]},
                                          "distilled": {"method.temperature": [2, 4]}}}}
    (tmp_path / "h.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "o"
    assert main(["run", str(tmp_path / "h.yaml"), "--out", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in (out / "teacher").iterdir() if p.is_dir()) == ["seed0"]
    trials = sorted(str(p.relative_to(out)) for p in out.glob("tune/*/t*/seed100"))
    assert trials == ["tune/distilled/t0/seed100", "tune/distilled/t1/seed100", "tune/student/t0/seed100",
                      "tune/student/t1/seed100"]
    val = {t: json.loads((out / t / "summary.json").read_text())["val_acc"] for t in trials}
    best_lr = 0.001 if val["tune/student/t0/seed100"] > val["tune/student/t1/seed100"] else 0.1
    spec = yaml.safe_load((out / "student" / "seed1" / "config.yaml").read_text())
    assert spec["train"]["optim"]["lr"] == best_lr
    md = (out / "results.md").read_text()
    assert "Tuning on validation" in md and "one teacher (seed 0) serves every seed" in md
    distilled = yaml.safe_load((out / "distilled" / "seed1" / "config.yaml").read_text())
    assert distilled["method"]["teacher"] == [str(out / "teacher" / "seed0")]
