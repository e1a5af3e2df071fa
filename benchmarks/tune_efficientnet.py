#!/usr/bin/env python3
"""Untuned TVM vs MetaSchedule-tuned TVM vs onnxruntime on EfficientNet-Lite0, side by side in one run.

    python benchmarks/tune_efficientnet.py --trials 1500                  # tune (minutes), then measure all three
    python benchmarks/tune_efficientnet.py --db DIR                        # measure with an existing database
    python benchmarks/tune_efficientnet.py --trials 500 --resume_from DIR  # extend a database, then measure
    python benchmarks/tune_efficientnet.py --compare_builders              # MetaSchedule builders on a tiny model

Tuning uses cm_mlperf.tvm.tune and compiling cm_mlperf.tvm.compile (the code the CM scripts run). The database is
kept in --work (default <tmp>/tune-efficientnet-lite0/database) so a later run can --resume_from it. Both TVM
libraries are checked against onnxruntime before they are timed.

Timing: --rounds rounds, each timing onnxruntime, untuned TVM and tuned TVM in turn (interleaved, so drift on a
shared machine hits all three alike), --iters timed iterations per backend per round after --warmup untimed
ones; the table gives the median over all rounds. Compare ratios from one run only.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_backends import effnet_path, host_facts  # noqa: E402


def _tune_module() -> Any:
    return importlib.import_module("cm_mlperf.tvm.tune")


def time_interleaved(fns: dict[str, Any], rounds: int, iters: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each fn over `rounds` rounds of `iters` calls, backends interleaved round by round."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(iters):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return times


def compare_builders(threads: int, mcpu: str, trials: int = 12) -> int:
    """Tune a tiny conv + relu + matmul model with each builder (same trials, small search population), and time
    a batch of the same candidates built by each builder three times in a row."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    tm = _tune_module()
    builders = importlib.import_module("cm_mlperf.tvm.tune_builders")
    from tvm.s_tir import meta_schedule as ms

    rng = np.random.default_rng(1)
    arrays = {"w": (0.3 * rng.standard_normal((8, 3, 3, 3))).astype(np.float32),
              "b": (0.1 * rng.standard_normal(8)).astype(np.float32),
              "fc": (0.3 * rng.standard_normal((128, 10))).astype(np.float32),
              "fb": (0.1 * rng.standard_normal(10)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Flatten", ["r"], ["f"], axis=1),
             helper.make_node("MatMul", ["f", "fc"], ["m"]), helper.make_node("Add", ["m", "fb"], ["logits"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
                              [numpy_helper.from_array(a, n) for n, a in arrays.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    rows = []
    with tempfile.TemporaryDirectory(prefix="compare-builders-") as tmp:
        path = Path(tmp) / "tiny.onnx"
        onnx.save(model, str(path))
        dbs = {}
        for kind in builders.BUILDERS:
            print(f"tuning the tiny model with builder '{kind}' ({trials} trials)...", flush=True)
            out = Path(tmp) / f"db-{kind}"
            t0 = time.perf_counter()
            info = tm.tune_model(path, batch_size=1, mcpu=mcpu, num_cores=threads, trials=trials, out_dir=str(out),
                                 height=8, width=8, builder=kind, population=64, progress_bar=False,
                                 log=lambda m: None)
            dbs[kind] = out
            rows.append({"builder": kind, "tune_s": time.perf_counter() - t0, "trials": info["trials_done"],
                         "failed": sum(t["failed"] for t in info["per_task"])})
        database = ms.database.JSONDatabase(work_dir=str(dbs["inprocess"]))
        target = tm.tvm_target.make_target(mcpu, threads)
        inputs = [ms.builder.BuilderInput(r.as_measure_candidate().sch.mod, target)
                  for r in database.get_all_tuning_records()]
        for row in rows:
            builder = builders.make_builder(row["builder"], max_workers=threads)
            batches = []
            for _ in range(3):
                t0 = time.perf_counter()
                results = builder.build(inputs)
                batches.append(time.perf_counter() - t0)
                for res in results:
                    if res.artifact_path:
                        shutil.rmtree(os.path.dirname(res.artifact_path), ignore_errors=True)
            builders.close_builder(builder)
            row.update(batches=batches, errors=sum(1 for r in results if r.error_msg))
    print(f"\nbatch: the same {len(inputs)} candidates built three times in a row by one builder object")
    print("| builder | tune the tiny model, s | trials (failed) | batch 1 s | batch 2 s | batch 3 s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        b = r["batches"]
        print(f"| {r['builder']} | {r['tune_s']:.1f} | {r['trials']} ({r['failed']}) | {b[0]:.1f} | {b[1]:.1f} | "
              f"{b[2]:.1f} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=1500, help="MetaSchedule trials (ignored with --db)")
    ap.add_argument("--db", default="", help="use this tuning database as it is (no tuning)")
    ap.add_argument("--resume_from", default="", help="copy this database in first, then tune --trials more")
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "tune-efficientnet-lite0"),
                    help="folder for the database (<work>/database) and the libraries")
    ap.add_argument("--threads", type=int, default=0, help="threads for every backend (default: physical cores)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--mcpu", default="", help="LLVM CPU (default: detect-cpu's choice)")
    ap.add_argument("--builder", default="inprocess", help="tuning builder: inprocess, pool or local")
    ap.add_argument("--population", type=int, default=512, help="evolutionary search population")
    ap.add_argument("--focus", type=float, default=1.0,
                    help="tune only the tasks taking this share of the model's time (by the resumed database)")
    ap.add_argument("--rounds", type=int, default=5, help="timing rounds (backends interleaved)")
    ap.add_argument("--iters", type=int, default=10, help="timed iterations per backend per round")
    ap.add_argument("--warmup", type=int, default=3, help="untimed iterations per backend")
    ap.add_argument("--effnet_onnx", default="", help="EfficientNet-Lite0 ONNX file (else converted)")
    ap.add_argument("--compare_builders", action="store_true", help="only compare the tuning builders")
    args = ap.parse_args(argv)

    host = host_facts()
    threads = args.threads or int(host["CM_HOST_CPU_PHYSICAL_CORES"]) or 1
    # TVM_NUM_THREADS and TVM_THREAD_POOL_SPIN_COUNT (what compile-tvm-model hands the harness), before any TVM call
    importlib.import_module("cm_mlperf.tvm.runtime").configure_runtime(threads)
    mcpu = args.mcpu or host["CM_HOST_CPU_LLVM_MCPU"] or "x86-64"
    if args.compare_builders:
        return compare_builders(threads, mcpu)
    tm = _tune_module()
    tc = importlib.import_module("cm_mlperf.tvm.compile")
    runner = importlib.import_module("cm_mlperf.tvm.runtime")
    verify = importlib.import_module("cm_mlperf.tvm.verify")
    import onnxruntime as ort
    import tvm

    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    path, note = effnet_path(args.effnet_onnx, work)
    if path is None:
        print(f"no EfficientNet-Lite0: {note}")
        return 1
    started = _dt.datetime.now().astimezone()
    print(f"# {host['CM_HOST_CPU_MODEL_NAME']}, {threads} thread(s), mcpu {mcpu}; onnxruntime {ort.__version__}, "
          f"TVM {tvm.__version__}; {started.strftime('%Y-%m-%d %H:%M %Z')}", flush=True)

    if args.db:
        db_dir = Path(args.db).resolve()
        tm.check_database_dir(db_dir, "--db")
        w, r = tm.database_counts(db_dir)
        tuning = {"trials": "?", "minutes": 0.0, "tasks": "?", "records": r, "tuned": "?"}
        info_file = db_dir / "tuning-info.json"
        if info_file.is_file():  # written by tune-tvm-model: what the database came from
            info = json.loads(info_file.read_text())
            tuning.update(trials=f"{info['trials_done']} (asked {info['trials_requested']}; earlier run)",
                          minutes=info["tuning_seconds"] / 60, tasks=info["tasks"], tuned=info["tasks_with_records"])
        print(f"using the database {db_dir} as it is: {w} workloads, {r} records", flush=True)
    else:
        db_dir = work / "database"
        if db_dir.exists() and not args.resume_from:
            shutil.rmtree(db_dir)
        t0 = time.perf_counter()
        info = tm.tune_model(path, batch_size=args.batch, mcpu=mcpu, num_cores=threads, trials=args.trials,
                             out_dir=str(db_dir), resume_from=args.resume_from or None, model_name="efficientnet-lite0",
                             builder=args.builder, population=args.population, focus=args.focus)
        tuning = {"trials": f"{info['trials_done']} (asked {info['trials_requested']})",
                  "minutes": (time.perf_counter() - t0) / 60, "tasks": info["tasks"],
                  "records": info["database"]["records"], "tuned": info["tasks_with_records"]}

    libs = {}
    for label, database in (("untuned", None), ("tuned", str(db_dir))):
        print(f"compiling {label} TVM...", flush=True)
        libs[label] = tc.compile_model(path, batch_size=args.batch, mcpu=mcpu, num_cores=threads,
                                       out_dir=str(work / label), model_name="efficientnet-lite0",
                                       database_dir=database, verify=True, log=lambda m: None)
    frontend = importlib.import_module("cm_mlperf.tvm.frontend")
    model = frontend.load_onnx(path)
    input_name = frontend.resolve_input_name(model, None)
    shape = frontend.model_input_shape(model, input_name, args.batch)
    fixed, _ = frontend.set_batch_size(model, input_name, args.batch)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    sess = runner.ort_session(fixed, threads)
    vms = {k: runner.load_vm(v["so_path"]) for k, v in libs.items()}
    ort_out = [np.asarray(a) for a in sess.run(None, {input_name: x})]
    errs = {k: max(c["max_rel_err"] for c in verify.compare_outputs(runner.run_tvm(vm, x), ort_out,
                                                                      [o.name for o in sess.get_outputs()],
                                                                      verify.DEFAULT_RTOL))
            for k, vm in vms.items()}
    print(f"timing: {args.rounds} rounds x {args.iters} iterations per backend...", flush=True)
    fns = {"onnxruntime": lambda: sess.run(None, {input_name: x}),
           "TVM untuned": lambda: runner.run_tvm(vms["untuned"], x),
           "TVM tuned": lambda: runner.run_tvm(vms["tuned"], x)}
    times = time_interleaved(fns, args.rounds, args.iters, args.warmup)
    rate = {k: args.batch / statistics.median(v) for k, v in times.items()}
    spread = {k: (args.batch / max(v), args.batch / min(v)) for k, v in times.items()}
    compile_s = {"TVM untuned": libs["untuned"]["compile_seconds"], "TVM tuned": libs["tuned"]["compile_seconds"]}
    rel = {"TVM untuned": errs["untuned"], "TVM tuned": errs["tuned"]}

    print()
    print(f"EfficientNet-Lite0, batch {args.batch}, {threads} thread(s); tuning: {tuning['trials']} trials, "
          f"{tuning['minutes']:.1f} min, {tuning['tuned']}/{tuning['tasks']} tasks with records, "
          f"{tuning['records']} records in the database")
    print()
    print("| backend | samples/s (median) | min-max | vs onnxruntime | vs untuned TVM | compile s | max rel err |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for k in fns:
        lo, hi = spread[k]
        tail = f"{compile_s[k]:.1f} | {rel[k]:.1e}" if k in rel else "- | -"
        print(f"| {k} | {rate[k]:.2f} | {lo:.2f}-{hi:.2f} | {rate[k] / rate['onnxruntime']:.3f} | "
              f"{rate[k] / rate['TVM untuned']:.2f} | {tail} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
