"""The submission scripts under the real `cm` CLI: generate and check a tree from recorded runs, the system
description, clear one-line errors; slow: `_quick` and `_submission --round=v6.1` through the whole chain."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import cm_env

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "submission"


def _cm(home: Path, cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["cm", "run", "script", *args], env=cm_env(home), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_generate_then_check_from_recorded_runs(cm_home: Path, tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "full-v31", tmp_path / "runs")
    r = _cm(cm_home, tmp_path, "--tags=generate,mlperf,inference,submission", "--results_dir=runs",
            "--submitter=MyOrg", "--round=v3.1", "--submission_dir=tree")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "tree" / "open" / "MyOrg" / "systems" / "amd-epyc-onnxruntime.json").is_file()
    md = (tmp_path / "tree-summary" / "summary.md").read_text()
    assert "| amd-epyc-onnxruntime | ONNX Runtime 1.32.0 | efficientnet-lite0 | Offline |" in md
    r = _cm(cm_home, tmp_path, "--tags=check,mlperf,inference,submission", "--submission_dir=tree", "--round=v3.1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "our check: no errors, 1 result(s)" in r.stdout + r.stderr
    # a damaged tree fails with the reason
    (tmp_path / "tree" / "open" / "MyOrg" / "results" / "amd-epyc-onnxruntime" / "efficientnet-lite0" / "Offline"
     / "accuracy" / "accuracy.txt").unlink()
    r = _cm(cm_home, tmp_path, "--tags=check,mlperf,inference,submission", "--submission_dir=tree", "--round=v3.1")
    assert r.returncode != 0 and "accuracy/accuracy.txt: missing" in r.stdout + r.stderr


def test_generator_refuses_another_rounds_runs_in_one_line(cm_home: Path, tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "full-v31", tmp_path / "runs")
    r = _cm(cm_home, tmp_path, "--tags=generate,mlperf,inference,submission", "--results_dir=runs",
            "--submitter=MyOrg", "--round=v6.1", "--submission_dir=tree")
    assert r.returncode != 0 and "is a run of round v3.1, not v6.1" in r.stdout + r.stderr
    assert not (tmp_path / "tree").exists()
    r = _cm(cm_home, tmp_path, "--tags=generate,mlperf,inference,submission", "--results_dir=runs")
    assert r.returncode != 0 and "--submitter=MyOrg" in r.stdout + r.stderr


def test_sut_description_with_overrides(cm_home: Path, tmp_path: Path) -> None:
    (tmp_path / "mine.json").write_text(json.dumps({"cooling": "liquid", "hw_notes": "2 vCPUs"}))
    r = _cm(cm_home, tmp_path, "--tags=get,mlperf,inference,sut,description", "--submitter=MyOrg",
            "--system_name=my-box", "--sut_json=mine.json", "--system_type=datacenter")
    assert r.returncode == 0, r.stdout + r.stderr
    desc = json.loads((tmp_path / "my-box.json").read_text())
    assert len(desc) == 35 and desc["cooling"] == "liquid" and desc["system_type"] == "datacenter"
    assert desc["framework"].startswith("ONNX Runtime ") and desc["accelerators_per_node"] == "0"
    (tmp_path / "bad.json").write_text(json.dumps({"colling": "air"}))
    r = _cm(cm_home, tmp_path, "--tags=get,mlperf,inference,sut,description", "--submitter=MyOrg",
            "--sut_json=bad.json")
    assert r.returncode != 0 and "unknown field(s) colling" in r.stdout + r.stderr


@pytest.mark.slow
def test_quick_run_to_practice_tree(cm_home: Path, tmp_path: Path) -> None:
    r = _cm(cm_home, tmp_path, "--tags=run-mlperf,inference,_onnxruntime,_quick", "--round=v3.1",
            "--results_dir=res", timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    r = _cm(cm_home, tmp_path, "--tags=generate,mlperf,inference,submission", "--results_dir=res",
            "--submitter=MyOrg", "--round=v3.1", "--allow_test_runs=yes")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "min_duration 1000 ms < 600000 ms" in out and "performance sample count" in out
    csv_rows = (tmp_path / "mlperf-submission-summary" / "summary.csv").read_text().splitlines()
    assert csv_rows[1].endswith(",no")


def test_v61_submission_with_the_sample_asks_for_imagenet(cm_home: Path, tmp_path: Path) -> None:
    r = _cm(cm_home, tmp_path, "--tags=run-mlperf,inference,_onnxruntime,_submission", "--round=v6.1",
            "--results_dir=res", timeout=1200)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "--imagenet_path" in out and "50,000" in out
    assert "LoadGen" not in out and "get-ml-model" not in out  # stopped at once, before any dependency ran
