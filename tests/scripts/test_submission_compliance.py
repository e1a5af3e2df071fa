"""Compliance verification (TEST01, TEST04, TEST05) on recorded logs of real LoadGen runs: passing and failing."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cm_mlperf.submission import compliance

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "submission"
RESULT = FIXTURES / "quick-v31" / "run-001" / "amd-epyc-onnxruntime" / "efficientnet-lite0" / "Offline"
RUNS = FIXTURES / "compliance-runs"


def test_audit_configs_are_mlperfs() -> None:
    assert "*.*.accuracy_log_sampling_target = 4096" in compliance.audit_config("TEST01")
    assert "*.Offline.performance_issue_same_index = 3" in compliance.audit_config("TEST04")
    assert "*.*.test05 = 1" in compliance.audit_config("TEST05")
    with pytest.raises(ValueError, match="TEST01, TEST04, TEST05"):
        compliance.audit_config("TEST99")


def test_recorded_runs_used_their_audit_config() -> None:
    for test in ("TEST01", "TEST04"):
        assert "Found Audit Config file (audit.config)" in (RUNS / test / "mlperf_log_detail.txt").read_text()


def test_test01_accuracy_passes_when_responses_match() -> None:
    v = compliance.verify_accuracy(RESULT / "accuracy" / "mlperf_log_accuracy.json",
                                   RUNS / "TEST01" / "mlperf_log_accuracy.json")
    assert v.passed and v.text.rstrip().endswith("TEST PASS")
    assert "num_perf_log_data_mismatch = 0" in v.text


def test_test01_accuracy_fails_when_a_response_differs(tmp_path: Path) -> None:
    entries = json.loads((RUNS / "TEST01" / "mlperf_log_accuracy.json").read_text())
    entries[0]["data"] = "0000803F"  # class 1.0 (float32) instead of what the model answered
    bad = tmp_path / "mlperf_log_accuracy.json"
    bad.write_text(json.dumps(entries))
    v = compliance.verify_accuracy(RESULT / "accuracy" / "mlperf_log_accuracy.json", bad)
    assert not v.passed and "TEST FAIL" in v.text and "num_perf_log_data_mismatch = 1" in v.text


def _summary_with_score(tmp_path: Path, source: Path, score: float) -> Path:
    lines = []
    for line in source.read_text().splitlines():
        if line.startswith("Samples per second"):
            line = f"Samples per second: {score}"
        lines.append(line)
    out = tmp_path / f"summary-{score}.txt"
    out.write_text("\n".join(lines) + "\n")
    return out


def test_performance_rules_per_test(tmp_path: Path) -> None:
    ref = _summary_with_score(tmp_path, RESULT / "performance" / "run_1" / "mlperf_log_summary.txt", 100.0)
    near, fast, slow = (_summary_with_score(tmp_path, RUNS / "TEST04" / "mlperf_log_summary.txt", s)
                        for s in (104.0, 115.0, 93.0))
    assert compliance.verify_performance("TEST01", ref, near).passed
    assert not compliance.verify_performance("TEST01", ref, fast).passed  # more than 10 % off
    assert compliance.verify_performance("TEST04", ref, slow).passed
    failed = compliance.verify_performance("TEST04", ref, fast)  # same sample 15 % faster: caching
    assert not failed.passed and "TEST FAIL: Test score invalid" in failed.text
    assert not compliance.verify_performance("TEST05", ref, slow).passed  # 7 % worse than 5 % allows
    assert compliance.verify_performance("TEST05", ref, near).passed


def test_invalid_test_run_fails(tmp_path: Path) -> None:
    bad = tmp_path / "s.txt"
    bad.write_text((RUNS / "TEST04" / "mlperf_log_summary.txt").read_text().replace("Result is : VALID",
                                                                                     "Result is : INVALID"))
    v = compliance.verify_performance("TEST04", RESULT / "performance" / "run_1" / "mlperf_log_summary.txt", bad)
    assert not v.passed and "TEST FAIL: Test results are invalid" in v.text


def test_verify_test_lays_out_the_folders_reviewers_want(tmp_path: Path) -> None:
    result = tmp_path / "Offline"
    shutil.copytree(RESULT, result)
    status = compliance.verify_test("TEST01", result, RUNS / "TEST01", result / "compliance")
    t01 = result / "compliance" / "TEST01"
    assert status == {"performance": False, "accuracy": True}  # recorded: 15.6 vs 47.3 samples/s on shared cores
    assert (t01 / "verify_accuracy.txt").read_text().rstrip().endswith("TEST PASS")
    assert "TEST FAIL" in (t01 / "verify_performance.txt").read_text()
    assert sorted(p.name for p in (t01 / "performance" / "run_1").iterdir()) == \
        ["mlperf_log_detail.txt", "mlperf_log_summary.txt"]
    assert (t01 / "accuracy" / "mlperf_log_accuracy.json").is_file()
    status = compliance.verify_test("TEST04", result, RUNS / "TEST04", result / "compliance")
    assert status == {"performance": True}
    assert not (result / "compliance" / "TEST04" / "accuracy").exists()


def test_compliance_script_hooks_on_recorded_runs(script_module, tmp_path: Path) -> None:
    hooks = script_module("run-mlperf-inference-compliance")
    result = tmp_path / "Offline"
    shutil.copytree(RESULT, result)
    env = {"CM_MLPERF_ROUND": "v3.1", "CM_MLPERF_PERFORMANCE_DIR": str(result / "performance" / "run_1"),
           "CM_MLPERF_COMPLIANCE_TESTS": "TEST04"}
    assert hooks.preprocess({"env": env, "state": {}}) == {"return": 0}
    assert env["CM_MLPERF_COMPLIANCE_RUN_TEST04"] == "yes" and env["CM_MLPERF_COMPLIANCE_RUN_TEST01"] == "no"
    assert "performance_issue_same = 1" in Path(env["CM_MLPERF_COMPLIANCE_TEST04_AUDIT"]).read_text()
    assert env["CM_MLPERF_LOADGEN_TARGET_QPS"] == "50.563"  # the result's own target_qps
    for name in ("mlperf_log_summary.txt", "mlperf_log_detail.txt"):  # what the harness run would leave
        shutil.copy(RUNS / "TEST04" / name, env["CM_MLPERF_COMPLIANCE_TEST04_DIR"])
    state: dict = {}
    assert hooks.postprocess({"env": env, "state": state}) == {"return": 0}
    assert state["mlperf_compliance"] == {"TEST04": {"performance": True}}
    assert (result / "compliance" / "TEST04" / "verify_performance.txt").is_file()


def test_compliance_script_fails_on_a_failed_test_and_bad_input(script_module, tmp_path: Path) -> None:
    hooks = script_module("run-mlperf-inference-compliance")
    result = tmp_path / "Offline"
    shutil.copytree(RESULT, result)
    env = {"CM_MLPERF_ROUND": "v3.1", "CM_MLPERF_COMPLIANCE_RESULT_DIR": str(result),
           "CM_MLPERF_COMPLIANCE_TESTS": "TEST01"}
    assert hooks.preprocess({"env": env, "state": {}}) == {"return": 0}
    for name in ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "mlperf_log_accuracy.json"):
        shutil.copy(RUNS / "TEST01" / name, env["CM_MLPERF_COMPLIANCE_TEST01_DIR"])
    out = hooks.postprocess({"env": env, "state": {}})
    assert out["return"] == 1 and "compliance failed: TEST01 performance" in out["error"]
    bad = hooks.preprocess({"env": {"CM_MLPERF_ROUND": "v6.1", "CM_MLPERF_COMPLIANCE_RESULT_DIR": str(result),
                                    "CM_MLPERF_COMPLIANCE_TESTS": "TEST05"}, "state": {}})
    assert bad["return"] == 1 and "--tests=TEST05: round v6.1 has TEST01, TEST04" in bad["error"]
