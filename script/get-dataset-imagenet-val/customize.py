"""get-dataset-imagenet-val: point at the user's ImageNet validation folder; cache only its val_map.txt."""
from __future__ import annotations

import os
from typing import Any

import imagenet_val_folder as val


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    env = i["env"]
    try:
        count = val.parse_count(env.get("CM_DATASET_COUNT"))
        result = val.prepare(env.get("CM_IMAGENET_PATH"), os.getcwd(), count=count,
                             val_map=env.get("CM_IMAGENET_VAL_MAP") or None)
    except val.ImagenetValError as e:
        return {"return": 1, "error": str(e)}
    env["CM_DATASET_IMAGENET_PATH"] = result["path"]
    env["CM_DATASET_IMAGENET_VAL_MAP"] = result["val_map"]
    env["CM_DATASET_SIZE"] = str(result["size"])
    env["CM_DATASET_NAME"] = "imagenet-val"
    print(f"ImageNet validation: {result['size']} images in {result['path']} (val_map: {result['val_map_source']})")
    return {"return": 0}


def postprocess(i: dict[str, Any]) -> dict[str, Any]:
    return {"return": 0}
