"""tune-tvm-model: MetaSchedule-tune the model named by the model env for this CPU; the JSON tuning database is
written into the cache entry (the current directory). The work is in tvm_tune_model.py; this file maps env to
arguments and results back to env.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import tvm_tune_builders
import tvm_tune_model


def _int(env: dict[str, str], key: str, default: int, what: str, minimum: int | None = None) -> int:
    raw = str(env.get(key, "") or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as e:
        raise tvm_tune_model.TVMTuningError(f"{what} must be an integer, got {key}={raw!r}") from e
    if minimum is not None and value < minimum:
        raise tvm_tune_model.TVMTuningError(f"{what} must be at least {minimum}, got {key}={raw!r}")
    return value


def resolve_resume_from(raw: str) -> str | None:
    """--resume_from as an absolute path. A relative one is taken against the directory `cm` was started from
    (the shell's PWD): this hook runs inside its new cache entry, where the relative path would mean nothing."""
    raw = (raw or "").strip()
    if not raw:
        return None
    path = Path(os.path.expanduser(raw))
    if path.is_absolute():
        return str(path)
    start = os.environ.get("PWD", "")
    if start and os.path.isabs(start) and (Path(start) / path).exists():
        return str((Path(start) / path).resolve())
    raise tvm_tune_model.TVMTuningError(
        f"--resume_from={raw}: give the database folder as an absolute path (a relative path cannot be resolved "
        f"from the cache entry the tuning runs in), e.g. --resume_from=$PWD/{raw}")


def _settings(env: dict[str, str]) -> dict[str, Any]:
    # cheap checks first: a wrong --trials or --resume_from fails before the model is even read
    trials = _int(env, "CM_TVM_TUNING_TRIALS", tvm_tune_model.DEFAULT_TRIALS, "--trials", minimum=1)
    resume_from = resolve_resume_from(env.get("CM_TVM_TUNING_RESUME_FROM", ""))
    if resume_from:
        tvm_tune_model.check_database_dir(resume_from)
    builder = (env.get("CM_TVM_TUNING_BUILDER", "") or tvm_tune_builders.DEFAULT_BUILDER).strip()
    if builder not in tvm_tune_builders.BUILDERS:
        raise tvm_tune_model.TVMTuningError(f"unknown --builder={builder}: choose one of "
                                            f"{', '.join(tvm_tune_builders.BUILDERS)}")
    cost_model = (env.get("CM_TVM_TUNING_COST_MODEL", "") or "auto").strip()
    tvm_tune_model.choose_cost_model(cost_model)  # validates the name (and xgb's presence if asked for)
    model = env.get("CM_ML_MODEL_FILE_WITH_PATH", "")
    if not model:
        raise tvm_tune_model.TVMTuningError(
            "no model: CM_ML_MODEL_FILE_WITH_PATH is not set (run a get-ml-model script first, or pass "
            "--env.CM_ML_MODEL_FILE_WITH_PATH=/path/model.onnx)")
    mcpu = (env.get("CM_TVM_MCPU") or env.get("CM_HOST_CPU_LLVM_MCPU") or "").strip()
    if not mcpu:
        from tvm.target import codegen

        mcpu = str(codegen.llvm_get_system_cpu())
    cores = _int(env, "CM_HOST_CPU_PHYSICAL_CORES", os.cpu_count() or 1, "CM_HOST_CPU_PHYSICAL_CORES")
    return {
        "onnx_path": model,
        "model_name": env.get("CM_ML_MODEL_NAME", "") or os.path.splitext(os.path.basename(model))[0],
        "input_name": env.get("CM_ML_MODEL_INPUT_NAME", "") or None,
        "layout": env.get("CM_ML_MODEL_INPUT_LAYOUT", "") or "NCHW",
        "height": _int(env, "CM_ML_MODEL_IMAGE_HEIGHT", 224, "CM_ML_MODEL_IMAGE_HEIGHT"),
        "width": _int(env, "CM_ML_MODEL_IMAGE_WIDTH", 224, "CM_ML_MODEL_IMAGE_WIDTH"),
        "batch_size": _int(env, "CM_TVM_BATCH_SIZE", 1, "--batch_size", minimum=1),
        "mcpu": mcpu,
        "num_cores": _int(env, "CM_TVM_NUM_THREADS", cores, "--threads", minimum=1),
        "trials": trials,
        "resume_from": resume_from,
        "builder": builder,
        "cost_model": cost_model,
        "population": _int(env, "CM_TVM_TUNING_POPULATION", tvm_tune_model.DEFAULT_POPULATION,
                           "--search_population", minimum=2),
        "host_flags": env.get("CM_HOST_CPU_FLAGS", "").split(),
        "model_sha256": env.get("CM_ML_MODEL_SHA256", ""),
    }


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    env = i["env"]
    try:
        settings = _settings(env)
        info = tvm_tune_model.tune_model(out_dir=os.getcwd(), **settings)
    except tvm_tune_model.tvm_errors.TVMCompileError as e:  # TVMTuningError and the shared compile errors
        return {"return": 1, "error": str(e)}
    env["CM_TVM_TUNING_DATABASE_DIR"] = info["database_dir"]
    env["CM_TVM_TUNING_TRIALS_DONE"] = str(info["trials_done"])
    env["CM_TVM_TUNING_SECONDS"] = f"{info['seconds']:.1f}"
    env["CM_TVM_TUNING_INFO"] = os.path.join(info["database_dir"], "tuning-info.json")
    return {"return": 0}


def postprocess(i: dict[str, Any]) -> dict[str, Any]:
    return {"return": 0}
