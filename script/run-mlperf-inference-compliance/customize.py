"""run-mlperf-inference-compliance: audit.config per test before the runs, verification after them."""
from __future__ import annotations

import json
import os
from typing import Any

from cm_mlperf.submission import compliance, rules


def _result_dir(env: dict[str, Any]) -> str:
    if env.get("CM_MLPERF_COMPLIANCE_RESULT_DIR"):
        return env["CM_MLPERF_COMPLIANCE_RESULT_DIR"]
    perf = env.get("CM_MLPERF_PERFORMANCE_DIR", "")
    return os.path.dirname(os.path.dirname(perf)) if perf else ""


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    env = i["env"]
    try:
        round_rules = rules.get_round(env.get("CM_MLPERF_ROUND") or "v6.1")
    except ValueError as exc:
        return {"return": 1, "error": str(exc)}
    result = _result_dir(env)
    if not result or not os.path.isfile(os.path.join(result, "performance", "run_1", "mlperf_log_summary.txt")):
        return {"return": 1, "error": "no result to test: pass --results_dir=<.../<scenario>> with performance/run_1 "
                                      "and accuracy (or run it from run-mlperf-inference-app _submission)"}
    wanted = [t.strip().upper() for t in (env.get("CM_MLPERF_COMPLIANCE_TESTS") or "").split(",") if t.strip()]
    unknown = [t for t in wanted if t not in round_rules.compliance_tests]
    if unknown:
        return {"return": 1, "error": f"--tests={','.join(unknown)}: round {round_rules.name} has "
                                      f"{', '.join(round_rules.compliance_tests)}"}
    tests = wanted or list(round_rules.compliance_tests)
    harness = {}
    try:
        with open(os.path.join(result, "performance", "run_1", "harness_result.json"), encoding="utf-8") as f:
            harness = json.load(f)
    except (OSError, ValueError):
        pass
    # the compliance runs use the result's settings: its target_qps / latency, so they are comparable
    if harness.get("target_qps") and not env.get("CM_MLPERF_LOADGEN_TARGET_QPS"):
        env["CM_MLPERF_LOADGEN_TARGET_QPS"] = str(harness["target_qps"])
    if harness.get("target_latency_ms") and not env.get("CM_MLPERF_LOADGEN_TARGET_LATENCY"):
        env["CM_MLPERF_LOADGEN_TARGET_LATENCY"] = str(harness["target_latency_ms"])
    for test in compliance.TESTS:
        env[f"CM_MLPERF_COMPLIANCE_RUN_{test}"] = "yes" if test in tests else "no"
        if test not in tests:
            continue
        out = os.path.join(result, "compliance-runs", test)
        os.makedirs(out, exist_ok=True)
        audit = os.path.join(out, "audit.config")
        with open(audit, "w", encoding="utf-8") as f:
            f.write(compliance.audit_config(test))
        env[f"CM_MLPERF_COMPLIANCE_{test}_AUDIT"] = audit
        env[f"CM_MLPERF_COMPLIANCE_{test}_DIR"] = out
    env["CM_MLPERF_COMPLIANCE_RESULT_DIR"] = result
    print(f"compliance tests {', '.join(tests)} (round {round_rules.name}) for {result}")
    return {"return": 0}


def postprocess(i: dict[str, Any]) -> dict[str, Any]:
    env, state = i["env"], i["state"]
    result = env["CM_MLPERF_COMPLIANCE_RESULT_DIR"]
    outcome: dict[str, dict[str, bool]] = {}
    for test in compliance.TESTS:
        if env.get(f"CM_MLPERF_COMPLIANCE_RUN_{test}") != "yes":
            continue
        try:
            outcome[test] = compliance.verify_test(test, result, env[f"CM_MLPERF_COMPLIANCE_{test}_DIR"],
                                                   os.path.join(result, "compliance"))
        except (OSError, ValueError, KeyError) as exc:
            return {"return": 1, "error": f"{test}: cannot verify its run ({exc})"}
        print(f"{test}: " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in outcome[test].items()))
    state["mlperf_compliance"] = outcome
    failed = [f"{t} {k}" for t, checks in outcome.items() for k, ok in checks.items() if not ok]
    env["CM_MLPERF_COMPLIANCE_PASSED"] = "no" if failed else "yes"
    if failed:
        return {"return": 1,
                "error": f"compliance failed: {', '.join(failed)} (see {result}/compliance/*/verify_*.txt)"}
    return {"return": 0}
