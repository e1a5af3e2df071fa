"""get-dataset-imagenet-sample's run step: the built-in sample's JPEGs, val_map.txt and LABELS.* in the entry."""
from __future__ import annotations

import os
from collections.abc import Mapping

import imagenet_sample_images as sample
from cm_mlperf import run_step


def main(env: Mapping[str, str]) -> tuple[dict[str, str], dict]:
    try:
        result = sample.build_sample(os.getcwd(), sample.parse_count(env.get("CM_DATASET_COUNT")))
    except sample.SampleDatasetError as e:
        raise run_step.StepError(str(e)) from None
    print(f"ImageNet sample: {result['size']} photographs from installed packages in {result['path']} "
          f"(labels assigned by this project, see LABELS.md)")
    return {"CM_DATASET_IMAGENET_PATH": result["path"], "CM_DATASET_IMAGENET_VAL_MAP": result["val_map"],
            "CM_DATASET_SIZE": str(result["size"]), "CM_DATASET_NAME": "imagenet-sample"}, {}


if __name__ == "__main__":
    run_step.main(main)
