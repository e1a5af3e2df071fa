"""CM hooks for app-mlperf-inference-python: check the settings (cheap, before anything loads); run.py is the
LoadGen process and publishes the result."""
from __future__ import annotations

from typing import Any

import mlperf_settings


def check_settings(env: dict[str, str]) -> str | None:
    """The first problem with the run's settings as one line, or None."""
    try:
        settings = mlperf_settings.settings_from_env(env).normalised()
    except ValueError as exc:
        return str(exc)
    if settings.backend in ("onnxruntime", "mojo") and not settings.model.onnx_path:
        return "no ONNX model: set CM_ML_MODEL_FILE_WITH_PATH (a get-ml-model-* dependency)"
    if settings.backend == "tvm" and not settings.model.tvm_so:
        return "no compiled TVM library: set CM_TVM_MODEL_SO (compile-tvm-model)"
    return None


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    error = check_settings(i["env"])
    return {"return": 1, "error": error} if error else {"return": 0}
