"""generate-mlperf-inference-submission: inputs to env for the run step (steps.generate_from_env)."""
from __future__ import annotations

import os
from typing import Any


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    env = i["env"]
    if not env.get("CM_MLPERF_SUBMITTER"):
        return {"return": 1, "error": "give your organisation's name: --submitter=MyOrg (it names the tree's folder)"}
    caller = os.getcwd()  # a script that is not cached runs in the caller's folder
    # several results folders may be given, comma-separated: each relative one is the caller's
    env["CM_MLPERF_RESULTS_DIR"] = ",".join(os.path.join(caller, os.path.expanduser(d.strip()))
                                            for d in env["CM_MLPERF_RESULTS_DIR"].split(",") if d.strip())
    env["CM_MLPERF_SUBMISSION_DIR"] = os.path.join(caller, env["CM_MLPERF_SUBMISSION_DIR"])
    return {"return": 0}


def postprocess(i: dict[str, Any]) -> dict[str, Any]:
    return {"return": 0}
