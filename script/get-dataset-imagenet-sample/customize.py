"""get-dataset-imagenet-sample: write the built-in sample (JPEGs + val_map.txt) into the cache entry."""
from __future__ import annotations

import os
from typing import Any

import imagenet_sample_images as sample


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    env = i["env"]
    try:
        count = sample.parse_count(env.get("CM_DATASET_COUNT"))
        result = sample.build_sample(os.getcwd(), count)
    except sample.SampleDatasetError as e:
        return {"return": 1, "error": str(e)}
    env["CM_DATASET_IMAGENET_PATH"] = result["path"]
    env["CM_DATASET_IMAGENET_VAL_MAP"] = result["val_map"]
    env["CM_DATASET_SIZE"] = str(result["size"])
    env["CM_DATASET_NAME"] = "imagenet-sample"
    print(f"ImageNet sample: {result['size']} photographs from installed packages in {result['path']} "
          f"(labels assigned by this project, see LABELS.md)")
    return {"return": 0}


def postprocess(i: dict[str, Any]) -> dict[str, Any]:
    return {"return": 0}
