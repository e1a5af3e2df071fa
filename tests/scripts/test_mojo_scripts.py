"""get-mojo, build-mojo-backend, the native harness and `cm run script --tags=run-mlperf,inference,_mojo[-native]`."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cm_mlperf.loadgen import rounds
from cm_mlperf.mojo import native, toolchain
from conftest import REPO_ROOT, SCRIPTS_DIR, cm_env

needs_mojo = pytest.mark.skipif(not toolchain.find_mojo(), reason="the Mojo toolchain is not installed "
                                                                   "(pip install '.[mojo]')")


@pytest.mark.parametrize("system,machine", [("Windows", "AMD64"), ("Darwin", "x86_64"), ("Linux", "riscv64")])
def test_unsupported_platform_is_one_clear_line(system, machine):
    with pytest.raises(toolchain.MojoToolchainError) as e:
        toolchain.check_platform(system, machine)
    msg = str(e.value)
    assert "\n" not in msg and f"{system} {machine}" in msg and "_onnxruntime" in msg


def test_supported_platforms_pass():
    toolchain.check_platform("Linux", "x86_64")
    toolchain.check_platform("Darwin", "arm64")


@needs_mojo
def test_mojo_version_is_read():
    version, line = toolchain.mojo_version(toolchain.find_mojo())
    assert version.count(".") >= 1 and tuple(int(p) for p in version.split(".")[:2]) >= (1, 2)
    assert line.startswith("Mojo ")


def test_mojo_version_too_old(tmp_path):
    fake = tmp_path / "mojo"
    fake.write_text("#!/bin/sh\necho 'Mojo 1.1.3 (abc)'\n")
    fake.chmod(0o755)
    with pytest.raises(toolchain.MojoToolchainError, match="older than 1.2"):
        toolchain.mojo_version(str(fake))


def test_native_conf_files_match_the_python_harness(tmp_path):
    """Both harnesses take the rounds' mlperf.conf from cm_mlperf.loadgen: one copy, the same files."""
    assert not list(SCRIPTS_DIR.glob("app-mlperf-inference-*/**/mlperf.conf"))
    for rnd in ("v3.1", "v6.1"):
        s = native.NativeSettings(scenario="Offline", mode="performance", onnx_path="m.onnx", round=rnd.lstrip("v"),
                                  dataset_path=str(tmp_path), output_dir=str(tmp_path / rnd))
        native.write_settings(s)
        assert s.round == rnd  # normalised, as the Python harness does
        ours, theirs = Path(s.mlperf_conf), rounds.ROUNDS[rnd].conf_path
        assert ours.read_bytes() == theirs.read_bytes()


def test_native_settings_refuse_bad_values(tmp_path):
    base = dict(onnx_path="m.onnx", dataset_path=str(tmp_path), output_dir=str(tmp_path / "out"),
                mlperf_conf=str(rounds.ROUNDS["v6.1"].conf_path))
    with pytest.raises(ValueError, match="unknown scenario 'Batch'"):
        native.write_settings(native.NativeSettings(scenario="Batch", mode="performance", **base))
    with pytest.raises(ValueError, match="unknown MLPerf round"):
        native.write_settings(native.NativeSettings(scenario="Offline", mode="accuracy", round="v2.0", **base))
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_user_conf_text():
    s = native.NativeSettings(scenario="Offline", mode="performance", onnx_path="", dataset_path="", output_dir="",
                              target_qps=55.5, min_duration_ms=1000, min_query_count=1)
    text = native.user_conf_text(s, 8)
    assert "resnet50.Offline.target_qps = 55.5" in text and "resnet50.Offline.min_duration = 1000" in text
    assert "resnet50.Offline.performance_sample_count_override = 8" in text


# ------------------------------------------------------------------------------------------------ end to end


def _cm(home: Path, cwd: Path, *args: str) -> dict:
    env = cm_env(home)
    proc = subprocess.run(["cm", "run", "script", *args, "--quiet", "--out=json"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@needs_mojo
@pytest.mark.slow
def test_build_mojo_backend_is_cached(cm_home, tmp_path):
    first = _cm(cm_home, tmp_path, "--tags=build,mojo-backend")
    lib = first["new_env"]["CM_MOJO_BACKEND_LIB"]
    exe = first["new_env"]["CM_MOJO_NATIVE_HARNESS"]
    assert Path(lib).is_file() and Path(exe).is_file()
    second = _cm(cm_home, tmp_path, "--tags=build,mojo-backend")
    assert second["new_env"]["CM_MOJO_BACKEND_LIB"] == lib  # a hit: same entry


def _results(out: dict) -> dict:
    return out["new_state"]["mlperf_inference_results"]


@needs_mojo
@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["offline", "singlestream", "multistream", "server"])
def test_run_mlperf_inference_mojo_all_scenarios(cm_home, tmp_path, scenario):
    """The default benchmark with the mojo backend, both modes, every scenario; top-1 the same as onnxruntime."""
    out = _results(_cm(cm_home, tmp_path, f"--tags=run-mlperf,inference,_mojo,_{scenario}"))
    assert out["framework"].startswith("mojo ") and "our kernels" in out["framework"]
    assert out["result"] and out["result"] > 0
    ort = _results(_cm(cm_home, tmp_path, f"--tags=run-mlperf,inference,_onnxruntime,_{scenario}",
                       "--mode=accuracy"))
    assert out["accuracy"] == ort["accuracy"]
    if scenario == "offline":
        _same_predictions(Path(out["accuracy_dir"]), Path(ort["accuracy_dir"]))


@needs_mojo
@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["offline", "singlestream"])
def test_run_mlperf_inference_mojo_native(cm_home, tmp_path, scenario):
    """The Mojo program as the harness: same logs, same accuracy, same predictions per image as the mojo backend."""
    out = _results(_cm(cm_home, tmp_path, f"--tags=run-mlperf,inference,_mojo-native,_{scenario}"))
    assert out["framework"].startswith("mojo-native ")
    perf = Path(out["performance_dir"])
    for name in ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "user.conf", "mlperf.conf"):
        assert (perf / name).is_file(), name
    ort = _results(_cm(cm_home, tmp_path, f"--tags=run-mlperf,inference,_onnxruntime,_{scenario}",
                       "--mode=accuracy"))
    assert out["accuracy"] == ort["accuracy"]
    _same_predictions(Path(out["accuracy_dir"]), Path(ort["accuracy_dir"]))


def _same_predictions(a: Path, b: Path) -> None:
    """The same class for every image (LoadGen's accuracy logs: one float32 class index per sample)."""
    def by_index(folder: Path) -> dict[int, float]:
        entries = json.loads((folder / "mlperf_log_accuracy.json").read_text())
        return {e["qsl_idx"]: float(np.frombuffer(bytes.fromhex(e["data"]), np.float32)[0]) for e in entries}
    pa, pb = by_index(a), by_index(b)
    assert pa and pa == pb


def test_challenge_readme_names_the_commands():
    text = (REPO_ROOT / "challenge" / "mlperf-inference-mojo" / "README.md").read_text()
    for cmd in ("--tags=run-mlperf,inference,_mojo", "_mojo-native", "generate,mlperf,inference,submission"):
        assert cmd in text
    assert shutil.which("cm") is not None


def test_get_mojo_without_toolchain_and_install_no(monkeypatch, script_module):
    run = script_module("get-mojo", "run")
    monkeypatch.setattr(toolchain, "find_mojo", lambda: "")
    monkeypatch.setattr(toolchain, "install_mojo", lambda: pytest.fail("must not install with --install=no"))
    from cm_mlperf import run_step

    with pytest.raises(run_step.StepError, match="--install=no: pip install"):
        run.main({"CM_MOJO_INSTALL": "no"})


def test_get_mojo_installs_when_missing(monkeypatch, script_module, tmp_path):
    """Missing toolchain: pip install is called, then the driver found is the one reported."""
    run = script_module("get-mojo", "run")
    fake = tmp_path / "mojo"
    fake.write_text("#!/bin/sh\necho 'Mojo 1.2.0 (2016d0cd)'\n")
    fake.chmod(0o755)
    installed = []
    monkeypatch.setattr(toolchain, "find_mojo", lambda: str(fake) if installed else "")
    monkeypatch.setattr(toolchain, "install_mojo", lambda: installed.append(True))
    env, _ = run.main({"CM_MOJO_INSTALL": "yes"})
    assert installed and env["CM_MOJO_BIN"] == str(fake) and env["CM_MOJO_VERSION"] == "1.2.0"
