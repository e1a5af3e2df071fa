"""How a run shares the CPU's cores out: threads per inference and backend instances answering at once.

Used by run-mlperf-inference-app (which compiles TVM for the threads per inference) and by the harness (which
starts the instances); one rule, so the library is built for the threads it runs with.
"""
from __future__ import annotations

LATENCY_SCENARIOS = ("SingleStream", "MultiStream")  # one query in flight at a time


def split_cores(scenario: str, cores: int, threads: int = 0, workers: int = 0) -> tuple[int, int]:
    """(threads per inference, backend instances) for a scenario; 0 means "choose".

    SingleStream and MultiStream have one query in flight: one instance, every core on it. Offline and Server
    keep many samples in flight: one single-threaded instance per core by default, so no core waits for another
    at each of the model's ~50 kernels (a thread pool's hand-off per kernel costs more than the work it splits
    at batch 1; measured on EfficientNet-Lite0, 2 cores: 2 instances x 1 thread ran 1.3-1.5x one instance x 2
    threads, for TVM and onnxruntime alike). A user's threads or workers win; the other fills the cores.
    """
    cores = max(1, int(cores))
    threads, workers = max(0, int(threads or 0)), max(0, int(workers or 0))
    if scenario in LATENCY_SCENARIOS:
        return threads or cores, 1
    if threads and workers:
        return threads, workers
    if threads:
        return threads, max(1, cores // threads)
    if workers:
        return max(1, cores // workers), workers
    return 1, cores
