"""Why LoadGen called a performance run INVALID, in one line, from its own logs.

LoadGen prints the failed checks and its advice only in mlperf_log_summary.txt (and the detail log); a harness
shows this line next to INVALID and records it as `invalid_reason` in harness_result.json. Used by the Python
harness (app-mlperf-inference-python) and the native Mojo one; any harness that writes LoadGen logs can call
`invalid_reason_in`.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from cm_mlperf.loadgen.logs import DETAIL_LOG, SUMMARY_LOG, read_detail, summary_values

# (detail-log key, summary name, what failed)
CHECKS = (
    ("result_min_duration_met", "Min duration satisfied", "min duration not met"),
    ("result_min_queries_met", "Min queries satisfied", "min query count not met"),
    ("early_stopping_met", "Early stopping satisfied", "early stopping not met"),
    ("result_perf_constraints_met", "Performance constraints satisfied", "latency constraint not met"),
)


def _failed(value: Any) -> bool:
    if isinstance(value, bool):
        return not value
    return value is not None and str(value).strip().lower() in ("no", "false", "0")


def summary_bullets(summary_text: str, heading: str) -> list[str]:
    """The ' * ...' lines under a heading of mlperf_log_summary.txt ('Recommendations:', 'Early Stopping Result:')."""
    lines = summary_text.splitlines()
    for k, line in enumerate(lines):
        if line.strip() == heading:
            out = []
            for follow in lines[k + 1:]:
                if not follow.strip().startswith("*"):
                    break
                out.append(follow.strip().lstrip("*").strip())
            return out
    return []


def invalid_reason(detail: Mapping[str, Any], summary_text: str) -> str:
    """The checks that failed, LoadGen's recommendation and, when early stopping failed, its verdict (such as
    the number of queries it needs), joined in one line."""
    summary = summary_values(summary_text)
    failed = [what for key, name, what in CHECKS if _failed(detail.get(key, summary.get(name)))]
    parts = [", ".join(failed)] if failed else []
    advice = str(detail.get("result_invalid_reason") or "").strip() or " ".join(
        summary_bullets(summary_text, "Recommendations:"))
    if advice:
        parts.append(f"LoadGen: {advice.rstrip('.')}")
    if "early stopping not met" in failed:
        early = summary_bullets(summary_text, "Early Stopping Result:") or [
            b.strip() for b in str(detail.get("early_stopping_result") or "").split("*") if b.strip()]
        if early:
            parts.append("early stopping: " + "; ".join(e.rstrip(".") for e in early))
    return "; ".join(parts) or "see mlperf_log_summary.txt"


def invalid_reason_in(output_dir: str | os.PathLike[str]) -> str:
    """`invalid_reason` of the LoadGen logs in a run's output folder."""
    folder = os.fspath(output_dir)
    detail = read_detail(os.path.join(folder, DETAIL_LOG))
    summary_path = os.path.join(folder, SUMMARY_LOG)
    text = ""
    if os.path.isfile(summary_path):
        with open(summary_path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    return invalid_reason(detail.values, text)
