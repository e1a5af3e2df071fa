"""Compile an ONNX image classifier into an Apache TVM (Relax VM) library and check it against onnxruntime.

compile_model() is the whole step (what customize.py runs); its parts are public functions in modules named
after what they do, so tests, benchmarks and a later tuning step can reuse them:

    target = make_target(mcpu, num_cores)            # tvm_target: dict-form llvm target; mcpu checked against LLVM
    mod = import_onnx(path, input_name, shape)        # tvm_frontend: fixed batch (Reshape constants rewritten)
    ex = build(mod, target, pipeline, database_dir)   # tvm_build: database_dir: a MetaSchedule JSON database to apply
    export_library(ex, "model.so")                    # tvm_build
    verify_against_onnxruntime("model.so", path, inputs, rtol)   # tvm_verify: raises TVMVerificationError

Errors are tvm_errors.TVMCompileError (and its TVMVerificationError); the tolerance is described in tvm_verify.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cm_mlperf.tvm import layout as tvm_layout
from cm_mlperf.tvm.build import DEFAULT_PIPELINE, build, export_library
from cm_mlperf.tvm.errors import TVMCompileError
from cm_mlperf.tvm.frontend import import_onnx, load_onnx, model_input_shape, resolve_input_name, set_batch_size
from cm_mlperf.tvm.log import Heartbeat, Log
from cm_mlperf.tvm.log import log as _log
from cm_mlperf.tvm.target import MCPU_FLAG_HINT, make_target, missing_host_features, target_json
from cm_mlperf.tvm.verify import DEFAULT_RTOL, verification_inputs, verify_against_onnxruntime


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def library_name(model_name: str, batch_size: int) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in model_name) or "model"
    return f"model-{safe}-b{int(batch_size)}.so"


def compile_model(onnx_path: str | os.PathLike[str], *, batch_size: int, mcpu: str, num_cores: int,
                  input_name: str | None = None, pipeline: str = DEFAULT_PIPELINE, out_dir: str = ".",
                  model_name: str | None = None, layout: str = "NCHW", height: int = 224, width: int = 224,
                  verify: bool = True, rtol: float = DEFAULT_RTOL, preprocessed_path: str | None = None,
                  database_dir: str | None = None, host_flags: Sequence[str] = (), model_sha256: str = "",
                  conv_layout: str = "NCHW", winograd: bool = True, log: Log = _log) -> dict[str, Any]:
    """Import, build, export, verify; writes `model-<name>-b<bs>.so` and `compile-info.json` in out_dir.
    Returns the info dict plus 'so_path' (absolute) and 'target_json'."""
    import tvm

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if int(batch_size) < 1:
        raise TVMCompileError(f"batch size must be at least 1, got {batch_size} (--batch_size)")
    target = make_target(mcpu, num_cores)
    missing = missing_host_features(target, host_flags)
    if missing and verify:
        raise TVMCompileError(f"--mcpu={mcpu} lets LLVM use {', '.join(missing)}, which this CPU lacks: the library "
                              f"would crash here (illegal instruction) and cannot be verified. Choose a CPU this "
                              f"machine has ({MCPU_FLAG_HINT}), or cross-compile with --verify=no")
    if missing:
        log(f"warning: cross-compiling for {mcpu}: this CPU lacks {', '.join(missing)}; the library won't run here")

    model = load_onnx(onnx_path)
    name = resolve_input_name(model, input_name)
    shape = model_input_shape(model, name, int(batch_size), layout, int(height), int(width))
    model_name = model_name or Path(onnx_path).stem
    log(f"model {model_name} ({Path(onnx_path).name}), input '{name}' {shape}, target {target_json(target)}, "
        f"pipeline {pipeline}{', tuning database ' + str(database_dir) if database_dir else ''}")

    t0 = time.perf_counter()
    fixed, rewritten = set_batch_size(model, name, int(batch_size))
    if rewritten:
        log(f"batch {batch_size}: rewrote {rewritten} Reshape shape constant(s) that baked in the original batch")
    mod, blocked = tvm_layout.apply(import_onnx(fixed, name, shape), target, conv_layout, winograd)
    if blocked:
        log(f"convolutions in the blocked {conv_layout} layout: {blocked} rewritten")
    import_s = time.perf_counter() - t0
    log(f"imported into Relax in {import_s:.1f} s; compiling "
        f"{'with the tuning database' if database_dir else '(untuned CPU code can take minutes)'}...")
    with Heartbeat("compiling", log=log) as hb:
        ex = build(mod, target, pipeline, database_dir)
    compile_s = hb.elapsed
    so_name = library_name(model_name, int(batch_size))
    so_path = export_library(ex, out / so_name)
    log(f"compiled in {compile_s:.1f} s -> {so_name} ({os.path.getsize(so_path) / 2**20:.1f} MiB)")

    verification: dict[str, Any] = {"passed": None, "skipped": True}
    if verify:
        t1 = time.perf_counter()
        inputs = verification_inputs(shape, preprocessed_path, log=log)
        verification = verify_against_onnxruntime(so_path, fixed, inputs, rtol, name, num_cores, log)
        verification["seconds"] = round(time.perf_counter() - t1, 2)
        log(f"verified against onnxruntime: max rel err {verification['max_rel_err']:.2e} <= {rtol:.0e}")
    info = {
        "model_name": model_name,
        "onnx_file": Path(onnx_path).name,
        "onnx_sha256": model_sha256 or file_sha256(onnx_path),
        "input_name": name,
        "input_shape": shape,
        "outputs": [o.name for o in fixed.graph.output],  # the VM's `main` returns them in this order
        "batch_size": int(batch_size),
        "library": so_name,
        "target": json.loads(target_json(target)),
        "mcpu": mcpu,
        "num_cores": int(num_cores),
        "pipeline": pipeline,
        "conv_layout": conv_layout,
        "winograd": bool(winograd),
        "tuning_database": bool(database_dir),
        "tvm_version": str(tvm.__version__),
        "reshape_constants_rewritten": rewritten,
        "import_seconds": round(import_s, 2),
        "compile_seconds": round(compile_s, 2),
        "verification": verification,
    }
    tmp = out / "compile-info.json.tmp"
    tmp.write_text(json.dumps(info, indent=2, default=str) + "\n")
    os.replace(tmp, out / "compile-info.json")
    return {**info, "so_path": so_path, "target_json": target_json(target)}
