"""check-mlperf-inference-submission: inputs to env for the run step (cm_mlperf.submission.steps.check_from_env)."""
from __future__ import annotations

import os
from typing import Any


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    env = i["env"]
    env["CM_MLPERF_SUBMISSION_DIR"] = os.path.join(os.getcwd(), env["CM_MLPERF_SUBMISSION_DIR"])
    return {"return": 0}


def postprocess(i: dict[str, Any]) -> dict[str, Any]:
    return {"return": 0}
