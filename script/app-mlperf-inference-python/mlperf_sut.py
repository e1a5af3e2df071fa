"""LoadGen's side of the harness: the query sample library (QSL) over preprocessed .npy tensors, the system
under test (SUT) around a backend, and the warm-up measurement that picks target_qps / target_latency."""

import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from cm_mlperf.imagenet import VAL_MAP_NAME, ValMapError, read_val_map

# ---------------------------------------------------------------------------------------------- dataset


def list_samples(dataset_path: str, count: int = 0) -> list[str]:
    """The QSL's sample files in QSL order: val_map.txt's first column, else the sorted .npy files."""
    root = Path(dataset_path)
    if not root.is_dir():
        raise FileNotFoundError(f"preprocessed dataset folder not found: {dataset_path}")
    val_map = root / VAL_MAP_NAME
    if val_map.is_file():
        try:
            names = [name for name, _ in read_val_map(val_map)]
        except ValMapError as e:
            raise ValueError(str(e)) from None
    else:
        names = sorted(p.name for p in root.glob("*.npy"))
    if count and count < len(names):
        names = names[:count]
    paths = [str(root / n) for n in names]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} sample file(s) listed for {dataset_path} are missing, "
                                f"e.g. {missing[0]}")
    if not paths:
        raise ValueError(f"no samples in {dataset_path} (expected .npy files and a val_map.txt)")
    return paths


class SampleLibrary:
    """LoadGen's query sample library over a folder of preprocessed .npy tensors (one per image)."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self._cache: dict[int, np.ndarray] = {}

    @property
    def size(self) -> int:
        return len(self.paths)

    def load(self, indices: list[int]) -> None:
        for i in indices:
            if i not in self._cache:
                self._cache[i] = np.load(self.paths[i])

    def unload(self, indices: list[int]) -> None:
        for i in indices:
            self._cache.pop(i, None)

    def batch(self, indices: list[int]) -> np.ndarray:
        return np.stack([self._cache[i] for i in indices])

    @property
    def loaded(self) -> int:
        return len(self._cache)


# --------------------------------------------------------------------------------------------------- SUT


class SystemUnderTest:
    """Answers LoadGen queries with one float32 class index per sample (argmax - label offset).

    SingleStream/MultiStream queries are answered inside the issue callback (one query in flight at a
    time; no thread hand-off on the latency path) by the first backend. Offline's single big query is cut
    into batches and Server's queries are queued; one worker thread per backend instance drains the queue
    (an instance runs one batch at a time: TVM's VM is not thread-safe), Server workers coalescing waiting
    queries up to the batch size.
    """

    def __init__(self, lg: Any, backends: Any, qsl: SampleLibrary, scenario: str, batch_size: int,
                 label_offset: int, progress: Any = None) -> None:
        self.lg = lg
        self.backends = list(backends) if isinstance(backends, (list, tuple)) else [backends]
        self.qsl = qsl
        self.scenario = scenario
        self.batch_size = max(1, batch_size)
        self.label_offset = label_offset
        self.samples_done = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._progress = progress
        self._queue: queue.Queue = queue.Queue()
        self._workers: list[threading.Thread] = []
        if scenario in ("Offline", "Server"):
            for n, backend in enumerate(self.backends):
                t = threading.Thread(target=self._worker, args=(backend,), name=f"sut-worker-{n}", daemon=True)
                t.start()
                self._workers.append(t)

    # LoadGen callbacks
    def issue_queries(self, query_samples: list[Any]) -> None:
        if self.scenario in ("SingleStream", "MultiStream"):
            self._answer(self.backends[0], list(query_samples))
        elif self.scenario == "Offline":
            samples = list(query_samples)
            for start in range(0, len(samples), self.batch_size):
                self._queue.put(samples[start:start + self.batch_size])
        else:
            self._queue.put(list(query_samples))

    def flush_queries(self) -> None:
        pass  # nothing is held back: every queued sample is answered as soon as a worker is free

    def stop(self) -> None:
        for _ in self._workers:
            self._queue.put(None)
        for t in self._workers:
            t.join()

    def _worker(self, backend: Any) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            samples = item
            if self.scenario == "Server":
                # Dynamic batching: take whatever else is already waiting, up to the batch size.
                while len(samples) < self.batch_size:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        self._queue.put(None)
                        break
                    samples = samples + more
            self._answer(backend, samples)

    def _answer(self, backend: Any, samples: list[Any]) -> None:
        try:
            logits = backend.predict(self.qsl.batch([s.index for s in samples]))
            # [N, classes] or [N, classes, 1, 1] (squeezenet-style heads): flatten per sample
            logits = np.asarray(logits).reshape(len(samples), -1)
            classes = (np.argmax(logits, axis=1) - self.label_offset).astype(np.float32)
        except Exception as exc:  # noqa: BLE001 - LoadGen would wait forever for these samples otherwise
            with self._lock:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            classes = np.full(len(samples), -1.0, dtype=np.float32)
        classes = np.ascontiguousarray(classes)
        base = classes.ctypes.data
        responses = [self.lg.QuerySampleResponse(s.id, base + 4 * k, 4) for k, s in enumerate(samples)]
        # `classes` stays referenced until this call returns: LoadGen copies the bytes it logs inside it.
        self.lg.QuerySamplesComplete(responses)
        with self._lock:
            self.samples_done += len(samples)
            if self._progress is not None:
                self._progress.update(len(samples))


# ------------------------------------------------------------------------------------ warm-up measurement


def measure(backends: Any, qsl: SampleLibrary, per_call: int, budget_s: float = 1.0,
            min_calls: int = 3, max_calls: int = 200) -> dict[str, float]:
    """Time `predict` on `per_call` samples at a time, after one untimed call, on every backend instance at once
    (each in its own thread, as the SUT's workers run them: instances share the cores' caches and memory).

    Returns samples/s at the median call time, samples/s at the fast quartile (what the machine does when
    nothing else competes: a shared machine's stalls make the mean far too pessimistic, and an Offline query
    sized from an underestimate ends before the minimum duration: INVALID), both summed over the instances,
    and the median latency (ms). Used to pick target_qps / target_latency when the user gave none, as
    submitters do before a run.
    """
    backends = list(backends) if isinstance(backends, (list, tuple)) else [backends]
    idx = [i % qsl.size for i in range(per_call)]
    qsl.load(sorted(set(idx)))
    times: list[list[float]] = [[] for _ in backends]
    errors: list[BaseException] = []
    start_line = threading.Barrier(len(backends))

    def timed(backend: Any, out: list[float]) -> None:
        try:
            np.argmax(backend.predict(qsl.batch(idx)), axis=1)
            start_line.wait()
            start = time.perf_counter()
            while len(out) < max_calls and (len(out) < min_calls or time.perf_counter() - start < budget_s):
                t0 = time.perf_counter()
                # Same work as the SUT does per batch: gather, infer, argmax.
                np.argmax(backend.predict(qsl.batch(idx)), axis=1)
                out.append(time.perf_counter() - t0)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            errors.append(exc)
            start_line.abort()

    try:
        threads = [threading.Thread(target=timed, args=pair, daemon=True) for pair in zip(backends, times, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        qsl.unload(sorted(set(idx)))
    real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
    if real or errors:
        raise (real or errors)[0]

    def rate(seconds: float) -> float:
        return per_call / seconds if seconds > 0 else float("inf")

    every = [t for per_backend in times for t in per_backend]
    return {
        "samples_per_second": sum(rate(float(np.median(t))) for t in times),
        "samples_per_second_fast": sum(rate(float(np.percentile(t, 25))) for t in times),
        "samples_per_second_mean": sum(per_call * len(t) / sum(t) if sum(t) > 0 else float("inf") for t in times),
        "latency_ms": float(np.median(every)) * 1000.0,
        "calls": len(every),
        "instances": len(backends),
    }
