"""get-ml-model-resnet50: check the flags (cheap); run.py downloads or reads the model and publishes CM_ML_MODEL_*."""

from __future__ import annotations

from typing import Any

import resnet50_model as rn


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    env = i["env"]
    try:
        rn.check_inputs(env.get("CM_ML_MODEL_PATH") or None, env.get("CM_ML_MODEL_URL") or None,
                        env.get("CM_ML_MODEL_EXPECTED_SHA256") or None, env.get("CM_ML_MODEL_EXPECTED_MD5") or None)
    except rn.ModelError as e:
        return {"return": 1, "error": str(e)}
    return {"return": 0}
