"""process-mlperf-accuracy: accuracy.txt from hand-written LoadGen accuracy logs."""
from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from cm_mlperf import run_step

SCRIPT = "process-mlperf-accuracy"


@pytest.fixture
def acc(script_module):
    return script_module(SCRIPT, "imagenet_accuracy")


def _hex(value, fmt: str = "<f") -> str:
    return struct.pack(fmt, value).hex().upper()


def _write_log(folder: Path, entries: list[tuple[int, str]]) -> Path:
    """A log in LoadGen's own layout: one '{ "seq_id" : n, "qsl_idx" : i, "data" : "HEX" }' per line."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [f'{{ "seq_id" : {n}, "qsl_idx" : {idx}, "data" : "{data}" }}' for n, (idx, data) in enumerate(entries)]
    path = folder / "mlperf_log_accuracy.json"
    path.write_text("[\n" + ",\n".join(rows) + "\n]\n")
    return path


@pytest.fixture
def val_map(tmp_path) -> Path:
    p = tmp_path / "val_map.txt"
    p.write_text("".join(f"ILSVRC2012_val_{i + 1:08d}.JPEG {label}\n" for i, label in enumerate([65, 970, 230, 809])))
    return p


def test_exact_accuracy_txt(acc, tmp_path, val_map):
    # qsl 0 right, 1 wrong, 2 right, 2 again (a duplicate: ignored even though it is wrong), 3 never logged.
    log = _write_log(tmp_path / "run", [(0, _hex(65.0)), (1, _hex(971.0)), (2, _hex(230.0)), (2, _hex(1.0))])
    res = acc.write_accuracy_txt(tmp_path / "run", val_map)
    digest = hashlib.sha256(log.read_bytes()).hexdigest()
    assert (tmp_path / "run" / "accuracy.txt").read_text() == (
        f"accuracy=66.667%, good=2, total=3\nhash={digest}\n")
    assert (res.good, res.total, res.sha256) == (2, 3, digest)
    assert res.top1 == pytest.approx(200 / 3)
    assert res.accuracy_file == str(tmp_path / "run" / "accuracy.txt")


@pytest.mark.parametrize("dtype,fmt", [("int64", "<q"), ("int32", "<i")])
def test_integer_dtypes(acc, tmp_path, val_map, dtype, fmt):
    _write_log(tmp_path, [(i, _hex(label, fmt)) for i, label in enumerate([65, 970, 230, 809])])
    assert acc.compute(tmp_path / "mlperf_log_accuracy.json", acc.read_val_map(val_map), dtype).line() == (
        "accuracy=100.000%, good=4, total=4")


@pytest.mark.parametrize("content,message", [
    ('[\n{ "seq_id" : 0, "qsl_idx" : 0, "data" : "0000', "not valid JSON"),
    ("[]\n", "no entries"),
    ('{"qsl_idx": 0}', "JSON list"),
    ('[{ "seq_id" : 0, "qsl_idx" : 0, "data" : "XYZ" }]', "malformed"),
    ('[{ "seq_id" : 0, "qsl_idx" : 7, "data" : "00008042" }]', "outside the label map"),
    ('[{ "seq_id" : 0, "qsl_idx" : 0, "data" : "0080" }]', "less than one float32"),
])
def test_bad_logs_give_clear_errors(acc, tmp_path, val_map, content, message):
    (tmp_path / "mlperf_log_accuracy.json").write_text(content)
    with pytest.raises(acc.AccuracyError, match=message):
        acc.write_accuracy_txt(tmp_path, val_map)
    assert not (tmp_path / "accuracy.txt").exists()


def test_missing_inputs(acc, tmp_path, val_map):
    with pytest.raises(acc.AccuracyError, match="accuracy log not found"):
        acc.write_accuracy_txt(tmp_path, val_map)
    _write_log(tmp_path, [(0, _hex(65.0))])
    with pytest.raises(acc.AccuracyError, match="label map not found"):
        acc.write_accuracy_txt(tmp_path, tmp_path / "nope.txt")
    with pytest.raises(acc.AccuracyError, match="unknown dtype"):
        acc.write_accuracy_txt(tmp_path, val_map, dtype="float16")
    assert acc.main(["--results-dir", str(tmp_path / "empty"), "--val-map", str(val_map)]) == 1


def _step(script_module, env: dict) -> tuple[dict, dict]:
    """What the engine does: customize.py's checks, then run.py's work, its env and state merged."""
    r = script_module(SCRIPT, "customize").preprocess({"env": env, "state": {}})
    if r["return"]:
        return r, {}
    try:
        new_env, new_state = script_module(SCRIPT, "run").main(dict(env))
    except run_step.StepError as e:
        return {"return": 1, "error": str(e)}, {}
    env.update(new_env)
    return {"return": 0}, new_state


def test_step_sets_env_and_state(script_module, tmp_path, val_map):
    _write_log(tmp_path / "run", [(0, _hex(65.0)), (1, _hex(970.0)), (2, _hex(1.0)), (3, _hex(809.0))])
    pre = tmp_path / "preprocessed"
    pre.mkdir()
    (pre / "val_map.txt").write_text(val_map.read_text())
    env = {"CM_MLPERF_ACCURACY_RESULTS_DIR": str(tmp_path / "run"), "CM_DATASET_PREPROCESSED_PATH": str(pre),
           "CM_MLPERF_ACCURACY_DTYPE": "float32"}
    r, state = _step(script_module, env)
    assert r == {"return": 0}
    assert env["CM_MLPERF_ACCURACY_TOP1"] == "75.000"
    assert env["CM_MLPERF_ACCURACY_FILE"] == str(tmp_path / "run" / "accuracy.txt")
    assert state["mlperf_accuracy"]["good"] == 3 and state["mlperf_accuracy"]["val_map"] == str(pre / "val_map.txt")
    # Fallback to the raw dataset's map; and clear errors without any map, or with an unknown dtype.
    env = {"CM_MLPERF_OUTPUT_DIR": str(tmp_path / "run"), "CM_DATASET_IMAGENET_VAL_MAP": str(val_map)}
    assert _step(script_module, env)[0]["return"] == 0
    r, _ = _step(script_module, {"CM_MLPERF_ACCURACY_RESULTS_DIR": str(tmp_path / "run")})
    assert r["return"] == 1 and "label map" in r["error"]
    r, _ = _step(script_module, {**env, "CM_MLPERF_ACCURACY_DTYPE": "float16"})
    assert r["return"] == 1 and r["error"].startswith("--dtype: unknown dtype 'float16'")
    # the log is missing: run.py's one-line error, nothing written
    r, _ = _step(script_module, {"CM_MLPERF_OUTPUT_DIR": str(tmp_path / "empty"),
                                 "CM_DATASET_IMAGENET_VAL_MAP": str(val_map)})
    assert r["return"] == 1 and "accuracy log not found" in r["error"]
    assert not (tmp_path / "empty").exists()
