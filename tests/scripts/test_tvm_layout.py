"""cm_mlperf.tvm.layout: the blocked NCHW[b]c rewrite, checked against onnxruntime on a small MobileNet-like graph
(3-channel stem, depthwise 3x3 and 5x5, Clip as ReLU6, 24 channels = not a multiple of the block, batch norm, a
residual Sum, global average pool, classifier), the numpy re-layouts against plain loops, and what a database's
layout selects."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from cm_mlperf.tvm import databases
from cm_mlperf.tvm import layout as tvm_layout

from tests.conftest import blocked_compile_env, save_onnx


def make_mbconv_onnx(path: Path, seed: int = 3) -> Path:
    from onnx import helper

    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return (0.3 * rng.standard_normal(shape)).astype(np.float32)

    arrays = {
        "stem_w": w(16, 3, 3, 3), "stem_b": w(16),
        "dw_w": w(16, 1, 3, 3), "dw_b": w(16),
        "pw_w": w(24, 16, 1, 1), "pw_b": w(24),
        "ex_w": w(48, 24, 1, 1), "ex_b": w(48),
        "dw5_w": w(48, 1, 5, 5), "dw5_b": w(48),
        "pr_w": w(24, 48, 1, 1), "pr_b": w(24),
        "fc": w(24, 10), "fc_b": w(10),
        "bn_s": w(24), "bn_b": w(24), "bn_m": w(24), "bn_v": (0.5 + rng.uniform(size=24)).astype(np.float32),
        "lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32),
    }
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "stem_w", "stem_b"], ["s"], strides=[2, 2], pads=[0, 0, 1, 1]),
        n("Clip", ["s", "lo", "hi"], ["s6"]),
        n("Conv", ["s6", "dw_w", "dw_b"], ["d"], group=16, pads=[1, 1, 1, 1]),
        n("Clip", ["d", "lo", "hi"], ["d6"]),
        n("Conv", ["d6", "pw_w", "pw_b"], ["p0"]),  # 24 channels: padded to 32 inside
        n("BatchNormalization", ["p0", "bn_s", "bn_b", "bn_m", "bn_v"], ["p"]),  # a tuple in Relax
        n("Conv", ["p", "ex_w", "ex_b"], ["e"]),
        n("Relu", ["e"], ["er"]),
        n("Conv", ["er", "dw5_w", "dw5_b"], ["d5"], group=48, pads=[2, 2, 2, 2]),
        n("Clip", ["d5", "lo", "hi"], ["d56"]),
        n("Conv", ["d56", "pr_w", "pr_b"], ["pr"]),
        n("Sum", ["pr", "p"], ["res"]),  # residual add of two padded blocked tensors (stack + sum in Relax)
        n("GlobalAveragePool", ["res"], ["g"]),
        n("Flatten", ["g"], ["f"], axis=1),
        n("MatMul", ["f", "fc"], ["m"]),
        n("Add", ["m", "fc_b"], ["logits"]),
    ]
    return save_onnx(path, "mbconv", nodes, [1, 3, 20, 20], [1, 10], arrays)


def test_conv_weight_relayout_matches_loops():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((24, 3, 3, 3)).astype(np.float32)
    out = tvm_layout.block_conv_weight(w, in_block=3, out_block=16)
    assert out.shape == (2, 1, 3, 3, 3, 16)
    for o in range(32):
        for i in range(3):
            expected = w[o, i] if o < 24 else np.zeros((3, 3), np.float32)
            np.testing.assert_array_equal(out[o // 16, i // 3, :, :, i % 3, o % 16], expected)


def test_depthwise_weight_and_bias_relayout():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((24, 1, 5, 5)).astype(np.float32)
    out = tvm_layout.block_depthwise_weight(w, 16)
    assert out.shape == (2, 5, 5, 16)
    np.testing.assert_array_equal(out[1, :, :, 7], w[23, 0])
    np.testing.assert_array_equal(out[1, :, :, 8], 0)
    bias = rng.standard_normal((1, 24, 1, 1)).astype(np.float32)
    blocked = tvm_layout.block_activation_const(bias, 24, 16)
    assert blocked.shape == (1, 2, 1, 1, 16)
    assert blocked[0, 1, 0, 0, 7] == bias[0, 23, 0, 0] and blocked[0, 1, 0, 0, 8] == 0
    assert tvm_layout.block_activation_const(np.float32(6.0), 24, 16).shape == ()
    assert tvm_layout.block_activation_const(np.ones((1, 24, 2, 1), np.float32), 24, 16) is None


@pytest.mark.parametrize("block", [16, 8])
def test_blocked_model_matches_onnxruntime(tmp_path, block):
    pytest.importorskip("tvm")
    ort = pytest.importorskip("onnxruntime")
    import tvm
    from cm_mlperf.tvm import frontend, target
    from tvm import relax

    path = make_mbconv_onnx(tmp_path / "mbconv.onnx")
    mod = frontend.import_onnx(frontend.load_onnx(path), "x", [1, 3, 20, 20])
    tgt = target.make_target("x86-64-v3" if block == 8 else "x86-64", 1)
    with tgt, tvm.transform.PassContext(opt_level=3):
        mod = relax.transform.FoldConstant()(relax.transform.DecomposeOpsForInference()(mod))
        blocked, converted = tvm_layout.to_blocked(mod, block)
        assert converted == 6  # every convolution, the stem and both depthwise ones included
        text = blocked["main"].script()
        assert "R.nn.conv2d(" not in text
        assert text.count("R.permute_dims") == 2  # one into blocks (the image), one out (after the pooling)
        # the classifier reads its weights in blocks of outputs (one stream per block), its result plain again
        assert any(gv.name_hint.startswith("matmul_blocked") for gv, _ in blocked.functions_items())
        assert "R.matmul(" not in text
        # the global average pool runs on the blocks: only the pooled (1, C/b, 1, 1, b) vector goes back to NCHW
        assert re.search(rf"R\.Tensor\(\(1, \d+, 1, 1, {block}\), dtype=\"float32\"\) = R\.mean\(", text), text
        ex = tvm.compile(blocked, target=tgt, relax_pipeline=relax.get_default_pipeline(tgt))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    x = np.random.default_rng(5).standard_normal((1, 3, 20, 20)).astype(np.float32)
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_apply_keeps_nchw_and_rejects_unknown_layouts():
    assert tvm_layout.apply("module", None, "NCHW") == ("module", 0)
    with pytest.raises(ValueError, match="NCHWc"):
        tvm_layout.apply("module", None, "NHWC")
    assert tvm_layout.block_for("NCHWc", 512) == 16 and tvm_layout.block_for("NCHWc", 256) == 8


def _fake_db(folder: Path, **manifest) -> Path:
    folder.mkdir(parents=True)
    for name in databases.DB_FILES:
        (folder / name).write_text("")
    (folder / databases.MANIFEST).write_text(json.dumps({"name": folder.name, "model_sha256": "m", "batch_size": 1,
                                                         "family": "x86_64_v4", **manifest}))
    return folder


def test_database_layout_decides_the_compile_layout(tmp_path):
    root = tmp_path / "shipped"
    _fake_db(root / "old-nchw", trials=5000)  # no conv_layout: made before layouts were recorded
    _fake_db(root / "blocked", trials=3000, conv_layout="NCHWc")
    common = {"user_db": "", "shipped_root": root, "model_name": "m", "model_sha256": "m", "batch_size": 1,
              "family": "x86_64_v4"}
    auto = databases.choose(**common)
    assert auto["CM_TVM_TUNING_DB_NAME"] == "blocked" and auto["CM_TVM_CONV_LAYOUT_USED"] == "NCHWc"
    plain = databases.choose(**common, conv_layout="nchw")
    assert plain["CM_TVM_TUNING_DB_NAME"] == "old-nchw" and plain["CM_TVM_CONV_LAYOUT_USED"] == "NCHW"
    mine = _fake_db(tmp_path / "mine", conv_layout="NCHWc")
    assert databases.choose(**{**common, "user_db": str(mine)})["CM_TVM_CONV_LAYOUT_USED"] == "NCHWc"
    with pytest.raises(databases.TuningDatabaseError, match="--conv_layout=nchw but --tuning_db"):
        databases.choose(**{**common, "user_db": str(mine)}, conv_layout="nchw")
    with pytest.raises(databases.TuningDatabaseError, match="--conv_layout=nhwc: choose one of auto, nchwc, nchw"):
        databases.choose(**common, conv_layout="nhwc")
    none = databases.choose(**{**common, "batch_size": 8})
    assert none["CM_TVM_CONV_LAYOUT_USED"] == "NCHWc" and "--batch_size=8" in none["CM_TVM_TUNING_DB_NOTE"]


def test_compile_step_builds_and_verifies_the_blocked_layout(tmp_path, monkeypatch):
    """compile-tvm-model's run step in the layout get-tvm-tuning-db chose: verified against onnxruntime, and the
    layout reported to the app (summary, SUT description)."""
    pytest.importorskip("tvm")
    pytest.importorskip("onnxruntime")
    from cm_mlperf.tvm.steps import compile_from_env

    path = make_mbconv_onnx(tmp_path / "mbconv.onnx")
    monkeypatch.chdir(tmp_path)
    out, _ = compile_from_env(blocked_compile_env(path, "mbconv", 20))
    assert out["CM_TVM_CONV_LAYOUT_USED"] == "NCHWc" and out["CM_TVM_TUNED"] == "no"
    assert float(out["CM_TVM_MODEL_VERIFIED_MAX_REL_ERR"]) < 1e-4
    assert json.loads((tmp_path / "compile-info.json").read_text())["conv_layout"] == "NCHWc"


def test_tuning_in_the_blocked_layout_is_applied_by_the_blocked_build(tmp_path):
    """tune_model and compile_model rewrite the model the same way: every NCHWc task tuned gets applied."""
    pytest.importorskip("tvm")
    pytest.importorskip("onnxruntime")
    from cm_mlperf.tvm import compile as tvm_compile
    from cm_mlperf.tvm import tune

    path = make_mbconv_onnx(tmp_path / "mbconv.onnx")
    info = tune.tune_model(path, batch_size=1, mcpu="x86-64-v3", num_cores=1, trials=8, out_dir=str(tmp_path / "db"),
                           population=16, progress_bar=False, conv_layout="NCHWc", log=lambda m: None)
    assert info["conv_layout"] == "NCHWc" and info["functions_with_tuned_schedule"] == info["functions"]
    assert any("NCHWc" in t["task"] for t in info["per_task"])
    assert databases.database_layout(tmp_path / "db") == "NCHWc"  # from tuning-info.json
    built = tvm_compile.compile_model(path, batch_size=1, mcpu="x86-64-v3", num_cores=1, out_dir=str(tmp_path / "lib"),
                                      database_dir=info["database_dir"], conv_layout="NCHWc", log=lambda m: None)
    assert built["verification"]["passed"] is True and built["conv_layout"] == "NCHWc"


def test_refine_keeps_one_verified_record_per_kernel(tmp_path):
    """cm_mlperf.tvm.refine without a MetaSchedule database: our schedule's settings timed per kernel, one record
    each, exported with its layout and no search behind it, and the model built from it matches onnxruntime."""
    pytest.importorskip("tvm")
    pytest.importorskip("onnxruntime")
    from cm_mlperf.tvm import compile as tvm_compile
    from cm_mlperf.tvm import default_schedule, refine

    path = make_mbconv_onnx(tmp_path / "mbconv.onnx")
    knobs = (default_schedule.Knobs(rows=4, chunks=4), default_schedule.Knobs())
    info = refine.refine_database(path, batch_size=1, mcpu="x86-64-v3", num_cores=1, conv_layout="NCHWc",
                                  out_dir=tmp_path / "refined", knobs=knobs, repeat=3, log=lambda m: None)
    assert info["refined"] >= 6 and info["from_metaschedule"] == 0  # at least every convolution
    assert all(r["chosen"] in ("default " + k.label() for k in knobs) for r in info["per_task"])
    lines = [ln for ln in (tmp_path / "refined" / databases.RECORDS).read_text().splitlines() if ln.strip()]
    assert len(lines) == info["refined"]
    assert databases.history_totals(tmp_path / "refined") == {"trials": 0, "tuning_seconds": 0.0}
    built = tvm_compile.compile_model(path, batch_size=1, mcpu="x86-64-v3", num_cores=1, out_dir=str(tmp_path / "lib"),
                                      database_dir=str(tmp_path / "refined"), conv_layout="NCHWc",
                                      log=lambda m: None)
    assert built["verification"]["passed"] is True


def test_pooling_stays_blocked_and_matches_onnxruntime(tmp_path):
    """ResNet's stem max pool (padded, stride 2) and an average pool run on the channel blocks: no transform back to
    NCHW between the convolutions; 24 and 20 channels (padded blocks) give onnxruntime's numbers."""
    pytest.importorskip("tvm")
    ort = pytest.importorskip("onnxruntime")
    import tvm
    from cm_mlperf.tvm import frontend, target
    from onnx import helper
    from tvm import relax

    rng = np.random.default_rng(1)
    arrays = {"w1": rng.standard_normal((24, 3, 3, 3)).astype(np.float32),
              "w2": rng.standard_normal((20, 24, 1, 1)).astype(np.float32)}
    n = helper.make_node
    nodes = [n("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]), n("Relu", ["c1"], ["r1"]),
             n("MaxPool", ["r1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             n("Conv", ["p1", "w2"], ["c2"]), n("AveragePool", ["c2"], ["p2"], kernel_shape=[4, 4]),
             n("Flatten", ["p2"], ["logits"], axis=1)]
    path = save_onnx(tmp_path / "pool.onnx", "pool", nodes, [1, 3, 32, 32], [1, 500], arrays)
    mod = frontend.import_onnx(frontend.load_onnx(path), "x", [1, 3, 32, 32])
    tgt = target.make_target("x86-64", 1)
    with tgt, tvm.transform.PassContext(opt_level=3):
        mod = relax.transform.FoldConstant()(relax.transform.DecomposeOpsForInference()(mod))
        blocked, converted = tvm_layout.to_blocked(mod, 16)
        text = blocked["main"].script()
        assert converted == 2 and text.count("R.permute_dims") == 2  # into blocks once, out once (the output)
        assert 'R.nn.max_pool2d(' in text and 'R.nn.avg_pool2d(' in text and text.count('layout="NCHW16c"') == 4
        ex = tvm.compile(blocked, target=tgt, relax_pipeline=relax.get_default_pipeline(tgt))
    x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
