"""Settings of one MLPerf harness run: the HarnessSettings dataclass, reading them from the CM env, and the
user.conf they produce (see docs/scripts/harness.md)."""

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import mlperf_backends
from cm_mlperf.loadgen import rounds
from cm_mlperf.loadgen import user_conf as loadgen_user_conf
from cm_mlperf.loadgen.user_conf import MODEL_KEY
from cm_mlperf.parallelism import split_cores

_SCENARIO_NAMES = {s.lower(): s for s in rounds.SCENARIOS}
MODES = ("performance", "accuracy")


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
    qps_estimate: float | None = None  # samples/s from a find-performance run: a floor for Offline's target_qps
    target_latency_ms: float | None = None
    min_duration_ms: int | None = None
    min_query_count: int | None = None
    performance_sample_count: int | None = None
    threads: int = 0  # threads per inference; 0: per scenario (split_cores)
    batch_size: int = 0  # 0: automatic (the compiled batch for fixed-batch models)
    workers: int = 0  # backend instances answering at once (Offline/Server); 0: per scenario (split_cores)
    cores: int = 0  # the cores to share out; 0: os.cpu_count()
    round: str = rounds.DEFAULT_ROUND
    user_conf: str = ""  # a user.conf to start from; our computed lines are appended after it
    model_key: str = MODEL_KEY
    progress: bool = True
    audit_conf: str = ""  # a compliance test's audit.config (TEST01/04/05): LoadGen reads it from its folder

    def normalised(self) -> "HarnessSettings":
        """Return a copy with canonical names, checked values and resolved paths."""
        s = HarnessSettings(**{**asdict(self), "model": mlperf_backends.ModelFacts(**asdict(self.model))})
        scen = _SCENARIO_NAMES.get(str(s.scenario).strip().lower())
        if scen is None:
            raise ValueError(f"unknown scenario '{s.scenario}' (--scenario): use one of "
                             f"{', '.join(rounds.SCENARIOS)}")
        s.scenario = scen
        s.mode = str(s.mode).strip().lower()
        if s.mode in ("accuracyonly", "accuracy-only"):
            s.mode = "accuracy"
        if s.mode in ("performanceonly", "performance-only"):
            s.mode = "performance"
        if s.mode not in MODES:
            raise ValueError(f"unknown mode '{self.mode}' (--mode): use performance or accuracy")
        s.backend = str(s.backend).strip().lower()
        if s.backend not in mlperf_backends.BACKENDS:
            raise ValueError(f"unknown backend '{self.backend}' (--backend): use one of "
                             f"{', '.join(mlperf_backends.BACKENDS)}")
        s.round = rounds.get_round(s.round).name
        if not s.dataset_path:
            raise ValueError("no preprocessed dataset: set CM_DATASET_PREPROCESSED_PATH (a get,dataset,imagenet,"
                             "preprocessed dependency)")
        s.dataset_path = os.path.abspath(s.dataset_path)
        if not s.output_dir:
            s.output_dir = os.path.join(os.getcwd(), "mlperf_output", f"{s.backend}-{s.scenario.lower()}-{s.mode}")
        s.output_dir = os.path.abspath(s.output_dir)
        for name in ("count", "threads", "batch_size", "workers", "cores"):
            if getattr(s, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(s, name)}")
        if s.audit_conf:
            s.audit_conf = os.path.abspath(s.audit_conf)
            if not os.path.isfile(s.audit_conf):
                raise ValueError(f"--audit_conf {s.audit_conf} does not exist (CM_MLPERF_AUDIT_CONF)")
        s.cores = s.cores or os.cpu_count() or 1
        s.threads, s.workers = split_cores(s.scenario, s.cores, s.threads, s.workers)
        return s

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HarnessSettings":
        d = dict(d)
        d["model"] = mlperf_backends.ModelFacts(**d.get("model", {}))
        return cls(**d)


# The flag (app-mlperf-inference-python's input_mapping) behind each numeric env key, for error messages.
_FLAGS = {
    "CM_MLPERF_LOADGEN_COUNT": "--count", "CM_MLPERF_LOADGEN_TARGET_QPS": "--target_qps",
    "CM_MLPERF_LOADGEN_TARGET_LATENCY": "--target_latency", "CM_MLPERF_LOADGEN_MIN_DURATION": "--min_duration",
    "CM_MLPERF_LOADGEN_MIN_QUERY_COUNT": "--min_query_count",
    "CM_MLPERF_LOADGEN_PERFORMANCE_SAMPLE_COUNT": "--performance_sample_count", "CM_MLPERF_NUM_THREADS": "--threads",
    "CM_MLPERF_LOADGEN_BATCH_SIZE": "--batch_size", "CM_MLPERF_SUT_WORKERS": "--workers",
}


def _num(env: dict[str, str], key: str, kind: type = float) -> Any:
    val = str(env.get(key, "")).strip()
    if val == "":
        return None
    try:
        return kind(float(val)) if kind is int else kind(val)
    except ValueError as exc:
        flag = _FLAGS.get(key)
        where = f"{flag}='{val}' is not a number ({key})" if flag else f"{key}='{val}' is not a number"
        raise ValueError(where) from exc


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
        qps_estimate=_num(env, "CM_MLPERF_LOADGEN_QPS_ESTIMATE"),
        target_latency_ms=_num(env, "CM_MLPERF_LOADGEN_TARGET_LATENCY"),
        min_duration_ms=_num(env, "CM_MLPERF_LOADGEN_MIN_DURATION", int),
        min_query_count=_num(env, "CM_MLPERF_LOADGEN_MIN_QUERY_COUNT", int),
        performance_sample_count=_num(env, "CM_MLPERF_LOADGEN_PERFORMANCE_SAMPLE_COUNT", int),
        threads=_num(env, "CM_MLPERF_NUM_THREADS", int) or 0,
        batch_size=_num(env, "CM_MLPERF_LOADGEN_BATCH_SIZE", int) or 0,
        workers=_num(env, "CM_MLPERF_SUT_WORKERS", int) or 0,
        cores=_num(env, "CM_HOST_CPU_PHYSICAL_CORES", int) or _num(env, "CM_HOST_CPU_TOTAL_CORES", int) or 0,
        round=env.get("CM_MLPERF_ROUND", "") or rounds.DEFAULT_ROUND,
        user_conf=env.get("CM_MLPERF_USER_CONF", ""),
        progress=str(env.get("CM_MLPERF_PROGRESS", "yes")).lower() not in ("no", "0", "false", "off"),
        audit_conf=env.get("CM_MLPERF_AUDIT_CONF", ""),
    )


def build_user_conf(s: HarnessSettings, performance_sample_count: int, base_text: str = "") -> str:
    """user.conf for this run: the user's file (if any), then our settings for model.scenario (these win)."""
    return loadgen_user_conf.build_user_conf(
        s.scenario, performance_sample_count, model_key=s.model_key, target_qps=s.target_qps,
        target_latency_ms=s.target_latency_ms, min_duration_ms=s.min_duration_ms,
        min_query_count=s.min_query_count, base_text=base_text, writer="the harness")
