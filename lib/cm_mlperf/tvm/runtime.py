"""compile-tvm-model's runners: a compiled library in a Relax VirtualMachine, and onnxruntime as the reference."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from cm_mlperf.tvm.errors import TVMCompileError

# TVM's thread pool: after each parallel kernel its workers spin (sched_yield loops) before they sleep. On a shared
# 2-core machine that spinning takes the core the next kernel's other half, or another process, needs: measured on
# EfficientNet-Lite0 (tuned, 2 threads, load 8-9 on 2 cores) 12-18 samples/s with the default or any spin count from
# 1,000 to 100,000, and 31-54 with 0 (docs/benchmarks.md). Both are read when the pool starts (the first kernel).
SPIN_COUNT_ENV = "TVM_THREAD_POOL_SPIN_COUNT"
DEFAULT_SPIN_COUNT = "0"


def runtime_env(threads: int | None = None, spin_count: str | int | None = None) -> dict[str, str]:
    """The environment TVM's runtime should start with: TVM_NUM_THREADS and TVM_THREAD_POOL_SPIN_COUNT."""
    env = {SPIN_COUNT_ENV: str(DEFAULT_SPIN_COUNT if spin_count in (None, "") else int(spin_count))}
    if threads:
        env["TVM_NUM_THREADS"] = str(int(threads))
    return env


def configure_runtime(threads: int | None = None, spin_count: str | int | None = None) -> dict[str, str]:
    """Set runtime_env() in os.environ (a spin count already set there wins); call before TVM runs a kernel."""
    env = runtime_env(threads, spin_count if spin_count not in (None, "") else os.environ.get(SPIN_COUNT_ENV))
    os.environ.update(env)
    return env


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


def ort_session(model: Any, threads: int | None = None, spinning: bool | None = None) -> Any:
    """An onnxruntime CPU session for an in-memory ModelProto; `spinning` sets whether its idle intra-op threads
    spin (None: onnxruntime's default, on)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # hide "Removing initializer" warnings of old-opset graphs
    if threads:
        opts.intra_op_num_threads = int(threads)
    if spinning is not None:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
