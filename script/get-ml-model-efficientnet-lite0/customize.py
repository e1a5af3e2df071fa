"""get-ml-model-efficientnet-lite0: check that the weights are there (cheap); run.py converts and verifies them."""

from __future__ import annotations

from typing import Any

import effnet_lite0_weights as weights


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    try:
        weights.weights_path(i["env"].get("CM_EFFICIENTNET_LITE0_WEIGHTS_PATH") or None)
    except FileNotFoundError as e:
        return {"return": 1, "error": str(e)}
    return {"return": 0}
