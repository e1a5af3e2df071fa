"""get-ml-model-custom: check the flags (cheap); run.py reads the ONNX graph and publishes CM_ML_MODEL_*."""

from __future__ import annotations

from typing import Any

import custom_onnx_model as cm


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    env = i["env"]
    try:
        cm.check_inputs(env.get("CM_ML_MODEL_PATH"), env.get("CM_ML_MODEL_CUSTOM_NAME"),
                        env.get("CM_ML_MODEL_CUSTOM_INPUT_LAYOUT"), env.get("CM_ML_MODEL_CUSTOM_PREPROCESS"),
                        env.get("CM_ML_MODEL_CUSTOM_LABEL_OFFSET"))
    except cm.ModelError as e:
        return {"return": 1, "error": str(e)}
    return {"return": 0}
