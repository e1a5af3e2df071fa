"""run-mlperf-inference-app's hooks: settings checks, results folders, the results table."""
from __future__ import annotations

import json

import pytest


@pytest.fixture
def app(script_module):
    return script_module("run-mlperf-inference-app")


def base_env(tmp_path, **extra):
    env = {"CM_MLPERF_LOADGEN_SCENARIO": "singlestream", "CM_MLPERF_RUN_MODE": "all", "CM_MLPERF_ROUND": "v6.1",
           "CM_MLPERF_BACKEND": "tvm", "CM_ML_MODEL_NAME": "efficientnet-lite0",
           "CM_HOST_CPU_MODEL_NAME": "AMD EPYC 9654 96-Core Processor",
           "CM_MLPERF_RESULTS_DIR": str(tmp_path / "results")}
    env.update(extra)
    return env


def test_preprocess_normalises_settings_and_makes_new_run_folders(app, tmp_path):
    env = base_env(tmp_path)
    assert app.preprocess({"env": env, "state": {}})["return"] == 0
    assert env["CM_MLPERF_LOADGEN_SCENARIO"] == "SingleStream" and env["CM_MLPERF_SCENARIO_TAG"] == "singlestream"
    assert (env["CM_MLPERF_RUN_PERFORMANCE"], env["CM_MLPERF_RUN_ACCURACY"]) == ("yes", "yes")
    assert env["CM_MLPERF_SYSTEM_NAME"] == "amd-epyc-9654-96-core-processor-tvm"
    assert env["CM_MLPERF_PERFORMANCE_DIR"] == str(
        tmp_path / "results" / "run-001" / env["CM_MLPERF_SYSTEM_NAME"] / "efficientnet-lite0" / "SingleStream"
        / "performance" / "run_1")
    second = base_env(tmp_path, CM_MLPERF_RUN_MODE="accuracy")
    app.preprocess({"env": second, "state": {}})
    assert second["CM_MLPERF_RUN_DIR"].endswith("run-002")  # never overwrites run-001
    assert (second["CM_MLPERF_RUN_PERFORMANCE"], second["CM_MLPERF_RUN_ACCURACY"]) == ("no", "yes")


@pytest.mark.parametrize("backend, scenario, extra, expected", [
    ("tvm", "offline", {}, ("1", "4")),  # one single-threaded instance per core; TVM compiles for 1 thread
    ("onnxruntime", "server", {}, ("1", "4")),
    ("tvm", "singlestream", {}, ("4", "1")),
    ("tvm", "offline", {"CM_MLPERF_NUM_THREADS": "2"}, ("2", "2")),
    ("onnxruntime", "offline", {"CM_MLPERF_SUT_WORKERS": "1"}, ("4", "1")),
    ("mojo-native", "offline", {}, ("4", "1")),  # one engine in that harness: all the cores on it
])
def test_preprocess_shares_the_cores_out_before_the_compile(app, tmp_path, backend, scenario, extra, expected):
    env = base_env(tmp_path, CM_MLPERF_BACKEND=backend, CM_MLPERF_LOADGEN_SCENARIO=scenario,
                   CM_HOST_CPU_PHYSICAL_CORES="4", CM_HOST_CPU_TOTAL_CORES="8", **extra)
    assert app.preprocess({"env": env, "state": {}})["return"] == 0
    assert (env["CM_MLPERF_NUM_THREADS"], env["CM_MLPERF_SUT_WORKERS"]) == expected


@pytest.mark.parametrize("key,value,message", [
    ("CM_MLPERF_LOADGEN_SCENARIO", "Batch", "unknown scenario 'Batch'"),
    ("CM_MLPERF_RUN_MODE", "both", "unknown mode 'both'"),
    ("CM_MLPERF_ROUND", "v4.0", "unknown round 'v4.0'"),
    ("CM_MLPERF_DIVISION", "closed", "efficientnet-lite0 is not a closed-division model"),
    ("CM_MLPERF_DIVISION", "premier", "unknown division 'premier'"),
])
def test_preprocess_rejects_bad_settings(app, tmp_path, key, value, message):
    r = app.preprocess({"env": base_env(tmp_path, **{key: value}), "state": {}})
    assert r["return"] == 1 and message in r["error"]
    assert not (tmp_path / "results").exists()  # nothing half-made


@pytest.mark.parametrize("round_name,division,scenario,expected", [
    ("v6.1", "open", "Offline", "1"),  # no 24,576-sample minimum in today's open division
    ("v3.1", "open", "Offline", None),  # v3.1 requires it in both divisions
    ("v6.1", "open", "SingleStream", None),
])
def test_offline_sample_minimum_follows_the_rules(app, tmp_path, round_name, division, scenario, expected):
    env = base_env(tmp_path, CM_MLPERF_ROUND=round_name, CM_MLPERF_DIVISION=division,
                   CM_MLPERF_LOADGEN_SCENARIO=scenario, CM_MLPERF_EXECUTION_MODE="valid")
    assert app.preprocess({"env": env, "state": {}})["return"] == 0
    assert env.get("CM_MLPERF_LOADGEN_MIN_QUERY_COUNT") == expected


@pytest.mark.parametrize("mode,scenario,duration,queries,quick", [
    ("test", "Offline", "1000", "8", "yes"),
    ("test", "SingleStream", "1000", "64", "yes"),  # early stopping's minimum: a test run can be VALID
    ("fast", "Offline", "10000", "1", "yes"),
    ("valid", "SingleStream", None, None, "no"),  # the round's mlperf.conf decides
])
def test_execution_modes_set_loadgen_minimums(app, tmp_path, mode, scenario, duration, queries, quick):
    env = base_env(tmp_path, CM_MLPERF_EXECUTION_MODE=mode, CM_MLPERF_LOADGEN_SCENARIO=scenario)
    assert app.preprocess({"env": env, "state": {}})["return"] == 0
    assert env.get("CM_MLPERF_LOADGEN_MIN_DURATION") == duration
    assert env.get("CM_MLPERF_LOADGEN_MIN_QUERY_COUNT") == queries
    assert env["CM_MLPERF_QUICK_RUN"] == quick
    assert (tmp_path / "results" / "run-001" / "INCOMPLETE").is_file()  # until postprocess has written the summary


def test_postprocess_reports_table_and_state(app, tmp_path, capsys):
    env = base_env(tmp_path, CM_MLPERF_LOADGEN_SCENARIO="Offline")
    app.preprocess({"env": env, "state": {}})
    perf_dir = tmp_path / env["CM_MLPERF_PERFORMANCE_DIR"]
    perf_dir.mkdir(parents=True)
    (perf_dir / "harness_result.json").write_text(json.dumps(
        {"scenario": "Offline", "result": 12.5, "result_unit": "samples/s", "validity": "VALID", "valid": True,
         "samples_processed": 100}))
    acc_dir = tmp_path / env["CM_MLPERF_ACCURACY_DIR"]
    acc_dir.mkdir(parents=True)
    (acc_dir / "accuracy.txt").write_text("accuracy=75.000%, good=6, total=8\nhash=abc\n")
    env["CM_MLPERF_ACCURACY_TOP1"] = "75.0"
    state: dict = {}
    assert app.postprocess({"env": env, "state": state})["return"] == 0
    out = capsys.readouterr().out
    assert "| samples/s" in out and "12.500" in out and "VALID" in out and "accuracy=75.000%" in out
    results = state["mlperf_inference_results"]
    assert results["accuracy_top1"] == 75.0 and results["performance"]["result"] == 12.5
    summary = json.loads((tmp_path / env["CM_MLPERF_RUN_DIR"] / "mlperf-run-summary.json").read_text())
    assert summary["env"]["CM_ML_MODEL_NAME"] == "efficientnet-lite0"


@pytest.mark.parametrize("extra,message", [
    ({"CM_MLPERF_DIVISION": "closed", "CM_MLPERF_MODEL_TAGS": "efficientnet-lite0"}, "closed division needs ResNet-50"),
    ({"CM_MLPERF_SUBMISSION_RUN": "yes", "CM_MLPERF_ROUND": "v6.1"}, "pass --imagenet_path="),
])
def test_check_inputs_fails_before_any_dependency(app, tmp_path, extra, message):
    r = app.check_inputs({"env": base_env(tmp_path, **extra)})
    assert r["return"] == 1 and message in r["error"]
    ok = base_env(tmp_path, CM_MLPERF_SUBMISSION_RUN="yes", CM_MLPERF_ROUND="v3.1")
    assert app.check_inputs({"env": ok})["return"] == 0
