"""tune-tvm-model's progress: a MetaSchedule measure callback that counts trials and best latencies per task and
prints one line per measured batch (plus a tqdm bar over the whole budget)."""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

Log = Callable[[str], None]


def _latency_s(result: Any) -> float | None:
    """Mean run time of one runner result in seconds, or None when it failed."""
    if getattr(result, "error_msg", None):
        return None
    secs = [float(getattr(s, "value", s)) for s in (getattr(result, "run_secs", None) or [])]
    return sum(secs) / len(secs) if secs else None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


class TuningProgress:
    """Per-task trial counts, errors and best latency; `callback()` is the MetaSchedule measure callback."""

    def __init__(self, task_names: Sequence[str], budget: int, log: Log, weights: Sequence[float] | None = None,
                 bar: bool = True):
        self.names = list(task_names)
        self.weights = [float(w) for w in (weights or [1.0] * len(self.names))]
        self.budget = int(budget)
        self.log = log
        self.trials = [0] * len(self.names)
        self.errors = [0] * len(self.names)
        self.best: list[float | None] = [None] * len(self.names)
        self.first: list[float | None] = [None] * len(self.names)
        self.start = time.perf_counter()
        self.batches_built = 0
        self.sent = 0
        self._bar: Any = None
        if bar and sys.stderr.isatty():  # in a log file a bar only adds noise: the per-batch lines say it all
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=self.budget, unit="trial", desc="tuning", mininterval=2.0, file=sys.stderr,
                                 dynamic_ncols=True)
            except ImportError:  # pragma: no cover - tqdm is a dependency
                self._bar = None

    @property
    def total_trials(self) -> int:
        return sum(self.trials)

    def record(self, task_id: int, latencies: Sequence[float | None]) -> None:
        """Account one measured batch of a task (None = a candidate that failed to build or run)."""
        if not latencies:  # a task whose search space is used up sends empty batches
            return
        good = [t for t in latencies if t is not None]
        self.trials[task_id] += len(latencies)
        self.errors[task_id] += len(latencies) - len(good)
        if good:
            batch_best = min(good)
            if self.first[task_id] is None:
                self.first[task_id] = batch_best
            if self.best[task_id] is None or batch_best < self.best[task_id]:  # type: ignore[operator]
                self.best[task_id] = batch_best
        if self._bar is not None:
            self._bar.set_description_str(f"tuning {self.names[task_id][:40]}", refresh=False)
            if self.total_trials > self._bar.total:  # MetaSchedule finishes its last batch past the budget
                self._bar.total = self.total_trials
            self._bar.update(len(latencies))
        elapsed = time.perf_counter() - self.start
        errors = f", {len(latencies) - len(good)} failed" if len(good) < len(latencies) else ""
        task = f"task {task_id + 1}/{len(self.names)} {self.names[task_id]}"
        best = format_seconds(self.best[task_id])
        self._write(f"{task}: {_plural(len(latencies), 'trial')}{errors} (task total {self.trials[task_id]}), "
                    f"best {best}; all tasks {self.total_trials}/{self.budget} trials, {elapsed:.0f} s")

    def built(self, candidates: int, failed: int, seconds: float) -> None:
        """A batch was compiled (the builder's hook): MetaSchedule reports a task's measurements only when it
        comes back to that task, so in its first round over all tasks this line is the sign of life."""
        if not candidates:
            return
        self.batches_built += 1
        self.sent += candidates
        errors = f", {failed} failed to compile" if failed else ""
        elapsed = time.perf_counter() - self.start
        self._write(f"compiled batch {self.batches_built}: {_plural(candidates, 'candidate')} in {seconds:.1f} s"
                    f"{errors}; {self.sent}/{self.budget} trials sent to measure, {elapsed:.0f} s")

    def _write(self, msg: str) -> None:
        if self._bar is not None:
            from tqdm import tqdm

            with tqdm.external_write_mode(file=sys.stderr):
                self.log(msg)
        else:
            self.log(msg)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def summary(self) -> list[dict[str, Any]]:
        return [{"task": name, "weight": w, "trials": n, "failed": e, "best_seconds": b, "first_batch_best_seconds": f}
                for name, w, n, e, b, f in zip(self.names, self.weights, self.trials, self.errors, self.best,
                                               self.first, strict=True)]

    def callback(self) -> Any:
        """A MetaSchedule MeasureCallback that feeds this object (append it after the default callbacks)."""
        from tvm.ir.utils import derived_object
        from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

        progress = self

        @derived_object
        class _Progress(PyMeasureCallback):
            def apply(self, task_scheduler: Any, task_id: int, measure_candidates: Any, builder_results: Any,
                      runner_results: Any) -> None:
                lat = []
                for built, ran in zip(builder_results, runner_results, strict=False):
                    lat.append(None if getattr(built, "error_msg", None) else _latency_s(ran))
                progress.record(int(task_id), lat)

        return _Progress()
