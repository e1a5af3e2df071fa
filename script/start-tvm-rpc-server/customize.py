"""Maps env to the run step (run.py), which starts the TVM RPC process (cm_mlperf.tvm.rpc)."""
from __future__ import annotations

from typing import Any


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    env = i["env"]
    for key, flag in (("CM_TVM_RPC_TRACKER_PORT", "--port"), ("CM_TVM_RPC_SERVER_PORT", "--port")):
        value = str(env.get(key, "") or "")
        if value and (not value.isdigit() or not 0 < int(value) < 65536):
            return {"return": 1, "error": f"{flag}={value}: a TCP port number (1-65535)"}
    return {"return": 0}


def postprocess(i: dict[str, Any]) -> dict[str, Any]:
    return {"return": 0}
