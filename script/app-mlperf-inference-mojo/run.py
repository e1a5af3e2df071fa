"""app-mlperf-inference-mojo's run step: write native_settings.json from the env, run mlperf-mojo-harness."""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from cm_mlperf import run_step
from cm_mlperf.mojo import native


def _num(env: Mapping[str, str], key: str, kind: type = float):
    val = str(env.get(key, "")).strip()
    if not val:
        return None
    try:
        return kind(float(val)) if kind is int else kind(val)
    except ValueError:
        raise run_step.StepError(f"{key}='{val}' is not a number") from None


def main(env: Mapping[str, str]) -> tuple[dict[str, str], dict]:
    rnd = env.get("CM_MLPERF_ROUND", "v6.1")
    settings = native.NativeSettings(
        scenario=env.get("CM_MLPERF_LOADGEN_SCENARIO", "Offline"),
        mode=env.get("CM_MLPERF_LOADGEN_MODE", "performance"),
        onnx_path=env["CM_ML_MODEL_FILE_WITH_PATH"], dataset_path=env["CM_DATASET_PREPROCESSED_PATH"],
        output_dir=env["CM_MLPERF_OUTPUT_DIR"], input_name=env.get("CM_ML_MODEL_INPUT_NAME", ""),
        output_name=env.get("CM_ML_MODEL_OUTPUT_NAME", ""),
        label_offset=_num(env, "CM_ML_MODEL_LABEL_OFFSET", int) or 0,
        model_name=env.get("CM_ML_MODEL_NAME", "model"), count=_num(env, "CM_MLPERF_LOADGEN_COUNT", int) or 0,
        threads=_num(env, "CM_MLPERF_NUM_THREADS", int) or _num(env, "CM_HOST_CPU_TOTAL_CORES", int)
        or os.cpu_count() or 1,
        round=rnd, target_qps=_num(env, "CM_MLPERF_LOADGEN_TARGET_QPS"),
        target_latency_ms=_num(env, "CM_MLPERF_LOADGEN_TARGET_LATENCY"),
        min_duration_ms=_num(env, "CM_MLPERF_LOADGEN_MIN_DURATION", int),
        min_query_count=_num(env, "CM_MLPERF_LOADGEN_MIN_QUERY_COUNT", int),
        performance_sample_count=_num(env, "CM_MLPERF_LOADGEN_PERFORMANCE_SAMPLE_COUNT", int),
        user_conf=env.get("CM_MLPERF_USER_CONF", ""),  # mlperf_conf: the round's, from cm_mlperf.loadgen
        mojo_version=env.get("CM_MOJO_VERSION", ""))
    try:
        path = native.write_settings(settings)
    except (ValueError, FileNotFoundError) as e:
        raise run_step.StepError(str(e)) from None
    rc = native.run_program(env["CM_MOJO_NATIVE_HARNESS"], path, dict(env))
    if rc != 0 or not (Path(settings.output_dir) / native.RESULT_FILE).is_file():
        raise run_step.StepError(f"the native Mojo harness failed (exit code {rc}); see its output above")
    return {}, {}


if __name__ == "__main__":
    run_step.main(main)
