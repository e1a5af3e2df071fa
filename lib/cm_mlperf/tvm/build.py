"""compile-tvm-model's build: the Relax pipelines (optionally applying a MetaSchedule JSON database), the
compile itself, and the atomic export of the shared library.

    ex = build(mod, target, pipeline, database_dir)   # database_dir: a MetaSchedule JSON database to apply
    export_library(ex, "model.so")
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from cm_mlperf.tvm.default_schedule import default_schedule_pass
from cm_mlperf.tvm.errors import TVMCompileError
from cm_mlperf.tvm.target import target_json

DEFAULT_PIPELINE = "default"
# name -> what it does (see make_pipeline)
PIPELINES: dict[str, str] = {
    "default": "legalise and fuse ops (the tuned build's steps, no database), then parallel + vector loops "
               "(cm_mlperf.tvm.default_schedule)",
    "default_build": "same as default",
    "fused": "DecomposeOpsForInference + relax.get_default_pipeline(target): legalise, then fuse ops",
}


def make_pipeline(name: str, target: Any, database_dir: str | os.PathLike[str] | None = None) -> Any:
    """The Relax pipeline for `name` (see PIPELINES). With `database_dir` (a MetaSchedule JSON database:
    database_workload.json + database_tuning_record.json) the tuned schedules are applied after fusion,
    whatever the name: tuning records are keyed by the fused TIR functions."""
    import tvm
    from tvm import relax

    if name not in PIPELINES:
        raise TVMCompileError(f"unknown TVM pipeline '{name}': choose one of {', '.join(PIPELINES)} (--pipeline)")
    if database_dir is not None:
        db = Path(database_dir)
        if not (db / "database_workload.json").is_file() or not (db / "database_tuning_record.json").is_file():
            raise TVMCompileError(f"{db} is not a MetaSchedule JSON database (needs database_workload.json and "
                                  f"database_tuning_record.json)")
        # static_shape_tuning's steps with zero trials: legalise + fuse, apply the records, then lower. The pass
        # gets no work_dir: it takes the database from the context build() opens (open_database), because with a
        # work_dir TVM's C++ opens it and prints a raw "Creating JSONDatabase" warning on the console.
        with target:  # MetaScheduleApplyDatabase reads the target from the context when it is created
            passes = [relax.transform.DecomposeOpsForInference(), relax.transform.CanonicalizeBindings(),
                      relax.pipeline.zero_pipeline(),
                      relax.transform.MetaScheduleApplyDatabase(enable_warning=False),
                      default_schedule_pass(target),  # the functions without a record: parallel + vector loops
                      relax.pipeline.default_build_pipeline()]
        return tvm.transform.Sequential(passes, name="tuned")
    if name == "fused":
        return tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(),
                                         relax.get_default_pipeline(target)], name="fused")
    with target:  # the tuned pipeline minus the database
        return tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(),
                                         relax.transform.CanonicalizeBindings(), relax.pipeline.zero_pipeline(),
                                         default_schedule_pass(target), relax.pipeline.default_build_pipeline()],
                                        name="default")


def open_database(database_dir: str | os.PathLike[str] | None) -> Any:
    """The MetaSchedule JSON database in database_dir as a context manager (MetaScheduleApplyDatabase uses the
    database of the current context); a no-op context without one."""
    if database_dir is None:
        return contextlib.nullcontext()
    from tvm.s_tir import meta_schedule as ms

    return ms.database.JSONDatabase(work_dir=str(database_dir), allow_missing=False, module_equality="structural")


def build(mod: Any, target: Any, pipeline: str = DEFAULT_PIPELINE,
          database_dir: str | os.PathLike[str] | None = None) -> Any:
    """Compile a Relax IRModule for the target; returns a tvm Executable."""
    import tvm

    relax_pipeline = make_pipeline(pipeline, target, database_dir)
    try:
        with target, open_database(database_dir), tvm.transform.PassContext(opt_level=3):
            return tvm.compile(mod, target=target, relax_pipeline=relax_pipeline)
    except Exception as e:  # noqa: BLE001
        raise TVMCompileError(f"TVM failed to compile the model for {target_json(target)} with pipeline "
                              f"'{pipeline}' ({type(e).__name__}: {str(e).strip()[:500]}). Try another --pipeline "
                              f"({', '.join(p for p in PIPELINES if p != pipeline)}) or --mcpu: TVM 0.27 + LLVM 22 "
                              f"miscompile the 'fused' pipeline for the baseline x86-64/generic CPUs") from e


def export_library(executable: Any, path: str | os.PathLike[str]) -> str:
    """Write the executable as a shared library (atomically); returns its absolute path."""
    path = Path(path).resolve()
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.so")
    try:
        executable.export_library(str(tmp))
        os.replace(tmp, path)
    except Exception as e:  # noqa: BLE001
        tmp.unlink(missing_ok=True)
        raise TVMCompileError(f"exporting {path.name} failed ({type(e).__name__}: {e}); TVM needs a C compiler "
                              f"(g++/cc on PATH) to link the library") from e
    return str(path)
