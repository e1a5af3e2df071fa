"""Reading LoadGen's logs: mlperf_log_detail.txt and mlperf_log_summary.txt into one result dict, the QSL
indices in mlperf_log_accuracy.json, and the console summary of a result."""

import json
from pathlib import Path
from typing import Any

import mlperf_rounds
from cm_mlperf.loadgen_verdict import invalid_reason_in


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
        "loadgen_errors": errors,
        "loadgen_warnings": warnings,
        "output_dir": str(out),
    }


def accuracy_log_indices(path: str | Path) -> set[int]:
    """The distinct qsl_idx values in mlperf_log_accuracy.json."""
    return {int(e["qsl_idx"]) for e in json.loads(Path(path).read_text() or "[]")}


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
