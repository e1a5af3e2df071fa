"""cm_mlperf.tvm.winograd: the F(2x2, 3x3) transforms against a direct correlation, the transformed weights'
layout, the scheduled convolution against numpy (odd sizes, channels padded to whole blocks, AVX-512 and AVX2
blocks), which convolutions the layout rewrite sends to it, and a ResNet-like block built by the default pipeline
against onnxruntime."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cm_mlperf.tvm import winograd

from tests.conftest import blocked_compile_env, save_onnx


def direct_conv3x3(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """NCHW x OIHW, stride 1, padding 1, in float64."""
    n, c, h, wd = x.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, w.shape[0], h, wd))
    for dy in range(3):
        for dx in range(3):
            out += np.einsum("nchw,oc->nohw", xp[:, :, dy:dy + h, dx:dx + wd], w[:, :, dy, dx])
    return out


def to_blocks(x: np.ndarray, b: int) -> np.ndarray:
    n, c, h, w = x.shape
    return np.ascontiguousarray(x.reshape(n, c // b, b, h, w).transpose(0, 1, 3, 4, 2))


@pytest.mark.parametrize("m", [2, 4])
def test_transforms_compute_a_3_tap_correlation(m):
    pytest.importorskip("tvm")
    a, b, g = winograd.transform_matrices(m)
    alpha = m + 2
    assert a.shape == (alpha, m) and b.shape == (alpha, alpha) and g.shape == (alpha, 3)
    rng = np.random.default_rng(m)
    d, k = rng.standard_normal(alpha), rng.standard_normal(3)
    want = np.array([d[i:i + 3] @ k for i in range(m)])
    np.testing.assert_allclose(a.T @ ((g @ k) * (b.T @ d)), want, rtol=1e-10, atol=1e-10)


def test_weight_transform_layout_and_padding():
    pytest.importorskip("tvm")
    rng = np.random.default_rng(0)
    w = rng.standard_normal((40, 32, 3, 3)).astype(np.float32)
    u = winograd.transform_weight(w, 2, 16, 16)
    assert u.shape == (4, 4, 3, 2, 16, 16) and u.dtype == np.float32  # 40 output channels -> 3 blocks of 16
    _, _, g = winograd.transform_matrices(2)
    o, i = 17, 21
    np.testing.assert_allclose(u[:, :, o // 16, i // 16, i % 16, o % 16], g @ w[o, i] @ g.T, rtol=1e-5, atol=1e-6)
    assert not u[:, :, 2, :, :, 8:].any()  # the padded output channels 40..47 get zero weights
    with pytest.raises(ValueError, match="3x3"):
        winograd.transform_weight(np.zeros((8, 8, 5, 5), np.float32), 2, 8, 8)


@pytest.mark.parametrize(("shape", "strides", "padding", "dilation", "block", "ok"), [
    ((64, 64, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 16, True),
    ((40, 32, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 8, True),
    ((64, 64, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 16, False),   # stride 2: ResNet-50 v1.5's downsampling conv
    ((64, 64, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 16, False),   # 1x1
    ((64, 64, 3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 16, False),   # no padding
    ((64, 64, 3, 3), (1, 1), (1, 1, 1, 1), (2, 2), 16, False),   # dilated
    ((64, 24, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 16, False),   # input channels not in whole blocks
    ((64, 16, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 16, False),   # too few channels to pay for the transforms
])
def test_which_convolutions_apply(shape, strides, padding, dilation, block, ok):
    assert winograd.applies(shape, shape[1], strides, padding, dilation, block) is ok


@pytest.mark.parametrize(("mcpu", "block", "hw", "batch"), [("x86-64-v4", 16, (9, 9), 1), ("x86-64-v3", 8, (8, 11), 2)])
def test_scheduled_convolution_matches_numpy(mcpu, block, hw, batch):
    pytest.importorskip("tvm")
    import tvm
    from cm_mlperf.tvm import default_schedule
    from cm_mlperf.tvm import target as tvm_target
    from tvm import te

    cpu_flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()
    if mcpu == "x86-64-v4" and "avx512f" not in cpu_flags:
        pytest.skip("this CPU cannot run AVX-512 code")
    tgt = tvm_target.make_target(mcpu, 1)
    h, w_ = hw
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, 32, h, w_)).astype(np.float32)
    wt = (0.2 * rng.standard_normal((40, 32, 3, 3))).astype(np.float32)
    u = winograd.transform_weight(wt, winograd.TILE, block, block)
    data = te.placeholder((batch, 32 // block, h, w_, block), name="data")
    weights = te.placeholder(u.shape, name="u")
    func = te.create_prim_func([data, weights, winograd.conv3x3_nchwc(data, weights, winograd.TILE)])
    with tgt:
        scheduled = default_schedule.schedule_func(func, tgt)
    assert scheduled is not None  # the Winograd nests got their own schedule, not the generic one's refusal
    lib = tvm.compile(tvm.IRModule({"main": scheduled}), target=tgt)
    kb = u.shape[2]
    out = tvm.runtime.tensor(np.zeros((batch, kb, h, w_, block), np.float32))
    lib["main"](tvm.runtime.tensor(to_blocks(x, block)), tvm.runtime.tensor(u), out)
    got = out.numpy().transpose(0, 1, 4, 2, 3).reshape(batch, kb * block, h, w_)[:, :40]
    np.testing.assert_allclose(got, direct_conv3x3(x, wt), rtol=1e-4, atol=1e-4)


def make_resnet_block_onnx(path: Path) -> Path:
    """conv 3x3 (32 -> 32, bias) + BN + ReLU, a stride-2 3x3 conv, a 3x3 conv on 16 channels, a residual add."""
    from onnx import helper

    rng = np.random.default_rng(7)

    def w(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    arrays = {"w1": w(32, 16, 1, 1), "w2": w(32, 32, 3, 3), "b2": w(32), "bn_s": w(32) + 1, "bn_b": w(32),
              "bn_m": w(32), "bn_v": (0.5 + rng.uniform(size=32)).astype(np.float32), "w3": w(32, 32, 3, 3),
              "w4": w(16, 32, 1, 1), "w5": w(16, 16, 3, 3), "fc": w(16, 10), "fc_b": w(10)}
    n = helper.make_node
    nodes = [n("Conv", ["x", "w1"], ["a"]),
             n("Relu", ["a"], ["ar"]),
             n("Conv", ["ar", "w2", "b2"], ["b"], pads=[1, 1, 1, 1]),  # Winograd, with a bias
             n("BatchNormalization", ["b", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn"]),
             n("Relu", ["bn"], ["br"]),
             n("Add", ["br", "ar"], ["res"]),
             n("Conv", ["res", "w3"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),  # direct: stride 2
             n("Conv", ["c", "w4"], ["d"]),
             n("Conv", ["d", "w5"], ["e"], pads=[1, 1, 1, 1]),  # direct: 16 channels
             n("GlobalAveragePool", ["e"], ["g"]),
             n("Flatten", ["g"], ["f"], axis=1),
             n("MatMul", ["f", "fc"], ["mm"]),
             n("Add", ["mm", "fc_b"], ["logits"])]
    return save_onnx(path, "resblock", nodes, [1, 16, 14, 14], [1, 10], arrays)


def test_resnet_block_runs_winograd_and_matches_onnxruntime(tmp_path):
    pytest.importorskip("tvm")
    ort = pytest.importorskip("onnxruntime")
    import tvm
    from cm_mlperf.tvm import build, frontend
    from cm_mlperf.tvm import layout as tvm_layout
    from cm_mlperf.tvm import target as tvm_target
    from tvm import relax

    path = make_resnet_block_onnx(tmp_path / "resblock.onnx")
    tgt = tvm_target.make_target("x86-64-v3", 1)
    mod, converted = tvm_layout.apply(frontend.import_onnx(frontend.load_onnx(path), "x", [1, 16, 14, 14]), tgt,
                                      "NCHWc")
    assert converted == 5
    names = [gv.name_hint for gv, _ in mod.functions_items()]
    assert sum(name.startswith("conv2d_winograd_NCHWc") for name in names) == 1, names
    ex = build.build(mod, tgt, "default")
    x = np.random.default_rng(3).standard_normal((1, 16, 14, 14)).astype(np.float32)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_fused_epilogue_folds_into_the_output_transform(tmp_path):
    pytest.importorskip("tvm")
    import tvm
    from cm_mlperf.tvm import default_schedule, frontend
    from cm_mlperf.tvm import layout as tvm_layout
    from cm_mlperf.tvm import target as tvm_target
    from tvm import relax

    path = make_resnet_block_onnx(tmp_path / "resblock.onnx")
    tgt = tvm_target.make_target("x86-64-v3", 1)
    mod, _ = tvm_layout.apply(frontend.import_onnx(frontend.load_onnx(path), "x", [1, 16, 14, 14]), tgt, "NCHWc")
    with tgt, tvm.transform.PassContext(opt_level=3):
        mod = tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(), relax.pipeline.zero_pipeline()])(
            mod)
    fused = [f for gv, f in mod.functions_items() if "winograd" in gv.name_hint]
    assert len(fused) == 1
    sch = default_schedule.schedule(fused[0], tgt)
    assert sch is not None
    blocks = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]
    # batch norm, ReLU and the residual add are written by the output transform, not by passes of their own
    assert blocks[0] == "data_pad" and blocks[-1] == "winograd_output" and "winograd_input" in blocks, blocks
    assert not any(b.startswith(("T_", "compute")) for b in blocks), blocks


@pytest.mark.parametrize("flag", ["yes", "no"])
def test_compile_step_honours_winograd_flag(tmp_path, monkeypatch, flag):
    """compile-tvm-model's run step: --winograd=yes (default) and no both build a library verified against
    onnxruntime; compile-info.json says which; no Winograd function in the library with no."""
    pytest.importorskip("tvm")
    pytest.importorskip("onnxruntime")
    import json

    from cm_mlperf.tvm.steps import compile_from_env

    path = make_resnet_block_onnx(tmp_path / "resblock.onnx")
    monkeypatch.chdir(tmp_path)
    out, _ = compile_from_env(blocked_compile_env(path, "resblock", 14, CM_TVM_WINOGRAD=flag))
    assert float(out["CM_TVM_MODEL_VERIFIED_MAX_REL_ERR"]) < 1e-4
    info = json.loads(Path(out["CM_TVM_COMPILE_INFO"]).read_text())
    assert info["winograd"] is (flag == "yes")
    symbols = Path(out["CM_TVM_MODEL_SO"]).read_bytes()
    assert (b"winograd" in symbols) is (flag == "yes")


def test_bad_winograd_value_names_the_flag():
    from cm_mlperf.tvm.steps import StepError, winograd

    assert winograd({}) is True and winograd({"CM_TVM_WINOGRAD": "No"}) is False
    with pytest.raises(StepError, match="--winograd must be yes or no, got 'maybe'"):
        winograd({"CM_TVM_WINOGRAD": "maybe"})


def test_the_search_leaves_winograd_tasks_to_refine():
    assert winograd.is_winograd_task("fused_conv2d_winograd_NCHWc2_subtract7_divide7_multiply7_add9_relu7")
    assert not winograd.is_winograd_task("fused_conv2d_NCHWc2_subtract2_divide2_multiply2_add2")
