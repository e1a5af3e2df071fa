"""tune-tvm-model: maps env to the run step (run.py: cm_mlperf.tvm.steps.tune_from_env), which MetaSchedule-tunes
the model for this CPU into the cache entry. Only cheap checks here: a wrong flag fails before the model is read."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cm_mlperf.run_step import StepError, env_int
from cm_mlperf.tvm import databases, tune
from cm_mlperf.tvm.steps import rpc_settings, tuning_focus

BUILDERS = ("inprocess", "pool", "local")
COST_MODELS = ("auto", "xgb", "random")


def resolve_resume_from(raw: str) -> str | None:
    """--resume_from as an absolute path. A relative one is taken against the directory `cm` was started from
    (the shell's PWD): the step runs inside its new cache entry, where the relative path would mean nothing."""
    raw = (raw or "").strip()
    if not raw:
        return None
    path = Path(os.path.expanduser(raw))
    if path.is_absolute():
        return str(path)
    start = os.environ.get("PWD", "")
    if start and os.path.isabs(start) and (Path(start) / path).exists():
        return str((Path(start) / path).resolve())
    raise StepError(f"--resume_from={raw}: give the database folder as an absolute path (a relative path cannot be "
                    f"resolved from the cache entry the tuning runs in), e.g. --resume_from=$PWD/{raw}")


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    env = i["env"]
    try:
        env_int(env, "CM_TVM_TUNING_TRIALS", 2000, "--trials", minimum=1)
        env_int(env, "CM_TVM_BATCH_SIZE", 1, "--batch_size", minimum=1)
        env_int(env, "CM_TVM_NUM_THREADS", 1, "--threads", minimum=1)
        env_int(env, "CM_TVM_TUNING_POPULATION", 512, "--search_population", minimum=2)
        resume = resolve_resume_from(env.get("CM_TVM_TUNING_RESUME_FROM", ""))
        if resume:
            tune.check_database_dir(resume, "--resume_from")
            env["CM_TVM_TUNING_RESUME_FROM"] = resume
        builder = (env.get("CM_TVM_TUNING_BUILDER", "") or "inprocess").strip()
        if builder not in BUILDERS:
            raise StepError(f"unknown --builder={builder}: choose one of {', '.join(BUILDERS)}")
        cost = (env.get("CM_TVM_TUNING_COST_MODEL", "") or "auto").strip()
        if cost not in COST_MODELS:
            raise StepError(f"unknown --cost_model={cost}: choose one of {', '.join(COST_MODELS)}")
        rpc_settings(env)
        tuning_focus(env)
    except (StepError, databases.TuningDatabaseError, tune.TVMTuningError) as e:
        return {"return": 1, "error": str(e)}
    if not env.get("CM_ML_MODEL_FILE_WITH_PATH"):
        return {"return": 1, "error": "no model: CM_ML_MODEL_FILE_WITH_PATH is not set (run a get-ml-model script "
                                      "first, or pass --env.CM_ML_MODEL_FILE_WITH_PATH=/path/model.onnx)"}
    return {"return": 0}


def postprocess(i: dict[str, Any]) -> dict[str, Any]:
    return {"return": 0}
