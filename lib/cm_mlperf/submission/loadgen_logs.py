"""Reading LoadGen's logs as reviewers do: mlperf_log_detail.txt (`:::MLLOG {json}` lines, first value of a key
wins) and mlperf_log_summary.txt (`Name : value` lines)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MARKER = ":::MLLOG"


@dataclass
class DetailLog:
    path: Path
    values: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    @property
    def valid(self) -> bool:
        return self.values.get("result_validity") == "VALID"

    @property
    def scenario(self) -> str:
        return str(self.values.get("effective_scenario", ""))

    def seeds(self) -> dict[str, int]:
        return {k: int(self.values.get(f"effective_{k}", -1)) for k in
                ("qsl_rng_seed", "sample_index_rng_seed", "schedule_rng_seed")}


def read_detail(path: str | Path) -> DetailLog:
    """Parse mlperf_log_detail.txt; a line that is not valid JSON is an error, as in MLPerf's own parser."""
    p = Path(path)
    log = DetailLog(p)
    for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.startswith(MARKER):
            continue
        try:
            rec = json.loads(line[len(MARKER):])
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p}:{n}: not a LoadGen log line ({exc})") from exc
        log.values.setdefault(rec.get("key"), rec.get("value"))
        if (rec.get("metadata") or {}).get("is_error"):
            log.errors.append(str(rec.get("value")))
    return log


def read_summary(path: str | Path) -> dict[str, str]:
    """mlperf_log_summary.txt as {name: value} (first occurrence)."""
    out: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() and value.strip() and not line.startswith("="):
            out.setdefault(name.strip(), value.strip())
    return out
