"""build-mojo-backend: the work (two `mojo build`s, a load check) runs in run.py."""
from __future__ import annotations

from typing import Any


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    if not i["env"].get("CM_MOJO_BIN"):
        return {"return": 1, "error": "no Mojo toolchain: CM_MOJO_BIN is unset (the get,mojo dependency sets it)"}
    return {"return": 0}


def postprocess(i: dict[str, Any]) -> dict[str, Any]:
    return {"return": 0}
