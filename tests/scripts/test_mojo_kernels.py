"""Our Mojo kernels against numpy, one ONNX operator at a time (random shapes, odd sizes, strides, asymmetric
padding, 1 and 2 threads), then whole networks against onnxruntime. Needs the `mojo` toolchain (pip install
'.[mojo]'); the library is compiled once per test session."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from cm_mlperf.mojo import toolchain
from cm_mlperf.mojo.engine import MojoEngine
from cm_mlperf.mojo.plan import UnsupportedModel, build_plan
from onnx import TensorProto, helper, numpy_helper

SOURCES = Path(__file__).resolve().parents[2] / "script" / "build-mojo-backend" / "mojo"
# float32 kernels reorder sums (FMA, SIMD lanes): relative to the output's magnitude
RTOL = 2e-5


@pytest.fixture(scope="session")
def mojo_lib(tmp_path_factory) -> str:
    mojo = toolchain.find_mojo()
    if not mojo:
        pytest.skip("the Mojo toolchain is not installed (pip install '.[mojo]')")
    out = tmp_path_factory.mktemp("mojo-build")
    return toolchain.build_backend(mojo, SOURCES, out, native=False)["library"]


def _model(nodes, x_shape, y_name, inits, y_shape=None, opset=13):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *x_shape[1:]])],
        [helper.make_tensor_value_info(y_name, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _run(lib, model, x, threads):
    with MojoEngine(lib, build_plan(model, max_batch=x.shape[0]), threads=threads) as eng:
        return eng.run(x)


def _close(got, want):
    assert got.shape == want.shape
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=0, atol=RTOL * scale)


def conv_ref(x, w, b, stride, pads, group=1):
    """NCHW convolution by explicit sums (numpy)."""
    n, c, h, wd = x.shape
    co, cig, kh, kw = w.shape
    pt, pl, pb, pr = pads
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh, ow = (h + pt + pb - kh) // stride + 1, (wd + pl + pr - kw) // stride + 1
    y = np.zeros((n, co, oh, ow), np.float64)
    cog = co // group
    for o in range(co):
        g = o // cog
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, g * cig:(g + 1) * cig, i:i + stride * oh:stride, j:j + stride * ow:stride]
                y[:, o] += np.einsum("nchw,c->nhw", patch, w[o, :, i, j])
    return (y + b[None, :, None, None]).astype(np.float32)


ACTS = {"none": lambda v: v, "relu": lambda v: np.maximum(v, 0), "clip": lambda v: np.clip(v, 0, 6)}


def _act_nodes(src, act):
    if act == "none":
        return [], src
    if act == "relu":
        return [helper.make_node("Relu", [src], ["y"])], "y"
    return [helper.make_node("Clip", [src, "lo", "hi"], ["y"])], "y"


@pytest.mark.parametrize("c,co,h,k,stride,pads,act,threads", [
    (3, 32, 17, 3, 2, (0, 0, 1, 1), "clip", 2),      # stem: 3 channels, 'same' padding of a stride-2 3x3
    (16, 24, 9, 1, 1, (0, 0, 0, 0), "none", 1),      # pointwise, output channels not a multiple of 16
    (17, 7, 11, 3, 1, (1, 1, 1, 1), "relu", 2),      # odd everything
    (8, 40, 13, 5, 2, (1, 1, 2, 2), "clip", 2),      # 5x5 stride 2, asymmetric
    (5, 64, 15, 7, 2, (3, 3, 3, 3), "relu", 1),      # ResNet stem shape (7x7 / 2)
    (24, 100, 7, 1, 2, (0, 0, 0, 0), "none", 2),     # strided 1x1 (ResNet downsample)
])
def test_conv(mojo_lib, c, co, h, k, stride, pads, act, threads):
    rng = np.random.default_rng(c * 100 + co)
    x = rng.standard_normal((3, c, h, h + 2), dtype=np.float32)
    w = rng.standard_normal((co, c, k, k), dtype=np.float32) * 0.3
    b = rng.standard_normal(co, dtype=np.float32)
    tail, out = _act_nodes("conv", act)
    conv = helper.make_node("Conv", ["x", "w", "b"], ["conv"], kernel_shape=[k, k], strides=[stride, stride],
                            pads=list(pads[:2]) + list(pads[2:]))
    model = _model([conv, *tail], x.shape, out, {"w": w, "b": b, "lo": np.float32(0), "hi": np.float32(6)})
    want = ACTS[act](conv_ref(x, w, b, stride, (pads[0], pads[1], pads[2], pads[3])))
    _close(_run(mojo_lib, model, x, threads).reshape(want.shape), want)


@pytest.mark.parametrize("c,h,k,stride,pads,threads", [
    (32, 16, 3, 1, (1, 1, 1, 1), 2),
    (40, 15, 5, 2, (1, 1, 2, 2), 2),     # EfficientNet's stride-2 5x5: pads (1, 2)
    (17, 9, 3, 2, (0, 0, 1, 1), 1),      # odd channels: padded to 32 inside
    (144, 8, 5, 1, (2, 2, 2, 2), 2),
])
def test_depthwise(mojo_lib, c, h, k, stride, pads, threads):
    rng = np.random.default_rng(c + h)
    x = rng.standard_normal((2, c, h, h + 1), dtype=np.float32)
    w = rng.standard_normal((c, 1, k, k), dtype=np.float32)
    b = rng.standard_normal(c, dtype=np.float32)
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c1"], kernel_shape=[k, k], strides=[stride, stride],
                            pads=[pads[0], pads[1], pads[2], pads[3]], group=c)
    clip = helper.make_node("Clip", ["c1", "lo", "hi"], ["y"])
    model = _model([conv, clip], x.shape, "y", {"w": w, "b": b, "lo": np.float32(0), "hi": np.float32(6)})
    want = np.clip(conv_ref(x, w, b, stride, pads, group=c), 0, 6)
    _close(_run(mojo_lib, model, x, threads).reshape(want.shape), want)


def test_batchnorm_folded_and_alone(mojo_lib):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 6, 7, 7), dtype=np.float32)
    w = rng.standard_normal((20, 6, 3, 3), dtype=np.float32)
    g, be, m = (rng.standard_normal(20, dtype=np.float32) for _ in range(3))
    v = rng.random(20, dtype=np.float32) + 0.5
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "be", "m", "v"], ["bn"], epsilon=1e-3),
             helper.make_node("Relu", ["bn"], ["r"]),
             helper.make_node("BatchNormalization", ["r", "g", "be", "m", "v"], ["y"])]
    model = _model(nodes, x.shape, "y", {"w": w, "g": g, "be": be, "m": m, "v": v})
    plan = build_plan(model, 2)
    # BN + Relu fused into the Conv, the lone BN a 1x1 depthwise conv; the feature-map output back to NCHW
    assert plan.describe() == "Conv x1, DepthwiseConv x1, NchwToNhwc x1, NhwcToNchw x1"

    def bn(t, eps):
        return (t - m[None, :, None, None]) / np.sqrt(v[None, :, None, None] + eps) * g[None, :, None, None] \
            + be[None, :, None, None]
    want = bn(np.maximum(bn(conv_ref(x, w, np.zeros(20, np.float32), 1, (1, 1, 1, 1)), 1e-3), 0), 1e-5)
    _close(_run(mojo_lib, model, x, 2).reshape(want.shape), want.astype(np.float32))


@pytest.mark.parametrize("threads", [1, 2])
def test_pools_add_gemm_softmax(mojo_lib, threads):
    """MaxPool (strided, padded) -> residual Add + Relu -> GlobalAveragePool -> Flatten -> Gemm -> Softmax."""
    rng = np.random.default_rng(threads)
    x = rng.standard_normal((5, 19, 13, 11), dtype=np.float32)
    fc = rng.standard_normal((1001, 19), dtype=np.float32)
    fb = rng.standard_normal(1001, dtype=np.float32)
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["p", "p"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fb"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["y"], axis=1)]
    model = _model(nodes, x.shape, "y", {"fc": fc, "fb": fb})
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    pooled = np.stack([[xp[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(2, 3)) for j in range(6)]
                       for i in range(7)]).transpose(2, 3, 0, 1)
    feats = np.maximum(2 * pooled, 0).mean(axis=(2, 3))
    logits = feats.astype(np.float64) @ fc.T + fb
    want = np.exp(logits - logits.max(1, keepdims=True))
    want = (want / want.sum(1, keepdims=True)).astype(np.float32)
    got = _run(mojo_lib, model, x, threads)
    _close(got, want)
    assert (got.argmax(1) == logits.argmax(1)).all()


def test_matmul_averagepool_reshape(mojo_lib):
    """AveragePool over the whole map (ResNet-50's 7x7), Reshape with the batch baked in, MatMul."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 33, 7, 7), dtype=np.float32)
    wm = rng.standard_normal((33, 10), dtype=np.float32)
    nodes = [helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[7, 7]),
             helper.make_node("Reshape", ["p", "shape"], ["f"]),
             helper.make_node("MatMul", ["f", "wm"], ["y"])]
    model = _model(nodes, x.shape, "y", {"wm": wm, "shape": np.array([1, 33], np.int64)})
    want = x.mean(axis=(2, 3)) @ wm
    _close(_run(mojo_lib, model, x, 2), want.astype(np.float32))


def test_batches_larger_than_the_plan_and_any_size(mojo_lib):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 4, 5, 5), dtype=np.float32)
    w = rng.standard_normal((8, 4, 3, 3), dtype=np.float32)
    model = _model([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3])], x.shape, "y", {"w": w})
    want = conv_ref(x, w, np.zeros(8, np.float32), 1, (0, 0, 0, 0))
    with MojoEngine(mojo_lib, build_plan(model, max_batch=3), threads=2) as eng:
        _close(eng.run(x), want)            # 3 + 3 + 1
        _close(eng.run(x[:2]), want[:2])    # fewer than the plan's batch


def test_unsupported_operator_is_named():
    model = _model([helper.make_node("Sigmoid", ["x"], ["y"], name="gate")], (1, 3, 4, 4), "y", {})
    with pytest.raises(UnsupportedModel, match=r"operator Sigmoid \('gate'\) is not implemented"):
        build_plan(model, 1)


def test_dilated_conv_is_refused():
    w = np.ones((4, 3, 3, 3), np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], dilations=[2, 2], name="c")
    with pytest.raises(UnsupportedModel, match="dilations"):
        build_plan(_model([node], (1, 3, 9, 9), "y", {"w": w}), 1)


# ------------------------------------------------------------------------------------------- whole networks


def _ort(path, x, output=None):
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return np.concatenate([s.run([output] if output else None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def test_efficientnet_lite0_matches_onnxruntime(mojo_lib, tmp_path, script_module):
    """The built-in model on the real sample photographs: the same top-1 on every image, logits within 1e-4."""
    conv = script_module("get-ml-model-efficientnet-lite0", "effnet_lite0_onnx")
    onnx_path = tmp_path / "effnet.onnx"
    conv.convert(conv.default_weights_path(), onnx_path, verify=False)
    x = _photographs()
    want = _ort(onnx_path, x)
    with MojoEngine(mojo_lib, onnx_path, max_batch=4, threads=2) as eng:
        got = eng.run(x)
    assert (got.argmax(1) == want.argmax(1)).all()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())


def _photographs() -> np.ndarray:
    """Photographs shipped in scikit-image, resized and normalised as EfficientNet-Lite expects."""
    from PIL import Image
    from skimage import data

    out = []
    for a in (data.coffee(), data.chelsea(), data.rocket(), data.astronaut(), data.camera()):
        if a.ndim == 2:
            a = np.stack([a] * 3, axis=-1)
        img = Image.fromarray(a[..., :3]).resize((224, 224))
        out.append(((np.asarray(img, np.float32) - 127.0) / 128.0).transpose(2, 0, 1))
    return np.stack(out).astype(np.float32)


def test_light_resnet50_matches_onnxruntime(mojo_lib, tmp_path):
    """onnx's light_resnet50 (every weight 0.02): compared before the flat softmax, by relative error."""
    import onnx

    src = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_resnet50.onnx"
    model = onnx.load(str(src))
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm").output[0]
    model.graph.output.append(helper.make_tensor_value_info(gemm, TensorProto.FLOAT, None))
    path = tmp_path / "r50.onnx"
    onnx.save(model, str(path))
    x = np.random.default_rng(0).random((2, 3, 224, 224), dtype=np.float32)
    want = _ort(path, x, gemm)
    with MojoEngine(mojo_lib, path, max_batch=2, threads=int(os.cpu_count() or 1), output_name=gemm) as eng:
        got = eng.run(x)
    # activations reach 1e19 through 53 convolutions: float32 sums of that size differ by ~1e-5 relative
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-4
