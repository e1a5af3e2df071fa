"""CM hooks for app-mlperf-inference-python: run one LoadGen test, publish its result."""
from __future__ import annotations

import os
from typing import Any

import mlperf_harness
import mlperf_settings


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    env = i["env"]
    try:
        settings = mlperf_settings.settings_from_env(env).normalised()
    except ValueError as exc:
        return {"return": 1, "error": str(exc)}
    if settings.backend == "onnxruntime" and not settings.model.onnx_path:
        return {"return": 1, "error": "no ONNX model: set CM_ML_MODEL_FILE_WITH_PATH (a get-ml-model-* dependency)"}
    if settings.backend == "tvm" and not settings.model.tvm_so:
        return {"return": 1, "error": "no compiled TVM library: set CM_TVM_MODEL_SO (compile-tvm-model)"}
    try:
        # In a child process: LoadGen allows one FromConfig per process (see mlperf_harness).
        mlperf_harness.run_benchmark(settings)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        return {"return": 1, "error": str(exc)}
    env["CM_MLPERF_OUTPUT_DIR"] = settings.output_dir
    return {"return": 0}


def postprocess(i: dict[str, Any]) -> dict[str, Any]:
    env, state = i["env"], i["state"]
    out = env.get("CM_MLPERF_OUTPUT_DIR", "")
    try:
        result = mlperf_harness.load_result(out)
    except (FileNotFoundError, ValueError) as exc:
        return {"return": 1, "error": str(exc)}
    state["mlperf_result"] = result
    env["CM_MLPERF_RESULT_VALID"] = "yes" if result.get("valid") else "no"
    env["CM_MLPERF_RESULT_VALUE"] = "" if result.get("result") is None else str(result["result"])
    env["CM_MLPERF_RESULT_UNIT"] = result.get("result_unit") or ""
    env["CM_MLPERF_LOADGEN_VERSION"] = str(result.get("loadgen_version") or "")
    env["CM_MLPERF_USER_CONF_PATH"] = os.path.join(out, "user.conf")
    env["CM_MLPERF_CONF_PATH"] = os.path.join(out, "mlperf.conf")
    if result.get("accuracy_log"):
        env["CM_MLPERF_ACCURACY_RESULTS_DIR"] = out
    return {"return": 0}
