"""CM hooks for app-mlperf-inference-mojo: check the inputs before the run, publish its result after it."""
from __future__ import annotations

import json
import os
from typing import Any

RESULT_FILE = "harness_result.json"
NEEDED = {
    "CM_MOJO_NATIVE_HARNESS": "the native harness executable (build-mojo-backend)",
    "CM_ML_MODEL_FILE_WITH_PATH": "the ONNX model (a get-ml-model-* dependency)",
    "CM_DATASET_PREPROCESSED_PATH": "the preprocessed dataset (get-preprocessed-dataset-imagenet)",
}


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    env = i["env"]
    for key, what in NEEDED.items():
        if not env.get(key) or not os.path.exists(env[key]):
            return {"return": 1, "error": f"no {what}: {key} is unset or missing ('{env.get(key, '')}')"}
    if not env.get("CM_MLPERF_OUTPUT_DIR"):
        env["CM_MLPERF_OUTPUT_DIR"] = os.path.join(
            os.getcwd(), "mlperf_output",
            f"mojo-native-{env['CM_MLPERF_LOADGEN_SCENARIO'].lower()}-{env['CM_MLPERF_LOADGEN_MODE']}")
    return {"return": 0}


def postprocess(i: dict[str, Any]) -> dict[str, Any]:
    env, state = i["env"], i["state"]
    out = env["CM_MLPERF_OUTPUT_DIR"]
    try:
        with open(os.path.join(out, RESULT_FILE), encoding="utf-8") as f:
            result = json.load(f)
    except (OSError, ValueError) as e:
        return {"return": 1, "error": f"the native Mojo harness left no readable {RESULT_FILE} in {out} ({e})"}
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
