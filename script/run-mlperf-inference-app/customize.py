"""run-mlperf-inference-app: choose the results folders before the LoadGen runs, report after them."""
from __future__ import annotations

import json
import os
import re
import time
from typing import Any

from cm_mlperf.parallelism import split_cores

SCENARIOS = {s.lower(): s for s in ("Offline", "SingleStream", "MultiStream", "Server")}
RUN_MODES = {"all": ("yes", "yes"), "performance": ("yes", "no"), "accuracy": ("no", "yes")}
ROUNDS = ("v3.1", "v6.1")
DIVISIONS = ("open", "closed")
CLOSED_MODELS = ("resnet50",)  # the reference model of the image-classification task
# Rounds whose rules require Offline's 24,576-sample minimum in the open division too (today's: closed only).
OFFLINE_MINIMUM_IN_OPEN = ("v3.1",)
RUN_SUMMARY = "mlperf-run-summary.json"
# Present in a run folder until the run has finished and written its summary: an interrupted or failed run
# never passes for a result.
INCOMPLETE_MARKER = "INCOMPLETE"
# find-performance runs record samples/s here (in the results folder); the next valid run of the same system,
# backend, model and scenario takes its target_qps from it.
PERFORMANCE_ESTIMATES = "find-performance.json"
# LoadGen minimums per execution mode (ms, queries) unless the user gives them: test runs are short; SingleStream
# needs 64 queries for early stopping to say VALID. valid runs keep the round's mlperf.conf.
EXECUTION_MODES = {
    "test": {"min_duration": "1000", "min_query_count": {"SingleStream": "64", "*": "8"}},
    "fast": {"min_duration": "10000", "min_query_count": {"*": "1"}},
    "valid": {},
}
TEST_LABEL = "test run: not a valid MLPerf result; add _full for one"
# Facts a submission needs later (system description, measurements JSON): saved with each run.
RECORDED_ENV = re.compile(r"^CM_(HOST_|ML_MODEL_|TVM_|MLPERF_|DATASET_)")


def _error(message: str) -> dict[str, Any]:
    return {"return": 1, "error": message}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "system"


def _new_run_dir(base: str) -> str:
    """The next free run-NNN under base: a new run never overwrites an earlier one."""
    os.makedirs(base, exist_ok=True)
    numbers = [int(m.group(1)) for n in os.listdir(base) if (m := re.fullmatch(r"run-(\d+)", n))]
    n = max(numbers, default=0) + 1
    while True:
        path = os.path.join(base, f"run-{n:03d}")
        try:
            os.mkdir(path)  # atomic: two concurrent runs never get the same folder
            return path
        except FileExistsError:
            n += 1


def _estimate_key(env: dict[str, Any], scenario: str) -> str:
    return "/".join((env["CM_MLPERF_SYSTEM_NAME"], env["CM_MLPERF_BACKEND"], env["CM_ML_MODEL_NAME"], scenario))


def _apply_execution_mode(env: dict[str, Any], mode: str, scenario: str) -> None:
    settings = EXECUTION_MODES[mode]
    if settings and not env.get("CM_MLPERF_LOADGEN_MIN_DURATION"):
        env["CM_MLPERF_LOADGEN_MIN_DURATION"] = settings["min_duration"]
    if settings and not env.get("CM_MLPERF_LOADGEN_MIN_QUERY_COUNT"):
        counts = settings["min_query_count"]
        env["CM_MLPERF_LOADGEN_MIN_QUERY_COUNT"] = counts.get(scenario, counts["*"])
    if mode == "fast":
        env["CM_MLPERF_RUN_MODE"] = "performance"
    if mode == "valid" and not env.get("CM_MLPERF_LOADGEN_TARGET_QPS") and scenario in ("Offline", "Server"):
        estimates = _read_json(os.path.join(os.path.abspath(env["CM_MLPERF_RESULTS_DIR"]), PERFORMANCE_ESTIMATES))
        found = estimates.get(_estimate_key(env, scenario))
        if found:  # a floor for the harness's own warm-up measurement (a busy moment must not make it INVALID)
            env["CM_MLPERF_LOADGEN_QPS_ESTIMATE"] = str(found["samples_per_second"])
            print(f"samples/s {found['samples_per_second']:.2f} from the find-performance run of {found['date']}")


# Rounds whose rules want the accuracy run over the whole ImageNet validation set (50,000 images).
FULL_DATASET_ROUNDS = ("v6.1",)


def check_inputs(i: dict[str, Any]) -> dict[str, Any]:
    """Before any dependency runs (model conversion, preprocessing, compile): what the env already decides."""
    env = i["env"]
    if env.get("CM_MLPERF_DIVISION", "open").lower() == "closed" and \
            not env.get("CM_MLPERF_MODEL_TAGS", "").startswith("resnet50"):
        return _error("the closed division needs ResNet-50 v1.5 (_resnet50): use --division=open for this model")
    if (env.get("CM_MLPERF_SUBMISSION_RUN") == "yes" and env.get("CM_MLPERF_ROUND") in FULL_DATASET_ROUNDS
            and not env.get("CM_IMAGENET_PATH")):
        return _error(f"--round={env['CM_MLPERF_ROUND']} wants the accuracy run over all 50,000 ImageNet validation "
                      "images: pass --imagenet_path=<ILSVRC2012 val folder> (or use --round=v3.1)")
    return {"return": 0}


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    # Allowed values are checked by the engine from _cm.yaml's input_description before anything runs.
    env = i["env"]
    scenario = SCENARIOS.get(env.get("CM_MLPERF_LOADGEN_SCENARIO", "").lower())
    if scenario is None:
        return _error(f"unknown scenario '{env.get('CM_MLPERF_LOADGEN_SCENARIO')}': "
                      f"use --scenario={', '.join(SCENARIOS.values())}")
    execution_mode = env.get("CM_MLPERF_EXECUTION_MODE", "test")
    if execution_mode not in EXECUTION_MODES:
        return _error(f"unknown execution mode '{execution_mode}': use --execution_mode=test, fast or valid")
    # (the engine checks these inputs first; env can also come from --env or a calling script)
    mode = env.get("CM_MLPERF_RUN_MODE", "all").lower()
    if mode not in RUN_MODES:
        return _error(f"unknown mode '{mode}': use --mode=all, --mode=performance or --mode=accuracy")
    if env.get("CM_MLPERF_ROUND") not in ROUNDS:
        return _error(f"unknown round '{env.get('CM_MLPERF_ROUND')}': use --round={' or --round='.join(ROUNDS)}")
    division = env.get("CM_MLPERF_DIVISION", "open").lower()
    if division not in DIVISIONS:
        return _error(f"unknown division '{division}': use --division=open or --division=closed")
    model = env["CM_ML_MODEL_NAME"]
    if division == "closed" and model not in CLOSED_MODELS:
        return _error(f"{model} is not a closed-division model (closed needs ResNet-50 v1.5): use --division=open")
    env["CM_MLPERF_DIVISION"] = division
    backend = env["CM_MLPERF_BACKEND"]
    system = env.get("CM_MLPERF_SYSTEM_NAME") or f"{_slug(env.get('CM_HOST_CPU_MODEL_NAME', 'cpu'))}-{backend}"
    env["CM_MLPERF_SYSTEM_NAME"] = system
    _apply_execution_mode(env, execution_mode, scenario)
    if (scenario == "Offline" and division == "open" and env["CM_MLPERF_ROUND"] not in OFFLINE_MINIMUM_IN_OPEN
            and not env.get("CM_MLPERF_LOADGEN_MIN_QUERY_COUNT")):
        # the open division of this round has no 24,576-sample Offline minimum: the 600 s duration decides
        env["CM_MLPERF_LOADGEN_MIN_QUERY_COUNT"] = "1"
    mode = env.get("CM_MLPERF_RUN_MODE", "all").lower()
    env["CM_MLPERF_LOADGEN_SCENARIO"] = scenario
    env["CM_MLPERF_SCENARIO_TAG"] = scenario.lower()
    # threads per inference and instances at once, settled here: TVM compiles for those threads (prehook_deps)
    cores = (_int_or_none(env.get("CM_HOST_CPU_PHYSICAL_CORES")) or _int_or_none(env.get("CM_HOST_CPU_TOTAL_CORES"))
             or os.cpu_count() or 1)
    threads, workers = split_cores(scenario, cores, _int_or_none(env.get("CM_MLPERF_NUM_THREADS")) or 0,
                                   _int_or_none(env.get("CM_MLPERF_SUT_WORKERS")) or 0)
    if backend == "mojo-native":  # its harness runs one engine: every core the split gives goes to it
        threads, workers = threads * workers, 1
    env["CM_MLPERF_NUM_THREADS"], env["CM_MLPERF_SUT_WORKERS"] = str(threads), str(workers)
    env["CM_MLPERF_RUN_PERFORMANCE"], env["CM_MLPERF_RUN_ACCURACY"] = RUN_MODES[mode]
    env["CM_MLPERF_QUICK_RUN"] = "yes" if execution_mode != "valid" else "no"

    results_dir = os.path.abspath(env["CM_MLPERF_RESULTS_DIR"])
    if os.path.exists(results_dir) and not os.path.isdir(results_dir):
        return _error(f"--results_dir={env['CM_MLPERF_RESULTS_DIR']}: is a file; give a folder")
    run_dir = _new_run_dir(results_dir)
    with open(os.path.join(run_dir, INCOMPLETE_MARKER), "w", encoding="utf-8") as f:
        f.write("This run did not finish: it is not a result. Its summary is written when it does.\n")
    scenario_dir = os.path.join(run_dir, system, model, scenario)
    env["CM_MLPERF_RUN_DIR"] = run_dir
    env["CM_MLPERF_PERFORMANCE_DIR"] = os.path.join(scenario_dir, "performance", "run_1")
    env["CM_MLPERF_ACCURACY_DIR"] = os.path.join(scenario_dir, "accuracy")
    print(f"MLPerf run ({execution_mode}): {backend} / {model} / {scenario} / {mode}, {workers} instance(s) x "
          f"{threads} thread(s) -> {run_dir}")
    return {"return": 0}


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _accuracy_line(accuracy_dir: str) -> str:
    try:
        with open(os.path.join(accuracy_dir, "accuracy.txt"), encoding="utf-8") as f:
            return f.readline().strip()
    except OSError:
        return ""


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    line = "+" + "-" * (width + 2) + "+" + "-" * (max(len(v) for _, v in rows) + 2) + "+"
    body = [f"| {k:<{width}} | {v:<{len(line) - width - 7}} |" for k, v in rows]
    return "\n".join([line, *body, line])


def _performance_rows(perf: dict[str, Any]) -> list[tuple[str, str]]:
    if not perf:
        return []
    value, unit = perf.get("result"), perf.get("result_unit", "")
    if unit == "ms":
        label = f"latency p{perf.get('latency_percentile') or 90:g} (ms)"
    else:
        label = unit or "result"
    rows = [(label, f"{float(value):.3f}" if value is not None else "n/a")]
    rows.append(("result", perf.get("validity") or "INVALID"))
    rows.append(("samples (performance run)", str(perf.get("samples_processed", ""))))
    return rows


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _record_estimate(env: dict[str, Any], perf: dict[str, Any]) -> None:
    """A find-performance run's samples/s becomes the target_qps of the next valid run (same system/backend/...)."""
    if perf.get("result") is None or perf.get("result_unit") != "samples/s":
        return
    path = os.path.join(os.path.dirname(env["CM_MLPERF_RUN_DIR"]), PERFORMANCE_ESTIMATES)
    estimates = _read_json(path)
    estimates[_estimate_key(env, env["CM_MLPERF_LOADGEN_SCENARIO"])] = {
        "samples_per_second": float(perf["result"]), "date": time.strftime("%Y-%m-%d %H:%M"),
        "run_dir": env["CM_MLPERF_RUN_DIR"]}
    tmp = path + ".part"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(estimates, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
    print(f"find-performance: {float(perf['result']):.2f} samples/s recorded in {path} "
          "(the next _full run of this system, backend, model and scenario uses it as target_qps)")


def _framework(env: dict[str, Any], perf: dict[str, Any]) -> str:
    """The SUT's framework string: the backend, its version and (TVM) whether and how it was tuned."""
    if env["CM_MLPERF_BACKEND"] == "tvm" and env.get("CM_TVM_FRAMEWORK"):
        return env["CM_TVM_FRAMEWORK"]
    version = perf.get("backend_version") or ""
    return f"{env['CM_MLPERF_BACKEND']} {version}".strip()


def _tvm_tuning(env: dict[str, Any]) -> dict[str, Any] | None:
    if env["CM_MLPERF_BACKEND"] != "tvm":
        return None
    return {"tuned": env.get("CM_TVM_TUNED") == "yes", "database": env.get("CM_TVM_TUNING_DB_USED") or None,
            "source": env.get("CM_TVM_TUNING_DB_SOURCE") or None, "note": env.get("CM_TVM_TUNING_DB_NOTE") or None,
            "conv_layout": env.get("CM_TVM_CONV_LAYOUT_USED") or None}


def postprocess(i: dict[str, Any]) -> dict[str, Any]:
    env, state = i["env"], i["state"]
    execution_mode = env.get("CM_MLPERF_EXECUTION_MODE", "test")
    perf = _read_json(os.path.join(env["CM_MLPERF_PERFORMANCE_DIR"], "harness_result.json")) \
        if env.get("CM_MLPERF_RUN_PERFORMANCE") == "yes" else {}
    accuracy = _accuracy_line(env["CM_MLPERF_ACCURACY_DIR"]) if env.get("CM_MLPERF_RUN_ACCURACY") == "yes" else ""
    valid = bool(perf.get("valid")) if perf else None
    invalid_reason = "" if valid or not perf else (perf.get("invalid_reason") or "see mlperf_log_summary.txt")
    summary = {
        "backend": env["CM_MLPERF_BACKEND"], "model": env["CM_ML_MODEL_NAME"],
        "scenario": env["CM_MLPERF_LOADGEN_SCENARIO"], "round": env["CM_MLPERF_ROUND"],
        "division": env["CM_MLPERF_DIVISION"], "system": env["CM_MLPERF_SYSTEM_NAME"],
        "execution_mode": execution_mode,
        "quick": execution_mode != "valid",
        "label": TEST_LABEL if execution_mode != "valid" else "valid run: the round's full settings",
        "dataset": env.get("CM_DATASET_NAME", ""), "dataset_size": _int_or_none(env.get("CM_DATASET_SIZE")),
        "performance": perf,
        "result": float(perf["result"]) if perf.get("result") is not None else None,
        "result_unit": perf.get("result_unit") or None,
        "valid": valid, "invalid_reason": invalid_reason or None,
        "framework": _framework(env, perf),
        "tvm_tuning": _tvm_tuning(env),
        "accuracy": accuracy,
        "accuracy_top1": float(env["CM_MLPERF_ACCURACY_TOP1"]) if env.get("CM_MLPERF_ACCURACY_TOP1") else None,
        "run_dir": env["CM_MLPERF_RUN_DIR"],
        "performance_dir": env["CM_MLPERF_PERFORMANCE_DIR"] if perf else "",
        "accuracy_dir": env["CM_MLPERF_ACCURACY_DIR"] if accuracy else "",
        "env": {k: v for k, v in sorted(env.items()) if RECORDED_ENV.match(k) and isinstance(v, str)},
    }
    with open(os.path.join(env["CM_MLPERF_RUN_DIR"], RUN_SUMMARY), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    state["mlperf_inference_results"] = {k: v for k, v in summary.items() if k != "env"}
    if perf:
        env["CM_MLPERF_RESULT_VALID"] = "yes" if valid else "no"
        env["CM_MLPERF_RESULT_VALUE"] = "" if summary["result"] is None else str(summary["result"])
    if execution_mode == "fast":
        _record_estimate(env, perf)

    rows = [("backend", summary["backend"]), ("model", summary["model"]), ("scenario", summary["scenario"]),
            ("framework", summary["framework"]),
            ("run", TEST_LABEL if execution_mode != "valid" else "valid (the round's full settings)"),
            ("dataset", f"{summary['dataset']} ({summary['dataset_size']} images)")]
    rows += _performance_rows(perf)
    if invalid_reason:
        rows.append(("why INVALID", invalid_reason))
    if accuracy:
        rows.append(("accuracy (top-1)", accuracy))
    rows.append(("results", env["CM_MLPERF_RUN_DIR"]))
    print("\n" + _table(rows))
    os.remove(os.path.join(env["CM_MLPERF_RUN_DIR"], INCOMPLETE_MARKER))  # finished: a result (valid or not)
    if perf and not valid and execution_mode == "valid":
        return _error(f"the performance run is INVALID: {invalid_reason} (logs: {env['CM_MLPERF_PERFORMANCE_DIR']})")
    return {"return": 0}
