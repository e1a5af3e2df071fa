"""get-preprocessed-dataset-imagenet: check the recipe, layout, size and inputs (cheap); run.py preprocesses."""
from __future__ import annotations

from typing import Any

import imagenet_preprocess_recipes as recipes


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    env = i["env"]
    if not env.get("CM_DATASET_IMAGENET_PATH") or not env.get("CM_DATASET_IMAGENET_VAL_MAP"):
        return {"return": 1, "error": "CM_DATASET_IMAGENET_PATH / CM_DATASET_IMAGENET_VAL_MAP are not set: "
                                      "run with a get,dataset,imagenet,original dependency (sample or --imagenet_path)"}
    try:
        recipes.get_recipe(env.get("CM_ML_MODEL_PREPROCESS"))
        recipes.check_layout(env.get("CM_ML_MODEL_INPUT_LAYOUT"))
        for key in ("CM_ML_MODEL_IMAGE_HEIGHT", "CM_ML_MODEL_IMAGE_WIDTH"):
            recipes.parse_size(env.get(key), key)
        recipes.parse_workers(env.get("CM_DATASET_PREPROCESS_WORKERS"))
    except recipes.PreprocessError as e:
        return {"return": 1, "error": str(e)}
    return {"return": 0}
