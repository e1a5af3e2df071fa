"""A submission tree's results as a Markdown table and a CSV file (system, backend, model, scenario, result,
accuracy, valid)."""
from __future__ import annotations

import csv
import io

from cm_mlperf.submission.check import ResultRow

COLUMNS = ("division", "submitter", "system", "backend", "framework", "model", "scenario", "result", "unit",
           "accuracy", "valid")


def _values(row: ResultRow) -> list[str]:
    return [row.division, row.submitter, row.system, row.backend, row.framework, row.model, row.scenario,
            row.result, row.unit, row.accuracy, "yes" if row.valid else "no"]


def to_csv(rows: list[ResultRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(_values(r) for r in rows)
    return out.getvalue()


def to_markdown(rows: list[ResultRow], title: str = "MLPerf Inference submission") -> str:
    head = ["system", "backend", "model", "scenario", "result", "accuracy (top-1 %)", "valid"]
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append(f"| {r.system} | {r.framework or r.backend} | {r.model} | {r.scenario} | "
                     f"{r.result} {r.unit} | {r.accuracy} | {'yes' if r.valid else 'no'} |")
    return "\n".join(lines) + "\n"
