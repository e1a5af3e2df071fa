"""Reading LoadGen's logs: mlperf_log_detail.txt (`:::MLLOG {json}` lines), mlperf_log_summary.txt (`Name : value`
lines) and mlperf_log_accuracy.json; and a run's result dict from them (the keys of harness_result.json).

One parser for every reader: the Python harness, the native Mojo harness, the INVALID verdict, the submission
generator and its checker. Reviewers' tools keep the first value of a repeated key (`DetailLog.values`); the
harness result is built from the last (`DetailLog.latest`), as LoadGen's final word on the run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cm_mlperf.loadgen import rounds

MARKER = ":::MLLOG"
DETAIL_LOG = "mlperf_log_detail.txt"
SUMMARY_LOG = "mlperf_log_summary.txt"
ACCURACY_LOG = "mlperf_log_accuracy.json"


@dataclass
class DetailLog:
    path: Path
    values: dict[str, Any] = field(default_factory=dict)  # first value of each key (as reviewers read it)
    latest: dict[str, Any] = field(default_factory=dict)  # last value of each key
    errors: list[str] = field(default_factory=list)  # the values of records flagged is_error
    # (key, value) of records flagged is_error / is_warning
    error_records: list[tuple[str, Any]] = field(default_factory=list)
    warning_records: list[tuple[str, Any]] = field(default_factory=list)

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    @property
    def valid(self) -> bool:
        return self.values.get("result_validity") == "VALID"

    @property
    def scenario(self) -> str:
        return str(self.values.get("effective_scenario", ""))

    def seeds(self) -> dict[str, int]:
        return {k: int(self.values.get(f"effective_{k}", -1)) for k in rounds.SEED_KEYS}


def read_detail(path: str | Path, strict: bool = True) -> DetailLog:
    """Parse mlperf_log_detail.txt. A line that is not valid JSON is an error, as in MLPerf's own parser
    (`strict`), or is skipped (a harness reading its own run's log)."""
    p = Path(path)
    log = DetailLog(p)
    for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.startswith(MARKER):
            continue
        try:
            rec = json.loads(line[len(MARKER):])
        except json.JSONDecodeError as exc:
            if not strict:
                continue
            raise ValueError(f"{p}:{n}: not a LoadGen log line ({exc})") from exc
        key, val = rec.get("key"), rec.get("value")
        log.values.setdefault(key, val)
        log.latest[key] = val
        meta = rec.get("metadata") or {}
        if meta.get("is_error"):
            log.errors.append(str(val))
            log.error_records.append((key, val))
        elif meta.get("is_warning"):
            log.warning_records.append((key, val))
    return log


def read_summary(path: str | Path) -> dict[str, str]:
    """mlperf_log_summary.txt as {name: value} (first occurrence)."""
    return summary_values(Path(path).read_text(encoding="utf-8", errors="replace"))


def summary_values(text: str) -> dict[str, str]:
    """The `Name : value` lines of a summary log's text (first occurrence)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() and value.strip() and not line.startswith("="):
            out.setdefault(name.strip(), value.strip())
    return out


def accuracy_log_indices(path: str | Path) -> set[int]:
    """The distinct qsl_idx values in mlperf_log_accuracy.json."""
    return {int(e["qsl_idx"]) for e in json.loads(Path(path).read_text() or "[]")}


def _yes(val: Any) -> bool | None:
    if val is None:
        return None
    if isinstance(val, bool):
        return val
    return str(val).strip().lower() in ("yes", "true", "1", "valid")


def parse_logs(output_dir: str | Path, round_name: str = rounds.DEFAULT_ROUND) -> dict[str, Any]:
    """Turn a run's summary/detail logs into its result dict (see docs/scripts/harness.md)."""
    from cm_mlperf.loadgen_verdict import invalid_reason_in

    out = Path(output_dir)
    detail_path, summary_path = out / DETAIL_LOG, out / SUMMARY_LOG
    if not detail_path.is_file() or not summary_path.is_file():
        raise FileNotFoundError(f"LoadGen logs missing in {out} ({SUMMARY_LOG} / {DETAIL_LOG})")
    log = read_detail(detail_path, strict=False)
    detail = log.latest
    summary = read_summary(summary_path)
    scenario = detail.get("effective_scenario") or summary.get("Scenario", "")
    test_mode = str(detail.get("effective_test_mode") or summary.get("Mode", ""))
    mode = "accuracy" if "accuracy" in test_mode.lower() else "performance"
    rnd = rounds.get_round(round_name)

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
        "invalid_reason": invalid_reason_in(out) if mode == "performance" and validity != "VALID" else None,
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
        "loadgen_errors": [f"{k}: {v}" for k, v in log.error_records],
        "loadgen_warnings": [f"{k}: {v}" for k, v in log.warning_records],
        "output_dir": str(out),
    }
