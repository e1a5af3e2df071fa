"""ONNX graph -> execution plan for our Mojo kernels (script/build-mojo-backend/mojo/engine.mojo).

A plan is three numpy arrays the Mojo side reads by address: `ops` (int64 records of OPW fields, one per
operator), `fparams` (float32, two per operator: the Clip bounds) and `table` (int64 buffer addresses:
weights and activations, all numpy arrays kept alive by the plan and used in place, never copied again).

Layout: activations are NHWC with channels zero-padded to a multiple of 16 (CHANNEL_PAD) so every kernel
works on whole SIMD vectors; weights are padded with zeros to match, which keeps the padded channels exactly
zero through every layer. The graph's NCHW input is transposed by the first operator; the output is read
back unpadded.

Rewrites made here, once: BatchNormalization folded into the Conv before it (or run as a 1x1 depthwise
convolution when alone), Relu/Clip fused into the Conv/Add/Gemm before it, Flatten/Reshape/Identity/Dropout
as aliases, AveragePool over the whole map as GlobalAveragePool, ConstantOfShape/Constant evaluated.
An operator or attribute we do not implement fails with its node name and what we support.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

OPW = 24
CTRL_SLOTS = 64
CHANNEL_PAD = 16

# record fields (engine.mojo)
F_CODE, F_X, F_W, F_B, F_Y, F_Z = 0, 1, 2, 3, 4, 5
F_H, F_WD, F_C, F_CS, F_OH, F_OW, F_CO = 6, 7, 8, 9, 10, 11, 12
F_KH, F_KW, F_SH, F_SW, F_PT, F_PL, F_ACT, F_CLASSES, F_SIZE = 13, 14, 15, 16, 17, 18, 19, 20, 21

OP_NCHW_TO_NHWC, OP_CONV, OP_DWCONV, OP_ADD, OP_ACT = 1, 2, 3, 4, 5
OP_MAXPOOL, OP_GAP, OP_GEMM, OP_SOFTMAX, OP_NHWC_TO_NCHW = 6, 7, 8, 9, 10
OP_NAMES = {1: "NchwToNhwc", 2: "Conv", 3: "DepthwiseConv", 4: "Add", 5: "Activation", 6: "MaxPool",
            7: "GlobalAveragePool", 8: "Gemm", 9: "Softmax", 10: "NhwcToNchw"}

ACT_NONE, ACT_RELU, ACT_CLIP = 0, 1, 2

ALIAS_OPS = ("Identity", "Dropout")
SUPPORTED = ("Conv", "BatchNormalization", "Relu", "Clip", "Add", "Sum", "MaxPool", "GlobalAveragePool",
             "AveragePool", "Flatten", "Reshape", "Gemm", "MatMul", "Softmax", "Constant", "ConstantOfShape",
             *ALIAS_OPS)


class UnsupportedModel(ValueError):
    """The graph uses an operator or attribute the Mojo backend does not implement."""


def pad_channels(c: int) -> int:
    return -(-c // CHANNEL_PAD) * CHANNEL_PAD


@dataclass
class Tensor:
    """An activation: `buf` index in the table; NHWC (h, w > 0) or flat [N, c] (h = w = 0); cs: padded c."""

    buf: int
    c: int
    h: int = 0
    w: int = 0
    cs: int = 0

    @property
    def flat(self) -> bool:
        return self.h == 0

    def per_sample(self) -> int:
        return (self.h * self.w if not self.flat else 1) * self.cs


@dataclass
class Plan:
    ops: np.ndarray
    fparams: np.ndarray
    table: np.ndarray
    arrays: list[np.ndarray]
    input_buf: int
    input_shape: tuple[int, int, int]  # C, H, W of one sample (NCHW)
    output_buf: int
    output_shape: tuple[int, ...]  # one sample's output shape as the graph gives it
    output_stride: int  # floats per sample in the output buffer
    max_batch: int
    input_name: str
    output_name: str
    op_names: list[str] = field(default_factory=list)

    @property
    def nops(self) -> int:
        return int(self.ops.shape[0])

    def describe(self) -> str:
        counts: dict[str, int] = defaultdict(int)
        for code in self.ops[:, F_CODE]:
            counts[OP_NAMES[int(code)]] += 1
        return ", ".join(f"{n} x{c}" for n, c in sorted(counts.items()))


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class _Builder:
    def __init__(self, model, max_batch: int, input_name: str, output_name: str) -> None:
        from onnx import numpy_helper

        self.g = model.graph
        self.max_batch = max_batch
        self.const: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in self.g.initializer}
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        inputs = [i for i in self.g.input if i.name not in self.const]
        names = [i.name for i in inputs]
        self.input_name = input_name or (names[0] if names else "")
        if self.input_name not in names:
            raise UnsupportedModel(f"model input '{self.input_name}' not among the graph inputs {names}")
        outs = [o.name for o in self.g.output]
        self.output_name = output_name or outs[0]
        if self.output_name not in outs:
            raise UnsupportedModel(f"model output '{self.output_name}' not among the graph outputs {outs}")
        self.records: list[list[int]] = []
        self.fparams: list[tuple[float, float]] = []
        self.op_names: list[str] = []
        self.arrays: list[np.ndarray] = [np.zeros(CHANNEL_PAD, np.float32)]  # buffer 0: a row of zeros
        self.tensors: dict[str, Tensor] = {}
        self.free: list[int] = []  # activation buffers no longer in use
        self.uses: dict[int, int] = defaultdict(int)  # buffer -> pending reads
        self.consumers: dict[str, list] = defaultdict(list)
        for n in self.g.node:
            for i in n.input:
                if i:
                    self.consumers[i].append(n)
        self.done: set[int] = set()  # ids of nodes fused into an earlier one
        self.input_buf = -1

    # ------------------------------------------------------------------------------------------ buffers

    def weight(self, arr: np.ndarray) -> int:
        self.arrays.append(np.ascontiguousarray(arr, dtype=np.float32))
        return len(self.arrays) - 1

    def activation(self, floats_per_sample: int) -> int:
        need = floats_per_sample * self.max_batch
        best = None
        for b in self.free:
            if self.arrays[b].size >= need and (best is None or self.arrays[b].size < self.arrays[best].size):
                best = b
        if best is not None:
            self.free.remove(best)
            return best
        if self.free:  # grow the largest free buffer rather than adding one
            b = max(self.free, key=lambda k: self.arrays[k].size)
            self.free.remove(b)
            self.arrays[b] = np.zeros(need, np.float32)
            return b
        self.arrays.append(np.zeros(need, np.float32))
        return len(self.arrays) - 1

    def new_tensor(self, name: str, c: int, h: int = 0, w: int = 0, cs: int | None = None) -> Tensor:
        cs = pad_channels(c) if cs is None else cs
        t = Tensor(-1, c, h, w, cs)
        t.buf = self.activation(t.per_sample())
        self.tensors[name] = t
        self.uses[t.buf] += len(self.consumers.get(name, [])) + (name == self.output_name)
        self.arrays[0] = np.zeros(max(self.arrays[0].size, cs), np.float32)
        return t

    def alias(self, name: str, src: str, t: Tensor) -> None:
        self.tensors[name] = t
        self.uses[t.buf] += len(self.consumers.get(name, [])) + (name == self.output_name)
        self.release([src])

    def release(self, names: list[str]) -> None:
        for n in names:
            t = self.tensors.get(n)
            if t is None:
                continue
            self.uses[t.buf] -= 1
            if self.uses[t.buf] == 0 and t.buf not in self.free and t.buf != self.input_buf:
                self.free.append(t.buf)

    def emit(self, name: str, code: int, lo: float = 0.0, hi: float = 0.0, **fields: int) -> None:
        rec = [0] * OPW
        rec[F_CODE] = code
        for k, v in fields.items():
            rec[globals()[f"F_{k.upper()}"]] = int(v)
        self.records.append(rec)
        self.fparams.append((lo, hi))
        self.op_names.append(name)

    # ------------------------------------------------------------------------------------------ helpers

    def tensor(self, node, i: int = 0) -> Tensor:
        name = node.input[i]
        if name not in self.tensors:
            raise UnsupportedModel(f"{node.op_type} '{node.name}': input '{name}' is not a computed activation "
                                   "(constant-only subgraphs are not supported)")
        return self.tensors[name]

    def sole_consumer(self, name: str, *types: str):
        cons = self.consumers.get(name, [])
        if len(cons) == 1 and cons[0].op_type in types and name != self.output_name:
            return cons[0]
        return None

    def clip_bounds(self, node) -> tuple[float, float]:
        a = _attrs(node)
        lo, hi = float(a.get("min", -3.4028234663852886e38)), float(a.get("max", 3.4028234663852886e38))
        if len(node.input) > 1 and node.input[1]:
            lo = float(self.const_of(node, 1).reshape(-1)[0])
        if len(node.input) > 2 and node.input[2]:
            hi = float(self.const_of(node, 2).reshape(-1)[0])
        return lo, hi

    def const_of(self, node, i: int) -> np.ndarray:
        name = node.input[i]
        if name not in self.const:
            raise UnsupportedModel(f"{node.op_type} '{node.name}': input '{name}' must be a constant")
        return self.const[name]

    def fuse_activation(self, out: str) -> tuple[str, int, float, float]:
        """If `out` feeds exactly one Relu/Clip, fold it in: (final output name, act, lo, hi)."""
        nxt = self.sole_consumer(out, "Relu", "Clip")
        if nxt is None:
            return out, ACT_NONE, 0.0, 0.0
        self.done.add(id(nxt))
        if nxt.op_type == "Relu":
            return nxt.output[0], ACT_RELU, 0.0, 0.0
        lo, hi = self.clip_bounds(nxt)
        return nxt.output[0], ACT_CLIP, lo, hi

    # ------------------------------------------------------------------------------------------ operators

    def conv(self, node) -> None:
        a = _attrs(node)
        x = self.tensor(node)
        if x.flat:
            raise UnsupportedModel(f"Conv '{node.name}': input is not a feature map")
        w = self.const_of(node, 1).astype(np.float32)
        co, ci_g, kh, kw = w.shape
        b = self.const_of(node, 2).astype(np.float32) if len(node.input) > 2 and node.input[2] else np.zeros(co)
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise UnsupportedModel(f"Conv '{node.name}': auto_pad is not supported (give explicit pads)")
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            raise UnsupportedModel(f"Conv '{node.name}': dilations other than 1 are not supported")
        sh, sw = a.get("strides", [1, 1])
        pt, pl, pb, pr = a.get("pads", [0, 0, 0, 0])
        group = int(a.get("group", 1))
        out = node.output[0]
        bn = self.sole_consumer(out, "BatchNormalization")
        if bn is not None:  # fold: y = (conv - mean) * gamma / sqrt(var + eps) + beta
            self.done.add(id(bn))
            gamma, beta, mean, var = (self.const_of(bn, i).astype(np.float64) for i in range(1, 5))
            scale = gamma / np.sqrt(var + float(_attrs(bn).get("epsilon", 1e-5)))
            w = (w * scale[:, None, None, None]).astype(np.float32)
            b = ((b - mean) * scale + beta).astype(np.float32)
            out = bn.output[0]
        out, act, lo, hi = self.fuse_activation(out)
        oh = (x.h + pt + pb - kh) // sh + 1
        ow = (x.w + pl + pr - kw) // sw + 1
        if group == 1:
            if ci_g != x.c:
                raise UnsupportedModel(f"Conv '{node.name}': weight has {ci_g} input channels, input has {x.c}")
            cop = pad_channels(co)
            wt = np.zeros((kh, kw, ci_g, cop), np.float32)
            wt[..., :co] = w.transpose(2, 3, 1, 0)
            y = self.new_tensor(out, co, oh, ow)
            code = OP_CONV
        elif group == x.c == co and ci_g == 1:
            wt = np.zeros((kh, kw, x.cs), np.float32)
            wt[..., :co] = w[:, 0].transpose(1, 2, 0)
            y = self.new_tensor(out, co, oh, ow, cs=x.cs)
            code = OP_DWCONV
        else:
            raise UnsupportedModel(f"Conv '{node.name}': group={group} (only 1 and depthwise, group = channels)")
        bias = np.zeros(y.cs, np.float32)
        bias[:co] = b
        self.emit(node.name or "conv", code, lo, hi, x=x.buf, w=self.weight(wt), b=self.weight(bias), y=y.buf,
                  h=x.h, wd=x.w, c=x.c, cs=x.cs, oh=oh, ow=ow, co=y.cs, kh=kh, kw=kw, sh=sh, sw=sw, pt=pt, pl=pl,
                  act=act)
        self.release([node.input[0]])

    def batchnorm(self, node) -> None:
        """A BatchNormalization with no Conv before it: a 1x1 depthwise convolution."""
        x = self.tensor(node)
        if x.flat:
            raise UnsupportedModel(f"BatchNormalization '{node.name}': only on feature maps")
        gamma, beta, mean, var = (self.const_of(node, i).astype(np.float64) for i in range(1, 5))
        scale = gamma / np.sqrt(var + float(_attrs(node).get("epsilon", 1e-5)))
        out, act, lo, hi = self.fuse_activation(node.output[0])
        wt = np.zeros((1, 1, x.cs), np.float32)
        wt[0, 0, : x.c] = scale
        bias = np.zeros(x.cs, np.float32)
        bias[: x.c] = beta - mean * scale
        y = self.new_tensor(out, x.c, x.h, x.w, cs=x.cs)
        self.emit(node.name or "bn", OP_DWCONV, lo, hi, x=x.buf, w=self.weight(wt), b=self.weight(bias), y=y.buf,
                  h=x.h, wd=x.w, c=x.c, cs=x.cs, oh=x.h, ow=x.w, co=x.cs, kh=1, kw=1, sh=1, sw=1, act=act)
        self.release([node.input[0]])

    def add(self, node) -> None:
        if len(node.input) != 2:
            raise UnsupportedModel(f"{node.op_type} '{node.name}': only two inputs are supported")
        x, z = self.tensor(node, 0), self.tensor(node, 1)
        if (x.c, x.h, x.w, x.cs) != (z.c, z.h, z.w, z.cs):
            raise UnsupportedModel(f"{node.op_type} '{node.name}': inputs of different shapes (no broadcasting)")
        out, act, lo, hi = self.fuse_activation(node.output[0])
        y = self.new_tensor(out, x.c, x.h, x.w, cs=x.cs)
        self.emit(node.name or "add", OP_ADD, lo, hi, x=x.buf, z=z.buf, y=y.buf, size=x.per_sample(), act=act)
        self.release(list(node.input))

    def activation_op(self, node) -> None:
        x = self.tensor(node)
        act, (lo, hi) = (ACT_RELU, (0.0, 0.0)) if node.op_type == "Relu" else (ACT_CLIP, self.clip_bounds(node))
        y = self.new_tensor(node.output[0], x.c, x.h, x.w, cs=x.cs)
        self.emit(node.name or node.op_type, OP_ACT, lo, hi, x=x.buf, y=y.buf, size=x.per_sample(), act=act)
        self.release([node.input[0]])

    def maxpool(self, node) -> None:
        a = _attrs(node)
        x = self.tensor(node)
        if a.get("ceil_mode", 0) or any(d != 1 for d in a.get("dilations", [1, 1])):
            raise UnsupportedModel(f"MaxPool '{node.name}': ceil_mode and dilations are not supported")
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or len(node.output) > 1:
            raise UnsupportedModel(f"MaxPool '{node.name}': auto_pad and the Indices output are not supported")
        kh, kw = a["kernel_shape"]
        sh, sw = a.get("strides", [1, 1])
        pt, pl, pb, pr = a.get("pads", [0, 0, 0, 0])
        oh, ow = (x.h + pt + pb - kh) // sh + 1, (x.w + pl + pr - kw) // sw + 1
        y = self.new_tensor(node.output[0], x.c, oh, ow, cs=x.cs)
        self.emit(node.name or "maxpool", OP_MAXPOOL, x=x.buf, y=y.buf, h=x.h, wd=x.w, cs=x.cs, oh=oh, ow=ow,
                  kh=kh, kw=kw, sh=sh, sw=sw, pt=pt, pl=pl)
        self.release([node.input[0]])

    def global_pool(self, node) -> None:
        x = self.tensor(node)
        if node.op_type == "AveragePool":
            a = _attrs(node)
            if list(a.get("kernel_shape", [])) != [x.h, x.w] or any(a.get("pads", [0, 0, 0, 0])):
                raise UnsupportedModel(f"AveragePool '{node.name}': only a kernel covering the whole "
                                       f"{x.h}x{x.w} map (global average pooling) is supported")
        y = self.new_tensor(node.output[0], x.c, cs=x.cs)
        self.emit(node.name or "pool", OP_GAP, x=x.buf, y=y.buf, h=x.h, wd=x.w, c=x.c, cs=x.cs)
        self.release([node.input[0]])

    def reshape(self, node) -> None:
        x = self.tensor(node)
        if not x.flat and (x.h, x.w) != (1, 1):
            raise UnsupportedModel(f"{node.op_type} '{node.name}': only flattening a 1x1 map or a vector")
        if node.op_type == "Reshape":
            shape = [int(s) for s in self.const_of(node, 1)]
            # the batch dimension may be baked in ([1, 2048]): only the per-sample size must match
            if len(shape) != 2 or shape[1] not in (x.c, -1):
                raise UnsupportedModel(f"Reshape '{node.name}': to {shape}; only [N, {x.c}] is supported")
        elif int(_attrs(node).get("axis", 1)) != 1:
            raise UnsupportedModel(f"Flatten '{node.name}': only axis=1")
        self.alias(node.output[0], node.input[0], Tensor(x.buf, x.c, cs=x.cs))

    def gemm(self, node) -> None:
        a = _attrs(node)
        x = self.tensor(node)
        if not x.flat:
            raise UnsupportedModel(f"{node.op_type} '{node.name}': input must be [N, K] (flatten it first)")
        w = self.const_of(node, 1).astype(np.float32)
        if node.op_type == "Gemm":
            if a.get("transA", 0) or float(a.get("alpha", 1.0)) != 1.0 or float(a.get("beta", 1.0)) != 1.0:
                raise UnsupportedModel(f"Gemm '{node.name}': only alpha=beta=1 and transA=0")
            if a.get("transB", 0):
                w = w.T
        k, co = w.shape
        if k != x.c:
            raise UnsupportedModel(f"{node.op_type} '{node.name}': weight is [{k}, {co}], input has {x.c} features")
        b = np.zeros(co, np.float32)
        if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
            b = np.broadcast_to(self.const_of(node, 2).astype(np.float32).reshape(-1), (co,))
        out, act, lo, hi = self.fuse_activation(node.output[0])
        y = self.new_tensor(out, co)
        wt = np.zeros((k, y.cs), np.float32)
        wt[:, :co] = w
        bias = np.zeros(y.cs, np.float32)
        bias[:co] = b
        self.emit(node.name or "gemm", OP_GEMM, lo, hi, x=x.buf, w=self.weight(wt), b=self.weight(bias), y=y.buf,
                  c=k, cs=x.cs, co=y.cs, act=act)
        self.release([node.input[0]])

    def softmax(self, node) -> None:
        x = self.tensor(node)
        axis = int(_attrs(node).get("axis", 1 if self.opset < 13 else -1))
        if not x.flat or axis not in (1, -1):
            raise UnsupportedModel(f"Softmax '{node.name}': only over the features of [N, K]")
        y = self.new_tensor(node.output[0], x.c, cs=x.cs)
        self.emit(node.name or "softmax", OP_SOFTMAX, x=x.buf, y=y.buf, cs=x.cs, classes=x.c)
        self.release([node.input[0]])

    def constant(self, node) -> None:
        from onnx import numpy_helper

        a = _attrs(node)
        if node.op_type == "Constant":
            if "value" not in a:
                raise UnsupportedModel(f"Constant '{node.name}': only the 'value' attribute")
            self.const[node.output[0]] = numpy_helper.to_array(a["value"])
        else:
            shape = [int(s) for s in self.const_of(node, 0)]
            fill = numpy_helper.to_array(a["value"]) if "value" in a else np.zeros(1, np.float32)
            self.const[node.output[0]] = np.full(shape, fill.reshape(-1)[0], dtype=fill.dtype)

    # ------------------------------------------------------------------------------------------ the graph

    def build(self) -> Plan:
        inp = next(i for i in self.g.input if i.name == self.input_name)
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in inp.type.tensor_type.shape.dim]
        if len(dims) != 4 or not all(dims[1:]):
            raise UnsupportedModel(f"model input '{self.input_name}' must be NCHW with static C, H, W; got {dims}")
        c, h, w = dims[1:]
        self.input_buf = self.weight(np.zeros(1, np.float32))  # the caller's batch: its address is set per call
        nhwc = f"{self.input_name}@nhwc"
        self.consumers[nhwc] = self.consumers.get(self.input_name, [])
        self.uses[self.input_buf] = 1
        t = self.new_tensor(nhwc, c, h, w)
        self.emit("input", OP_NCHW_TO_NHWC, x=self.input_buf, y=t.buf, c=c, h=h, wd=w, cs=t.cs)
        self.tensors[self.input_name] = t
        handlers = {"Conv": self.conv, "BatchNormalization": self.batchnorm, "Add": self.add, "Sum": self.add,
                    "Relu": self.activation_op, "Clip": self.activation_op, "MaxPool": self.maxpool,
                    "GlobalAveragePool": self.global_pool, "AveragePool": self.global_pool,
                    "Flatten": self.reshape, "Reshape": self.reshape, "Gemm": self.gemm, "MatMul": self.gemm,
                    "Softmax": self.softmax, "Constant": self.constant, "ConstantOfShape": self.constant}
        for node in self.g.node:
            if id(node) in self.done:
                continue
            if node.domain not in ("", "ai.onnx"):
                raise UnsupportedModel(f"{node.domain}.{node.op_type} '{node.name}': custom domains unsupported")
            if node.op_type in ALIAS_OPS:
                x = self.tensor(node)
                self.alias(node.output[0], node.input[0], x)
                continue
            if node.op_type not in handlers:
                raise UnsupportedModel(f"operator {node.op_type} ('{node.name}') is not implemented in the Mojo "
                                       f"backend; supported: {', '.join(SUPPORTED)} (docs/mojo.md: adding one)")
            handlers[node.op_type](node)
        if self.output_name not in self.tensors:
            raise UnsupportedModel(f"output '{self.output_name}' is not computed by supported operators")
        out = self.tensors[self.output_name]
        if out.flat:
            out_buf, out_shape, stride = out.buf, (out.c,), out.cs
        else:  # a feature map: back to the graph's NCHW
            nchw = self.activation(out.c * out.h * out.w)
            self.emit("output", OP_NHWC_TO_NCHW, x=out.buf, y=nchw, c=out.c, h=out.h, wd=out.w, cs=out.cs)
            out_buf, out_shape, stride = nchw, (out.c, out.h, out.w), out.c * out.h * out.w
        table = np.array([a.ctypes.data for a in self.arrays], dtype=np.int64)
        return Plan(ops=np.array(self.records, dtype=np.int64).reshape(-1, OPW),
                    fparams=np.array(self.fparams, dtype=np.float32).reshape(-1, 2), table=table,
                    arrays=self.arrays, input_buf=self.input_buf, input_shape=(c, h, w), output_buf=out_buf,
                    output_shape=out_shape, output_stride=stride, max_batch=self.max_batch,
                    input_name=self.input_name, output_name=self.output_name, op_names=self.op_names)


def build_plan(model_or_path, max_batch: int, input_name: str = "", output_name: str = "") -> Plan:
    """Plan an ONNX model (a path or a ModelProto) for batches of up to `max_batch` samples."""
    import onnx

    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    model = onnx.load(str(model_or_path)) if not isinstance(model_or_path, onnx.ModelProto) else model_or_path
    return _Builder(model, max_batch, input_name, output_name).build()
