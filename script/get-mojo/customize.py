"""get-mojo: the platform check comes first (a one-line error before any install); run.py does the rest."""
from __future__ import annotations

from typing import Any

from cm_mlperf.mojo import toolchain


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    try:
        toolchain.check_platform()
    except toolchain.MojoToolchainError as e:
        return {"return": 1, "error": str(e)}
    return {"return": 0}


def postprocess(i: dict[str, Any]) -> dict[str, Any]:
    return {"return": 0}
