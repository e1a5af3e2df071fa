"""Tune an ONNX model's kernels for this CPU with MetaSchedule (Apache TVM 0.27) and keep the tuning records as a
JSON database (database_workload.json + database_tuning_record.json) that compile-tvm-model applies.

    info = tune_model("model.onnx", batch_size=1, mcpu="znver3", num_cores=2, trials=2000, out_dir=".")

The model is imported exactly as compile-tvm-model imports it (the same cm_mlperf.tvm frontend and target modules,
so the tuned TIR functions are the ones its build looks up), legalised and fused by Relax's zero pipeline (the steps
compile-tvm-model's tuned build runs before MetaScheduleApplyDatabase), then every fused TIR function becomes a
tuning task. Tuning appends to the database in out_dir; `resume_from` copies an existing database there first, so
records accumulate across runs and machines.
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cm_mlperf.tvm import databases as tvm_databases
from cm_mlperf.tvm import errors as tvm_errors
from cm_mlperf.tvm import frontend as tvm_frontend
from cm_mlperf.tvm import layout as tvm_layout
from cm_mlperf.tvm import runtime as tvm_runtime
from cm_mlperf.tvm import target as tvm_target
from cm_mlperf.tvm import tune_builders as tvm_tune_builders
from cm_mlperf.tvm import winograd as tvm_winograd
from cm_mlperf.tvm.tune_progress import TuningProgress

DB_FILES = tvm_databases.DB_FILES  # database_workload.json, database_tuning_record.json
DEFAULT_TRIALS = 2000
MIN_TRIALS_PER_TASK = 4  # below this a task's first measured batch is too small to be worth it
MAX_TRIALS_PER_ITER = 64  # MetaSchedule's default batch (candidates measured per task per round)
DEFAULT_POPULATION = 512  # the evolutionary search's population (MetaSchedule's default)
COST_MODELS = ("auto", "xgb", "random")
Log = Callable[[str], None]


class TVMTuningError(tvm_errors.TVMCompileError):
    """Tuning failed or was asked for wrongly; the message says what to do."""


def log(msg: str) -> None:
    print(f"[tune-tvm-model] {msg}", flush=True)


# ----------------------------------------------------------------------------- the database on disk

def database_counts(folder: str | os.PathLike[str]) -> tuple[int, int]:
    """(workloads, tuning records) in a JSON database folder: one JSON document per non-empty line."""
    counts = []
    for name in DB_FILES:
        path = Path(folder) / name
        counts.append(sum(1 for ln in path.read_text().splitlines() if ln.strip()) if path.is_file() else 0)
    return counts[0], counts[1]


def check_database_dir(path: str | os.PathLike[str], what: str = "--resume_from") -> Path:
    """The folder, if it is a MetaSchedule JSON database (databases.check_folder) whose lines all parse; else a
    TVMTuningError saying what is wrong: resuming from a corrupt database would lose its records."""
    try:
        folder = tvm_databases.check_folder(path, what)
    except tvm_databases.TuningDatabaseError as e:
        raise TVMTuningError(str(e)) from None
    for name in DB_FILES:
        for n, line in enumerate((folder / name).read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                json.loads(line)
            except ValueError as e:
                raise TVMTuningError(f"{what}={folder}: {name} line {n} is not JSON ({e}); the database is "
                                     f"corrupt: use another copy or start without {what}") from e
    return folder


def copy_database(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copy a database's two files into dst (atomically per file); nothing to do when src is dst."""
    src, dst = Path(src).resolve(), Path(dst).resolve()
    if src == dst:
        return
    dst.mkdir(parents=True, exist_ok=True)
    for name in DB_FILES:
        tmp = dst / f".{name}.tmp"
        shutil.copyfile(src / name, tmp)
        os.replace(tmp, dst / name)


# ----------------------------------------------------------------------------- tasks and budget

def tuning_module(mod: Any, target: Any) -> Any:
    """The Relax module whose fused TIR functions compile-tvm-model's tuned build looks up in the database:
    DecomposeOpsForInference + CanonicalizeBindings + the zero pipeline (legalise, fuse), under the target."""
    import tvm
    from tvm import relax

    with target:
        seq = tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(),
                                        relax.transform.CanonicalizeBindings(), relax.pipeline.zero_pipeline()])
        with tvm.transform.PassContext(opt_level=3):
            return seq(mod)


def model_tuning_module(onnx_path: str | os.PathLike[str], target: Any, *, batch_size: int, conv_layout: str = "NCHW",
                        input_name: str | None = None, layout: str = "NCHW", height: int = 224,
                        width: int = 224, winograd: bool = True) -> tuple[Any, str, list[int], int]:
    """The ONNX model imported as compile-tvm-model imports it (batch fixed, convolution layout applied), through
    tuning_module(): (module, input name, input shape, convolutions blocked)."""
    model = tvm_frontend.load_onnx(onnx_path)
    name = tvm_frontend.resolve_input_name(model, input_name)
    shape = tvm_frontend.model_input_shape(model, name, int(batch_size), layout, int(height), int(width))
    fixed, _ = tvm_frontend.set_batch_size(model, name, int(batch_size))  # as compile-tvm-model does
    mod, blocked = tvm_layout.apply(tvm_frontend.import_onnx(fixed, name, shape), target, conv_layout, winograd)
    return tuning_module(mod, target), name, shape, blocked


def extract_tasks(mod: Any, target: Any) -> list[Any]:
    """MetaSchedule's tasks (one per distinct fused TIR function) of a tuning_module, minus scheduled ones."""
    from tvm.s_tir.meta_schedule import relax_integration

    tasks = relax_integration.extract_tasks(mod, target)
    return [t for t in tasks if not t.mod.attrs or not t.mod.attrs.get("tirx.is_scheduled", False)]


def plan_budget(trials: int, n_tasks: int, min_per_task: int = MIN_TRIALS_PER_TASK,
                max_per_iter: int = MAX_TRIALS_PER_ITER) -> dict[str, Any]:
    """How many trials to run and how many per batch, so that every task is measured at least once.

    MetaSchedule measures one batch of `per_iter` candidates per task in its first round; a global budget below
    tasks x per_iter ends tuning before the last tasks get any record ("Tuning record is not found" when compiling).
    So the batch shrinks to budget / tasks (at most 64), and a budget below tasks x `min_per_task` is raised."""
    if trials < 1:
        raise TVMTuningError(f"the number of trials must be at least 1, got {trials} (--trials)")
    n = max(1, int(n_tasks))
    floor = n * int(min_per_task)
    budget = max(int(trials), floor)
    per_iter = max(int(min_per_task), min(int(max_per_iter), budget // n))
    note = ""
    if budget > trials:
        note = (f"--trials={trials} is below {n} tasks x {min_per_task} trials (the least that gives every task a "
                f"record): raised to {budget}. Ask for more (hundreds per task) for real speed-ups")
    return {"requested": int(trials), "budget": budget, "per_iter": per_iter, "tasks": n, "raised": budget > trials,
            "note": note}


def focus_tasks(tasks: Sequence[Any], database: Any, target: Any, share: float) -> tuple[list[Any], dict[str, Any]]:
    """The tasks worth more trials: those whose best record x calls per inference add up to `share` of the model's
    time (largest first), plus every task without a record. MetaSchedule's scheduler gives every task at least one
    batch of candidates per round, so a resumed run over all 35 EfficientNet-Lite0 tasks spends most of its trials on
    kernels that take a few per cent of the time; the gradient scheduler then weighs the selected ones."""
    costs = []
    for task in tasks:
        secs = _record_seconds(database.query_tuning_record(task.dispatched[0], target, task.task_name))
        costs.append(None if secs is None else secs * float(task.weight))
    total = sum(c for c in costs if c is not None)
    chosen: set[int] = {i for i, c in enumerate(costs) if c is None}
    acc = 0.0
    for i in sorted((i for i, c in enumerate(costs) if c is not None), key=lambda i: -costs[i]):
        if total and acc >= share * total:
            break
        chosen.add(i)
        acc += costs[i]
    selected = [t for i, t in enumerate(tasks) if i in chosen]
    return selected, {"share": share, "share_selected": (acc / total) if total else 1.0, "tasks": len(selected),
                      "of": len(tasks), "without_record": sum(1 for c in costs if c is None),
                      "names": [t.task_name for t in selected]}


def choose_cost_model(kind: str = "auto") -> str:
    """'xgb' when xgboost imports (and kind allows it), else 'random'."""
    if kind not in COST_MODELS:
        raise TVMTuningError(f"unknown cost model '{kind}': choose one of {', '.join(COST_MODELS)} (--cost_model)")
    if kind == "random":
        return "random"
    try:
        importlib.import_module("xgboost")
        return "xgb"
    except ImportError as e:
        if kind == "xgb":
            raise TVMTuningError("--cost_model=xgb needs xgboost: pip install xgboost-cpu") from e
        return "random"


def _quiet_metaschedule_console() -> None:
    """MetaSchedule logs every batch's task table to stdout at DEBUG level; keep only warnings on the console
    (its per-task log files under logs/ keep everything)."""
    import logging

    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    if logger.level in (logging.NOTSET, logging.DEBUG, logging.INFO):
        logger.setLevel(logging.WARNING)
    # MetaSchedule's create_loggers re-declares this logger's handlers by name: an unnamed handler left by
    # an earlier run (or a test harness) crashes it with "'NoneType' object has no attribute 'format'".
    for handler in list(logger.handlers):
        if handler.get_name() is None:
            logger.removeHandler(handler)


# ----------------------------------------------------------------------------- the whole step

def tune_model(onnx_path: str | os.PathLike[str], *, batch_size: int, mcpu: str, num_cores: int, trials: int,
               out_dir: str = ".", resume_from: str | os.PathLike[str] | None = None, input_name: str | None = None,
               layout: str = "NCHW", height: int = 224, width: int = 224, model_name: str | None = None,
               builder: str = tvm_tune_builders.DEFAULT_BUILDER, cost_model: str = "auto",
               min_trials_per_task: int = MIN_TRIALS_PER_TASK, max_trials_per_iter: int = MAX_TRIALS_PER_ITER,
               min_repeat_ms: int = 100, population: int = DEFAULT_POPULATION, seed: int | None = None,
               host_flags: Sequence[str] = (), model_sha256: str = "", progress_bar: bool = True,
               rpc: dict[str, Any] | None = None, focus: float = 1.0, conv_layout: str = "NCHW",
               winograd: bool = True, log: Log = log) -> dict[str, Any]:
    """Tune and write the database (+ tuning-info.json, logs/) into out_dir. Returns the info dict plus
    'database_dir' (absolute). `focus` < 1 tunes only the tasks that take that share of the model's time (see
    focus_tasks): for growing a database whose every task already has a record."""
    if not 0.0 < float(focus) <= 1.0:
        raise TVMTuningError(f"focus must be in (0, 1], got {focus} (--focus): the share of the model's time whose "
                             f"tasks are tuned; 1 tunes every task")
    import tvm
    from tvm.s_tir import meta_schedule as ms

    started = time.perf_counter()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if int(batch_size) < 1:
        raise TVMTuningError(f"batch size must be at least 1, got {batch_size} (--batch_size)")
    if int(trials) < 1:
        raise TVMTuningError(f"the number of trials must be at least 1, got {trials} (--trials)")
    resumed: dict[str, Any] = {"from": None, "workloads": 0, "records": 0, "trials": 0, "tuning_seconds": 0.0}
    if resume_from:
        src = check_database_dir(resume_from)
        before = tvm_databases.history_totals(src)  # read before the copy: src may be out itself
        copy_database(src, out)
        w, r = database_counts(out)
        resumed = {"from": str(src), "workloads": w, "records": r, **before}
        log(f"resuming from {src}: {w} workloads, {r} tuning records copied in")

    target = tvm_target.make_target(mcpu, int(num_cores))
    missing = [] if rpc else tvm_target.missing_host_features(target, host_flags)
    if missing:
        raise TVMTuningError(f"--mcpu={mcpu} lets LLVM use {', '.join(missing)}, which this CPU lacks: tuning measures "
                             f"the candidates here, so they would crash. Tune on a machine with that CPU, or "
                             f"choose one this machine has")
    model_name = model_name or Path(onnx_path).stem
    mod, name, shape, blocked = model_tuning_module(onnx_path, target, batch_size=batch_size, conv_layout=conv_layout,
                                                    input_name=input_name, layout=layout, height=height, width=width,
                                                    winograd=winograd)
    tasks = extract_tasks(mod, target)
    target_text = tvm_target.target_json(target)
    log(f"model {model_name}, input '{name}' {shape}, target {target_text}, convolutions {conv_layout}"
        f"{f' ({blocked} blocked)' if blocked else ''}: {len(tasks)} tuning tasks")

    database = ms.database.JSONDatabase(work_dir=str(out), module_equality="structural")
    covered_before = sum(1 for t in tasks if database.has_workload(t.dispatched[0]))
    if resume_from:
        log(f"the resumed database already covers {covered_before} of {len(tasks)} tasks")
        if resumed["records"] and not covered_before:
            log("warning: none of its records are for this model/batch/target (another model, batch size, mcpu, "
                "thread count or TVM version?): tuning starts from scratch, its records are kept")

    all_tasks = tasks
    focus_info = None
    if focus < 1.0:
        tasks, focus_info = focus_tasks(tasks, database, target, focus)
        log(f"focus {focus:.2f}: tuning the {len(tasks)} of {len(all_tasks)} tasks that take "
            f"{focus_info['share_selected']:.0%} of the model's time by their best records (calls x latency)"
            f"{'; ' + str(focus_info['without_record']) + ' without a record' if focus_info['without_record'] else ''}")
    searched = [t for t in tasks if not tvm_winograd.is_winograd_task(t.task_name)]
    if len(searched) < len(tasks):  # our Winograd kernels: refine and the default schedule cover them
        log(f"{len(tasks) - len(searched)} Winograd convolution task(s) left out of the search: refine and our "
            f"default schedule schedule them (MetaSchedule's generic search is slow and far behind on them)")
    tasks = searched
    plan = plan_budget(int(trials), len(tasks), min_trials_per_task, max_trials_per_iter)
    cost = choose_cost_model(cost_model)
    progress = TuningProgress([t.task_name for t in tasks], plan["budget"], log, [t.weight for t in tasks],
                              bar=progress_bar)
    builder_obj = None
    tune_s = 0.0
    old_env = {k: os.environ.get(k) for k in ("TVM_NUM_THREADS", tvm_runtime.SPIN_COUNT_ENV)}
    try:
        # the runner's worker process measures the candidates with this many threads, and with the thread pool
        # settings the compiled model runs with (cm_mlperf.tvm.runtime)
        tvm_runtime.configure_runtime(int(num_cores))
        if not tasks:
            log("nothing to tune: the model has no TIR functions for MetaSchedule; the database stays as it is")
        else:
            if plan["note"]:
                log(f"warning: {plan['note']}")
            log(f"tuning {len(tasks)} tasks: {plan['budget']} trials, up to {plan['per_iter']} per batch, cost model "
                f"{cost}, builder {builder}, {num_cores} thread(s); progress: a line per compiled batch, and one per "
                f"task as its measurements come back")
            _quiet_metaschedule_console()
            intrin_s = tvm_tune_builders.import_tensor_intrinsics()
            if intrin_s:
                log(f"loaded MetaSchedule's tensor intrinsics in {intrin_s:.1f} s")
            strategy = ms.search_strategy.EvolutionarySearch(population_size=int(population),
                                                             init_min_unmeasured=min(50, int(population)))
            contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                tasks, work_dir=str(out), strategy=strategy, num_threads=int(num_cores), seed=seed)
            builder_obj = tvm_tune_builders.make_builder(builder, max_workers=int(num_cores), on_batch=progress.built)
            evaluator = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=int(min_repeat_ms),
                                                  enable_cpu_cache_flush=False)
            runner = make_runner(evaluator, rpc, log)
            callbacks = list(ms.measure_callback.MeasureCallback.create("default")) + [progress.callback()]
            cost_obj = ms.cost_model.CostModel.create(
                cost, **({"num_tuning_cores": int(num_cores)} if cost == "xgb" else {}))
            t0 = time.perf_counter()
            try:
                ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(out),
                              max_trials_global=plan["budget"], max_trials_per_task=plan["budget"],
                              num_trials_per_iter=plan["per_iter"], builder=builder_obj, runner=runner,
                              database=database, cost_model=cost_obj, measure_callbacks=callbacks,
                              task_scheduler="gradient")
            except Exception as e:  # noqa: BLE001
                raise TVMTuningError(f"MetaSchedule tuning failed after {progress.total_trials} trials "
                                     f"({type(e).__name__}: {str(e).strip()[:500]})") from e
            tune_s = time.perf_counter() - t0
    finally:
        progress.close()
        tvm_tune_builders.close_builder(builder_obj)
        for key, value in old_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    per_task = progress.summary()
    for task, row in zip(tasks, per_task, strict=True):
        row["database_best_seconds"] = _record_seconds(
            database.query_tuning_record(task.dispatched[0], target, task.task_name))
    tuned_ids = {id(t) for t in tasks}
    for task in (t for t in all_tasks if id(t) not in tuned_ids):  # left out (--focus, Winograd): no trials
        per_task.append({"task": task.task_name, "weight": float(task.weight), "trials": 0, "failed": 0,
                         "best_seconds": None, "database_best_seconds": _record_seconds(
                             database.query_tuning_record(task.dispatched[0], target, task.task_name))})
    untuned = [t.task_name for t in all_tasks if not tvm_winograd.is_winograd_task(t.task_name)
               and database.query_tuning_record(t.dispatched[0], target, t.task_name) is None]
    tasks = all_tasks
    if untuned:
        log(f"warning: {len(untuned)} of {len(tasks)} tasks have no working record and will compile untuned: "
            f"{', '.join(untuned[:10])}{' ...' if len(untuned) > 10 else ''}. Tune longer (--trials)")
    workloads, records = database_counts(out)
    applied, functions = count_tuned_functions(mod, target, database)
    info = {
        "model_name": model_name,
        "onnx_file": Path(onnx_path).name,
        "onnx_sha256": model_sha256,
        "input_name": name,
        "input_shape": shape,
        "batch_size": int(batch_size),
        "target": json.loads(target_text),
        "mcpu": mcpu,
        "num_cores": int(num_cores),
        "conv_layout": conv_layout,
        "winograd": bool(winograd),
        "tvm_version": str(tvm.__version__),
        "trials_requested": plan["requested"],
        "trials_budget": plan["budget"],
        "trials_per_batch": plan["per_iter"],
        "trials_done": progress.total_trials,
        "builder": builder,
        "measured_on": (f"rpc tracker {rpc['host']}:{rpc['port']} key {rpc['key']}" if rpc else "local"),
        "cost_model": cost,
        "tasks": len(tasks),
        "focus": focus_info,
        "tasks_with_records": len(tasks) - len(untuned),
        "tasks_covered_before": covered_before,
        "functions_with_tuned_schedule": applied,
        "functions": functions,
        "resumed": resumed,
        "database": {"workloads": workloads, "records": records, "files": list(DB_FILES)},
        "tuning_seconds": round(tune_s, 1),
        # over every run this database grew from (what a manifest reports)
        "trials_total": int(resumed["trials"] or 0) + progress.total_trials,
        "tuning_seconds_total": (None if resumed["tuning_seconds"] is None else
                                 round(float(resumed["tuning_seconds"]) + tune_s, 1)),
        "seconds": round(time.perf_counter() - started, 1),
        "per_task": per_task,
    }
    tmp = out / "tuning-info.json.tmp"
    tmp.write_text(json.dumps(info, indent=2, default=str) + "\n")
    os.replace(tmp, out / "tuning-info.json")
    log(f"done: {progress.total_trials} trials in {tune_s:.0f} s; database {out.name}: {workloads} workloads, "
        f"{records} records ({records - resumed['records']} new); {len(tasks) - len(untuned)}/{len(tasks)} tasks "
        f"tuned, {applied} of the model's {functions} TIR functions get a tuned schedule")
    return {**info, "database_dir": str(out)}


def make_runner(evaluator: Any, rpc: dict[str, Any] | None, log: Log = log) -> Any:
    """Where candidates are measured: here (LocalRunner), or on the RPC servers registered with a TVM tracker under
    a key (RPCRunner: one measurement in flight per server)."""
    from tvm.s_tir import meta_schedule as ms

    if not rpc:
        return ms.runner.LocalRunner(evaluator_config=evaluator)
    from cm_mlperf.tvm import rpc as tvm_rpc

    servers = int(rpc.get("servers") or 0) or tvm_rpc.count_servers(rpc["host"], int(rpc["port"]), rpc["key"])
    if servers < 1:
        raise TVMTuningError(f"the RPC tracker {rpc['host']}:{rpc['port']} has no free server under the key "
                             f"'{rpc['key']}': start some (cm run script --tags=start,tvm,rpc-server "
                             f"--rpc_tracker={rpc['host']}:{rpc['port']} --rpc_key={rpc['key']})")
    log(f"measuring on {servers} RPC server(s) of tracker {rpc['host']}:{rpc['port']}, key '{rpc['key']}'")
    config = ms.runner.RPCConfig(tracker_host=rpc["host"], tracker_port=int(rpc["port"]), tracker_key=rpc["key"],
                                 session_timeout_sec=int(rpc.get("timeout") or 120))
    return ms.runner.RPCRunner(rpc_config=config, evaluator_config=evaluator, max_workers=servers)


def count_tuned_functions(mod: Any, target: Any, database: Any) -> tuple[int, int]:
    """(functions that get a schedule from the database, TIR functions) when the database is applied to a
    tuning_module the way compile-tvm-model's tuned build applies it (relax.transform.MetaScheduleApplyDatabase)."""
    import tvm
    from tvm import relax, tirx

    with target, database, tvm.transform.PassContext(opt_level=3):
        applied = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
    funcs = [f for _, f in applied.functions_items() if isinstance(f, tirx.PrimFunc)]
    tuned = sum(1 for f in funcs if f.attrs is not None and bool(f.attrs.get("tirx.is_scheduled", False)))
    return tuned, len(funcs)


def _record_seconds(record: Any) -> float | None:
    if record is None:
        return None
    secs = [float(getattr(s, "value", s)) for s in (record.run_secs or [])]
    return sum(secs) / len(secs) if secs else None
