"""get-mlperf-inference-performance-qsl: a sample list holding the round's performance sample count."""
from __future__ import annotations

import os
from typing import Any

from cm_mlperf.submission import rules


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    env = i["env"]
    dataset = env.get("CM_DATASET_PREPROCESSED_PATH", "")
    if not dataset or not os.path.isfile(os.path.join(dataset, "val_map.txt")):
        return {"return": 1, "error": "no preprocessed dataset with a val_map.txt: set CM_DATASET_PREPROCESSED_PATH "
                                      "(get-preprocessed-dataset-imagenet)"}
    try:
        round_rules = rules.get_round(env.get("CM_MLPERF_ROUND") or "v6.1")
    except ValueError as exc:
        return {"return": 1, "error": str(exc)}
    size = int(env.get("CM_DATASET_SIZE") or 0)
    if round_rules.accuracy_sample_count and size < round_rules.accuracy_sample_count:
        # today's round scores accuracy over the whole ImageNet validation set: a sample cannot be submitted
        return {"return": 1, "error": f"round {round_rules.name} needs the accuracy run over all "
                                      f"{round_rules.accuracy_sample_count:,} ImageNet validation images (this "
                                      f"dataset has {size}): pass --imagenet_path=<ILSVRC2012 val folder> "
                                      "and no --count"}
    try:
        wanted = int(env.get("CM_MLPERF_PERFORMANCE_SAMPLE_COUNT") or 1024)
        count = int(env.get("CM_MLPERF_LOADGEN_COUNT") or 0)
    except ValueError:
        return {"return": 1, "error": "--performance_sample_count and --count take whole numbers"}
    with open(os.path.join(dataset, "val_map.txt"), encoding="utf-8") as f:
        rows = [line.split() for line in f if line.strip()]
    if count:
        rows = rows[:count]
    if not rows:
        return {"return": 1, "error": f"{dataset}/val_map.txt lists no samples"}
    # paths into the dataset's own cache entry: the harness resolves absolute names as they are
    lines = [f"{os.path.join(dataset, rows[n % len(rows)][0])} {rows[n % len(rows)][1]}"
             for n in range(max(wanted, len(rows)))]
    with open("val_map.txt", "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    env["CM_MLPERF_PERFORMANCE_QSL_PATH"] = os.getcwd()
    env["CM_MLPERF_PERFORMANCE_QSL_SIZE"] = str(len(lines))
    repeated = f" (the {len(rows)} images repeated in order)" if len(lines) > len(rows) else ""
    print(f"performance QSL: {len(lines)} samples{repeated}")
    return {"return": 0}


def postprocess(i: dict[str, Any]) -> dict[str, Any]:
    return {"return": 0}
