"""get-dataset-imagenet-sample: check --count (cheap); run.py writes the sample (JPEGs + val_map.txt)."""
from __future__ import annotations

from typing import Any

import imagenet_sample_images as sample


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    try:
        sample.select_images(sample.parse_count(i["env"].get("CM_DATASET_COUNT")))
    except sample.SampleDatasetError as e:
        return {"return": 1, "error": str(e)}
    return {"return": 0}
