"""get-dataset-imagenet-val's run step: check the user's validation folder, write the run's val_map.txt."""
from __future__ import annotations

import os
from collections.abc import Mapping

import imagenet_val_folder as val
from cm_mlperf import run_step


def main(env: Mapping[str, str]) -> tuple[dict[str, str], dict]:
    try:
        count = val.parse_count(env.get("CM_DATASET_COUNT"))
        result = val.prepare(env.get("CM_IMAGENET_PATH"), os.getcwd(), count=count,
                             val_map=env.get("CM_IMAGENET_VAL_MAP") or None)
    except val.ImagenetValError as e:
        raise run_step.StepError(str(e)) from None
    print(f"ImageNet validation: {result['size']} images in {result['path']} (val_map: {result['val_map_source']})")
    return {"CM_DATASET_IMAGENET_PATH": result["path"], "CM_DATASET_IMAGENET_VAL_MAP": result["val_map"],
            "CM_DATASET_SIZE": str(result["size"]), "CM_DATASET_NAME": "imagenet-val"}, {}


if __name__ == "__main__":
    run_step.main(main)
