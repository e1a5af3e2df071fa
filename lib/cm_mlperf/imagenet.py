"""ImageNet `val_map.txt`: `<file name> <label>` per line, in QSL order (line k is QSL sample k).

The datasets write it, preprocessing rewrites it with `.npy` names, the harness takes its first column as the
QSL and the accuracy script its second as the labels: one reader and one writer for all of them.
"""
from __future__ import annotations

import os
from collections.abc import Iterable

from cm_mlperf.files import atomic_write

VAL_MAP_NAME = "val_map.txt"
NUM_CLASSES = 1000


class ValMapError(ValueError):
    """A val_map that cannot be used; the message names the file (and line) and what was expected."""


def parse_val_map(text: str, where: str = VAL_MAP_NAME, num_classes: int | None = None) -> list[tuple[str, int]]:
    """Entries of val_map text; blank lines skipped. With num_classes, labels must be 0..num_classes-1."""
    entries: list[tuple[str, int]] = []
    expected = f"<file name> <label 0..{num_classes - 1}>" if num_classes else "<file name> <label>"
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        label = parts[1] if len(parts) == 2 else ""
        ok = label.lstrip("-").isdigit() and (num_classes is None or 0 <= int(label) < num_classes)
        if not ok:
            raise ValMapError(f"{where}:{number}: expected '{expected}', got '{line.strip()}'")
        entries.append((parts[0], int(label)))
    if not entries:
        raise ValMapError(f"{where} lists no images")
    return entries


def read_val_map(path: str | os.PathLike[str], num_classes: int | None = None) -> list[tuple[str, int]]:
    """The (file name, label) entries of a val_map file, in QSL order."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ValMapError(f"cannot read the label map {os.fspath(path)}: {e.strerror}") from None
    return parse_val_map(text, os.fspath(path), num_classes)


def write_val_map(path: str | os.PathLike[str], entries: Iterable[tuple[str, int]]) -> None:
    """Write entries as a val_map, atomically (an interrupted write leaves no partial map)."""
    with atomic_write(path) as f:
        f.writelines(f"{name} {int(label)}\n" for name, label in entries)
