"""Pick, kernel by kernel, the fastest of MetaSchedule's best record and a few settings of our own schedule.

MetaSchedule searches a huge generic space and, with a few hundred trials per kernel on two shared cores, often
stops short of a plain register-tiled loop nest (cm_mlperf.tvm.default_schedule). Refining takes each tuning task
of the model, builds its candidates -- the database's best record (if any) and the default schedule with each
`Knobs` of KNOB_GRID -- times them side by side in this process (TVM's time_evaluator, the thread count and
thread-pool setting the model will run with, weights flushed from the caches before each call as they are in the
model), checks that every candidate computes what the first one does, and
writes a new database with one record per task: the winner, its trace and the time measured here. The database
is applied like any other (MetaScheduleApplyDatabase replays the trace); compile-tvm-model still verifies the
whole model against onnxruntime.

    info = refine_database("model.onnx", batch_size=1, mcpu="znver4", num_cores=2, conv_layout="NCHWc",
                           database_dir="tuned-db", out_dir="refined-db")
"""
from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cm_mlperf.tvm import default_schedule, tune
from cm_mlperf.tvm import runtime as tvm_runtime
from cm_mlperf.tvm import target as tvm_target

Log = Callable[[str], None]
KNOB_GRID: tuple[default_schedule.Knobs, ...] = tuple(
    default_schedule.Knobs(rows=r, chunks=c) for r in (4, 8, 12) for c in (4, 8, 16)) + tuple(
    default_schedule.Knobs(rows=r, cols=c) for r, c in ((4, 2), (6, 2), (3, 4), (6, 4)))
RTOL = 1e-4


def _args(func: Any, rng: np.random.Generator) -> list[Any]:
    """Random inputs and zeroed outputs for a PrimFunc's buffer parameters."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    out = []
    for info in ms.arg_info.ArgInfo.from_prim_func(func):
        shape = [int(d) for d in info.shape]
        dtype = str(info.dtype)
        data = rng.uniform(-1, 1, shape).astype(dtype) if "float" in dtype else np.zeros(shape, dtype)
        out.append(tvm.runtime.tensor(data, tvm.cpu()))
    return out


def _time(mod: Any, target: Any, args: list[Any], repeat: int) -> tuple[float, np.ndarray]:
    """Median seconds per call of mod's `main`, and its output (the last argument) after a call."""
    import tvm

    lib = tvm.compile(mod, target=target).jit()  # the runtime module (time_evaluator lives there)
    fn = lib["main"]
    fn(*args)
    result = args[-1].numpy().copy()
    # weights and other inputs flushed from the caches before every call, the activation (first argument) kept:
    # as inside the model, where it comes from the layer before (timed warm, the wide register tiles won alone and
    # lost in the model)
    timer = lib.time_evaluator("main", tvm.cpu(), number=1, repeat=repeat, f_preproc="cache_flush_cpu_non_first_arg")
    return float(statistics.median(timer(*args).results)), result


def refine_database(onnx_path: str | os.PathLike[str], *, batch_size: int, mcpu: str, num_cores: int,
                    out_dir: str | os.PathLike[str], conv_layout: str = "NCHW",
                    database_dir: str | os.PathLike[str] | None = None, input_name: str | None = None,
                    layout: str = "NCHW", height: int = 224, width: int = 224,
                    knobs: Sequence[default_schedule.Knobs] = KNOB_GRID, repeat: int = 10,
                    measure_threads: int | None = None, winograd: bool = True,
                    log: Log = tune.log) -> dict[str, Any]:
    """Write the refined database (one record per task) into out_dir; returns its info (also refine-info.json).

    The schedules are made for `num_cores` (their parallel loops) and timed on `measure_threads` threads (default
    num_cores): 1 chooses for the harness's throughput scenarios, where each backend instance runs on one core."""
    import tvm
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    started = time.perf_counter()
    measure_threads = int(measure_threads or num_cores)
    # timed with the threads and pool setting the model runs with; set before anything (the import's constant
    # folding) starts the pool, which reads them once
    tvm_runtime.configure_runtime(measure_threads)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    target = tvm_target.make_target(mcpu, int(num_cores))
    mod, *_ = tune.model_tuning_module(onnx_path, target, batch_size=batch_size, conv_layout=conv_layout,
                                       input_name=input_name, layout=layout, height=height, width=width,
                                       winograd=winograd)
    tasks = tune.extract_tasks(mod, target)
    source = ms.database.JSONDatabase(work_dir=str(database_dir), allow_missing=False,
                                      module_equality="structural") if database_dir else None
    refined = ms.database.JSONDatabase(work_dir=str(out), module_equality="structural")
    rng = np.random.default_rng(0)
    rows = []
    log(f"refining {len(tasks)} tasks ({conv_layout}): {'the database best record and ' if source else ''}"
        f"{len(knobs)} settings of the default schedule each, timed side by side")
    for n, task in enumerate(tasks, 1):
        workload_mod = task.dispatched[0]
        func = workload_mod["main"]
        candidates: list[tuple[str, Any]] = []  # (label, schedule)
        record = source.query_tuning_record(workload_mod, target, task.task_name) if source else None
        if record is not None:
            sch = s_tir.Schedule(workload_mod)
            record.trace.apply_to_schedule(sch, remove_postproc=False)
            candidates.append(("metaschedule", sch))
        for k in knobs:
            sch = default_schedule.schedule(func, target, k)
            if sch is not None:
                candidates.append((f"default {k.label()}", sch))
        args = _args(func, rng)
        timed = []
        reference = None
        for label, sch in candidates:
            try:
                seconds, result = _time(sch.mod, target, args, repeat)
            except Exception as e:  # noqa: BLE001 - a candidate that does not build or run is just not chosen
                log(f"  {task.task_name}: {label} failed ({type(e).__name__}: {str(e).strip()[:120]})")
                continue
            if reference is None:
                reference = result
            elif not np.allclose(result, reference, rtol=RTOL, atol=RTOL * float(np.abs(reference).max() or 1)):
                log(f"  {task.task_name}: {label} computes something else than {timed[0][0]}: left out")
                continue
            timed.append((label, seconds, sch))
        if not timed:
            log(f"  {task.task_name}: no candidate: left to the build's default")
            continue
        label, seconds, sch = min(timed, key=lambda t: t[1])
        workload = refined.commit_workload(workload_mod)
        refined.commit_tuning_record(ms.database.TuningRecord(
            sch.trace, workload, [seconds], target, ms.arg_info.ArgInfo.from_prim_func(func)))
        ms_us = next((t[1] * 1e6 for t in timed if t[0] == "metaschedule"), None)
        default_us = min((t[1] * 1e6 for t in timed if t[0] != "metaschedule"), default=None)
        rows.append({"task": task.task_name, "weight": int(task.weight), "chosen": label, "us": round(seconds * 1e6, 2),
                     "metaschedule_us": None if ms_us is None else round(ms_us, 2),
                     "default_best_us": None if default_us is None else round(default_us, 2)})
        log(f"[{n}/{len(tasks)}] {task.task_name}: {label} {seconds * 1e6:.1f} us"
            f"{f' (MetaSchedule {ms_us:.1f} us)' if ms_us is not None else ''}")
    total = sum(r["us"] * r["weight"] for r in rows)
    info = {"model_name": Path(onnx_path).stem, "onnx_file": Path(onnx_path).name,
            "onnx_sha256": hashlib.sha256(Path(onnx_path).read_bytes()).hexdigest(),
            "target": json.loads(tvm_target.target_json(target)),
            "conv_layout": conv_layout, "winograd": bool(winograd), "batch_size": int(batch_size), "mcpu": mcpu,
            "num_cores": int(num_cores),
            "measure_threads": measure_threads,
            "tvm_version": str(tvm.__version__), "source_database": Path(database_dir).name if database_dir else None,
            "knobs": [k.label() for k in knobs], "tasks": len(tasks), "refined": len(rows),
            "from_metaschedule": sum(r["chosen"] == "metaschedule" for r in rows),
            "model_kernel_us": round(total, 1), "seconds": round(time.perf_counter() - started, 1), "per_task": rows}
    (out / "refine-info.json").write_text(json.dumps(info, indent=1) + "\n")
    log(f"refined: {info['from_metaschedule']} of {len(rows)} tasks keep MetaSchedule's record, the rest our "
        f"schedule; kernels add up to {total / 1000:.2f} ms per batch; {info['seconds']:.0f} s")
    return {**info, "database_dir": str(out)}
