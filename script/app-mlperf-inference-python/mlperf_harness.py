"""MLPerf Inference image-classification harness: LoadGen QSL + SUT around a pluggable backend, in this process.

`run_loadgen(settings)` runs one LoadGen test. LoadGen counts `TestSettings.FromConfig` calls per process and from
the second one on logs the error "Multiple conf files are used", which reviewers reject: one run per process. The
script's run.py is that process (the engine starts it as a child of cm, with the env as its environment).

The pieces: mlperf_settings (HarnessSettings, env, user.conf), mlperf_sut (QSL, SUT, warm-up), mlperf_backends,
and from cm_mlperf.loadgen the rounds (mlperf.conf, seeds) and LoadGen log parsing; this module runs them.

Interrupted (SIGTERM, Ctrl-C, or cm dying: run_step asks Linux for a SIGTERM then), the run stops at once, wherever
LoadGen is, and leaves no `harness_result.json`: that file is written last, so its presence means a finished run.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlperf_backends
from cm_mlperf.files import atomic_write
from cm_mlperf.loadgen import rounds
from cm_mlperf.loadgen.logs import accuracy_log_indices, parse_logs
from mlperf_settings import HarnessSettings, build_user_conf
from mlperf_sut import SampleLibrary, SystemUnderTest, list_samples, measure

RESULT_FILE = "harness_result.json"
AUDIT_FILE = "audit.config"  # LoadGen reads it from its working directory
# Offline: target_qps is raised by this factor so the single query lasts past min_duration even when
# the measured warm-up throughput underestimates the steady state (LoadGen sizes the query as
# target_qps x min_duration x 1.1; a query that ends early makes the run INVALID). Measured on a shared
# 2-core machine: the steady state ran 1.24x the warm-up's fast quartile, so 1.1 made a 600 s run end at
# 585 s (INVALID); 1.3 (x LoadGen's 1.1) covers that, at the price of a longer run when the estimate is exact.
OFFLINE_QPS_HEADROOM = 1.3
# Server: start below the measured throughput so queues (and the latency tail) stay bounded.
SERVER_QPS_FRACTION = 0.75


def _warmup_budget(s: HarnessSettings) -> float:
    """Seconds of warm-up measurement: longer before a long run, where a wrong target costs a whole run."""
    return 5.0 if (s.min_duration_ms is None or s.min_duration_ms >= 60_000) else 1.0


def _resolve_batch_size(s: HarnessSettings, backend: Any, samples_per_query: int) -> int:
    if s.batch_size:
        return s.batch_size
    if getattr(backend, "fixed_batch_size", None):
        return backend.fixed_batch_size
    return {"SingleStream": 1, "MultiStream": samples_per_query}.get(s.scenario, 8)


def _stop_now(signum: int, frame: Any) -> None:
    # os._exit: LoadGen's threads cannot be stopped from Python, and atexit/finally code would wait for them
    print(f"\n[harness] {signal.Signals(signum).name}: LoadGen stopped, no result written", file=sys.stderr, flush=True)
    os._exit(128 + signum)


def _in_thread_interruptibly(work: Callable[[], None]) -> None:
    """Run `work` (LoadGen's StartTest, which blocks in C++) in a thread while this, the main thread, waits in
    Python: only there do signal handlers run, and ours ends the process at once."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            work()
        except BaseException as e:  # handed to the main thread
            errors.append(e)

    previous = {sig: signal.signal(sig, _stop_now) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        thread = threading.Thread(target=target, name="loadgen", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if errors:
        raise errors[0]


@contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def _place_audit_config(s: HarnessSettings, out: Path) -> None:
    """A compliance run gets its audit.config beside LoadGen's logs; any other run must not find one there."""
    target = out / AUDIT_FILE
    if s.audit_conf:
        if os.path.abspath(s.audit_conf) != str(target):
            shutil.copyfile(s.audit_conf, target)
        print(f"[harness] audit run: LoadGen reads {target}")
    elif target.exists():
        target.unlink()
        print(f"[harness] removed {target} left by an earlier compliance run (this run is not one)")


def run_loadgen(s: HarnessSettings) -> dict[str, Any]:
    """Run one LoadGen test (once per process) in s.output_dir and return the result written there."""
    import mlperf_loadgen as lg

    s = s.normalised()

    rnd = rounds.get_round(s.round)
    out = Path(s.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULT_FILE).unlink(missing_ok=True)

    paths = list_samples(s.dataset_path, s.count)
    qsl = SampleLibrary(paths)
    default_psc = rnd.performance_sample_count(s.model_key, s.scenario) or qsl.size
    wanted_psc = s.performance_sample_count or default_psc
    # Never claim more samples than the QSL really holds.
    psc = min(qsl.size, wanted_psc)
    if psc < wanted_psc:
        print(f"[harness] performance sample count {wanted_psc} > dataset size {qsl.size}: using {psc}")

    # One backend instance per SUT worker, each running one batch at a time on its own threads (how many of each:
    # cm_mlperf.parallelism.split_cores, applied by HarnessSettings.normalised)
    t0 = time.perf_counter()
    instances = [mlperf_backends.create_backend(s.backend) for _ in range(s.workers)]
    for instance in instances:
        instance.load(s.model, s.threads, s.batch_size)
    backend = instances[0]
    print(f"[harness] {backend.name} {backend.version()} loaded in {time.perf_counter() - t0:.1f} s "
          f"({s.workers} instance(s) x {s.threads} thread(s)); QSL {qsl.size} samples, "
          f"performance sample count {psc}")

    spq = int(rnd.value(s.model_key, "MultiStream", "samples_per_query") or 8)
    batch_size = _resolve_batch_size(s, backend, spq)
    measured: dict[str, float] | None = None
    exact_latency_ns = None
    if s.mode == "performance":
        if s.scenario in ("Offline", "Server") and not s.target_qps:
            measured = measure(instances, qsl, batch_size, budget_s=_warmup_budget(s))
            if s.scenario == "Offline":
                # an underestimate ends the one query early (INVALID), an overestimate only lengthens the run
                rate = max(measured["samples_per_second_fast"], s.qps_estimate or 0.0)
                s.target_qps = round(rate * OFFLINE_QPS_HEADROOM, 3)
            else:
                rate = measured["samples_per_second"]
                s.target_qps = round(rate * SERVER_QPS_FRACTION, 3)
            estimate = f", find-performance {s.qps_estimate:.1f}" if s.qps_estimate else ""
            print(f"[harness] warm-up: {measured['samples_per_second']:.1f} samples/s median, "
                  f"{measured['samples_per_second_fast']:.1f} fast quartile at batch {batch_size}, "
                  f"{s.workers} instance(s){estimate} "
                  f"-> target_qps {s.target_qps}")
        elif s.scenario in ("SingleStream", "MultiStream") and not s.target_latency_ms:
            measured = measure(backend, qsl, 1 if s.scenario == "SingleStream" else spq)
            s.target_latency_ms = measured["latency_ms"]
            # user.conf holds whole ms; below 1 ms LoadGen would plan far too few queries, so set the
            # expected latency on TestSettings directly, halved because LoadGen's own per-query overhead
            # is comparable at that scale (it plans 2 x min_duration / expected latency queries).
            if s.target_latency_ms < 1.0:
                exact_latency_ns = max(1, int(s.target_latency_ms * 1e6 / 2))
            print(f"[harness] warm-up: {measured['latency_ms']:.2f} ms per query -> target_latency")

    base = Path(s.user_conf).read_text() if s.user_conf else ""
    user_conf_path = out / "user.conf"
    user_conf_path.write_text(build_user_conf(s, psc, base))
    shutil.copyfile(rnd.conf_path, out / "mlperf.conf")
    _place_audit_config(s, out)

    ts = lg.TestSettings()
    ts.scenario = getattr(lg.TestScenario, s.scenario)
    ts.mode = lg.TestMode.AccuracyOnly if s.mode == "accuracy" else lg.TestMode.PerformanceOnly
    # conf_type=1: LoadGen applies its built-in (today's) mlperf.conf, then our user.conf. One call only.
    rc = ts.FromConfig(str(user_conf_path), s.model_key, s.scenario, 1)
    if rc != 0:
        raise RuntimeError(f"LoadGen rejected {user_conf_path} (FromConfig returned {rc})")
    if not rnd.builtin:
        for key, val in rnd.seeds().items():
            setattr(ts, key, val)
    if ts.performance_sample_count_override == 0 or ts.performance_sample_count_override > qsl.size:
        ts.performance_sample_count_override = psc
    if exact_latency_ns:
        if s.scenario == "SingleStream":
            ts.single_stream_expected_latency_ns = exact_latency_ns
        else:
            ts.multi_stream_expected_latency_ns = exact_latency_ns

    log_settings = lg.LogSettings()
    log_settings.log_output.outdir = str(out)
    log_settings.log_output.copy_summary_to_stdout = False
    log_settings.enable_trace = False

    progress = None
    if s.progress:
        from tqdm import tqdm

        total = qsl.size if s.mode == "accuracy" else None
        progress = tqdm(total=total, unit="img", desc=f"{s.scenario} {s.mode}", mininterval=1.0,
                        disable=None, file=sys.stderr)
    sut_impl = SystemUnderTest(lg, instances, qsl, s.scenario, batch_size, s.model.label_offset, progress)
    sut = lg.ConstructSUT(sut_impl.issue_queries, sut_impl.flush_queries)
    qsl_handle = lg.ConstructQSL(qsl.size, psc, qsl.load, qsl.unload)
    print(f"[harness] LoadGen {s.scenario} {s.mode} (round {s.round}, batch {batch_size}) -> {out}")
    t0 = time.perf_counter()
    try:
        with _working_directory(out):
            _in_thread_interruptibly(lambda: lg.StartTestWithLogSettings(sut, qsl_handle, ts, log_settings))
    finally:
        sut_impl.stop()
        lg.DestroyQSL(qsl_handle)
        lg.DestroySUT(sut)
        if progress is not None:
            progress.close()
    wall = time.perf_counter() - t0
    if sut_impl.errors:
        raise RuntimeError(f"inference failed on {len(sut_impl.errors)} batch(es): {sut_impl.errors[0]}")

    result = parse_logs(out, s.round)
    if s.mode == "accuracy":
        # LoadGen writes no verdict for an accuracy run: it is complete when every QSL sample was logged.
        seen = accuracy_log_indices(out / "mlperf_log_accuracy.json")
        complete = seen == set(range(qsl.size)) and not result["loadgen_errors"]
        result.update({"validity": "VALID" if complete else "INVALID", "valid": complete,
                       "accuracy_samples_logged": len(seen),
                       "invalid_reason": None if complete else (
                           f"the accuracy log holds {len(seen)} of the {qsl.size} samples"
                           + (f"; LoadGen errors: {'; '.join(result['loadgen_errors'][:2])}"
                              if result["loadgen_errors"] else ""))})
    result.update({
        "backend": backend.name,
        "backend_version": backend.version(),
        "model": s.model.name,
        "round": s.round,
        "samples_processed": sut_impl.samples_done,
        "qsl_size": qsl.size,
        "performance_sample_count": psc,
        "batch_size": batch_size,
        "threads": s.threads,
        "instances": s.workers,
        "target_qps": s.target_qps,
        "target_latency_ms": s.target_latency_ms,
        "warmup": measured,
        "wall_time_s": round(wall, 3),
        "accuracy_log": str(out / "mlperf_log_accuracy.json") if s.mode == "accuracy" else None,
        "audit": bool(s.audit_conf),
    })
    with atomic_write(out / RESULT_FILE) as f:  # last: its presence means a finished run
        json.dump(result, f, indent=2)
    print(format_summary(result))
    return result


def load_result(output_dir: str | Path) -> dict[str, Any]:
    """The result dict a finished run left in its output directory."""
    path = Path(output_dir) / RESULT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {RESULT_FILE} in {output_dir}: the harness did not finish")
    return json.loads(path.read_text())


def format_summary(r: dict[str, Any]) -> str:
    """One or two lines for the console."""
    if r["mode"] == "accuracy":
        head = f"accuracy run: {r.get('samples_processed')} samples answered"
    else:
        val = r.get("result")
        shown = f"{val:.3f} {r.get('result_unit')}" if isinstance(val, float) else "n/a"
        head = f"{shown}  {r.get('validity')}"
        if r.get("invalid_reason"):
            head += f": {r['invalid_reason']}"
    lines = [f"[harness] MLPerf {r.get('scenario')} {r.get('mode')} ({r.get('backend')}, round {r.get('round')}): "
             f"{head}", f"[harness] logs: {r.get('output_dir')}"]
    if r.get("loadgen_errors"):
        lines.append(f"[harness] LoadGen errors: {'; '.join(r['loadgen_errors'][:3])}")
    return "\n".join(lines)
