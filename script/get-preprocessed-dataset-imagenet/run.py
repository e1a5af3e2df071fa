"""get-preprocessed-dataset-imagenet's run step: decode, resize, crop and normalise every image into .npy tensors.

Interrupted (SIGTERM, Ctrl-C) or orphaned (cm killed), it stops its worker processes at once and exits non-zero;
the engine then discards the unfinished cache entry.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import imagenet_preprocess as pre
from cm_mlperf import run_step


def main(env: Mapping[str, str]) -> tuple[dict[str, str], dict]:
    try:
        result = pre.preprocess_dataset(
            env.get("CM_DATASET_IMAGENET_PATH", ""), env.get("CM_DATASET_IMAGENET_VAL_MAP", ""), os.getcwd(),
            recipe_name=env.get("CM_ML_MODEL_PREPROCESS"),
            layout=env.get("CM_ML_MODEL_INPUT_LAYOUT"),
            height=pre.parse_size(env.get("CM_ML_MODEL_IMAGE_HEIGHT"), "CM_ML_MODEL_IMAGE_HEIGHT"),
            width=pre.parse_size(env.get("CM_ML_MODEL_IMAGE_WIDTH"), "CM_ML_MODEL_IMAGE_WIDTH"),
            workers=pre.parse_workers(env.get("CM_DATASET_PREPROCESS_WORKERS")),
        )
    except pre.PreprocessError as e:
        raise run_step.StepError(str(e)) from None
    return {"CM_DATASET_PREPROCESSED_PATH": result["path"], "CM_DATASET_SIZE": str(result["size"])}, {}


if __name__ == "__main__":
    run_step.main(main)
