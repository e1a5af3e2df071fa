"""export-tvm-tuning-db: maps env to the run step (run.py: cm_mlperf.tvm.steps.export_from_env)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    env = i["env"]
    src = (env.get("CM_TVM_EXPORT_FROM", "") or "").strip()
    if not src:
        return {"return": 1, "error": "give the database to export: --tuning_db=FOLDER (a tune-tvm-model cache entry, "
                                      "see `cm show cache --tags=tune,tvm,model`, or a database folder / .tar.gz)"}
    path = Path(os.path.expanduser(src))
    if not path.is_absolute():
        path = Path(os.environ.get("PWD", os.getcwd())) / path
    if not path.exists():
        return {"return": 1, "error": f"--tuning_db={src}: no such file or folder"}
    env["CM_TVM_EXPORT_FROM"] = str(path)
    return {"return": 0}


def postprocess(i: dict[str, Any]) -> dict[str, Any]:
    return {"return": 0}
