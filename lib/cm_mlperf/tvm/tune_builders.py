"""tune-tvm-model's MetaSchedule builders: how the candidate schedules of one measurement batch are compiled.

MetaSchedule's stock ``LocalBuilder`` starts a fresh pool of Python worker processes for every batch (to dodge a
memory leak of long-lived workers). Each worker imports TVM and its tensor intrinsics again before it compiles
anything: 40-57 s per batch on the 2-core machine here (and with its default 30 s timeout, every candidate timed
out). Two faster builders:

    inprocess   compiles the candidates in the tuning process itself, on one thread per core (TVM releases the
                GIL while it compiles; no start-up at all; default). A candidate that fails to compile is reported
                as a build error like the stock builder does; there is no per-candidate timeout, and a crash inside
                LLVM would end the tuning run (never seen here).
    pool        one long-lived pool of worker processes, kept across batches (each worker is recycled after
                ``max_uses`` candidates to bound the leak): crash isolation and a per-candidate timeout like the
                stock builder, without the per-batch start-up.
    local       MetaSchedule's stock LocalBuilder (for comparison; 120 s timeout).

Both import the tensor intrinsics with a cheap inspect.stack (see import_tensor_intrinsics): 4-6 s instead of 33 s.

    builder = make_builder("inprocess", max_workers=2)
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import linecache
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

BUILDERS = ("inprocess", "pool", "local")
DEFAULT_BUILDER = "inprocess"

_classes: dict[str, Any] = {}


_stack_lock = threading.Lock()


def _cheap_stack(context: int = 1) -> list[inspect.FrameInfo]:
    """inspect.stack() without the source-file search: same frames, file names, line numbers and current line.
    (inspect.stack() looks up the module of every frame whose file does not exist, such as the import
    machinery's "<frozen ...>" frames, by scanning all of sys.modules: with TVM's 1,100 modules loaded that
    costs seconds per call.)"""
    frames: list[inspect.FrameInfo] = []
    frame = sys._getframe(1)
    while frame is not None:
        filename, lineno = frame.f_code.co_filename, frame.f_lineno
        line = linecache.getline(filename, lineno) if context > 0 else ""
        frames.append(inspect.FrameInfo(frame, filename, lineno, frame.f_code.co_name, [line] if line else None,
                                        0 if line else None))
        frame = frame.f_back
    return frames


@contextlib.contextmanager
def cheap_inspect_stack() -> Iterator[None]:
    """While active, inspect.stack is _cheap_stack (TVMScript's parser calls it once per parsed function)."""
    with _stack_lock:
        original = inspect.stack
        inspect.stack = _cheap_stack  # type: ignore[assignment]
        try:
            yield
        finally:
            inspect.stack = original  # type: ignore[assignment]


def import_tensor_intrinsics() -> float:
    """Import tvm.s_tir.tensor_intrin (MetaSchedule imports it before it builds or schedules anything): it parses
    124 TVMScript intrinsics (CUDA ones included), which took 33 s on this 2-core machine with the stock
    inspect.stack and 4 s with cheap_inspect_stack (the registered intrinsics are identical). Returns seconds."""
    if "tvm.s_tir.tensor_intrin" in sys.modules:
        return 0.0
    t0 = time.perf_counter()
    with cheap_inspect_stack():
        importlib.import_module("tvm.s_tir.tensor_intrin")
    return time.perf_counter() - t0


def _worker_initializer() -> Any:
    """An initializer for pool workers that imports the intrinsics the cheap way; a closure, so that cloudpickle
    sends it by value (the workers cannot import this script's modules)."""

    def init() -> None:
        import importlib as _importlib
        import inspect as _inspect
        import linecache as _linecache
        import sys as _sys

        def cheap(context: int = 1) -> list[Any]:
            frames = []
            frame = _sys._getframe(1)
            while frame is not None:
                fn, ln = frame.f_code.co_filename, frame.f_lineno
                line = _linecache.getline(fn, ln) if context > 0 else ""
                frames.append(_inspect.FrameInfo(frame, fn, ln, frame.f_code.co_name, [line] if line else None,
                                                 0 if line else None))
                frame = frame.f_back
            return frames

        original = _inspect.stack
        _inspect.stack = cheap
        try:
            _importlib.import_module("tvm.s_tir.tensor_intrin")
        finally:
            _inspect.stack = original

    return init


def _build_one(mod: Any, target: Any, params: Any) -> str:
    """Compile one candidate and export it the way MetaSchedule's runner expects (a tar of objects)."""
    from tvm.s_tir.meta_schedule.builder import local_builder

    return local_builder.default_export(local_builder.default_build(mod, target, params))


def _report(on_batch: Any, results: list[Any], seconds: float) -> None:
    """Tell the progress reporter about a compiled batch: (candidates, failed builds, seconds)."""
    if on_batch is not None:
        try:
            on_batch(len(results), sum(1 for r in results if r.error_msg), seconds)
        except Exception:  # noqa: BLE001 - progress output must never break tuning
            pass


def _error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).strip()[:2000]}"


def _define_classes() -> dict[str, Any]:
    """The PyBuilder subclasses (defined lazily: importing this module must not import TVM)."""
    if _classes:
        return _classes
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderInput, BuilderResult, PyBuilder, local_builder
    from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

    @derived_object
    class InProcessBuilder(PyBuilder):
        """Compiles the candidates in this process, on `max_workers` threads (TVM releases the GIL while it
        compiles, so two threads build a batch about twice as fast as one)."""

        def __init__(self, max_workers: int = 1, on_batch: Any = None) -> None:
            super().__init__()
            self.max_workers = max(1, int(max_workers))
            self.on_batch = on_batch
            self.batches = 0
            self.candidates = 0
            self._threads: Any = None
            import_tensor_intrinsics()

        def _one(self, item: BuilderInput) -> BuilderResult:
            try:
                return BuilderResult(_build_one(item.mod, item.target, item.params), None)
            except Exception as e:  # noqa: BLE001 - a bad candidate is a build error, not the end of tuning
                return BuilderResult(None, f"InProcessBuilder: {_error_text(e)}")

        def build(self, build_inputs: list[BuilderInput]) -> list[BuilderResult]:
            t0 = time.perf_counter()
            items = list(build_inputs)
            if self.max_workers > 1 and len(items) > 1:
                if self._threads is None:
                    self._threads = ThreadPoolExecutor(self.max_workers, thread_name_prefix="tvm-tune-build")
                results = list(self._threads.map(self._one, items))
            else:
                results = [self._one(item) for item in items]
            self.batches += 1
            self.candidates += len(items)
            _report(self.on_batch, results, time.perf_counter() - t0)
            return results

        def close(self) -> None:
            if self._threads is not None:
                self._threads.shutdown(wait=True)
                self._threads = None

    @derived_object
    class PoolBuilder(PyBuilder):
        """Compiles candidates in a pool of worker processes that lives as long as the builder."""

        def __init__(self, max_workers: int = 1, timeout_sec: float = 30.0, max_uses: int = 256,
                     on_batch: Any = None) -> None:
            super().__init__()
            self.on_batch = on_batch
            self.max_workers, self.timeout_sec, self.max_uses = int(max_workers), float(timeout_sec), int(max_uses)
            self.batches = 0
            self.candidates = 0
            self._pool: Any = None

        def _executor(self) -> Any:
            if self._pool is None:
                self._pool = PopenPoolExecutor(max_workers=self.max_workers, timeout=self.timeout_sec,
                                               maximum_process_uses=self.max_uses,
                                               initializer=_worker_initializer())
            return self._pool

        def build(self, build_inputs: list[BuilderInput]) -> list[BuilderResult]:
            t0 = time.perf_counter()
            jobs = [(item.mod, item.target, local_builder._serialize_params(item.params)) for item in build_inputs]
            results: list[BuilderResult] = []
            for res in self._executor().map_with_error_catching(
                    lambda job: local_builder._worker_func(None, None, *job), jobs):
                if res.status == StatusKind.COMPLETE:
                    results.append(BuilderResult(res.value, None))
                elif res.status == StatusKind.TIMEOUT:
                    results.append(BuilderResult(None, f"PoolBuilder: timeout, killed after {self.timeout_sec} s"))
                else:
                    results.append(BuilderResult(None, f"PoolBuilder: an exception occurred\n{res.value}"))
            self.batches += 1
            self.candidates += len(build_inputs)
            _report(self.on_batch, results, time.perf_counter() - t0)
            return results

        def close(self) -> None:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    _classes.update(inprocess=InProcessBuilder, pool=PoolBuilder)
    return _classes


def make_builder(kind: str = DEFAULT_BUILDER, max_workers: int = 1, timeout_sec: float | None = None,
                 on_batch: Any = None) -> Any:
    """A MetaSchedule Builder of the given kind (see the module doc). timeout_sec: per candidate, for the pool
    (default 30 s) and the stock builder (default 120 s: its fresh workers spend over 30 s importing TVM's tensor
    intrinsics on a slow machine before they compile anything, and with its own 30 s default every candidate of a
    batch timed out here). on_batch(candidates, failed, seconds) is called after each batch (not by 'local')."""
    if kind not in BUILDERS:
        raise ValueError(f"unknown tuning builder '{kind}': choose one of {', '.join(BUILDERS)} (--builder)")
    if kind == "local":
        from tvm.s_tir.meta_schedule.builder import LocalBuilder

        return LocalBuilder(max_workers=max(1, int(max_workers)), timeout_sec=timeout_sec or 120.0)
    classes = _define_classes()
    if kind == "inprocess":
        return classes["inprocess"](max_workers=max(1, int(max_workers)), on_batch=on_batch)
    return classes["pool"](max_workers=max(1, int(max_workers)), timeout_sec=timeout_sec or 30.0,
                           on_batch=on_batch)


def close_builder(builder: Any) -> None:
    """Stop a builder's worker processes, if it has any of its own."""
    close = getattr(builder, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # noqa: BLE001 - only cleanup
            pass
