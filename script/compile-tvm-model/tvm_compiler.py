"""Compile an ONNX image classifier into an Apache TVM (Relax VM) library and check it against onnxruntime.

Steps, each a public function so tests, benchmarks and a later tuning step can reuse them:

    target = make_target(mcpu, num_cores)            # dict-form llvm target; mcpu checked against LLVM
    mod = import_onnx(path, input_name, shape)        # fixed batch (Reshape constants rewritten)
    ex = build(mod, target, pipeline, database_dir)   # database_dir: a MetaSchedule JSON database to apply
    export_library(ex, "model.so")
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

import copy
import difflib
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_RTOL = 1e-3
DEFAULT_PIPELINE = "default"
# name -> what it does (see make_pipeline)
PIPELINES: dict[str, str] = {
    "default": "tvm.compile's default Relax pipeline: legalise ops to TIR, no fusion (TVM's own default on CPU)",
    "default_build": "same as default",
    "fused": "DecomposeOpsForInference + relax.get_default_pipeline(target): legalise, then fuse ops",
}
# LLVM CPU feature -> /proc/cpuinfo flag: if the target needs it and the host lacks it, the library
# would die with SIGILL here (so it cannot be verified on this machine).
LLVM_FEATURE_TO_CPUINFO_FLAG: dict[str, str] = {
    "avx": "avx",
    "avx2": "avx2",
    "fma": "fma",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512dq": "avx512dq",
    "avx512vl": "avx512vl",
    "avx512vnni": "avx512_vnni",
    "avx512bf16": "avx512_bf16",
    "avx512fp16": "avx512_fp16",
    "avxvnni": "avx_vnni",
    "amx-tile": "amx_tile",
    "amx-bf16": "amx_bf16",
    "amx-int8": "amx_int8",
}
MCPU_FLAG_HINT = "--mcpu=<llvm cpu> (env CM_TVM_MCPU)"

Log = Callable[[str], None]


class TVMCompileError(RuntimeError):
    """Compiling the model failed; the message says what was wrong and what to do."""


class TVMVerificationError(TVMCompileError):
    """The compiled library disagrees with onnxruntime beyond the tolerance."""

    def __init__(self, message: str, report: dict[str, Any]):
        super().__init__(message)
        self.report = report


def _log(msg: str) -> None:
    print(f"[compile-tvm-model] {msg}", flush=True)


class Heartbeat:
    """Prints "<what>: still running (N s)" every `every` seconds while a long blocking call runs."""

    def __init__(self, what: str, every: float = 15.0, log: Log = _log):
        self.what, self.every, self.log = what, every, log
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.start = 0.0

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.log(f"{self.what}: still running ({time.perf_counter() - self.start:.0f} s)")

    def __enter__(self) -> Heartbeat:
        self.start = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


# --------------------------------------------------------------------------- target

def llvm_triple() -> str:
    """The LLVM triple TVM generates code for by default (this host's)."""
    from tvm.target import codegen

    return str(codegen.llvm_get_system_triple())


def known_llvm_cpus() -> list[str]:
    """CPU names LLVM accepts for this host's triple ([] if TVM cannot list them)."""
    import tvm
    from tvm.target import codegen

    try:
        return sorted(str(c) for c in codegen.llvm_get_cpu_archlist(tvm.target.Target({"kind": "llvm"})))
    except Exception:  # noqa: BLE001 - listing is only for the error message
        return []


def check_mcpu(mcpu: str) -> None:
    """Raise TVMCompileError if LLVM (as built into TVM) does not know this CPU name."""
    from tvm.target import codegen

    if not mcpu:
        raise TVMCompileError(f"no LLVM CPU name given: pass {MCPU_FLAG_HINT}, or run detect-cpu")
    triple = llvm_triple()
    try:
        valid = bool(codegen.llvm_is_valid_cpu(mcpu, triple))
    except Exception:  # noqa: BLE001 - cannot check: let LLVM decide at build time
        return
    if not valid:
        close = difflib.get_close_matches(mcpu, known_llvm_cpus(), n=5, cutoff=0.5)
        hint = f" Close names: {', '.join(close)}." if close else ""
        raise TVMCompileError(
            f"LLVM {codegen.llvm_version_major(allow_none=True)} in TVM does not know the CPU '{mcpu}' "
            f"(triple {triple}).{hint} Override it with {MCPU_FLAG_HINT}, e.g. x86-64, haswell, "
            f"skylake-avx512, znver3 or sapphirerapids.")


def target_dict(mcpu: str, num_cores: int) -> dict[str, Any]:
    """The dict form of the llvm target (TVM 0.27 rejects the "llvm -mcpu=..." string form)."""
    return {"kind": "llvm", "mcpu": mcpu, "num-cores": int(num_cores)}


def make_target(mcpu: str, num_cores: int) -> Any:
    """A tvm.target.Target for CPU code tuned to `mcpu` using `num_cores` threads (mcpu checked first)."""
    import tvm

    if int(num_cores) < 1:
        raise TVMCompileError(f"num-cores must be at least 1, got {num_cores} (--threads)")
    check_mcpu(mcpu)
    try:
        return tvm.target.Target(target_dict(mcpu, num_cores))
    except Exception as e:  # noqa: BLE001
        raise TVMCompileError(f"TVM rejected the target {target_dict(mcpu, num_cores)}: {e}. "
                              f"Override the CPU with {MCPU_FLAG_HINT}") from e


def missing_host_features(target: Any, host_flags: Sequence[str]) -> list[str]:
    """CPU features the target's code may use that this host (its cpuinfo flags) lacks."""
    from tvm.target import codegen

    if not host_flags:
        return []
    try:
        features = {str(f) for f in codegen.llvm_get_cpu_features(target)}
    except Exception:  # noqa: BLE001
        return []
    have = set(host_flags)
    return sorted(f for f, flag in LLVM_FEATURE_TO_CPUINFO_FLAG.items() if f in features and flag not in have)


# --------------------------------------------------------------------------- ONNX

def load_onnx(path: str | os.PathLike[str]) -> Any:
    """Load and check an ONNX file; a missing or corrupt file is a clear TVMCompileError."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise TVMCompileError(f"ONNX model not found: {path} (set CM_ML_MODEL_FILE_WITH_PATH or run a "
                              f"get-ml-model script)")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - protobuf DecodeError and friends
        raise TVMCompileError(f"{path} is not a readable ONNX model ({type(e).__name__}: {e}); the file is "
                              f"corrupt or truncated: fetch the model again (remove its cache entry)") from e
    if not model.graph.node:
        raise TVMCompileError(f"{path} holds no ONNX graph nodes; the file is corrupt or not an ONNX model: "
                              f"fetch the model again (remove its cache entry)")
    try:
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001
        raise TVMCompileError(f"{path} fails the ONNX checker: {e}; fetch or convert the model again") from e
    return model


def graph_inputs(model: Any) -> list[str]:
    """Names of the real graph inputs (not initialisers listed as inputs, as old opsets do)."""
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def _static_dims(value_info: Any) -> list[int | None]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]


def resolve_input_name(model: Any, input_name: str | None) -> str:
    """The given input name checked against the graph, or the graph's only input."""
    names = graph_inputs(model)
    if input_name:
        if input_name not in names:
            raise TVMCompileError(f"the ONNX graph has no input '{input_name}' (its inputs: {names}); fix "
                                  f"CM_ML_MODEL_INPUT_NAME")
        return input_name
    if len(names) != 1:
        raise TVMCompileError(f"the ONNX graph has inputs {names}: set CM_ML_MODEL_INPUT_NAME to the image input")
    return names[0]


def model_input_shape(model: Any, input_name: str, batch_size: int, layout: str = "NCHW",
                      height: int = 224, width: int = 224, channels: int = 3) -> list[int]:
    """The fixed input shape: the graph's own dims with batch `batch_size`, else from layout/H/W."""
    for vi in model.graph.input:
        if vi.name == input_name:
            dims = _static_dims(vi)
            if len(dims) == 4 and all(d is not None for d in dims[1:]):
                return [int(batch_size)] + [int(d) for d in dims[1:]]  # type: ignore[arg-type]
    layout = layout.upper()
    if layout == "NHWC":
        return [int(batch_size), int(height), int(width), int(channels)]
    if layout == "NCHW":
        return [int(batch_size), int(channels), int(height), int(width)]
    raise TVMCompileError(f"unknown input layout '{layout}' (CM_ML_MODEL_INPUT_LAYOUT: NCHW or NHWC)")


def set_batch_size(model: Any, input_name: str, batch_size: int) -> tuple[Any, int]:
    """A copy of the model with a fixed batch: input/output dim 0 set, and Reshape shape constants whose
    first element is the graph's baked batch (e.g. light_resnet50's [1, 2048]) rewritten.
    Returns (model, number of Reshape constants rewritten)."""
    from onnx import TensorProto, helper, numpy_helper

    model = copy.deepcopy(model)
    graph = model.graph
    old_batch: int | None = None
    for vi in graph.input:
        if vi.name == input_name:
            dims = vi.type.tensor_type.shape.dim
            if dims:
                if dims[0].HasField("dim_value") and dims[0].dim_value > 0:
                    old_batch = dims[0].dim_value
                dims[0].ClearField("dim_param")
                dims[0].dim_value = int(batch_size)
    for vi in graph.output:
        dims = vi.type.tensor_type.shape.dim
        if dims and (not dims[0].HasField("dim_value") or dims[0].dim_value == old_batch):
            dims[0].ClearField("dim_param")
            dims[0].dim_value = int(batch_size)
    del graph.value_info[:]  # shape hints of the old batch would contradict the new one

    rewritten = 0
    if old_batch is None or old_batch == batch_size:
        return model, rewritten
    inits = {t.name: t for t in graph.initializer}
    constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant" and n.output}
    listed_inputs = {i.name for i in graph.input}
    renamed: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        shape_name = node.input[1]
        if shape_name in renamed:
            node.input[1] = renamed[shape_name]
            continue
        if shape_name in inits:
            arr = numpy_helper.to_array(inits[shape_name])
        elif shape_name in constants:
            attr = next((a for a in constants[shape_name].attribute if a.name == "value"), None)
            if attr is None:
                continue
            arr = numpy_helper.to_array(attr.t)
        else:
            continue  # computed at run time (Shape -> ...): follows the input's batch by itself
        if arr.ndim != 1 or arr.size < 2 or int(arr[0]) != old_batch:
            continue
        new = arr.copy()
        new[0] = batch_size
        new_name = f"{shape_name}__batch{batch_size}"
        graph.initializer.append(numpy_helper.from_array(new, new_name))
        if shape_name in listed_inputs:  # old opsets list every initialiser as a graph input too
            graph.input.append(helper.make_tensor_value_info(new_name, TensorProto.INT64, [int(new.size)]))
        renamed[shape_name] = new_name
        node.input[1] = new_name
        rewritten += 1
    return model, rewritten


def import_onnx(path_or_model: str | os.PathLike[str] | Any, input_name: str | None, shape: Sequence[int]) -> Any:
    """Import an ONNX model into a Relax IRModule with a fixed input shape (batch = shape[0])."""
    from tvm.relax.frontend import onnx as relax_onnx

    model = path_or_model if hasattr(path_or_model, "graph") else load_onnx(path_or_model)
    name = resolve_input_name(model, input_name)
    model, _ = set_batch_size(model, name, int(shape[0]))
    try:
        return relax_onnx.from_onnx(model, shape_dict={name: [int(d) for d in shape]}, dtype_dict="float32",
                                    keep_params_in_input=False)
    except Exception as e:  # noqa: BLE001
        raise TVMCompileError(f"TVM's ONNX importer failed ({type(e).__name__}: {str(e).strip()[:500]}); the "
                              f"model uses an op or attribute TVM {_tvm_version()} does not support") from e


# --------------------------------------------------------------------------- build

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
        # static_shape_tuning's steps with zero trials: legalise + fuse, apply the records, then lower.
        with target:  # MetaScheduleApplyDatabase reads the target from the context when it is created
            passes = [relax.transform.DecomposeOpsForInference(), relax.transform.CanonicalizeBindings(),
                      relax.pipeline.zero_pipeline(),
                      relax.transform.MetaScheduleApplyDatabase(work_dir=str(db), enable_warning=False),
                      relax.pipeline.default_build_pipeline()]
        return tvm.transform.Sequential(passes, name="tuned")
    if name == "fused":
        return tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(),
                                         relax.get_default_pipeline(target)], name="fused")
    return "default"


def build(mod: Any, target: Any, pipeline: str = DEFAULT_PIPELINE,
          database_dir: str | os.PathLike[str] | None = None) -> Any:
    """Compile a Relax IRModule for the target; returns a tvm Executable."""
    import tvm

    relax_pipeline = make_pipeline(pipeline, target, database_dir)
    try:
        with target, tvm.transform.PassContext(opt_level=3):
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


def target_json(target: Any) -> str:
    """The target as a JSON string that tvm.target.Target(json.loads(s)) rebuilds."""
    attrs = dict(getattr(target, "attrs", {}) or {})
    out: dict[str, Any] = {"kind": str(target.kind.name)}
    for key in ("mtriple", "mcpu", "mattr", "num-cores"):
        value = attrs.get(key)
        if value is None or value == "":
            continue
        if key == "num-cores":
            out[key] = int(value)
        elif isinstance(value, str):
            out[key] = str(value)
        else:
            out[key] = [str(v) for v in value]
    return json.dumps(out, sort_keys=True)


def _tvm_version() -> str:
    try:
        import tvm

        return str(tvm.__version__)
    except Exception:  # noqa: BLE001
        return "?"


# --------------------------------------------------------------------------- run and compare

def load_vm(so_path: str | os.PathLike[str]) -> Any:
    """Load a compiled library into a Relax VirtualMachine on the CPU."""
    import tvm
    from tvm import relax

    if not Path(so_path).is_file():
        raise TVMCompileError(f"compiled TVM library not found: {so_path}")
    try:
        lib = tvm.runtime.load_module(str(so_path))
        return relax.VirtualMachine(lib, tvm.cpu())
    except Exception as e:  # noqa: BLE001
        raise TVMCompileError(f"cannot load {so_path} as a TVM Relax library ({type(e).__name__}: {e}); "
                              f"recompile it with this TVM") from e


def _flatten(out: Any) -> list[np.ndarray]:
    if hasattr(out, "numpy"):
        return [np.asarray(out.numpy())]
    if isinstance(out, (list, tuple)) or hasattr(out, "__len__"):
        flat: list[np.ndarray] = []
        for item in out:
            flat.extend(_flatten(item))
        return flat
    return [np.asarray(out)]


def run_tvm(vm: Any, x: np.ndarray) -> list[np.ndarray]:
    """Run the VM's `main` on one input batch; every output as a numpy array."""
    import tvm

    return _flatten(vm["main"](tvm.runtime.tensor(np.ascontiguousarray(x, dtype=np.float32))))


def ort_session(model: Any, threads: int | None = None) -> Any:
    """An onnxruntime CPU session for an in-memory ModelProto."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # hide "Removing initializer" warnings of old-opset graphs
    if threads:
        opts.intra_op_num_threads = int(threads)
    return ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])


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


# --------------------------------------------------------------------------- the whole step

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
                  log: Log = _log) -> dict[str, Any]:
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
    mod = import_onnx(fixed, name, shape)
    import_s = time.perf_counter() - t0
    log(f"imported into Relax in {import_s:.1f} s; compiling (untuned CPU code can take minutes)...")
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
