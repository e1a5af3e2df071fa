"""Inference backends behind one small interface, for the MLPerf harness.

A backend is loaded once with the model facts, then `predict(batch[N, ...]) -> logits[N, classes]` for
any N. Backends whose compiled model has a fixed batch size (a TVM library, an ONNX graph with a
static batch dimension) split the input into chunks and pad the last one; the caller never sees it.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np


@dataclass
class ModelFacts:
    """What a backend needs to know about the model (from CM_ML_MODEL_* / CM_TVM_* env)."""

    name: str = "model"
    onnx_path: str = ""
    input_name: str = ""
    output_name: str = ""
    label_offset: int = 0
    tvm_so: str = ""
    tvm_batch_size: int = 0
    tvm_output_index: int = 0  # which of the library's outputs is CM_ML_MODEL_OUTPUT_NAME


class Backend(Protocol):
    name: str
    fixed_batch_size: int | None

    def load(self, model: ModelFacts, threads: int, batch_size: int) -> None: ...

    def predict(self, batch: np.ndarray) -> np.ndarray: ...

    def version(self) -> str: ...


def thread_spin() -> bool:
    """Whether idle worker threads spin between kernels (`--thread_spin=yes`) or sleep at once (the default).

    Spinning saves a wake-up per kernel on an idle machine; on a shared one it takes the cores other threads
    need (measured: tuned TVM 12-18 samples/s spinning vs 31-54 not, onnxruntime 17-32 vs 50-60, load 8 on
    2 cores). Both backends follow the same setting so that their comparison is fair.
    """
    return os.environ.get("CM_MLPERF_THREAD_SPIN", "no").strip().lower() in ("yes", "true", "on", "1")


def _run_chunked(run_fixed, batch: np.ndarray, fixed: int) -> np.ndarray:
    """Feed `batch` through a function that only takes exactly `fixed` samples, padding the tail."""
    import numpy as np

    n = batch.shape[0]
    outs = []
    for start in range(0, n, fixed):
        chunk = batch[start:start + fixed]
        real = chunk.shape[0]
        if real < fixed:
            # Pad with copies of the first sample: valid input, results are dropped below.
            pad = np.repeat(chunk[:1], fixed - real, axis=0)
            chunk = np.concatenate([chunk, pad], axis=0)
        outs.append(run_fixed(np.ascontiguousarray(chunk))[:real])
    return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=0)


def _as_logits(out: np.ndarray, n: int) -> np.ndarray:
    import numpy as np

    out = np.asarray(out)
    if out.ndim != 2:
        out = out.reshape(n, -1)
    return out


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self) -> None:
        self.fixed_batch_size: int | None = None
        self._sess = None
        self._input = ""
        self._output: list[str] | None = None

    def load(self, model: ModelFacts, threads: int, batch_size: int) -> None:
        import onnxruntime as ort

        if not model.onnx_path or not os.path.isfile(model.onnx_path):
            raise FileNotFoundError(f"ONNX model not found: '{model.onnx_path}' (set CM_ML_MODEL_FILE_WITH_PATH)")
        opts = ort.SessionOptions()
        if threads > 0:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        # the same thread policy as the TVM backend (thread_spin()): compared side by side, both spin or neither
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if thread_spin() else "0")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only: graph-cleanup warnings would drown the run's output
        self._sess = ort.InferenceSession(model.onnx_path, sess_options=opts, providers=["CPUExecutionProvider"])
        inputs = self._sess.get_inputs()
        self._input = model.input_name or inputs[0].name
        names = [i.name for i in inputs]
        if self._input not in names:
            raise ValueError(f"model input '{self._input}' not in the ONNX graph inputs {names}")
        out_names = [o.name for o in self._sess.get_outputs()]
        if model.output_name and model.output_name not in out_names:
            raise ValueError(f"model output '{model.output_name}' not in the ONNX graph outputs {out_names}")
        self._output = [model.output_name] if model.output_name else [out_names[0]]
        dim0 = next(i for i in inputs if i.name == self._input).shape[0]
        # A graph with a static batch dimension (e.g. a Reshape to [1, 2048]) only takes that many.
        self.fixed_batch_size = dim0 if isinstance(dim0, int) and dim0 > 0 else None

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return _as_logits(self._sess.run(self._output, {self._input: batch})[0], batch.shape[0])

    def predict(self, batch: np.ndarray) -> np.ndarray:
        import numpy as np

        if self.fixed_batch_size:
            return _run_chunked(self._run, batch, self.fixed_batch_size)
        return self._run(np.ascontiguousarray(batch))

    def version(self) -> str:
        import onnxruntime as ort

        return ort.__version__


class TvmBackend:
    name = "tvm"

    def __init__(self) -> None:
        self.fixed_batch_size: int | None = None
        self._vm = None
        self._dev = None
        self._tvm = None
        self.output_index = 0

    def load(self, model: ModelFacts, threads: int, batch_size: int) -> None:
        from cm_mlperf.tvm.runtime import configure_runtime

        # TVM sizes its pool and its workers' spinning from env when the runtime starts: set both before import
        configure_runtime(threads if threads > 0 else None, None if thread_spin() else 0)
        if thread_spin():
            os.environ.pop("TVM_THREAD_POOL_SPIN_COUNT", None)  # TVM's own default: spin between kernels
        import tvm
        from tvm import relax

        if not model.tvm_so or not os.path.isfile(model.tvm_so):
            raise FileNotFoundError(f"compiled TVM library not found: '{model.tvm_so}' (set CM_TVM_MODEL_SO)")
        if model.tvm_batch_size <= 0:
            raise ValueError("CM_TVM_BATCH_SIZE must give the batch size the TVM library was compiled for")
        self._tvm = tvm
        self._dev = tvm.cpu()
        lib = tvm.runtime.load_module(model.tvm_so)
        self._vm = relax.VirtualMachine(lib, self._dev)
        self.fixed_batch_size = model.tvm_batch_size
        self.output_index = model.tvm_output_index

    def _run(self, batch: np.ndarray) -> np.ndarray:
        out = self._vm["main"](self._tvm.runtime.tensor(batch, self._dev))
        if not hasattr(out, "numpy"):
            out = out[self.output_index]  # a tuple of outputs (MLPerf ResNet-50: ArgMax and softmax)
        return _as_logits(out.numpy(), batch.shape[0])

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return _run_chunked(self._run, batch, self.fixed_batch_size)

    def version(self) -> str:
        import tvm

        return tvm.__version__


# The registry: name -> backend class, or "module:Class" of a sibling module, imported on first use (reading the
# names, as customize.py does to check --backend, must import no inference library and no numpy). Backends import
# their libraries in load(). Adding a backend: one module, one line here.
BACKENDS: dict[str, type | str] = {
    "onnxruntime": OnnxRuntimeBackend,
    "tvm": TvmBackend,
    "mojo": "mlperf_backend_mojo:MojoBackend",  # our Mojo kernels (cm_mlperf.mojo)
}


def create_backend(name: str) -> Backend:
    """Instantiate a registered backend by name ('onnxruntime', 'tvm', 'mojo')."""
    key = (name or "onnxruntime").strip().lower()
    if key not in BACKENDS:
        raise ValueError(f"unknown backend '{name}': use one of {', '.join(sorted(BACKENDS))}")
    backend = BACKENDS[key]
    if isinstance(backend, str):
        module, _, attr = backend.partition(":")
        backend = getattr(importlib.import_module(module), attr)
    return backend()
