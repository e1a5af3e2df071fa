"""MLPerf Inference image-classification harness: LoadGen QSL + SUT around a pluggable backend.

Use `run_benchmark(settings)` from Python (it runs LoadGen in a child process, see below) or the CLI:

    python mlperf_harness.py --backend onnxruntime --scenario Offline --mode performance \
        --model-path m.onnx --dataset-path preprocessed/ --output-dir out/ --min-duration 10000

Why a child process: LoadGen counts `TestSettings.FromConfig` calls per process, and from the second one
on logs the error "Multiple conf files are used", which reviewers reject. One run = one process.
"""

import argparse
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlperf_backends
import mlperf_rounds
import numpy as np

RESULT_FILE = "harness_result.json"
SETTINGS_FILE = "harness_settings.json"
MODEL_KEY = "resnet50"  # LoadGen's key for image classification (EfficientNet in open division too)

_SCENARIO_NAMES = {s.lower(): s for s in mlperf_rounds.SCENARIOS}
_MODES = ("performance", "accuracy")
# Offline: target_qps is raised by this factor so the single query lasts past min_duration even when
# the measured warm-up throughput underestimates the steady state (LoadGen sizes the query as
# target_qps x min_duration x 1.1; a query that ends early makes the run INVALID).
OFFLINE_QPS_HEADROOM = 1.1
# Server: start below the measured throughput so queues (and the latency tail) stay bounded.
SERVER_QPS_FRACTION = 0.75


@dataclass
class HarnessSettings:
    """Everything one LoadGen run needs. Optional numbers left as None fall back to mlperf.conf."""

    backend: str = "onnxruntime"
    scenario: str = "Offline"
    mode: str = "performance"
    model: mlperf_backends.ModelFacts = field(default_factory=mlperf_backends.ModelFacts)
    dataset_path: str = ""
    output_dir: str = ""
    count: int = 0  # QSL size: first `count` samples of the dataset (0: all)
    target_qps: float | None = None
    target_latency_ms: float | None = None
    min_duration_ms: int | None = None
    min_query_count: int | None = None
    performance_sample_count: int | None = None
    threads: int = 0  # 0: all cores
    batch_size: int = 0  # 0: automatic (the compiled batch for fixed-batch models)
    workers: int = 1  # SUT worker threads (Offline/Server)
    round: str = mlperf_rounds.DEFAULT_ROUND
    user_conf: str = ""  # a user.conf to start from; our computed lines are appended after it
    model_key: str = MODEL_KEY
    progress: bool = True

    def normalised(self) -> "HarnessSettings":
        """Return a copy with canonical names, checked values and resolved paths."""
        s = HarnessSettings(**{**asdict(self), "model": mlperf_backends.ModelFacts(**asdict(self.model))})
        scen = _SCENARIO_NAMES.get(str(s.scenario).strip().lower())
        if scen is None:
            raise ValueError(f"unknown scenario '{s.scenario}': use one of {', '.join(mlperf_rounds.SCENARIOS)}")
        s.scenario = scen
        s.mode = str(s.mode).strip().lower()
        if s.mode in ("accuracyonly", "accuracy-only"):
            s.mode = "accuracy"
        if s.mode in ("performanceonly", "performance-only"):
            s.mode = "performance"
        if s.mode not in _MODES:
            raise ValueError(f"unknown mode '{self.mode}': use performance or accuracy")
        s.backend = str(s.backend).strip().lower()
        if s.backend not in mlperf_backends.BACKENDS:
            raise ValueError(f"unknown backend '{self.backend}': use one of {', '.join(mlperf_backends.BACKENDS)}")
        s.round = mlperf_rounds.get_round(s.round).name
        if not s.dataset_path:
            raise ValueError("no preprocessed dataset: set CM_DATASET_PREPROCESSED_PATH (or --dataset-path)")
        s.dataset_path = os.path.abspath(s.dataset_path)
        if not s.output_dir:
            s.output_dir = os.path.join(os.getcwd(), "mlperf_output", f"{s.backend}-{s.scenario.lower()}-{s.mode}")
        s.output_dir = os.path.abspath(s.output_dir)
        for name in ("count", "threads", "batch_size", "workers"):
            if getattr(s, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(s, name)}")
        s.workers = max(1, s.workers)
        if s.threads == 0:
            s.threads = os.cpu_count() or 1
        return s

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HarnessSettings":
        d = dict(d)
        d["model"] = mlperf_backends.ModelFacts(**d.get("model", {}))
        return cls(**d)


def _num(env: dict[str, str], key: str, kind: type = float) -> Any:
    val = str(env.get(key, "")).strip()
    if val == "":
        return None
    try:
        return kind(float(val)) if kind is int else kind(val)
    except ValueError as exc:
        raise ValueError(f"{key}='{val}' is not a number") from exc


def settings_from_env(env: dict[str, str]) -> HarnessSettings:
    """Build settings from the CM env (keys in docs/script-contract.md and docs/scripts/harness.md)."""
    model = mlperf_backends.ModelFacts(
        name=env.get("CM_ML_MODEL_NAME", "") or "model",
        onnx_path=env.get("CM_ML_MODEL_FILE_WITH_PATH", ""),
        input_name=env.get("CM_ML_MODEL_INPUT_NAME", ""),
        output_name=env.get("CM_ML_MODEL_OUTPUT_NAME", ""),
        label_offset=_num(env, "CM_ML_MODEL_LABEL_OFFSET", int) or 0,
        tvm_so=env.get("CM_TVM_MODEL_SO", ""),
        tvm_batch_size=_num(env, "CM_TVM_BATCH_SIZE", int) or 0,
        tvm_output_index=_num(env, "CM_TVM_MODEL_OUTPUT_INDEX", int) or 0,
    )
    return HarnessSettings(
        backend=env.get("CM_MLPERF_BACKEND", "") or "onnxruntime",
        scenario=env.get("CM_MLPERF_LOADGEN_SCENARIO", "") or "Offline",
        mode=env.get("CM_MLPERF_LOADGEN_MODE", "") or "performance",
        model=model,
        dataset_path=env.get("CM_DATASET_PREPROCESSED_PATH", ""),
        output_dir=env.get("CM_MLPERF_OUTPUT_DIR", ""),
        count=_num(env, "CM_MLPERF_LOADGEN_COUNT", int) or 0,
        target_qps=_num(env, "CM_MLPERF_LOADGEN_TARGET_QPS"),
        target_latency_ms=_num(env, "CM_MLPERF_LOADGEN_TARGET_LATENCY"),
        min_duration_ms=_num(env, "CM_MLPERF_LOADGEN_MIN_DURATION", int),
        min_query_count=_num(env, "CM_MLPERF_LOADGEN_MIN_QUERY_COUNT", int),
        performance_sample_count=_num(env, "CM_MLPERF_LOADGEN_PERFORMANCE_SAMPLE_COUNT", int),
        threads=_num(env, "CM_MLPERF_NUM_THREADS", int) or _num(env, "CM_HOST_CPU_TOTAL_CORES", int) or 0,
        batch_size=_num(env, "CM_MLPERF_LOADGEN_BATCH_SIZE", int) or 0,
        workers=_num(env, "CM_MLPERF_SUT_WORKERS", int) or 1,
        round=env.get("CM_MLPERF_ROUND", "") or mlperf_rounds.DEFAULT_ROUND,
        user_conf=env.get("CM_MLPERF_USER_CONF", ""),
        progress=str(env.get("CM_MLPERF_PROGRESS", "yes")).lower() not in ("no", "0", "false", "off"),
    )


# ---------------------------------------------------------------------------------------------- dataset


def list_samples(dataset_path: str, count: int = 0) -> list[str]:
    """The QSL's sample files in QSL order: val_map.txt's first column, else the sorted .npy files."""
    root = Path(dataset_path)
    if not root.is_dir():
        raise FileNotFoundError(f"preprocessed dataset folder not found: {dataset_path}")
    val_map = root / "val_map.txt"
    if val_map.is_file():
        names = [ln.split()[0] for ln in val_map.read_text().splitlines() if ln.strip()]
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
    time; no thread hand-off on the latency path). Offline's single big query is cut into batches and
    Server's queries are queued; worker threads drain the queue, Server workers coalescing waiting
    queries up to the batch size.
    """

    def __init__(self, lg: Any, backend: Any, qsl: SampleLibrary, scenario: str, batch_size: int,
                 label_offset: int, workers: int = 1, progress: Any = None) -> None:
        self.lg = lg
        self.backend = backend
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
            for n in range(max(1, workers)):
                t = threading.Thread(target=self._worker, name=f"sut-worker-{n}", daemon=True)
                t.start()
                self._workers.append(t)

    # LoadGen callbacks
    def issue_queries(self, query_samples: list[Any]) -> None:
        if self.scenario in ("SingleStream", "MultiStream"):
            self._answer(list(query_samples))
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

    def _worker(self) -> None:
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
            self._answer(samples)

    def _answer(self, samples: list[Any]) -> None:
        try:
            logits = self.backend.predict(self.qsl.batch([s.index for s in samples]))
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


def measure(backend: Any, qsl: SampleLibrary, per_call: int, budget_s: float = 1.0,
            min_calls: int = 3, max_calls: int = 200) -> dict[str, float]:
    """Time `predict` on `per_call` samples at a time, after one untimed call.

    Returns samples/s and the median call latency (ms). Used to pick target_qps / target_latency
    when the user gave none, as submitters do before a run.
    """
    idx = [i % qsl.size for i in range(per_call)]
    qsl.load(sorted(set(idx)))
    try:
        np.argmax(backend.predict(qsl.batch(idx)), axis=1)
        times = []
        start = time.perf_counter()
        while len(times) < max_calls and (len(times) < min_calls or time.perf_counter() - start < budget_s):
            t0 = time.perf_counter()
            # Same work as the SUT does per batch: gather, infer, argmax.
            np.argmax(backend.predict(qsl.batch(idx)), axis=1)
            times.append(time.perf_counter() - t0)
        total = sum(times)
    finally:
        qsl.unload(sorted(set(idx)))
    return {
        "samples_per_second": per_call * len(times) / total if total > 0 else float("inf"),
        "latency_ms": float(np.median(times)) * 1000.0,
        "calls": len(times),
    }


# ---------------------------------------------------------------------------------------------- configs


def build_user_conf(s: HarnessSettings, performance_sample_count: int, base_text: str = "") -> str:
    """user.conf for this run: the user's file (if any), then our settings for model.scenario (these win)."""
    p = f"{s.model_key}.{s.scenario}."
    lines = []
    if base_text.strip():
        lines += ["# --- from the user's user.conf ---", base_text.rstrip(), "# --- set by the harness ---"]
    if s.target_qps and s.scenario in ("Offline", "Server"):
        lines.append(f"{p}target_qps = {s.target_qps:.6g}")
    if s.target_latency_ms and s.scenario in ("SingleStream", "MultiStream", "Server"):
        # LoadGen reads target_latency as whole milliseconds.
        lines.append(f"{p}target_latency = {max(1, int(round(s.target_latency_ms)))}")
    if s.min_duration_ms is not None:
        lines.append(f"{p}min_duration = {int(s.min_duration_ms)}")
    if s.min_query_count is not None:
        lines.append(f"{p}min_query_count = {int(s.min_query_count)}")
    lines.append(f"{p}performance_sample_count_override = {performance_sample_count}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ log parsing


def parse_detail_log(path: str | Path) -> tuple[dict[str, Any], list[str], list[str]]:
    """Read mlperf_log_detail.txt: (last value per key, error messages, warning messages)."""
    values: dict[str, Any] = {}
    errors: list[str] = []
    warnings: list[str] = []
    for line in Path(path).read_text(errors="replace").splitlines():
        if not line.startswith(":::MLLOG"):
            continue
        try:
            rec = json.loads(line[len(":::MLLOG"):])
        except json.JSONDecodeError:
            continue
        key, val = rec.get("key"), rec.get("value")
        values[key] = val
        meta = rec.get("metadata") or {}
        if meta.get("is_error"):
            errors.append(f"{key}: {val}")
        elif meta.get("is_warning"):
            warnings.append(f"{key}: {val}")
    return values, errors, warnings


def parse_summary_log(path: str | Path) -> dict[str, str]:
    """Read mlperf_log_summary.txt's 'Name : value' lines."""
    out: dict[str, str] = {}
    for line in Path(path).read_text(errors="replace").splitlines():
        if ":" in line and not line.startswith("="):
            k, _, v = line.partition(":")
            if k.strip() and v.strip():
                out.setdefault(k.strip(), v.strip())
    return out


def _yes(val: Any) -> bool | None:
    if val is None:
        return None
    if isinstance(val, bool):
        return val
    return str(val).strip().lower() in ("yes", "true", "1", "valid")


def parse_logs(output_dir: str | Path, round_name: str = mlperf_rounds.DEFAULT_ROUND) -> dict[str, Any]:
    """Turn LoadGen's summary/detail logs into a result dict (see docs/scripts/harness.md)."""
    out = Path(output_dir)
    detail_path, summary_path = out / "mlperf_log_detail.txt", out / "mlperf_log_summary.txt"
    if not detail_path.is_file() or not summary_path.is_file():
        raise FileNotFoundError(f"LoadGen logs missing in {out} (mlperf_log_summary.txt / mlperf_log_detail.txt)")
    detail, errors, warnings = parse_detail_log(detail_path)
    summary = parse_summary_log(summary_path)
    scenario = detail.get("effective_scenario") or summary.get("Scenario", "")
    test_mode = str(detail.get("effective_test_mode") or summary.get("Mode", ""))
    mode = "accuracy" if "accuracy" in test_mode.lower() else "performance"
    rnd = mlperf_rounds.get_round(round_name)

    result_key, unit, value, percentile = None, "", None, None
    if mode == "accuracy":
        pass  # the accuracy figure comes from mlperf_log_accuracy.json (process-mlperf-accuracy)
    elif scenario == "Offline":
        result_key, unit = "result_samples_per_second", "samples/s"
    elif scenario == "Server":
        result_key, unit = rnd.server_result_key, "samples/s"
        percentile = detail.get("effective_target_latency_percentile")
    elif scenario in ("SingleStream", "MultiStream"):
        unit = "ms"
        percentile = detail.get("effective_target_latency_percentile")
        early = "early_stopping_latency_ss" if scenario == "SingleStream" else "early_stopping_latency_ms"
        pct = f"{float(percentile) * 100:.2f}" if percentile is not None else "90.00"
        plain = (f"result_{pct}_percentile_latency_ns" if scenario == "SingleStream"
                 else f"result_{pct}_percentile_per_query_latency_ns")
        result_key = early if detail.get(early) not in (None, 0) else plain
    if result_key is not None and detail.get(result_key) is not None:
        value = float(detail[result_key])
        if unit == "ms":
            value /= 1e6
    validity = str(detail.get("result_validity") or summary.get("Result is", "")).upper() or None
    return {
        "scenario": scenario,
        "mode": mode,
        "result": value,
        "result_unit": unit,
        "result_key": result_key,
        "latency_percentile": float(percentile) * 100 if percentile is not None else None,
        "validity": validity,
        "valid": validity == "VALID",
        "min_duration_satisfied": _yes(detail.get("result_min_duration_met", summary.get("Min duration satisfied"))),
        "min_queries_satisfied": _yes(detail.get("result_min_queries_met", summary.get("Min queries satisfied"))),
        "early_stopping_satisfied": _yes(detail.get("early_stopping_met", summary.get("Early stopping satisfied"))),
        "performance_constraints_satisfied": _yes(
            detail.get("result_perf_constraints_met", summary.get("Performance constraints satisfied"))),
        "loadgen_version": detail.get("loadgen_version"),
        "qsl_rng_seed": detail.get("effective_qsl_rng_seed"),
        "sample_index_rng_seed": detail.get("effective_sample_index_rng_seed"),
        "schedule_rng_seed": detail.get("effective_schedule_rng_seed"),
        "loadgen_performance_sample_count": detail.get("effective_performance_sample_count"),
        "loadgen_errors": errors,
        "loadgen_warnings": warnings,
        "output_dir": str(out),
    }


def accuracy_log_indices(path: str | Path) -> set[int]:
    """The distinct qsl_idx values in mlperf_log_accuracy.json."""
    return {int(e["qsl_idx"]) for e in json.loads(Path(path).read_text() or "[]")}


# -------------------------------------------------------------------------------------------------- run


def _resolve_batch_size(s: HarnessSettings, backend: Any, samples_per_query: int) -> int:
    if s.batch_size:
        return s.batch_size
    if getattr(backend, "fixed_batch_size", None):
        return backend.fixed_batch_size
    return {"SingleStream": 1, "MultiStream": samples_per_query}.get(s.scenario, 8)


def _run_in_process(s: HarnessSettings) -> dict[str, Any]:
    import mlperf_loadgen as lg

    rnd = mlperf_rounds.get_round(s.round)
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

    backend = mlperf_backends.create_backend(s.backend)
    t0 = time.perf_counter()
    backend.load(s.model, s.threads, s.batch_size)
    print(f"[harness] {backend.name} {backend.version()} loaded in {time.perf_counter() - t0:.1f} s "
          f"({s.threads} threads); QSL {qsl.size} samples, performance sample count {psc}")

    spq = int(rnd.value(s.model_key, "MultiStream", "samples_per_query") or 8)
    batch_size = _resolve_batch_size(s, backend, spq)
    measured: dict[str, float] | None = None
    exact_latency_ns = None
    if s.mode == "performance":
        if s.scenario in ("Offline", "Server") and not s.target_qps:
            measured = measure(backend, qsl, batch_size)
            factor = OFFLINE_QPS_HEADROOM if s.scenario == "Offline" else SERVER_QPS_FRACTION
            s.target_qps = round(measured["samples_per_second"] * factor, 3)
            print(f"[harness] warm-up: {measured['samples_per_second']:.1f} samples/s at batch {batch_size} "
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
    sut_impl = SystemUnderTest(lg, backend, qsl, s.scenario, batch_size, s.model.label_offset, s.workers, progress)
    sut = lg.ConstructSUT(sut_impl.issue_queries, sut_impl.flush_queries)
    qsl_handle = lg.ConstructQSL(qsl.size, psc, qsl.load, qsl.unload)
    print(f"[harness] LoadGen {s.scenario} {s.mode} (round {s.round}, batch {batch_size}) -> {out}")
    t0 = time.perf_counter()
    try:
        lg.StartTestWithLogSettings(sut, qsl_handle, ts, log_settings)
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
                       "accuracy_samples_logged": len(seen)})
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
        "target_qps": s.target_qps,
        "target_latency_ms": s.target_latency_ms,
        "warmup": measured,
        "wall_time_s": round(wall, 3),
        "accuracy_log": str(out / "mlperf_log_accuracy.json") if s.mode == "accuracy" else None,
    })
    (out / RESULT_FILE).write_text(json.dumps(result, indent=2))
    print(format_summary(result))
    return result


def format_summary(r: dict[str, Any]) -> str:
    """One or two lines for the console."""
    if r["mode"] == "accuracy":
        head = f"accuracy run: {r.get('samples_processed')} samples answered"
    else:
        val = r.get("result")
        shown = f"{val:.3f} {r.get('result_unit')}" if isinstance(val, float) else "n/a"
        head = (f"{shown}  {r.get('validity')}  (min duration met: {'yes' if r.get('min_duration_satisfied') else 'no'}"
                f", min queries met: {'yes' if r.get('min_queries_satisfied') else 'no'})")
    lines = [f"[harness] MLPerf {r.get('scenario')} {r.get('mode')} ({r.get('backend')}, round {r.get('round')}): "
             f"{head}", f"[harness] logs: {r.get('output_dir')}"]
    if r.get("loadgen_errors"):
        lines.append(f"[harness] LoadGen errors: {'; '.join(r['loadgen_errors'][:3])}")
    return "\n".join(lines)


def run_benchmark(settings: HarnessSettings, isolated: bool = True) -> dict[str, Any]:
    """Run one LoadGen test and return the parsed result dict.

    isolated=True (default) runs it in a fresh Python process (see the module docstring); the child
    writes `harness_result.json` into the output directory, which is read back here.
    """
    s = settings.normalised()
    if not isolated:
        return _run_in_process(s)
    out = Path(s.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULT_FILE).unlink(missing_ok=True)
    settings_path = out / SETTINGS_FILE
    settings_path.write_text(s.to_json())
    cmd = [sys.executable, str(Path(__file__).resolve()), "--settings-json", str(settings_path)]
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0 or not (out / RESULT_FILE).is_file():
        raise RuntimeError(f"the MLPerf harness failed (exit code {proc.returncode}); see its output above")
    return json.loads((out / RESULT_FILE).read_text())


def load_result(output_dir: str | Path) -> dict[str, Any]:
    """The result dict a finished run left in its output directory."""
    path = Path(output_dir) / RESULT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {RESULT_FILE} in {output_dir}: the harness did not finish")
    return json.loads(path.read_text())


# -------------------------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Unset options fall back to the CM env (CM_MLPERF_*, CM_ML_MODEL_*, ...).")
    p.add_argument("--settings-json", help="read all settings from this JSON file (written by run_benchmark)")
    p.add_argument("--backend", choices=sorted(mlperf_backends.BACKENDS))
    p.add_argument("--scenario")
    p.add_argument("--mode", choices=_MODES)
    p.add_argument("--model-path", help="ONNX model (onnxruntime)")
    p.add_argument("--model-name")
    p.add_argument("--input-name")
    p.add_argument("--output-name")
    p.add_argument("--label-offset", type=int)
    p.add_argument("--tvm-so", help="compiled Relax VM library (tvm)")
    p.add_argument("--tvm-batch-size", type=int)
    p.add_argument("--dataset-path", help="folder of preprocessed .npy + val_map.txt")
    p.add_argument("--output-dir")
    p.add_argument("--count", type=int, help="QSL size (first N samples)")
    p.add_argument("--target-qps", type=float)
    p.add_argument("--target-latency", type=float, help="ms")
    p.add_argument("--min-duration", type=int, help="ms")
    p.add_argument("--min-query-count", type=int)
    p.add_argument("--performance-sample-count", type=int)
    p.add_argument("--threads", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--workers", type=int)
    p.add_argument("--round", choices=sorted(mlperf_rounds.ROUNDS))
    p.add_argument("--user-conf")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.settings_json:
        s = HarnessSettings.from_dict(json.loads(Path(args.settings_json).read_text()))
    else:
        s = settings_from_env(dict(os.environ))
        simple = {"backend": "backend", "scenario": "scenario", "mode": "mode", "dataset_path": "dataset_path",
                  "output_dir": "output_dir", "count": "count", "target_qps": "target_qps",
                  "target_latency": "target_latency_ms", "min_duration": "min_duration_ms",
                  "min_query_count": "min_query_count", "performance_sample_count": "performance_sample_count",
                  "threads": "threads", "batch_size": "batch_size", "workers": "workers", "round": "round",
                  "user_conf": "user_conf"}
        for arg, attr in simple.items():
            if getattr(args, arg) is not None:
                setattr(s, attr, getattr(args, arg))
        model = {"model_path": "onnx_path", "model_name": "name", "input_name": "input_name",
                 "output_name": "output_name", "label_offset": "label_offset", "tvm_so": "tvm_so",
                 "tvm_batch_size": "tvm_batch_size"}
        for arg, attr in model.items():
            if getattr(args, arg) is not None:
                setattr(s.model, attr, getattr(args, arg))
        if args.no_progress:
            s.progress = False
    try:
        run_benchmark(s, isolated=False)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"[harness] error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
