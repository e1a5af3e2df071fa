#!/usr/bin/env python3
"""Where the time goes: tuned TVM per TIR function against onnxruntime per operator, layer by layer, one run.

    python benchmarks/profile_tvm_vs_ort.py --db tuning-databases/efficientnet-lite0-b1-x86_64_v4
    python benchmarks/profile_tvm_vs_ort.py --db DIR --onnx model.onnx --batch 1 --threads 2 --iters 200

TVM: the tuned library runs in a Relax VM with an instrument that timestamps every kernel call (per function:
calls per inference, median microseconds per call inside the model), and each function is also timed alone
(time_evaluator, warm cache, as MetaSchedule measured it). The VM's whole `main` is timed without the instrument;
what the kernels do not account for is the VM's own overhead (allocation, calls, the Python entry).
onnxruntime: SessionOptions.enable_profiling, per node and per operator type ("kernel_time" events), and the
whole session.run. Conv layers are paired in execution order (TVM's i-th conv call with onnxruntime's i-th Conv),
and classed by shape: stem (3 input channels), depthwise (groups = channels), 1x1 (pointwise), other.
Both backends use --threads threads and the same random input (seed 0).
"""
from __future__ import annotations

import argparse
import collections
import importlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_backends import effnet_path, host_facts  # noqa: E402


def conv_class(in_channels: int, out_channels: int, group_in: int, kh: int, kw: int) -> str:
    """A conv layer's kind from its data and weight shapes (group_in = weight's input channels per group)."""
    if in_channels == 3:
        return "stem conv"
    if group_in == 1 and out_channels == in_channels and in_channels > 1:
        return f"depthwise {kh}x{kw}"
    if kh == kw == 1:
        return "1x1 conv"
    return f"conv {kh}x{kw}"


# ----------------------------------------------------------------------------- onnxruntime

def ort_profile(model: Any, feed: dict[str, np.ndarray], threads: int, iters: int, tmp: Path) -> dict[str, Any]:
    """Per-node median kernel microseconds (execution order), per op type, and session.run's median."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp / "ort-profile")
    sess = ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    for _ in range(10):
        sess.run(None, feed)
    runs = []
    for _ in range(iters):
        t0 = time.perf_counter()
        sess.run(None, feed)
        runs.append(time.perf_counter() - t0)
    events = json.loads(Path(sess.end_profiling()).read_text())
    per_node: dict[str, list[float]] = collections.defaultdict(list)
    op_of: dict[str, str] = {}
    order: list[str] = []
    for ev in events:
        if ev.get("cat") != "Node" or not ev.get("name", "").endswith("_kernel_time"):
            continue
        node = ev["name"][: -len("_kernel_time")]
        if node not in op_of:
            order.append(node)
        op_of[node] = ev.get("args", {}).get("op_name", "?")
        per_node[node].append(float(ev["dur"]))
    n_runs = 10 + iters
    nodes = []
    for node in order:
        durs = per_node[node][-iters:]
        calls = max(1, round(len(per_node[node]) / n_runs))
        nodes.append({"node": node, "op": op_of[node], "us": statistics.median(durs) * calls,
                      "kind": op_of[node]})
    return {"run_us": statistics.median(runs) * 1e6, "nodes": nodes}


# ----------------------------------------------------------------------------- TVM

def tvm_profile(so_path: str, x: np.ndarray, iters: int) -> dict[str, Any]:
    """Per kernel call (execution order) and per function: median us in the model and alone; main's median."""
    import tvm
    from cm_mlperf.tvm import runtime as runner

    vm = runner.load_vm(so_path)
    inp = tvm.runtime.tensor(np.ascontiguousarray(x, dtype=np.float32))
    for _ in range(10):
        vm["main"](inp)
    runs = []
    for _ in range(iters):
        t0 = time.perf_counter()
        vm["main"](inp)
        runs.append(time.perf_counter() - t0)

    calls: list[tuple[str, float]] = []  # (symbol, seconds) of one inference, in order
    shapes: dict[str, list[tuple[int, ...]]] = {}
    args_of: dict[str, tuple[Any, ...]] = {}
    pending: list[float] = []

    def instrument(func: Any, symbol: str, before: bool, ret: Any, *args: Any) -> int:
        if before:
            pending.append(time.perf_counter())
            return 0
        dt = time.perf_counter() - pending.pop()
        if symbol.startswith("vm.builtin") or symbol.startswith("relax."):
            return 0
        calls.append((symbol, dt))
        if symbol not in shapes:
            shapes[symbol] = [tuple(a.shape) for a in args if hasattr(a, "shape")]
            args_of[symbol] = args
        return 0

    vm.set_instrument(instrument)
    per_call: dict[int, list[float]] = collections.defaultdict(list)
    order: list[str] = []
    n_prof = max(20, iters // 2)
    for _ in range(n_prof):
        calls.clear()
        vm["main"](inp)
        if not order:
            order = [s for s, _ in calls]
        for i, (_, dt) in enumerate(calls):
            per_call[i].append(dt)
    alone: dict[str, float] = {}
    lib = tvm.runtime.load_module(so_path)
    kernels_lib = lib.imports[0] if lib.imports else lib  # the TIR functions live in the imported LLVM module
    for sym, args in args_of.items():
        try:
            fn = kernels_lib.time_evaluator(sym, tvm.cpu(), number=20, repeat=5, min_repeat_ms=20)
            alone[sym] = statistics.median(fn(*args).results) * 1e6
        except Exception:  # noqa: BLE001 - a builtin or packed call that cannot be timed alone
            alone[sym] = float("nan")
    kernels = []
    for i, sym in enumerate(order):
        kernels.append({"symbol": sym, "us": statistics.median(per_call[i]) * 1e6, "alone_us": alone.get(sym),
                        "kind": tvm_kind(sym, shapes.get(sym, []))})
    return {"run_us": statistics.median(runs) * 1e6, "kernels": kernels}


CONV_OPS = ("Conv", "FusedConv", "NhwcFusedConv", "QLinearConv")
# onnxruntime op types -> the layer kinds the TVM side uses
ORT_KINDS = {"GlobalAveragePool": "global average pool", "Gemm": "classifier (matmul)", "MatMul": "classifier (matmul)",
             "ReorderInput": "layout transform", "ReorderOutput": "layout transform", "Flatten": "reshape",
             "Reshape": "reshape", "Squeeze": "reshape"}


def tvm_kind(symbol: str, shapes: list[tuple[int, ...]]) -> str:
    if "conv2d" in symbol and len(shapes) >= 2 and len(shapes[0]) == 4 and len(shapes[1]) == 4:
        data, weight = shapes[0], shapes[1]
        return conv_class(data[1], weight[0], weight[1], weight[2], weight[3])
    if "matmul" in symbol or "dense" in symbol:
        return "classifier (matmul)"
    if symbol.startswith("mean"):
        return "global average pool"
    if symbol.startswith(("reshape", "squeeze", "flatten")):
        return "reshape"
    if "layout_transform" in symbol:
        return "layout transform"
    return symbol


# ----------------------------------------------------------------------------- tables

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True, help="MetaSchedule JSON database to apply (folder)")
    ap.add_argument("--onnx", default="", help="ONNX model (default: EfficientNet-Lite0, converted)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="threads for both (default: physical cores)")
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--so", default="", help="an already compiled tuned library (skips the compile)")
    ap.add_argument("--json", default="", help="also write the raw figures here")
    args = ap.parse_args(argv)

    host = host_facts()
    threads = args.threads or int(host["CM_HOST_CPU_PHYSICAL_CORES"]) or 1
    # TVM_NUM_THREADS and TVM_THREAD_POOL_SPIN_COUNT (what compile-tvm-model hands the harness), before any TVM call
    importlib.import_module("cm_mlperf.tvm.runtime").configure_runtime(threads)
    mcpu = host["CM_HOST_CPU_LLVM_MCPU"] or "x86-64"
    from cm_mlperf.tvm import compile as tc
    from cm_mlperf.tvm import frontend

    with tempfile.TemporaryDirectory(prefix="profile-tvm-ort-") as tmp_s:
        tmp = Path(tmp_s)
        path, note = effnet_path(args.onnx, tmp)
        if path is None:
            print(note)
            return 1
        model = frontend.load_onnx(path)
        name = frontend.resolve_input_name(model, None)
        shape = frontend.model_input_shape(model, name, args.batch)
        fixed, _ = frontend.set_batch_size(model, name, args.batch)
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        so = args.so
        if not so:
            t0 = time.perf_counter()
            so = tc.compile_model(path, batch_size=args.batch, mcpu=mcpu, num_cores=threads, out_dir=str(tmp / "lib"),
                                  database_dir=str(Path(args.db).resolve()), verify=True,
                                  log=lambda m: None)["so_path"]
            print(f"# compiled and verified the tuned library in {time.perf_counter() - t0:.0f} s", flush=True)
        ort_r = ort_profile(fixed, {name: x}, threads, args.iters, tmp)
        tvm_r = tvm_profile(so, x, args.iters)
    report(ort_r, tvm_r, threads, args.batch, mcpu)
    if args.json:
        Path(args.json).write_text(json.dumps({"ort": ort_r, "tvm": tvm_r}, indent=1))
    return 0


def report(ort_r: dict[str, Any], tvm_r: dict[str, Any], threads: int, batch: int, mcpu: str) -> None:
    ks, ns = tvm_r["kernels"], ort_r["nodes"]
    k_sum, n_sum = sum(k["us"] for k in ks), sum(n["us"] for n in ns)
    print(f"\n# batch {batch}, {threads} thread(s), mcpu {mcpu}")
    print("| | onnxruntime | TVM |")
    print("| --- | ---: | ---: |")
    print(f"| whole run, median us | {ort_r['run_us']:.0f} | {tvm_r['run_us']:.0f} |")
    print(f"| kernels (sum of per-call medians), us | {n_sum:.0f} | {k_sum:.0f} |")
    print(f"| kernels timed alone (warm cache), us | - | {sum(k['alone_us'] or 0 for k in ks):.0f} |")
    print(f"| kernel calls per inference | {len(ns)} | {len(ks)} |")

    convs_t = [k for k in ks if "conv" in k["symbol"]]
    convs_o = [n for n in ns if n["op"] in CONV_OPS]
    # same layers in the same order: ORT's conv takes TVM's shape class
    for k, o in zip(convs_t, convs_o, strict=False):
        o["kind"] = k["kind"]
    for n in ns:
        n["kind"] = ORT_KINDS.get(n["kind"], n["kind"])
    by_kind: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0, 0])
    for n in ns:
        by_kind[n["kind"]][0] += n["us"]
        by_kind[n["kind"]][2] += 1
    for k in ks:
        by_kind[k["kind"]][1] += k["us"]
        by_kind[k["kind"]][3] += 1
    print("\n| layer kind | ORT us (nodes) | TVM us (calls) | TVM / ORT time |")
    print("| --- | ---: | ---: | ---: |")
    for kind, (o, t, on, tn) in sorted(by_kind.items(), key=lambda kv: -kv[1][1]):
        ratio = f"{t / o:.2f}" if o else "-"
        print(f"| {kind} | {o:.0f} ({on}) | {t:.0f} ({tn}) | {ratio} |")

    print(f"\n| # | TVM function | kind | TVM us in model | alone | ORT node ({len(convs_o)} convs) | ORT us | "
          f"TVM/ORT |")
    print("| ---: | --- | --- | ---: | ---: | --- | ---: | ---: |")
    for i, k in enumerate(convs_t):
        o = convs_o[i] if i < len(convs_o) else None
        alone = f"{k['alone_us']:.0f}" if k["alone_us"] == k["alone_us"] and k["alone_us"] is not None else "-"
        if o:
            print(f"| {i} | {k['symbol']} | {k['kind']} | {k['us']:.0f} | {alone} | {o['node']} ({o['op']}) | "
                  f"{o['us']:.0f} | {k['us'] / max(o['us'], 1e-9):.2f} |")
        else:
            print(f"| {i} | {k['symbol']} | {k['kind']} | {k['us']:.0f} | {alone} | - | - | - |")
    others = [k for k in ks if "conv" not in k["symbol"]]
    if others:
        print("\nTVM non-conv calls: " + ", ".join(f"{k['symbol']} {k['us']:.0f} us" for k in others))


if __name__ == "__main__":
    sys.exit(main())
