"""get-dataset-imagenet-val: check the flags (cheap); run.py lists the folder and writes val_map.txt."""
from __future__ import annotations

from typing import Any

import imagenet_val_folder as val


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    env = i["env"]
    try:
        val.check_inputs(env.get("CM_IMAGENET_PATH"), env.get("CM_DATASET_COUNT"), env.get("CM_IMAGENET_VAL_MAP"))
    except val.ImagenetValError as e:
        return {"return": 1, "error": str(e)}
    return {"return": 0}
