"""process-mlperf-accuracy's run step: top-1 of mlperf_log_accuracy.json against the val_map, into accuracy.txt."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import imagenet_accuracy
from cm_mlperf import run_step


def main(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, Any]]:
    val_map, dtype = env.get("CM_MLPERF_ACCURACY_VAL_MAP", ""), env.get("CM_MLPERF_ACCURACY_DTYPE", "float32")
    try:
        res = imagenet_accuracy.write_accuracy_txt(env.get("CM_MLPERF_ACCURACY_RESULTS_DIR", ""), val_map, dtype,
                                                   env.get("CM_MLPERF_ACCURACY_OUTPUT") or None)
    except imagenet_accuracy.AccuracyError as exc:
        raise run_step.StepError(str(exc)) from None
    print(res.line())
    return ({"CM_MLPERF_ACCURACY_TOP1": f"{res.top1:.3f}", "CM_MLPERF_ACCURACY_FILE": res.accuracy_file},
            {"mlperf_accuracy": {"top1": res.top1, "good": res.good, "total": res.total, "hash": res.sha256,
                                 "accuracy_file": res.accuracy_file, "val_map": val_map, "dtype": dtype}})


if __name__ == "__main__":
    run_step.main(main)
