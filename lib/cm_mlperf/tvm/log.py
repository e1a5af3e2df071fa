"""compile-tvm-model's progress messages: the default log function and a heartbeat for long calls."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

Log = Callable[[str], None]


def log(msg: str) -> None:
    print(f"[compile-tvm-model] {msg}", flush=True)


class Heartbeat:
    """Prints "<what>: still running (N s)" every `every` seconds while a long blocking call runs."""

    def __init__(self, what: str, every: float = 15.0, log: Log = log):
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
