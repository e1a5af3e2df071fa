"""CM's execution modes of the entry point, end to end on the built-in sample under the real `cm` CLI (slow)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, cm_env

pytestmark = pytest.mark.slow

TEST_LABEL = "test run: not a valid MLPerf result; add _full for one"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("cm-home-modes")
    subprocess.run(["cm-register-repo", str(REPO_ROOT)], env=cm_env(home), check=True, capture_output=True)
    return home


def cm_run(home: Path, cwd: Path, *args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    return subprocess.run(["cm", "run", "script", *args], env=cm_env(home), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def summary_of(stdout: str) -> dict:
    run_dir = re.findall(r"\| results\s+\| (\S+)", stdout)[-1]
    assert not (Path(run_dir) / "INCOMPLETE").exists()
    return json.loads((Path(run_dir) / "mlperf-run-summary.json").read_text())


def test_default_is_a_labelled_test_run(home, tmp_path):
    r = cm_run(home, tmp_path, "--tags=run-mlperf,inference,_onnxruntime")
    assert r.returncode == 0, r.stderr[-3000:]
    assert TEST_LABEL in r.stdout
    summary = summary_of(r.stdout)
    assert summary["execution_mode"] == "test" and summary["label"] == TEST_LABEL and summary["quick"] is True
    assert isinstance(summary["dataset_size"], int) and summary["dataset_size"] == 8
    assert isinstance(summary["result"], float) and summary["result"] > 0
    assert summary["framework"].startswith("onnxruntime ")
    perf_dir = Path(summary["performance_dir"])
    user_conf = (perf_dir / "user.conf").read_text()
    assert "min_duration = 1000" in user_conf  # LoadGen's minimums lowered for a test run


def test_find_performance_feeds_the_next_valid_run(home, tmp_path):
    r = cm_run(home, tmp_path, "--tags=run-mlperf,inference,_onnxruntime,_find-performance")
    assert r.returncode == 0, r.stderr[-3000:]
    estimates = json.loads((tmp_path / "mlperf-results" / "find-performance.json").read_text())
    (key, estimate), = estimates.items()
    assert key.endswith("/onnxruntime/efficientnet-lite0/Offline") and estimate["samples_per_second"] > 0
    summary = summary_of(r.stdout)
    assert summary["execution_mode"] == "fast" and summary["accuracy"] == ""  # performance only
    # the next valid run of the same system/backend/model/scenario takes it as target_qps (accuracy only: quick)
    valid = cm_run(home, tmp_path, "--tags=run-mlperf,inference,_onnxruntime,_full", "--mode=accuracy")
    assert valid.returncode == 0, valid.stderr[-3000:]
    assert "from the find-performance run" in valid.stdout
    env = summary_of(valid.stdout)["env"]
    assert float(env["CM_MLPERF_LOADGEN_QPS_ESTIMATE"]) == pytest.approx(estimate["samples_per_second"])


def test_invalid_valid_run_exits_non_zero_with_loadgens_reason(home, tmp_path):
    # a target far below the real throughput: LoadGen's one Offline query ends long before 600 s
    r = cm_run(home, tmp_path, "--tags=run-mlperf,inference,_onnxruntime,_full,_performance-only",
               "--target_qps=0.001")
    assert r.returncode != 0
    assert "the performance run is INVALID:" in r.stderr
    assert "why INVALID" in r.stdout


def test_invalid_test_run_says_why_and_exits_zero(home, tmp_path):
    r = cm_run(home, tmp_path, "--tags=run-mlperf,inference,_onnxruntime,_singlestream,_performance-only",
               "--min_duration=100", "--min_query_count=8")  # early stopping needs 64 queries
    assert r.returncode == 0, r.stderr[-3000:]
    summary = summary_of(r.stdout)
    assert summary["valid"] is False
    assert "early stopping" in summary["invalid_reason"].lower()
    assert "why INVALID" in r.stdout


def test_interrupted_run_folder_is_marked_incomplete(home, tmp_path):
    # a backend the harness does not have: fails after the run folder was made, before any result
    r = cm_run(home, tmp_path, "--tags=run-mlperf,inference,_onnxruntime", "--env.CM_MLPERF_BACKEND=nosuch")
    assert r.returncode != 0
    (run_dir,) = (tmp_path / "mlperf-results").glob("run-*")
    assert (run_dir / "INCOMPLETE").is_file()
    assert not (run_dir / "mlperf-run-summary.json").exists()


@pytest.mark.skipif(not os.environ.get("CI") and not os.environ.get("RUN_README_TEST"),
                    reason="installs the project into a new virtualenv (about a minute); CI runs it")
def test_readme_first_command_from_a_fresh_clone(tmp_path):
    """The README's first command, as written, in a fresh clone and a fresh virtualenv."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## The two commands", 1)[1]
    first = re.findall(r"```\n(.*?)\n```", section, re.S)[0].strip()
    assert first.startswith("pip install -e . && cm-register-repo && cm run script")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(clone)], check=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = dict(os.environ, CM_REPOS=str(tmp_path / "cm-home"), PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
               VIRTUAL_ENV=str(venv))
    env.pop("CM_CACHE_DIR", None)
    r = subprocess.run(["bash", "-c", first], cwd=clone, env=env, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert TEST_LABEL in r.stdout and "| result " in r.stdout
