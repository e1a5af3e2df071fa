"""get-tvm-tuning-db: choose the tuning database for this model, batch and CPU family (see _cm.yaml)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cm_mlperf.tvm import databases


def _user_path(raw: str) -> str:
    """--tuning_db as given; a relative path is taken against the directory `cm` was started from."""
    raw = (raw or "").strip()
    if not raw or raw.lower() in ("no", "none", "off", "untuned") or os.path.isabs(os.path.expanduser(raw)):
        return os.path.expanduser(raw)
    return str(Path(os.environ.get("PWD", os.getcwd())) / raw)


def _family(env: dict[str, str]) -> str:
    if env.get("CM_HOST_CPU_FAMILY"):
        return env["CM_HOST_CPU_FAMILY"]
    from cm_mlperf.tvm import family

    return family.family_from_flags(env.get("CM_HOST_CPU_FLAGS", "").split(), env.get("CM_HOST_CPU_ARCH", "x86_64"))


def _threads(env: dict[str, str]) -> int:
    """The threads per inference the library is built for (compile-tvm-model's --threads), 0 when unknown."""
    for key in ("CM_TVM_NUM_THREADS", "CM_HOST_CPU_PHYSICAL_CORES"):
        try:
            return int(str(env.get(key, "")).strip())
        except ValueError:
            continue
    return 0


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    env = i["env"]
    shipped = env.get("CM_TVM_SHIPPED_DATABASES_DIR") or str(
        Path(i["run_script_input"]["path"]).resolve().parents[1] / "tuning-databases")
    try:
        batch = int(str(env.get("CM_TVM_BATCH_SIZE", "") or "1"))
    except ValueError:
        return {"return": 1, "error": f"--batch_size must be an integer, got {env.get('CM_TVM_BATCH_SIZE')!r}"}
    try:
        chosen = databases.choose(user_db=_user_path(env.get("CM_TVM_TUNING_DB", "")), shipped_root=shipped,
                                  model_name=env.get("CM_ML_MODEL_NAME", ""),
                                  model_sha256=env.get("CM_ML_MODEL_SHA256", ""), batch_size=batch,
                                  family=_family(env), tvm_version=env.get("CM_TVM_VERSION", ""),
                                  conv_layout=env.get("CM_TVM_CONV_LAYOUT", "") or "auto",
                                  threads=_threads(env))
    except databases.TuningDatabaseError as e:
        return {"return": 1, "error": str(e)}
    env.update(chosen)
    print(f"[get-tvm-tuning-db] {chosen['CM_TVM_TUNING_DB_NOTE']}", flush=True)
    env["CM_TVM_SHIPPED_DATABASES_DIR"] = shipped
    return {"return": 0}


def postprocess(i: dict[str, Any]) -> dict[str, Any]:
    return {"return": 0}
