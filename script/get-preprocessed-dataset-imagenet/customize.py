"""get-preprocessed-dataset-imagenet: resize/crop/normalise the chosen ImageNet images into .npy tensors."""
from __future__ import annotations

import os
from typing import Any

import imagenet_preprocess as pre


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    env = i["env"]
    image_dir = env.get("CM_DATASET_IMAGENET_PATH", "")
    val_map = env.get("CM_DATASET_IMAGENET_VAL_MAP", "")
    if not image_dir or not val_map:
        return {"return": 1, "error": "CM_DATASET_IMAGENET_PATH / CM_DATASET_IMAGENET_VAL_MAP are not set: "
                                      "run with a get,dataset,imagenet,original dependency (sample or --imagenet_path)"}
    try:
        result = pre.preprocess_dataset(
            image_dir, val_map, os.getcwd(),
            recipe_name=env.get("CM_ML_MODEL_PREPROCESS"),
            layout=env.get("CM_ML_MODEL_INPUT_LAYOUT"),
            height=pre.parse_size(env.get("CM_ML_MODEL_IMAGE_HEIGHT"), "CM_ML_MODEL_IMAGE_HEIGHT"),
            width=pre.parse_size(env.get("CM_ML_MODEL_IMAGE_WIDTH"), "CM_ML_MODEL_IMAGE_WIDTH"),
        )
    except pre.PreprocessError as e:
        return {"return": 1, "error": str(e)}
    env["CM_DATASET_PREPROCESSED_PATH"] = result["path"]
    env["CM_DATASET_SIZE"] = str(result["size"])
    return {"return": 0}


def postprocess(i: dict[str, Any]) -> dict[str, Any]:
    return {"return": 0}
