"""Run a plan (cm_mlperf.mojo.plan) on our Mojo kernels: the compiled library is loaded with ctypes.

    engine = MojoEngine(lib_path, "model.onnx", threads=2)
    logits = engine.run(batch)          # float32 [N, C, H, W] -> [N, classes]; any N (chunked by max_batch)

max_batch is the number of images per pass through the plan. The default, 1, is the fastest measured on CPU:
one image's activations stay in the L2 cache from layer to layer, and all threads share each layer (on
EfficientNet-Lite0, 2 threads: 75 img/s image by image, 35 img/s with 8 images per pass).

The batch is read in place (its address goes into the plan's table); the weights were handed over once when
the plan was made. ctypes releases the GIL during the call, so other Python threads (LoadGen's) keep running.
One engine runs one batch at a time (a lock guards it); its worker threads stop with close().
"""
from __future__ import annotations

import ctypes
import os
import threading

import numpy as np

from .plan import CTRL_SLOTS, OPW, Plan, build_plan

LIB_NAME = "libmlperf_mojo.so"
ABI_VERSION = 1
# control block slots (engine.mojo)
C_NTHREADS, C_PLAN, C_NOPS, C_TABLE, C_FPARAMS, C_BATCH, C_CHUNKS, C_COUNTERS = 40, 41, 42, 43, 44, 45, 47, 56
# each operator is cut into this many chunks per thread, claimed by whichever thread is free
CHUNKS_PER_THREAD = 4

_LIBS: dict[str, ctypes.CDLL] = {}
_LIBS_LOCK = threading.Lock()


class MojoLibraryError(RuntimeError):
    """The compiled Mojo library is missing or does not match this Python code."""


def load_library(path: str | os.PathLike) -> ctypes.CDLL:
    """Load (once per process) the backend library built by build-mojo-backend and check its ABI."""
    path = os.path.abspath(path)
    with _LIBS_LOCK:
        if path in _LIBS:
            return _LIBS[path]
        if not os.path.isfile(path):
            raise MojoLibraryError(f"Mojo backend library not found: {path} "
                                   "(build it: cm run script --tags=build,mojo-backend)")
        lib = ctypes.CDLL(path)
        for name in ("mm_abi_version", "mm_layout", "mm_simd_width"):
            getattr(lib, name).restype = ctypes.c_int64
            getattr(lib, name).argtypes = []
        for name in ("mm_start", "mm_forward", "mm_stop"):
            getattr(lib, name).restype = ctypes.c_int64
            getattr(lib, name).argtypes = [ctypes.c_int64]
        if lib.mm_abi_version() != ABI_VERSION or lib.mm_layout() != OPW * 1000 + CTRL_SLOTS:
            raise MojoLibraryError(f"{path} was built from other sources (ABI {lib.mm_abi_version()}, layout "
                                   f"{lib.mm_layout()}): rebuild it (cm run script --tags=build,mojo-backend)")
        _LIBS[path] = lib
        return lib


def make_control(plan: Plan, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """The control block of an engine (engine.mojo) and its per-operator counters: keep both alive with it."""
    ctrl = np.zeros(CTRL_SLOTS, np.int64)
    counters = np.zeros(max(1, plan.nops) * 16, np.int64)
    ctrl[C_NTHREADS] = threads
    ctrl[C_PLAN] = plan.ops.ctypes.data
    ctrl[C_NOPS] = plan.nops
    ctrl[C_TABLE] = plan.table.ctypes.data
    ctrl[C_FPARAMS] = plan.fparams.ctypes.data
    ctrl[C_BATCH] = 1
    ctrl[C_CHUNKS] = CHUNKS_PER_THREAD * threads if threads > 1 else 1
    ctrl[C_COUNTERS] = counters.ctypes.data
    return ctrl, counters


class MojoEngine:
    def __init__(self, lib_path: str | os.PathLike, model: str | os.PathLike | Plan, max_batch: int = 1,
                 threads: int = 0, input_name: str = "", output_name: str = "") -> None:
        self.lib = load_library(lib_path)
        self.plan = model if isinstance(model, Plan) else build_plan(model, max_batch, input_name, output_name)
        self.threads = max(1, threads or os.cpu_count() or 1)
        self._lock = threading.Lock()
        self._ctrl, self._counters = make_control(self.plan, self.threads)
        self._started = False
        if self.threads > 1:
            rc = self.lib.mm_start(self._ctrl.ctypes.data)
            if rc != 0:
                raise RuntimeError(f"could not start {self.threads - 1} Mojo worker threads (pthread_create: {rc})")
            self._started = True

    @property
    def max_batch(self) -> int:
        return self.plan.max_batch

    def _run_chunk(self, chunk: np.ndarray) -> np.ndarray:
        n = chunk.shape[0]
        self.plan.table[self.plan.input_buf] = chunk.ctypes.data
        self._ctrl[C_BATCH] = n
        if self.lib.mm_forward(self._ctrl.ctypes.data) != 0:
            raise RuntimeError("the Mojo forward pass failed (see the message above)")
        out = self.plan.arrays[self.plan.output_buf][: n * self.plan.output_stride]
        out = out.reshape(n, self.plan.output_stride)
        if len(self.plan.output_shape) == 1:
            return out[:, : self.plan.output_shape[0]].copy()
        return out.reshape(n, *self.plan.output_shape).copy()

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Forward a float32 NCHW batch of any size; returns the graph output per sample."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.shape[0] == 0:
            return np.zeros((0, *self.plan.output_shape), np.float32)
        if tuple(batch.shape[1:]) != self.plan.input_shape:
            raise ValueError(f"input shape {tuple(batch.shape[1:])} per sample, the model takes "
                             f"{self.plan.input_shape}")
        with self._lock:
            if self._ctrl is None:
                raise RuntimeError("this Mojo engine is closed")
            outs = [self._run_chunk(batch[i:i + self.max_batch]) for i in range(0, batch.shape[0], self.max_batch)]
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def close(self) -> None:
        with self._lock:
            if self._ctrl is not None and self._started:
                self.lib.mm_stop(self._ctrl.ctypes.data)
            self._started = False

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __enter__(self) -> MojoEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
