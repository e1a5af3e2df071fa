"""compile-tvm-model's verification: run the compiled library and onnxruntime on the same input(s) and
compare every output.

    verify_against_onnxruntime("model.so", path, inputs, rtol)   # raises TVMVerificationError

Tolerance: for every float output and every sample (first axis), the error is
``max|tvm - ort| / max|ort|`` (normalised by the sample's largest magnitude, so it is scale-free:
the huge activations of the onnx wheel's constant-weight "light" models do not matter, and a flat
softmax compares as well as logits). It must be at most ``rtol`` (default ``DEFAULT_RTOL``). For
[N, classes] outputs the top-1 class must also agree wherever onnxruntime's winner is decisive (leads
TVM's pick by more than 2 x rtol x scale); exact ties may resolve either way. Integer outputs
(e.g. an ArgMax head) must match exactly.
"""
from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cm_mlperf.tvm.errors import TVMVerificationError
from cm_mlperf.tvm.frontend import load_onnx, resolve_input_name, set_batch_size
from cm_mlperf.tvm.log import Log
from cm_mlperf.tvm.log import log as _log
from cm_mlperf.tvm.runtime import load_vm, ort_session, run_tvm

DEFAULT_RTOL = 1e-3


def compare_outputs(tvm_outs: Sequence[np.ndarray], ort_outs: Sequence[np.ndarray],
                    names: Sequence[str], rtol: float) -> list[dict[str, Any]]:
    """Per-output figures (see the module doc for the metric); each has 'ok' and, if not ok, 'problem'."""
    results: list[dict[str, Any]] = []
    if len(tvm_outs) != len(ort_outs):
        return [{"output": "*", "ok": False, "max_rel_err": float("inf"),
                 "problem": f"TVM returned {len(tvm_outs)} outputs, onnxruntime {len(ort_outs)}"}]
    for name, t, o in zip(names, tvm_outs, ort_outs, strict=True):
        res: dict[str, Any] = {"output": name, "shape": list(o.shape), "ok": True}
        if t.shape != o.shape:
            res.update(ok=False, max_rel_err=float("inf"),
                       problem=f"shape {list(t.shape)} from TVM, {list(o.shape)} from onnxruntime")
            results.append(res)
            continue
        if not np.issubdtype(o.dtype, np.floating):
            mism = int(np.count_nonzero(t != o))
            res.update(max_rel_err=0.0 if mism == 0 else float("inf"), mismatches=mism)
            if mism:
                res.update(ok=False, problem=f"{mism} of {o.size} integer values differ")
            results.append(res)
            continue
        t64, o64 = t.astype(np.float64), o.astype(np.float64)
        if not np.isfinite(t64).all() and np.isfinite(o64).all():
            res.update(ok=False, max_rel_err=float("inf"), problem="TVM produced NaN/Inf where onnxruntime did not")
            results.append(res)
            continue
        rows_t = t64.reshape(t64.shape[0], -1) if t64.ndim >= 2 else t64.reshape(1, -1)
        rows_o = o64.reshape(o64.shape[0], -1) if o64.ndim >= 2 else o64.reshape(1, -1)
        scale = np.maximum(np.abs(rows_o).max(axis=1), np.finfo(np.float32).tiny)
        abs_err = np.abs(rows_t - rows_o).max(axis=1)
        rel = abs_err / scale
        res.update(max_rel_err=float(rel.max()), max_abs_err=float(abs_err.max()),
                   max_abs_value=float(scale.max()))
        problems = []
        if not rel.max() <= rtol:
            problems.append(f"max relative error {rel.max():.3e} > tolerance {rtol:.1e} "
                            f"(max abs err {abs_err.max():.3e}, output magnitude {scale.max():.3e})")
        if o64.ndim == 2 and o64.shape[1] > 1:
            top_o, top_t = rows_o.argmax(axis=1), rows_t.argmax(axis=1)
            idx = np.arange(rows_o.shape[0])
            lead = rows_o[idx, top_o] - rows_o[idx, top_t]
            decisive = np.nonzero((top_o != top_t) & (lead > 2 * rtol * scale))[0]
            res.update(argmax_mismatches=int(np.count_nonzero(top_o != top_t)),
                       decisive_argmax_mismatches=int(decisive.size))
            if decisive.size:
                problems.append(f"top-1 class differs on {decisive.size} of {rows_o.shape[0]} samples "
                                f"{decisive.tolist()[:8]} (onnxruntime {top_o[decisive].tolist()[:8]}, "
                                f"TVM {top_t[decisive].tolist()[:8]})")
        if problems:
            res.update(ok=False, problem="; ".join(problems))
        results.append(res)
    return results


def verification_inputs(shape: Sequence[int], preprocessed_path: str | os.PathLike[str] | None = None,
                        seed: int = 0, log: Log = _log) -> dict[str, np.ndarray]:
    """A deterministic random batch, plus a batch of real preprocessed samples if a dataset folder is given
    (its val_map.txt order; repeated to fill the batch). A sample of the wrong shape is skipped with a note."""
    shape = [int(d) for d in shape]
    inputs = {f"random normal (seed {seed})": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}
    if not preprocessed_path:
        return inputs
    folder = Path(preprocessed_path)
    val_map = folder / "val_map.txt"
    names: list[str] = []
    if val_map.is_file():
        names = [ln.split()[0] for ln in val_map.read_text().splitlines() if ln.strip()]
    if not names:
        names = sorted(p.name for p in folder.glob("*.npy"))
    if not names:
        log(f"note: no preprocessed samples in {folder}; verifying on random input only")
        return inputs
    take = [names[k % len(names)] for k in range(shape[0])]
    try:
        batch = np.stack([np.load(folder / n).astype(np.float32) for n in take])
    except (OSError, ValueError) as e:
        log(f"note: cannot read preprocessed samples from {folder} ({e}); verifying on random input only")
        return inputs
    if list(batch.shape) != shape:
        log(f"note: preprocessed samples have shape {list(batch.shape[1:])}, the model wants {shape[1:]}; "
            f"verifying on random input only")
        return inputs
    inputs[f"preprocessed sample(s) {', '.join(sorted(set(take)))[:120]}"] = batch
    return inputs


def verify_against_onnxruntime(so_path: str | os.PathLike[str], onnx_path: str | os.PathLike[str] | Any,
                               inputs: np.ndarray | Mapping[str, np.ndarray], rtol: float = DEFAULT_RTOL,
                               input_name: str | None = None, threads: int | None = None,
                               log: Log = _log) -> dict[str, Any]:
    """Run the compiled library and onnxruntime on the same input(s) and compare every output.

    `inputs`: one batch, or {label: batch}. Returns a report (max_rel_err, per-check figures); raises
    TVMVerificationError naming the input, output, error and argmax mismatches when they disagree."""
    model = onnx_path if hasattr(onnx_path, "graph") else load_onnx(onnx_path)
    model_label = Path(onnx_path).name if not hasattr(onnx_path, "graph") else (model.graph.name or "model")
    name = resolve_input_name(model, input_name)
    batches = {"input": inputs} if isinstance(inputs, np.ndarray) else dict(inputs)
    vm = load_vm(so_path)
    sessions: dict[int, Any] = {}
    checks: list[dict[str, Any]] = []
    failures: list[str] = []
    for label, x in batches.items():
        bs = int(x.shape[0])
        if bs not in sessions:
            fixed, _ = set_batch_size(model, name, bs)
            sessions[bs] = ort_session(fixed, threads)
        sess = sessions[bs]
        out_names = [o.name for o in sess.get_outputs()]
        t0 = time.perf_counter()
        ort_outs = [np.asarray(a) for a in sess.run(None, {name: x})]
        t1 = time.perf_counter()
        tvm_outs = run_tvm(vm, x)
        t2 = time.perf_counter()
        for res in compare_outputs(tvm_outs, ort_outs, out_names, rtol):
            res.update(input=label, batch=bs, ort_seconds=round(t1 - t0, 4), tvm_seconds=round(t2 - t1, 4))
            checks.append(res)
            status = "ok" if res["ok"] else "FAILED"
            log(f"verify [{label}] output '{res['output']}': max rel err {res.get('max_rel_err', 0):.2e}"
                f"{', argmax mismatches ' + str(res['argmax_mismatches']) if 'argmax_mismatches' in res else ''}"
                f" (tolerance {rtol:.0e}) {status}")
            if not res["ok"]:
                failures.append(f"on {label}, output '{res['output']}': {res['problem']}")
    max_rel = max((c.get("max_rel_err", 0.0) for c in checks), default=0.0)
    report = {"rtol": rtol, "max_rel_err": max_rel, "passed": not failures, "checks": checks}
    if failures:
        raise TVMVerificationError(
            f"TVM's compiled {Path(so_path).name} disagrees with onnxruntime on {model_label} "
            f"{'; '.join(failures)}. The library is not trustworthy for this target: try another --pipeline "
            f"or --mcpu; if the difference is benign, loosen --verify_rtol (now {rtol:.1e})", report)
    return report
