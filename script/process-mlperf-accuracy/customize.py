"""process-mlperf-accuracy: choose the results folder, label map and dtype (cheap checks); run.py scores the log."""
from __future__ import annotations

import os
from typing import Any

import imagenet_accuracy


def _val_map(env: dict[str, str]) -> str:
    """The label map in QSL order: explicit input, else the preprocessed dataset's, else the raw dataset's."""
    if env.get("CM_MLPERF_ACCURACY_VAL_MAP"):
        return env["CM_MLPERF_ACCURACY_VAL_MAP"]
    pre = env.get("CM_DATASET_PREPROCESSED_PATH", "")
    if pre and os.path.isfile(os.path.join(pre, "val_map.txt")):
        return os.path.join(pre, "val_map.txt")
    return env.get("CM_DATASET_IMAGENET_VAL_MAP", "")


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    env = i["env"]
    results_dir = env.get("CM_MLPERF_ACCURACY_RESULTS_DIR") or env.get("CM_MLPERF_OUTPUT_DIR", "")
    if not results_dir:
        return {"return": 1,
                "error": "no results folder: pass --results_dir (the folder with mlperf_log_accuracy.json)"}
    val_map = _val_map(env)
    if not val_map:
        return {"return": 1, "error": "no label map: pass --val_map or set CM_DATASET_PREPROCESSED_PATH "
                                      "(with val_map.txt) or CM_DATASET_IMAGENET_VAL_MAP"}
    dtype = (env.get("CM_MLPERF_ACCURACY_DTYPE") or "float32").lower()
    try:
        imagenet_accuracy.check_dtype(dtype)
    except imagenet_accuracy.AccuracyError as exc:
        return {"return": 1, "error": f"--dtype: {exc}"}
    # what run.py reads
    env["CM_MLPERF_ACCURACY_RESULTS_DIR"] = results_dir
    env["CM_MLPERF_ACCURACY_VAL_MAP"] = val_map
    env["CM_MLPERF_ACCURACY_DTYPE"] = dtype
    return {"return": 0}
