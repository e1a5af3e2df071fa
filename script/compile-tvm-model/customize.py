"""compile-tvm-model: maps env to the run step (run.py: cm_mlperf.tvm.steps.compile_from_env), which imports the
ONNX model into TVM Relax, applies the tuning database get-tvm-tuning-db chose (or the _tune variation's), builds
for this CPU and checks the library against onnxruntime. Only cheap checks here, so a wrong flag fails at once."""
from __future__ import annotations

from typing import Any

from cm_mlperf.run_step import StepError, env_int


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    env = i["env"]
    if not env.get("CM_ML_MODEL_FILE_WITH_PATH"):
        return {"return": 1, "error": "no model: CM_ML_MODEL_FILE_WITH_PATH is not set (run a get-ml-model script "
                                      "first, or pass --env.CM_ML_MODEL_FILE_WITH_PATH=/path/model.onnx)"}
    try:
        env_int(env, "CM_TVM_BATCH_SIZE", 1, "--batch_size", minimum=1)
        env_int(env, "CM_TVM_NUM_THREADS", 1, "--threads", minimum=1)
        env_int(env, "CM_TVM_THREAD_POOL_SPIN_COUNT", 0, "--thread_spin", minimum=0)
        float(env.get("CM_TVM_VERIFY_RTOL", "") or "1e-3")
    except StepError as e:
        return {"return": 1, "error": str(e)}
    except ValueError:
        return {"return": 1, "error": f"--verify_rtol must be a number, got {env.get('CM_TVM_VERIFY_RTOL')!r}"}
    return {"return": 0}


def postprocess(i: dict[str, Any]) -> dict[str, Any]:
    return {"return": 0}
