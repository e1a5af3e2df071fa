"""ImageNet preprocessing for image classification: decode, resize, center-crop, normalise, one .npy per image.

Geometry follows the MLPerf reference harness for ResNet-50: the shorter side is scaled to
out / 0.875 (256 for 224) with the other side truncated to an integer, the image is resized with
pixel-area averaging (OpenCV's INTER_AREA), then center-cropped to out. The resize here is our own
numpy implementation of the pixel-area relation (exact area overlaps, one rounding to uint8 at the
end), on images decoded by Pillow with their EXIF orientation applied, as OpenCV's imread does.
Recipes differ only in the normalisation, a table below.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from cm_mlperf import run_step
from cm_mlperf.imagenet import VAL_MAP_NAME, ValMapError, write_val_map
from cm_mlperf.imagenet import read_val_map as _read_val_map
from imagenet_preprocess_recipes import (  # noqa: F401 - re-exported: part of this API
    RECIPES,
    PreprocessError,
    Recipe,
    check_layout,
    get_recipe,
    parse_size,
    parse_workers,
)
from PIL import Image, ImageOps
from tqdm import tqdm

RECORD_NAME = "preprocessed.json"
CROP_PERCENT = 87.5
# Bump when the pixel math changes, so that old cache entries can be told apart.
IMPLEMENTATION_VERSION = 1


def area_weights(n: int, out_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Taps of the pixel-area relation along one axis: (indices, weights), each out_len x taps.

    Output pixel k covers the input interval [k*s, (k+1)*s), s = n / out_len; input pixel j weighs
    |[j, j+1) overlap that interval| / s. Shrinking this is the mean over the interval, enlarging
    a blend of at most two pixels: OpenCV's INTER_AREA in both directions.
    """
    scale = n / out_len
    taps = int(np.ceil(scale)) + 1
    start = np.arange(out_len, dtype=np.float64) * n / out_len
    stop = np.arange(1, out_len + 1, dtype=np.float64) * n / out_len
    first = np.floor(start).astype(np.int64)
    idx = first[:, None] + np.arange(taps)[None, :]
    overlap = np.minimum(idx + 1, stop[:, None]) - np.maximum(idx, start[:, None])
    weights = np.clip(overlap, 0.0, None) / scale
    return np.minimum(idx, n - 1), weights


def _area_resize_axis(a: np.ndarray, out_len: int, axis: int) -> np.ndarray:
    """Resize one axis by the pixel-area relation; float64 out."""
    n = a.shape[axis]
    if n == out_len:
        return a.astype(np.float64)
    idx, weights = area_weights(n, out_len)
    shape = [1] * a.ndim
    shape[axis] = out_len
    out = np.zeros(a.shape[:axis] + (out_len,) + a.shape[axis + 1:], dtype=np.float64)
    for t in range(idx.shape[1]):
        w = weights[:, t]
        if not w.any():
            continue
        out += np.take(a, idx[:, t], axis=axis) * w.reshape(shape)
    return out


def resize_area(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """uint8 HxWxC -> uint8 out_h x out_w x C, pixel-area relation (OpenCV INTER_AREA), rounded once (half up)."""
    out = _area_resize_axis(_area_resize_axis(img, out_w, axis=1), out_h, axis=0)
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def scaled_size(height: int, width: int, out_h: int, out_w: int, crop_percent: float = CROP_PERCENT
                ) -> tuple[int, int]:
    """(h, w) before the center crop: the shorter side to out / crop, the other keeps the aspect (truncated)."""
    new_h = int(100.0 * out_h / crop_percent)
    new_w = int(100.0 * out_w / crop_percent)
    if height > width:
        return int(new_h * height / width), new_w
    return new_h, int(new_w * width / height)


def center_crop(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    height, width = img.shape[:2]
    top, left = int((height - out_h) / 2), int((width - out_w) / 2)
    return img[top:top + out_h, left:left + out_w]


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode to uint8 RGB HxWx3 (EXIF orientation applied; grayscale replicated)."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def crop_geometry(rgb: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """uint8 RGB -> uint8 out_h x out_w x 3: aspect-preserving area resize, then center crop."""
    h, w = scaled_size(rgb.shape[0], rgb.shape[1], out_h, out_w)
    return center_crop(resize_area(rgb, h, w), out_h, out_w)


def normalise(pixels: np.ndarray, recipe: Recipe, layout: str) -> np.ndarray:
    """uint8 HxWx3 -> float32 (x - mean) / std in the model's layout (CHW for NCHW), no batch dim."""
    out = pixels.astype(np.float32)
    out -= np.asarray(recipe.mean, dtype=np.float32)
    if any(s != 1.0 for s in recipe.std):
        out /= np.asarray(recipe.std, dtype=np.float32)
    if layout == "NCHW":
        out = out.transpose(2, 0, 1)
    return np.ascontiguousarray(out, dtype=np.float32)


def preprocess_image(path: str | os.PathLike, recipe: Recipe, height: int = 224, width: int = 224,
                     layout: str = "NCHW") -> np.ndarray:
    """One image file -> the float32 tensor a model of this recipe takes (no batch dim)."""
    return normalise(crop_geometry(load_rgb(path), height, width), recipe, layout)


def read_val_map(path: Path) -> list[tuple[str, int]]:
    try:
        return _read_val_map(path)
    except ValMapError as e:
        raise PreprocessError(str(e)) from None


def _work(task: tuple[int, str, str, str, int, int, str]) -> tuple[int, str | None]:
    """Pool worker: preprocess one image and save it; (index, error or None)."""
    index, src, dst, recipe_name, height, width, layout = task
    try:
        arr = preprocess_image(src, RECIPES[recipe_name], height, width, layout)
        np.save(dst, arr)
    except Exception as e:  # any failure: reported to the parent with the file name
        return index, f"{type(e).__name__}: {e}"
    return index, None


def _worker_count(n: int, workers: int | None) -> int:
    if workers is None:
        try:
            workers = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            workers = os.cpu_count() or 1
    return max(1, min(workers, n))


def _pool_context() -> multiprocessing.context.BaseContext:
    # fork: the children inherit this module as imported, wherever the engine put its folder on sys.path
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


def _init_worker() -> None:
    """A worker dies with its parent (even a SIGKILLed one) and leaves Ctrl-C and SIGTERM to it: the parent
    terminates the pool. Forked workers inherit the run step's SIGTERM handler, which would unwind Python."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    run_step.die_with_parent()


@contextmanager
def _worker_pool(n_workers: int) -> Iterator[ProcessPoolExecutor]:
    """A process pool that, when the block ends by an exception (SIGTERM, Ctrl-C, a failed image), is terminated at
    once: a plain shutdown would wait for every worker's current chunk of images."""
    executor = ProcessPoolExecutor(max_workers=n_workers, mp_context=_pool_context(), initializer=_init_worker)
    try:
        yield executor
    except BaseException:
        terminate = getattr(executor, "terminate_workers", None)  # Python >= 3.14
        if terminate is not None:
            terminate()
        else:  # before shutdown(), which forgets the processes
            processes = list((getattr(executor, "_processes", None) or {}).values())
            for process in processes:
                process.terminate()
            for process in processes:
                process.join(timeout=5)
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    executor.shutdown(wait=True)


def _run_tasks(tasks: list[tuple], n_workers: int, bar: Any) -> tuple[int, str] | None:
    """Run the tasks (in n_workers processes when > 1); the first failure as (task index, error), else None."""
    if n_workers == 1:
        for task in tasks:
            index, error = _work(task)
            if error is not None:
                return index, error
            bar.update(1)
        return None
    chunk = max(1, min(16, len(tasks) // (n_workers * 4)))
    try:
        with _worker_pool(n_workers) as executor:
            for index, error in executor.map(_work, tasks, chunksize=chunk):
                if error is not None:
                    raise _TaskFailed(index, error)
                bar.update(1)
    except _TaskFailed as failed:
        return failed.index, failed.error
    except BrokenProcessPool:
        raise PreprocessError("a preprocessing process died (out of memory?): rerun, or free memory") from None
    return None


class _TaskFailed(Exception):
    def __init__(self, index: int, error: str) -> None:
        super().__init__(error)
        self.index, self.error = index, error


def preprocess_dataset(image_dir: str | os.PathLike, val_map: str | os.PathLike, out_dir: str | os.PathLike,
                       recipe_name: str | None, layout: str | None = "NCHW", height: int = 224, width: int = 224,
                       workers: int | None = None, progress: bool = True) -> dict:
    """Preprocess every image listed in val_map (QSL order) into out_dir: <stem>.npy + val_map.txt.

    Returns {'path', 'val_map', 'size'}.
    """
    recipe = get_recipe(recipe_name)
    layout = check_layout(layout)
    src_dir = Path(image_dir)
    if not src_dir.is_dir():
        raise PreprocessError(f"dataset folder {src_dir} (CM_DATASET_IMAGENET_PATH) does not exist")
    entries = read_val_map(Path(val_map))
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)

    names = [Path(name).stem + ".npy" for name, _ in entries]
    duplicates = [name for name, n in Counter(names).items() if n > 1]
    if duplicates:
        dup = duplicates[0]
        raise PreprocessError(f"two images in {val_map} map to the same output {dup}: give them distinct names")
    tasks = [(k, str(src_dir / name), str(out / npy), recipe_name, height, width, layout)
             for k, ((name, _), npy) in enumerate(zip(entries, names, strict=True))]

    n_workers = _worker_count(len(tasks), workers)
    bar = tqdm(total=len(tasks), desc=f"Preprocessing ({recipe_name}, {layout} {height}x{width}, "
               f"{n_workers} proc)", unit="img", disable=not progress)
    try:
        failure = _run_tasks(tasks, n_workers, bar)
    finally:
        bar.close()
    if failure is not None:
        index, error = failure
        raise PreprocessError(f"cannot preprocess image {tasks[index][1]}: {error}")

    out_map = out / VAL_MAP_NAME
    write_val_map(out_map, ((npy, label) for npy, (_, label) in zip(names, entries, strict=True)))
    record = {"recipe": recipe_name, **asdict(recipe), "layout": layout, "height": height, "width": width,
              "dtype": "float32", "size": len(entries), "resize": "pixel-area (OpenCV INTER_AREA equivalent)",
              "crop_percent": CROP_PERCENT, "source_val_map": str(val_map), "source_dir": str(src_dir),
              "implementation_version": IMPLEMENTATION_VERSION}
    (out / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return {"path": str(out), "val_map": str(out_map), "size": len(entries)}
