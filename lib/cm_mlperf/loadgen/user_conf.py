"""The user.conf a harness writes for one LoadGen run (both harnesses: Python and native Mojo)."""
from __future__ import annotations

MODEL_KEY = "resnet50"  # LoadGen's key for image classification (EfficientNet in the open division too)


def build_user_conf(scenario: str, performance_sample_count: int, *, model_key: str = MODEL_KEY,
                    target_qps: float | None = None, target_latency_ms: float | None = None,
                    min_duration_ms: int | None = None, min_query_count: int | None = None,
                    base_text: str = "", writer: str = "the harness") -> str:
    """user.conf: the user's file (`base_text`, if any), then this run's settings for model.scenario (these win,
    LoadGen keeping the last value of a key). Unset settings fall back to mlperf.conf."""
    p = f"{model_key}.{scenario}."
    lines = []
    if base_text.strip():
        lines += ["# --- from the user's user.conf ---", base_text.rstrip(), f"# --- set by {writer} ---"]
    if target_qps and scenario in ("Offline", "Server"):
        lines.append(f"{p}target_qps = {target_qps:.6g}")
    if target_latency_ms and scenario in ("SingleStream", "MultiStream", "Server"):
        # LoadGen reads target_latency as whole milliseconds
        lines.append(f"{p}target_latency = {max(1, int(round(target_latency_ms)))}")
    if min_duration_ms is not None:
        lines.append(f"{p}min_duration = {int(min_duration_ms)}")
    if min_query_count is not None:
        lines.append(f"{p}min_query_count = {int(min_query_count)}")
    lines.append(f"{p}performance_sample_count_override = {performance_sample_count}")
    return "\n".join(lines) + "\n"
