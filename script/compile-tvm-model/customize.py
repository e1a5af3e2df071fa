"""compile-tvm-model: ONNX model (from env) -> TVM Relax VM library for this CPU, checked against onnxruntime.

All the work is in the tvm_*.py modules beside it (tvm_compile_model.compile_model runs the whole step); this file
maps env to arguments and results back to env.
"""
from __future__ import annotations

import os
from typing import Any

import tvm_build
import tvm_compile_model
import tvm_errors
import tvm_verify

TRUE_WORDS = ("yes", "true", "on", "1")


def _int(env: dict[str, str], key: str, default: int, what: str) -> int:
    raw = str(env.get(key, "") or "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as e:
        raise tvm_errors.TVMCompileError(f"{what} must be an integer, got {key}={raw!r}") from e


def _settings(env: dict[str, str]) -> dict[str, Any]:
    model = env.get("CM_ML_MODEL_FILE_WITH_PATH", "")
    if not model:
        raise tvm_errors.TVMCompileError("no model: CM_ML_MODEL_FILE_WITH_PATH is not set (run a get-ml-model "
                                         "script first, or pass --env.CM_ML_MODEL_FILE_WITH_PATH=/path/model.onnx)")
    mcpu = (env.get("CM_TVM_MCPU") or env.get("CM_HOST_CPU_LLVM_MCPU") or "").strip()
    if not mcpu:
        from tvm.target import codegen

        mcpu = str(codegen.llvm_get_system_cpu())
    cores = _int(env, "CM_HOST_CPU_PHYSICAL_CORES", os.cpu_count() or 1, "CM_HOST_CPU_PHYSICAL_CORES")
    try:
        rtol = float(env.get("CM_TVM_VERIFY_RTOL", "") or tvm_verify.DEFAULT_RTOL)
    except ValueError as e:
        raise tvm_errors.TVMCompileError(f"--verify_rtol must be a number, got {env['CM_TVM_VERIFY_RTOL']!r}") from e
    return {
        "onnx_path": model,
        "model_name": env.get("CM_ML_MODEL_NAME", "") or os.path.splitext(os.path.basename(model))[0],
        "input_name": env.get("CM_ML_MODEL_INPUT_NAME", "") or None,
        "layout": env.get("CM_ML_MODEL_INPUT_LAYOUT", "") or "NCHW",
        "height": _int(env, "CM_ML_MODEL_IMAGE_HEIGHT", 224, "CM_ML_MODEL_IMAGE_HEIGHT"),
        "width": _int(env, "CM_ML_MODEL_IMAGE_WIDTH", 224, "CM_ML_MODEL_IMAGE_WIDTH"),
        "batch_size": _int(env, "CM_TVM_BATCH_SIZE", 1, "--batch_size"),
        "mcpu": mcpu,
        "num_cores": _int(env, "CM_TVM_NUM_THREADS", cores, "--threads"),
        "pipeline": env.get("CM_TVM_PIPELINE", "") or tvm_build.DEFAULT_PIPELINE,
        "verify": str(env.get("CM_TVM_VERIFY", "yes")).strip().lower() in TRUE_WORDS,
        "rtol": rtol,
        "preprocessed_path": env.get("CM_DATASET_PREPROCESSED_PATH", "") or None,
        "database_dir": env.get("CM_TVM_TUNING_DATABASE_DIR", "") or None,
        "host_flags": env.get("CM_HOST_CPU_FLAGS", "").split(),
        "model_sha256": env.get("CM_ML_MODEL_SHA256", ""),
    }


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    env = i["env"]
    try:
        settings = _settings(env)
        info = tvm_compile_model.compile_model(out_dir=os.getcwd(), **settings)
    except tvm_errors.TVMCompileError as e:
        return {"return": 1, "error": str(e)}
    verification = info["verification"]
    env["CM_TVM_MODEL_SO"] = info["so_path"]
    env["CM_TVM_COMPILE_INFO"] = os.path.join(os.getcwd(), "compile-info.json")
    env["CM_TVM_TARGET"] = info["target_json"]
    env["CM_TVM_BATCH_SIZE"] = str(info["batch_size"])
    env["CM_TVM_MCPU"] = info["mcpu"]
    env["CM_TVM_NUM_THREADS"] = str(info["num_cores"])
    env["CM_TVM_PIPELINE"] = info["pipeline"]
    outputs = info["outputs"]
    env["CM_TVM_MODEL_OUTPUTS"] = ",".join(outputs)
    wanted = env.get("CM_ML_MODEL_OUTPUT_NAME", "")
    env["CM_TVM_MODEL_OUTPUT_INDEX"] = str(outputs.index(wanted) if wanted in outputs else 0)
    env["CM_TVM_MODEL_VERIFIED_MAX_REL_ERR"] = (
        "skipped" if verification.get("skipped") else f"{verification['max_rel_err']:.3e}")
    return {"return": 0}


def postprocess(i: dict[str, Any]) -> dict[str, Any]:
    return {"return": 0}
