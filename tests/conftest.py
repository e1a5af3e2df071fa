"""Shared pytest fixtures and helpers."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPTS_DIR = REPO_ROOT / "script"


def load_script_module(script: str, module: str = "customize") -> ModuleType:
    """Import `script/<script>/<module>.py` by path, with its folder on sys.path (as the engine does)."""
    folder = SCRIPTS_DIR / script
    sys.path.insert(0, str(folder))
    try:
        name = f"_test_{script.replace('-', '_')}_{module}"
        spec = importlib.util.spec_from_file_location(name, folder / f"{module}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # dataclasses look their module up by name
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(folder))
    return mod


@pytest.fixture
def script_module():
    return load_script_module


FIXTURE_REPO = Path(__file__).resolve().parent / "fixtures" / "repo"


def cm_env(home: Path, cache: Path | None = None) -> dict[str, str]:
    """Environment for a `cm` subprocess with its own CM home (and cache)."""
    import os

    env = dict(os.environ)
    env["CM_REPOS"] = str(home)
    env.pop("CM_CACHE_DIR", None)
    if cache is not None:
        env["CM_CACHE_DIR"] = str(cache)
    return env


@pytest.fixture
def cm_home(tmp_path_factory):
    """A temporary CM home with this repository and the fixture repository registered."""
    import subprocess

    home = tmp_path_factory.mktemp("cm-home")
    env = cm_env(home)
    for repo in (REPO_ROOT, FIXTURE_REPO):
        subprocess.run(["cm-register-repo", str(repo)], env=env, check=True, capture_output=True)
    return home


def hook_input(script: str, env: dict, inputs: dict | None = None) -> dict:
    """The dict the engine hands a script's customize.py hooks."""
    return {"env": env, "state": {}, "input": inputs or {}, "meta": {},
            "run_script_input": {"path": str(SCRIPTS_DIR / script)}}


def script_step(script: str, env: dict, inputs: dict | None = None) -> dict:
    """What the engine does: customize.py's checks, then run.py's work in the current folder, its env merged."""
    from cm_mlperf import run_step

    r = load_script_module(script).preprocess(hook_input(script, env, inputs))
    if r["return"]:
        return r
    try:
        new_env, _ = load_script_module(script, "run").main(dict(env))
    except run_step.StepError as e:
        return {"return": 1, "error": str(e)}
    env.update(new_env)
    return {"return": 0}


def wait_for(predicate, timeout: float, what: str) -> None:
    """Poll `predicate` every 50 ms; AssertionError naming `what` after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def process_alive(pid: int) -> bool:
    """Whether a process still runs (a zombie has finished)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def save_onnx(path: Path, name: str, nodes: list, input_shape: list[int], output_shape: list[int],
              arrays: dict, opset: int = 13) -> Path:
    """A float32 ONNX graph with input `x` and output `logits`, its initializers from `arrays`, saved at path."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, output_shape)],
                              [numpy_helper.from_array(a, k) for k, a in arrays.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def blocked_compile_env(path: Path, name: str, size: int, **extra: str) -> dict[str, str]:
    """compile-tvm-model's run-step env for a small ONNX model with input `x` (size x size): NCHWc, 1 thread,
    AVX2 code (runs on any x86-64 test machine with AVX2), plus `extra`."""
    return {"CM_ML_MODEL_FILE_WITH_PATH": str(path), "CM_ML_MODEL_NAME": name, "CM_ML_MODEL_INPUT_NAME": "x",
            "CM_ML_MODEL_IMAGE_HEIGHT": str(size), "CM_ML_MODEL_IMAGE_WIDTH": str(size), "CM_TVM_NUM_THREADS": "1",
            "CM_TVM_MCPU": "x86-64-v3", "CM_TVM_CONV_LAYOUT_USED": "NCHWc", **extra}
