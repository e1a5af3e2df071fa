"""Top-1 accuracy of an MLPerf image-classification accuracy run, written as MLPerf's accuracy.txt.

Reads mlperf_log_accuracy.json (LoadGen: one entry per answered sample, `data` = the response bytes
in hex), keeps the first entry per qsl_idx, decodes its first value as the predicted class and
compares it with the label on line `qsl_idx` of val_map.txt. accuracy.txt holds the line MLPerf's
official ImageNet accuracy script prints, then `hash=<sha256 of mlperf_log_accuracy.json>` (the
line the submission's log truncation adds).

    python imagenet_accuracy.py --results-dir OUT --val-map val_map.txt [--dtype float32]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

from cm_mlperf.files import atomic_write
from cm_mlperf.imagenet import ValMapError
from cm_mlperf.imagenet import read_val_map as _read_val_map

# little-endian, as LoadGen copies the response bytes of the (x86/ARM) host
DTYPES = {"float32": struct.Struct("<f"), "int32": struct.Struct("<i"), "int64": struct.Struct("<q")}
LOG_NAME = "mlperf_log_accuracy.json"


class AccuracyError(ValueError):
    """The accuracy log or the label map cannot be scored."""


@dataclass
class AccuracyResult:
    good: int
    total: int
    sha256: str
    accuracy_file: str = ""

    @property
    def top1(self) -> float:
        return 100.0 * self.good / self.total

    def line(self) -> str:
        return f"accuracy={self.top1:.3f}%, good={self.good}, total={self.total}"

    def text(self) -> str:
        return f"{self.line()}\nhash={self.sha256}\n"


def read_val_map(path: str | Path) -> list[int]:
    """Labels in QSL order from `<file name> <label>` lines."""
    p = Path(path)
    if not p.is_file():
        raise AccuracyError(f"label map not found: {p}")
    try:
        return [label for _, label in _read_val_map(p)]
    except ValMapError as exc:
        raise AccuracyError(str(exc)) from None


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise AccuracyError(f"unknown dtype '{dtype}': use one of {', '.join(DTYPES)}")
    return dtype


def compute(log_path: str | Path, labels: list[int], dtype: str = "float32") -> AccuracyResult:
    """Score an accuracy log against labels; raises AccuracyError with a clear reason."""
    decoder = DTYPES[check_dtype(dtype)]
    p = Path(log_path)
    if not p.is_file():
        raise AccuracyError(f"accuracy log not found: {p} (run the benchmark in accuracy mode first)")
    raw = p.read_bytes()
    try:
        entries = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AccuracyError(f"accuracy log {p} is not valid JSON (truncated or corrupt?): {exc}") from exc
    if not isinstance(entries, list):
        raise AccuracyError(f"accuracy log {p} must hold a JSON list of entries")
    if not entries:
        raise AccuracyError(f"accuracy log {p} has no entries (was this a performance run?)")
    seen: set[int] = set()
    good = 0
    for n, entry in enumerate(entries):
        try:
            idx = int(entry["qsl_idx"])
            data = bytes.fromhex(entry["data"])
        except (KeyError, TypeError, ValueError) as exc:
            raise AccuracyError(f"accuracy log {p}: entry {n} is malformed ({exc!r})") from exc
        # LoadGen may log a sample more than once; the first answer counts, as in MLPerf's script.
        if idx in seen:
            continue
        if not 0 <= idx < len(labels):
            raise AccuracyError(f"accuracy log {p}: qsl_idx {idx} is outside the label map ({len(labels)} labels): "
                                "wrong val_map for this run?")
        if len(data) < decoder.size:
            raise AccuracyError(f"accuracy log {p}: entry {n} holds {len(data)} byte(s), "
                                f"less than one {dtype} (wrong --dtype?)")
        seen.add(idx)
        predicted = int(decoder.unpack_from(data)[0])
        if predicted == labels[idx]:
            good += 1
    return AccuracyResult(good=good, total=len(seen), sha256=hashlib.sha256(raw).hexdigest())


def write_accuracy_txt(results_dir: str | Path, val_map: str | Path, dtype: str = "float32",
                       out_file: str | Path | None = None) -> AccuracyResult:
    """Score `results_dir/mlperf_log_accuracy.json` and write accuracy.txt (default: next to the log)."""
    res = compute(Path(results_dir) / LOG_NAME, read_val_map(val_map), dtype)
    target = Path(out_file) if out_file else Path(results_dir) / "accuracy.txt"
    with atomic_write(target) as f:
        f.write(res.text())
    res.accuracy_file = str(target)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="ImageNet top-1 from an MLPerf accuracy log")
    ap.add_argument("--results-dir", required=True, help=f"folder holding {LOG_NAME}")
    ap.add_argument("--val-map", required=True, help="val_map.txt: '<file> <label>' per line, QSL order")
    ap.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    ap.add_argument("--output", help="accuracy.txt path (default: in --results-dir)")
    args = ap.parse_args(argv)
    try:
        res = write_accuracy_txt(args.results_dir, args.val_map, args.dtype, args.output)
    except AccuracyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(res.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
