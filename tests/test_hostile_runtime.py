"""Hostile inputs, part 3 (issue #24, classes 5-7): model files whose weights or spec are wrong
(named, not blamed on the learning rate), user modules that fail to import, broken torchrun
variables, external waits (a Ray address nobody answers, GPUs no node has, a DDP peer that never
comes) and ONNX files profile cannot run. Each ends with exit 2 and one `error:` line naming the
cause, no traceback, nothing on disk changed — and never hangs."""

from __future__ import annotations

import json
import socket
import sys
import types

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from test_hostile_inputs import BASE, assert_refused, _finished_run, _yaml



def _model_file(t, *, spec=None, change=None, tensors=None):
    """A copy of a finished run's model.safetensors at t/teacher.safetensors, with its spec or
    weights changed."""
    cfg, run = _finished_run(t)
    with safe_open(str(run / "model.safetensors"), framework="pt") as f:
        meta = json.loads(f.metadata()["distillab"])
        weights = {k: f.get_tensor(k) for k in f.keys()}
    if change:
        meta.update(change)
    if tensors:
        tensors(weights)
    raw = spec if spec is not None else json.dumps(meta)
    save_file(weights, str(t / "teacher.safetensors"), metadata={"distillab": raw})
    return cfg, str(t / "teacher.safetensors")


def _kd(t, cfg, teacher, *extra):
    return ["run", cfg, "--out", str(t / "o2"), "method.name=kd", f"method.teacher=[{teacher}]", *extra]


def _nan(w):
    next(iter(w.values()))[0] = float("nan")


def _inf(w):
    list(w.values())[-1][0] = float("inf")


# ---- class 6: a cause named, not "lower the learning rate"
def c_teacher_nan_weight(t):
    cfg, f = _model_file(t, tensors=_nan)
    return _kd(t, cfg, f), "NaN or infinite weights"
def c_teacher_inf_weight(t):
    cfg, f = _model_file(t, tensors=_inf)
    return _kd(t, cfg, f), "teacher.safetensors"
def c_init_nan_weight(t):
    cfg, f = _model_file(t, tensors=_nan)
    return ["run", cfg, "--out", str(t / "o2"), f"init={{source: {f}, blocks: 1}}"], "NaN or infinite"
def c_teacher_std_zero(t):
    cfg, f = _model_file(t, change={"normalize": {"mean": [0.5], "std": [0.0]}})
    return _kd(t, cfg, f), "normalize.std"
def c_teacher_mean_inf(t):
    cfg, f = _model_file(t, change={"normalize": {"mean": [float("inf")], "std": [1.0]}})
    return _kd(t, cfg, f), "normalize"
def c_teacher_absurd_arch(t):
    cfg, f = _model_file(t, change={"name": "mlp:99999999999"})
    return _kd(t, cfg, f), "teacher.safetensors"


# ---- class 7: malformed model-spec metadata
def c_spec_is_list(t):
    cfg, f = _model_file(t, spec="[1, 2]")
    return _kd(t, cfg, f), "teacher.safetensors"
def c_spec_lacks_keys(t):
    cfg, f = _model_file(t, spec=json.dumps({"name": "mlp:32"}))
    return _kd(t, cfg, f), "teacher.safetensors"
def c_spec_wrong_types(t):
    cfg, f = _model_file(t, change={"num_classes": "ten"})
    return _kd(t, cfg, f), "num_classes"
def c_spec_kwargs_list(t):
    cfg, f = _model_file(t, change={"kwargs": [1]})
    return _kd(t, cfg, f), "kwargs"
def c_spec_negative_size(t):
    cfg, f = _model_file(t, change={"img_size": -8})
    return _kd(t, cfg, f), "img_size"
def c_spec_classes_short(t):
    cfg, f = _model_file(t, change={"classes": ["0"]})
    return _kd(t, cfg, f), "classes"
def c_spec_not_json(t):
    cfg, f = _model_file(t, spec="{not json")
    return _kd(t, cfg, f), "teacher.safetensors"
def c_spec_module_only(t):
    cfg, f = _model_file(t, spec=json.dumps({"module": "os.system", "num_classes": 10, "in_shape": [1, 8, 8]}))
    return _kd(t, cfg, f), "which distillab cannot rebuild"
def c_spec_classes_without_data(t):
    cfg, f = _model_file(t, change={"data": None})
    return _kd(t, cfg, f), "data"
def c_profile_spec_is_list(t):
    cfg, f = _model_file(t, spec="[]")
    return ["profile", f, "--repeats", "1"], "teacher.safetensors"
def c_export_spec_lacks_keys(t):
    cfg, f = _model_file(t, spec=json.dumps({"name": "mlp:32", "kwargs": {}}))
    return ["export", f, "--onnx", str(t / "m.onnx")], "teacher.safetensors"


# ---- --import
def _module(t, name, text):
    (t / f"{name}.py").write_text(text)
    sys.path.insert(0, str(t))
    sys.modules.pop(name, None)


def c_import_raises(t):
    _module(t, "hostile_raises_mod", "raise RuntimeError('boom at import')\n")
    return ["run", _yaml(t, BASE), "--import", "hostile_raises_mod"], "boom at import"
def c_import_syntax_error(t):
    _module(t, "hostile_syntax_mod", "def f(:\n")
    return ["run", _yaml(t, BASE), "--import", "hostile_syntax_mod"], "syntax error"
def c_import_empty(t):
    return ["run", _yaml(t, BASE), "--import", ""], "--import"
def c_import_relative(t):
    return ["run", _yaml(t, BASE), "--import", ".models"], "--import"
def c_import_system_exit(t):
    _module(t, "hostile_exit_mod", "raise ValueError('bad value in module')\n")
    return ["list", "models", "--import", "hostile_exit_mod"], "ValueError"


# ---- torchrun variables
def c_world_size_without_rank(t, env=None):
    env.setenv("WORLD_SIZE", "2")
    env.delenv("RANK", raising=False)
    return ["run", _yaml(t, BASE)], "RANK"
def c_rank_not_integer(t, env=None):
    env.setenv("WORLD_SIZE", "2")
    env.setenv("RANK", "zero")
    return ["run", _yaml(t, BASE)], "RANK"
def c_rank_too_big(t, env=None):
    env.setenv("WORLD_SIZE", "2")
    env.setenv("RANK", "5")
    return ["run", _yaml(t, BASE)], "RANK"
def c_world_size_not_integer(t, env=None):
    env.setenv("WORLD_SIZE", "two")
    return ["run", _yaml(t, BASE)], "WORLD_SIZE"
def c_no_master_addr(t, env=None):
    env.setenv("WORLD_SIZE", "2")
    env.setenv("RANK", "0")
    env.delenv("MASTER_ADDR", raising=False)
    return ["run", _yaml(t, BASE)], "MASTER_ADDR"
def c_ddp_peer_never_comes(t, env=None):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(port), "DISTILLAB_DIST_TIMEOUT": "2"}.items():
        env.setenv(k, v)
    return ["run", _yaml(t, BASE)], "did not all join"


# ---- Ray options and waits
def c_ray_cpus_negative(t):
    return ["run", _yaml(t, BASE), "--executor", "ray", "--ray-cpus", "-1"], "--ray-cpus"
def c_ray_gpus_nan(t):
    return ["run", _yaml(t, BASE), "--executor", "ray", "--ray-gpus", "nan"], "--ray-gpus"
def c_ray_address_nobody(t, env=None):
    env.setitem(sys.modules, "ray", _fake_ray({"CPU": 2.0}))
    return ["run", _yaml(t, BASE), "--executor", "ray", "--address", "127.0.0.1:1"], "no Ray cluster answered"
def c_ray_address_malformed(t, env=None):
    env.setitem(sys.modules, "ray", _fake_ray({"CPU": 2.0}))
    return ["run", _yaml(t, BASE), "--executor", "ray", "--address", "nohost"], "HOST:PORT"
def c_ray_gpus_none_in_cluster(t, env=None):
    env.setitem(sys.modules, "ray", _fake_ray({"CPU": 2.0}))
    return ["run", _yaml(t, BASE), "--executor", "ray", "--ray-gpus", "1"], "--ray-gpus"
def c_ray_cpus_more_than_cluster(t, env=None):
    env.setitem(sys.modules, "ray", _fake_ray({"CPU": 2.0}))
    return ["run", _yaml(t, BASE), "--executor", "ray", "--ray-cpus", "64"], "--ray-cpus"


def _fake_ray(resources):
    """A stand-in for Ray that has started a cluster with ``resources`` (no Ray process needed)."""
    ray = types.ModuleType("ray")
    state = {"up": False}
    ray.is_initialized = lambda: state["up"]
    ray.init = lambda **kw: state.update(up=True)
    ray.cluster_resources = lambda: dict(resources)
    ray.remote = lambda f: pytest.fail("no task may be submitted")
    return ray


# ---- ONNX files under profile
def _onnx(path, rank=2, op="Relu", domain=""):
    from onnx import TensorProto, helper

    shape = [1, 8] if rank == 2 else [1, 1, 8, 8]
    node = helper.make_node(op, ["input"], ["out"], domain=domain or None)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, shape)])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    from onnx import save

    save(helper.make_model(graph, opset_imports=opsets), str(path))


def c_onnx_rank_2(t):
    _onnx(t / "m.onnx", rank=2)
    return ["profile", str(t / "m.onnx"), "--repeats", "1"], "rank-2"
def c_onnx_unknown_op(t):
    _onnx(t / "m.onnx", rank=4, op="NoSuchOp", domain="my.domain")
    return ["profile", str(t / "m.onnx"), "--repeats", "1"], "m.onnx"


CASES = [v for k, v in sorted(globals().items()) if k.startswith("c_")]


@pytest.mark.parametrize("case", CASES, ids=lambda f: f.__name__[2:])
def test_hostile_runtime_is_one_line_exit_2_and_changes_nothing(case, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DISTILLAB_NO_DOWNLOAD", "1")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    import inspect

    argv, needle = case(tmp_path, monkeypatch) if "env" in inspect.signature(case).parameters else case(tmp_path)
    assert_refused(argv, needle, tmp_path, capsys)
    assert not torch.distributed.is_initialized()


def test_corpus_size():
    assert len(CASES) >= 30
