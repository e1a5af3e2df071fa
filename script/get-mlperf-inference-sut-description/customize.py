"""get-mlperf-inference-sut-description: inputs to env for the run step (steps.describe_from_env)."""
from __future__ import annotations

import os
from typing import Any


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    env = i["env"]
    if not env.get("CM_MLPERF_SUBMITTER"):
        return {"return": 1, "error": "give your organisation's name: --submitter=MyOrg (a required field)"}
    if env.get("CM_MLPERF_SUT_OUTPUT"):
        env["CM_MLPERF_SUT_OUTPUT"] = os.path.join(os.getcwd(), env["CM_MLPERF_SUT_OUTPUT"])
    else:  # the caller's folder, not the script's run folder
        env["CM_MLPERF_SUT_OUTPUT"] = os.path.join(os.getcwd(),
                                                   f"{env.get('CM_MLPERF_SYSTEM_NAME') or 'system'}.json") \
            if env.get("CM_MLPERF_SYSTEM_NAME") else ""
    return {"return": 0}


def postprocess(i: dict[str, Any]) -> dict[str, Any]:
    return {"return": 0}
