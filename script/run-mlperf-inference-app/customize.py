"""run-mlperf-inference-app: choose the results folders before the LoadGen runs, report after them."""
from __future__ import annotations

import json
import os
import re
from typing import Any

SCENARIOS = {s.lower(): s for s in ("Offline", "SingleStream", "MultiStream", "Server")}
RUN_MODES = {"all": ("yes", "yes"), "performance": ("yes", "no"), "accuracy": ("no", "yes")}
ROUNDS = ("v3.1", "v6.1")
DIVISIONS = ("open", "closed")
CLOSED_MODELS = ("resnet50",)  # the reference model of the image-classification task
# Rounds whose rules require Offline's 24,576-sample minimum in the open division too (today's: closed only).
OFFLINE_MINIMUM_IN_OPEN = ("v3.1",)
RUN_SUMMARY = "mlperf-run-summary.json"
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


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    env = i["env"]
    scenario = SCENARIOS.get(env.get("CM_MLPERF_LOADGEN_SCENARIO", "").lower())
    if scenario is None:
        return _error(f"unknown scenario '{env.get('CM_MLPERF_LOADGEN_SCENARIO')}': "
                      f"use --scenario={', '.join(SCENARIOS.values())}")
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
    if (scenario == "Offline" and division == "open" and env["CM_MLPERF_ROUND"] not in OFFLINE_MINIMUM_IN_OPEN
            and not env.get("CM_MLPERF_LOADGEN_MIN_QUERY_COUNT")):
        # the open division of this round has no 24,576-sample Offline minimum: the 600 s duration decides
        env["CM_MLPERF_LOADGEN_MIN_QUERY_COUNT"] = "1"
    env["CM_MLPERF_LOADGEN_SCENARIO"] = scenario
    env["CM_MLPERF_SCENARIO_TAG"] = scenario.lower()
    env["CM_MLPERF_RUN_PERFORMANCE"], env["CM_MLPERF_RUN_ACCURACY"] = RUN_MODES[mode]

    backend = env["CM_MLPERF_BACKEND"]
    system = env.get("CM_MLPERF_SYSTEM_NAME") or f"{_slug(env.get('CM_HOST_CPU_MODEL_NAME', 'cpu'))}-{backend}"
    env["CM_MLPERF_SYSTEM_NAME"] = system
    run_dir = _new_run_dir(os.path.abspath(env["CM_MLPERF_RESULTS_DIR"]))
    scenario_dir = os.path.join(run_dir, system, model, scenario)
    env["CM_MLPERF_RUN_DIR"] = run_dir
    env["CM_MLPERF_PERFORMANCE_DIR"] = os.path.join(scenario_dir, "performance", "run_1")
    env["CM_MLPERF_ACCURACY_DIR"] = os.path.join(scenario_dir, "accuracy")
    print(f"MLPerf run: {backend} / {model} / {scenario} / {mode} -> {run_dir}")
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


def postprocess(i: dict[str, Any]) -> dict[str, Any]:
    env, state = i["env"], i["state"]
    perf = _read_json(os.path.join(env["CM_MLPERF_PERFORMANCE_DIR"], "harness_result.json")) \
        if env.get("CM_MLPERF_RUN_PERFORMANCE") == "yes" else {}
    accuracy = _accuracy_line(env["CM_MLPERF_ACCURACY_DIR"]) if env.get("CM_MLPERF_RUN_ACCURACY") == "yes" else ""
    summary = {
        "backend": env["CM_MLPERF_BACKEND"], "model": env["CM_ML_MODEL_NAME"],
        "scenario": env["CM_MLPERF_LOADGEN_SCENARIO"], "round": env["CM_MLPERF_ROUND"],
        "division": env["CM_MLPERF_DIVISION"],
        "system": env["CM_MLPERF_SYSTEM_NAME"], "quick": env.get("CM_MLPERF_QUICK_RUN") == "yes",
        "dataset": env.get("CM_DATASET_NAME", ""), "dataset_size": env.get("CM_DATASET_SIZE", ""),
        "performance": perf, "accuracy": accuracy,
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
        env["CM_MLPERF_RESULT_VALID"] = "yes" if perf.get("valid") else "no"
        env["CM_MLPERF_RESULT_VALUE"] = str(perf.get("result", ""))

    rows = [("backend", summary["backend"]), ("model", summary["model"]), ("scenario", summary["scenario"]),
            ("dataset", f"{summary['dataset']} ({summary['dataset_size']} images)")]
    rows += _performance_rows(perf)
    if accuracy:
        rows.append(("accuracy (top-1)", accuracy))
    rows.append(("results", env["CM_MLPERF_RUN_DIR"]))
    print("\n" + _table(rows))
    if summary["quick"]:
        print("(a _quick run: LoadGen minimums overridden, not valid for a submission)")
    return {"return": 0}
