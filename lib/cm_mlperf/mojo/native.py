"""The Python side of the native Mojo harness (script/build-mojo-backend/mojo/harness_main.mojo).

The Mojo program owns the run: it calls `prepare()` for the plan (the same planner and kernels as the `mojo`
backend) and the sample list, warms up with its own kernels, asks `loadgen_settings()` for LoadGen's
TestSettings (user.conf written from its measurement), registers its own Mojo functions as LoadGen's SUT and
QSL callbacks, and finally calls `finish()`, which reads LoadGen's logs into `harness_result.json` (the file
run-mlperf-inference-app reads for every harness).

Before the program starts, `write_settings()` (the app-mlperf-inference-mojo script) fixes everything a run
needs in `native_settings.json`: one file, so the program takes one argument.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import loadgen_verdict
from ..loadgen import logs as loadgen_logs
from ..loadgen import rounds
from ..loadgen.user_conf import MODEL_KEY, build_user_conf
from .engine import make_control
from .plan import Plan, build_plan

SETTINGS_FILE = "native_settings.json"
RESULT_FILE = "harness_result.json"
SCENARIOS = rounds.SCENARIOS
OFFLINE_QPS_HEADROOM = 1.1  # target_qps above the warm-up figure: the Offline query must outlast min_duration
SERVER_QPS_FRACTION = 0.75  # Server starts below the warm-up throughput so latencies stay bounded


@dataclass
class NativeSettings:
    scenario: str
    mode: str
    onnx_path: str
    dataset_path: str
    output_dir: str
    input_name: str = ""
    output_name: str = ""
    label_offset: int = 0
    model_name: str = "model"
    count: int = 0
    threads: int = 1
    round: str = "v6.1"
    target_qps: float | None = None
    target_latency_ms: float | None = None
    min_duration_ms: int | None = None
    min_query_count: int | None = None
    performance_sample_count: int | None = None
    user_conf: str = ""  # the user's user.conf to start from
    mlperf_conf: str = ""  # the round's mlperf.conf (default: cm_mlperf.loadgen's), copied next to the logs
    mojo_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def write_settings(s: NativeSettings) -> Path:
    if s.scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario '{s.scenario}': use one of {', '.join(SCENARIOS)}")
    if s.mode not in ("performance", "accuracy"):
        raise ValueError(f"unknown mode '{s.mode}': use performance or accuracy")
    rnd = rounds.get_round(s.round)
    s.round, s.mlperf_conf = rnd.name, s.mlperf_conf or str(rnd.conf_path)
    if not os.path.isfile(s.mlperf_conf):
        raise FileNotFoundError(f"the round's mlperf.conf not found: {s.mlperf_conf}")
    out = Path(s.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULT_FILE).unlink(missing_ok=True)
    path = out / SETTINGS_FILE
    path.write_text(json.dumps(asdict(s), indent=2))
    return path


def sample_paths(dataset_path: str, count: int = 0) -> list[str]:
    """The QSL's .npy files in QSL order: val_map.txt's first column, else the sorted .npy files."""
    root = Path(dataset_path)
    if not root.is_dir():
        raise FileNotFoundError(f"preprocessed dataset folder not found: {dataset_path}")
    val_map = root / "val_map.txt"
    names = ([ln.split()[0] for ln in val_map.read_text().splitlines() if ln.strip()] if val_map.is_file()
             else sorted(p.name for p in root.glob("*.npy")))
    names = names[:count] if count else names
    if not names:
        raise ValueError(f"no samples in {dataset_path} (expected .npy files and a val_map.txt)")
    return [str(root / n) for n in names]


class NativeState:
    """What the Mojo callbacks read: addresses of the plan, its control block and the loaded samples."""

    def __init__(self, settings: NativeSettings) -> None:
        self.settings = settings
        self.plan: Plan = build_plan(settings.onnx_path, 1, settings.input_name, settings.output_name)
        if len(self.plan.output_shape) != 1:
            raise ValueError(f"the model output {self.plan.output_name} is not [N, classes]")
        self.ctrl, self.counters = make_control(self.plan, max(1, settings.threads))
        self.paths = sample_paths(settings.dataset_path, settings.count)
        self.samples: dict[int, np.ndarray] = {}
        self.addresses: dict[int, int] = {}
        self.samples_done = 0
        default_psc = rounds.get_round(settings.round).performance_sample_count(MODEL_KEY, settings.scenario)
        self.performance_sample_count = min(len(self.paths),
                                            settings.performance_sample_count or default_psc or len(self.paths))
        self.warmup: dict[str, float] = {}

    # plain ints for the Mojo side
    @property
    def ctrl_addr(self) -> int:
        return int(self.ctrl.ctypes.data)

    @property
    def table_addr(self) -> int:
        return int(self.plan.table.ctypes.data)

    @property
    def input_buf(self) -> int:
        return self.plan.input_buf

    @property
    def output_addr(self) -> int:
        return int(self.plan.arrays[self.plan.output_buf].ctypes.data)

    @property
    def classes(self) -> int:
        return int(self.plan.output_shape[0])

    @property
    def label_offset(self) -> int:
        return int(self.settings.label_offset)

    @property
    def size(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> int:
        """Read one preprocessed sample into memory (LoadGen's LoadSamplesToRam); returns its address."""
        if index not in self.samples:
            arr = np.ascontiguousarray(np.load(self.paths[index]), dtype=np.float32)
            if arr.shape != self.plan.input_shape:
                raise ValueError(f"{self.paths[index]}: shape {arr.shape}, the model takes {self.plan.input_shape}")
            self.samples[index] = arr
            self.addresses[index] = int(arr.ctypes.data)
        return self.addresses[index]

    def unload(self, index: int) -> None:
        self.samples.pop(index, None)
        self.addresses.pop(index, None)


STATE: NativeState | None = None  # the running program's state (the Mojo callbacks look it up here)


def prepare(settings_path: str) -> NativeState:
    global STATE
    data = json.loads(Path(settings_path).read_text())
    STATE = NativeState(NativeSettings(**data))
    return STATE


def user_conf_text(s: NativeSettings, performance_sample_count: int) -> str:
    """user.conf: the user's file (if any), then this run's settings (these win)."""
    return build_user_conf(
        s.scenario, performance_sample_count, target_qps=s.target_qps, target_latency_ms=s.target_latency_ms,
        min_duration_ms=s.min_duration_ms, min_query_count=s.min_query_count,
        base_text=Path(s.user_conf).read_text() if s.user_conf else "", writer="the native Mojo harness")


def loadgen_settings(st: NativeState, latency_ms: float) -> tuple[Any, Any]:
    """TestSettings from user.conf (written now, with targets from the Mojo warm-up) and LogSettings."""
    import mlperf_loadgen as lg

    s = st.settings
    sps = 1000.0 / latency_ms if latency_ms > 0 else 0.0
    st.warmup = {"samples_per_second": round(sps, 3), "latency_ms": round(latency_ms, 3)}
    if s.mode == "performance":
        if s.scenario in ("Offline", "Server") and not s.target_qps:
            s.target_qps = round(sps * (OFFLINE_QPS_HEADROOM if s.scenario == "Offline" else SERVER_QPS_FRACTION), 3)
        elif s.scenario in ("SingleStream", "MultiStream") and not s.target_latency_ms:
            per_query = 8 if s.scenario == "MultiStream" else 1
            s.target_latency_ms = latency_ms * per_query
    out = Path(s.output_dir)
    user_conf = out / "user.conf"
    user_conf.write_text(user_conf_text(s, st.performance_sample_count))
    shutil.copyfile(s.mlperf_conf, out / "mlperf.conf")
    ts = lg.TestSettings()
    ts.scenario = getattr(lg.TestScenario, s.scenario)
    ts.mode = lg.TestMode.AccuracyOnly if s.mode == "accuracy" else lg.TestMode.PerformanceOnly
    # conf_type=1: LoadGen's built-in (today's) mlperf.conf, then our user.conf; one call per process
    if ts.FromConfig(str(user_conf), MODEL_KEY, s.scenario, 1) != 0:
        raise RuntimeError(f"LoadGen rejected {user_conf}")
    rnd = rounds.get_round(s.round)
    if not rnd.builtin:  # LoadGen carries today's seeds; an older round's (TEST05's too) are set here
        for key, value in rnd.seeds().items():
            setattr(ts, key, value)
    log = lg.LogSettings()
    log.log_output.outdir = str(out)
    log.log_output.copy_summary_to_stdout = False
    log.enable_trace = False
    print(f"[mojo-native] LoadGen {s.scenario} {s.mode} (round {s.round}): warm-up {latency_ms:.2f} ms/image "
          f"-> {out}", flush=True)
    return ts, log


def finish(st: NativeState, wall_s: float) -> dict[str, Any]:
    """LoadGen's logs -> harness_result.json, with the same keys as the Python harness writes."""
    s = st.settings
    out = Path(s.output_dir)
    detail = loadgen_logs.read_detail(out / loadgen_logs.DETAIL_LOG)
    summary = loadgen_logs.read_summary(out / loadgen_logs.SUMMARY_LOG)
    rnd = rounds.get_round(s.round)
    result_key, unit, value, percentile = None, "", None, None
    if s.mode == "performance":
        result_key = rnd.result_keys[s.scenario]
        unit = "ms" if s.scenario in ("SingleStream", "MultiStream") else "samples/s"
        percentile = detail.get("effective_target_latency_percentile") if s.scenario != "Offline" else None
        if detail.get(result_key) is not None:
            value = float(detail.get(result_key)) / (1e6 if unit == "ms" else 1.0)
    validity = str(detail.get("result_validity") or summary.get("Result is", "")).upper() or None
    accuracy_log = out / loadgen_logs.ACCURACY_LOG
    result: dict[str, Any] = {
        "scenario": s.scenario, "mode": s.mode, "result": value, "result_unit": unit, "result_key": result_key,
        "latency_percentile": float(percentile) * 100 if percentile is not None else None,
        "validity": validity, "valid": validity == "VALID",
        "loadgen_version": detail.get("loadgen_version"), "loadgen_errors": detail.errors,
        "backend": "mojo-native", "backend_version": f"{s.mojo_version or '?'} (native Mojo harness, our kernels)",
        "model": s.model_name, "round": s.round, "samples_processed": st.samples_done, "qsl_size": st.size,
        "performance_sample_count": st.performance_sample_count, "batch_size": 1, "threads": s.threads,
        "target_qps": s.target_qps, "target_latency_ms": s.target_latency_ms, "warmup": st.warmup,
        "wall_time_s": round(wall_s, 3), "output_dir": str(out),
        "accuracy_log": str(accuracy_log) if s.mode == "accuracy" else None,
    }
    if s.mode == "accuracy":
        seen = loadgen_logs.accuracy_log_indices(accuracy_log)
        complete = seen == set(range(st.size)) and not detail.errors
        result.update({"validity": "VALID" if complete else "INVALID", "valid": complete,
                       "accuracy_samples_logged": len(seen)})
    elif not result["valid"]:
        result["invalid_reason"] = loadgen_verdict.invalid_reason_in(out) or None
    (out / RESULT_FILE).write_text(json.dumps(result, indent=2))
    shown = f"{value:.3f} {unit}" if value is not None else f"{st.samples_done} samples answered"
    print(f"[mojo-native] MLPerf {s.scenario} {s.mode}: {shown} {result['validity']} ({wall_s:.1f} s)", flush=True)
    return result


def run_program(binary: str, settings_path: Path, env: dict[str, str] | None = None) -> int:
    """Start the native harness with this Python environment's interpreter on PATH (Mojo embeds that Python)."""
    import subprocess
    import sys

    env = dict(os.environ if env is None else env)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return subprocess.run([binary, str(settings_path)], env=env, check=False).returncode
