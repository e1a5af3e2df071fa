"""app-mlperf-inference-python's run step: this process is the LoadGen run (one per process, see mlperf_harness).

Settings come from the env (mlperf_settings.settings_from_env); the result goes to `harness_result.json` in the
output folder, and to cm as env (CM_MLPERF_RESULT_*) and state (`mlperf_result`). An INVALID performance run is a
result, not a failure: the caller decides (run-mlperf-inference-app fails a `_full` run with `invalid_reason`).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import mlperf_harness
import mlperf_settings
from cm_mlperf import run_step


def main(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, Any]]:
    try:
        settings = mlperf_settings.settings_from_env(dict(env)).normalised()
        result = mlperf_harness.run_loadgen(settings)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        raise run_step.StepError(str(exc)) from None
    out = settings.output_dir
    new_env = {
        "CM_MLPERF_OUTPUT_DIR": out,
        "CM_MLPERF_RESULT_VALID": "yes" if result.get("valid") else "no",
        "CM_MLPERF_RESULT_VALUE": "" if result.get("result") is None else str(result["result"]),
        "CM_MLPERF_RESULT_UNIT": result.get("result_unit") or "",
        "CM_MLPERF_RESULT_INVALID_REASON": result.get("invalid_reason") or "",
        "CM_MLPERF_LOADGEN_VERSION": str(result.get("loadgen_version") or ""),
        "CM_MLPERF_USER_CONF_PATH": os.path.join(out, "user.conf"),
        "CM_MLPERF_CONF_PATH": os.path.join(out, "mlperf.conf"),
    }
    if result.get("accuracy_log"):
        new_env["CM_MLPERF_ACCURACY_RESULTS_DIR"] = out
    return new_env, {"mlperf_result": result}


if __name__ == "__main__":
    run_step.main(main)
