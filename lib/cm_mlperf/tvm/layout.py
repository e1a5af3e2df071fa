"""Blocked channel layout (NCHW[b]c) for CNNs imported from ONNX: the layout onnxruntime's CPU kernels use.

TVM 0.27's Relax cannot get there by itself: `ConvertLayout` keeps grouped (depthwise) convolutions in NCHW,
Relax's conv2d legalisation refuses blocked layouts, and the ONNX frontend turns Clip into opaque TIR calls that
stop layout propagation. `to_blocked(mod, block)` rewrites the model's `main` itself, one binding at a time:

- every conv2d whose channels allow it becomes TOPI's `conv2d_NCHWc` (groups 1), a Winograd F(2x2, 3x3)
  convolution (3x3, stride 1, padding 1, whole channel blocks: cm_mlperf.tvm.winograd) or a depthwise NCHWc compute,
  its weights re-laid out once at compile time (numpy), channel counts that are not a multiple of the block padded
  with zeros: the padded channels only ever meet zero weights in the next convolution and are cut off before
  anything else reads the tensor, so they only have to stay finite (a padded divisor is 1, not 0);
- element-wise ops (add, maximum, minimum, relu, clip, ...) on a blocked tensor stay blocked, their constant
  operands (per-channel bias, scalars) re-laid out the same way;
- max and average pooling, and a mean over H and W (global average pooling), stay blocked: ResNet's stem pool no
  longer sends a 3 MB map to NCHW and back, and only the pooled C numbers of the head go back to NCHW;
- a matrix product with constant weights (the classifier) reads them re-laid out in blocks of outputs, one
  sequential stream per block; its result is plain;
- anything else (reshape, the outputs) gets the plain NCHW tensor back through one layout transform, made once
  per tensor.

Vectors then run along 16 channels (AVX-512) instead of along image rows that are 7 or 14 wide in the late
layers, and a 1x1 convolution becomes a matrix product over contiguous channel blocks. The rewritten kernels are
new MetaSchedule tasks: a database tuned for NCHW does not apply (the layout is part of the database's key).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from cm_mlperf.tvm import default_schedule, winograd

LAYOUTS = ("NCHW", "NCHWc")


def block_for(layout: str, vector_bits: int = 512) -> int:
    """Channels per block for a layout name: NCHWc = one vector of float32 (16 with AVX-512, 8 with AVX2)."""
    if layout == "NCHW":
        return 0
    if layout == "NCHWc":
        return max(4, vector_bits // 32)
    raise ValueError(f"unknown layout {layout!r}: choose one of {', '.join(LAYOUTS)}")


def _ceil_to(n: int, b: int) -> int:
    return -(-n // b) * b


# ----------------------------------------------------------------------------- numpy re-layouts (compile time)

def block_activation_const(a: np.ndarray, channels: int, block: int, pad_value: float = 0.0) -> np.ndarray | None:
    """A constant operand of an element-wise op on an NCHW tensor, re-laid out for the blocked tensor: shape
    (1|N, C, 1, 1) or (C, 1, 1) -> (1|N, C/b, 1, 1, b), padded channels set to pad_value (1 for a divisor: the
    padded channels must stay finite); scalars stay; None when it does not broadcast that way."""
    if a.ndim == 0 or a.size == 1:
        return a.reshape(())
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[1] != channels or a.shape[2] != 1 or a.shape[3] != 1:
        return None
    cp = _ceil_to(channels, block)
    padded = np.full((a.shape[0], cp, 1, 1), pad_value, dtype=a.dtype)
    padded[:, :channels] = a
    return np.ascontiguousarray(padded.reshape(a.shape[0], cp // block, block, 1, 1).transpose(0, 1, 3, 4, 2))


def block_conv_weight(w: np.ndarray, in_block: int, out_block: int) -> np.ndarray:
    """OIHW -> (O/ob, I/ib, H, W, ib, ob) for conv2d_NCHWc, zero-padding I and O to whole blocks."""
    o, i, kh, kw = w.shape
    op, ip = _ceil_to(o, out_block), _ceil_to(i, in_block)
    padded = np.zeros((op, ip, kh, kw), dtype=w.dtype)
    padded[:o, :i] = w
    return np.ascontiguousarray(
        padded.reshape(op // out_block, out_block, ip // in_block, in_block, kh, kw).transpose(0, 2, 4, 5, 3, 1))


def block_depthwise_weight(w: np.ndarray, block: int) -> np.ndarray:
    """(C, 1, H, W) -> (C/b, H, W, b), zero-padding C to whole blocks."""
    c, _, kh, kw = w.shape
    cp = _ceil_to(c, block)
    padded = np.zeros((cp, kh, kw), dtype=w.dtype)
    padded[:c] = w[:, 0]
    return np.ascontiguousarray(padded.reshape(cp // block, block, kh, kw).transpose(0, 2, 3, 1))


# ----------------------------------------------------------------------------- TE computes

def depthwise_nchwc(data: Any, kernel: Any, strides: tuple[int, int], padding: tuple[int, int, int, int],
                    dilation: tuple[int, int]) -> Any:
    """Depthwise conv on (N, C/b, H, W, b) data with (C/b, KH, KW, b) weights (TOPI registers none for x86)."""
    from tvm import te, topi

    n, cb, h, w, b = (int(x) for x in data.shape)
    _, kh_n, kw_n, _ = (int(x) for x in kernel.shape)
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = strides, dilation, padding
    oh = (h + pt + pb - ((kh_n - 1) * dh + 1)) // sh + 1
    ow = (w + pl + pr - ((kw_n - 1) * dw + 1)) // sw + 1
    padded = topi.nn.pad(data, (0, 0, pt, pl, 0), (0, 0, pb, pr, 0), name="data_pad") if pt + pl + pb + pr else data
    kh = te.reduce_axis((0, kh_n), name="kh")
    kw = te.reduce_axis((0, kw_n), name="kw")
    return te.compute(
        (n, cb, oh, ow, b),
        lambda i, c, y, x, v: te.sum(padded[i, c, y * sh + kh * dh, x * sw + kw * dw, v] * kernel[c, kh, kw, v],
                                     axis=[kh, kw]),
        name="depthwise_conv2d_NCHWc")


def matmul_blocked(data: Any, weight: Any) -> Any:
    """(M, K) x blocked weights (N/b, K, b) -> (M, N/b, b): each output block streams its weights in order."""
    from tvm import te

    m, k_n = (int(x) for x in data.shape)
    nb, _, b = (int(x) for x in weight.shape)
    k = te.reduce_axis((0, k_n), name="k")
    return te.compute((m, nb, b), lambda i, j, v: te.sum(data[i, k] * weight[j, k, v], axis=[k]),
                      name="matmul_blocked")


def conv_nchwc(data: Any, kernel: Any, strides: tuple[int, int], padding: tuple[int, int, int, int],
               dilation: tuple[int, int], in_block: int, out_block: int) -> Any:
    """TOPI's conv2d_NCHWc (groups 1)."""
    from tvm import topi

    return topi.nn.conv2d_NCHWc(data, kernel, list(strides), list(padding), list(dilation),
                                f"NCHW{in_block}c", f"NCHW{out_block}c", "float32")


# ----------------------------------------------------------------------------- the rewrite

_ELEMENTWISE_BINARY = ("relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.maximum",
                       "relax.minimum")
_ELEMENTWISE_UNARY = ("relax.nn.relu", "relax.clip", "relax.sigmoid", "relax.nn.silu")


def _const_array(expr: Any) -> np.ndarray | None:
    return expr.value.numpy() if type(expr).__name__ == "GenericConst" else None


def _shape(expr: Any) -> tuple[int, ...] | None:
    try:
        return tuple(int(d) for d in expr.ty.shape)
    except Exception:  # noqa: BLE001 - not a tensor with a static shape
        return None


def _tir_clip_kind(func: Any) -> str | None:
    """'max'/'min' when a PrimFunc is the ONNX frontend's Clip half (one element-wise max/min with a tensor)."""
    import tvm

    if not isinstance(func, tvm.tirx.PrimFunc):
        return None
    text = "\n".join(line for line in func.script().splitlines() if not line.strip().startswith("#"))
    if text.count("T.sblock(") != 1:
        return None
    if "T_maximum" in text and "T.max(" in text:
        return "max"
    if "T_minimum" in text and "T.min(" in text:
        return "min"
    return None


class _Blocker:
    """Walks main's dataflow bindings once, emitting the blocked program into a BlockBuilder."""

    def __init__(self, mod: Any, block: int, winograd: bool = True) -> None:
        from tvm import relax

        self.mod, self.block, self.winograd = mod, block, winograd
        self.relax = relax
        self.bb = relax.BlockBuilder(mod)  # knows the module's functions: new names stay unique
        self.env: dict[Any, Any] = {}          # old var -> new expr (plain layout)
        self.blocked: dict[Any, tuple[Any, int]] = {}  # old var -> (blocked new expr, real channel count)
        self.plain_cache: dict[Any, Any] = {}
        # bindings held back while their parts are blocked, emitted in NCHW only if something else reads them:
        # tuples (the frontend's BatchNormalization returns one) and stacks (ONNX Sum = stack + sum over axis 0)
        self.deferred: dict[Any, Any] = {}
        self.converted = 0

    # -- helpers
    def arg(self, expr: Any) -> Any:
        """An old expression in the new program, in plain NCHW."""
        if expr in self.blocked:
            return self.plain(expr)
        if expr in self.env:
            return self.env[expr]
        if expr in self.deferred:
            self.env[expr] = self.bb.emit(self._plain_value(self.deferred.pop(expr)))
            return self.env[expr]
        if isinstance(expr, self.relax.Tuple):
            return self.relax.Tuple([self.arg(f) for f in expr.fields])
        return expr

    def plain(self, old: Any) -> Any:
        if old not in self.plain_cache:
            new, channels = self.blocked[old]
            n, cb, h, w, b = _shape(new)
            op = self.relax.op
            x = self.bb.emit(op.permute_dims(new, [0, 1, 4, 2, 3]))
            x = self.bb.emit(op.reshape(x, [n, cb * b, h, w]))
            if cb * b != channels:
                x = self.bb.emit(op.strided_slice(x, axes=[1], begin=[0], end=[channels]))
            self.plain_cache[old] = x
        return self.plain_cache[old]

    def to_blocked(self, old: Any, block: int) -> tuple[Any, int] | None:
        """An old 4-D tensor as (N, C/b, H, W, b) with this block (zero-padded channels); None if not 4-D."""
        if old in self.blocked:
            new, channels = self.blocked[old]
            if int(new.ty.shape[4]) == block:
                return new, channels
        shape = _shape(old)
        if shape is None or len(shape) != 4:
            return None
        n, c, h, w = shape
        op = self.relax.op
        x = self.arg(old)
        cp = _ceil_to(c, block)
        if cp != c:
            x = self.bb.emit(op.nn.pad(x, [0, 0, 0, cp - c, 0, 0, 0, 0], pad_value=0.0))
        x = self.bb.emit(op.reshape(x, [n, cp // block, block, h, w]))
        x = self.bb.emit(op.permute_dims(x, [0, 1, 3, 4, 2]))
        return x, c

    # -- op rewrites
    def conv2d(self, call: Any) -> tuple[Any, int] | None:
        attrs = call.attrs
        if attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW" or attrs.out_layout != "NCHW":
            return None
        weight = _const_array(call.args[1])
        dshape = _shape(call.args[0])
        if weight is None or dshape is None or len(dshape) != 4 or weight.ndim != 4:
            return None
        cout, cin_g, _, _ = weight.shape
        cin, groups = dshape[1], int(attrs.groups)
        b = self.block
        strides = tuple(int(s) for s in attrs.strides)
        dilation = tuple(int(d) for d in attrs.dilation)
        padding = tuple(int(p) for p in attrs.padding)
        if len(padding) == 2:
            padding = padding + padding
        if groups == 1 and self.winograd and winograd.applies(weight.shape, cin, strides, padding, dilation, b):
            src = self.to_blocked(call.args[0], b)
            u = self.relax.const(winograd.transform_weight(weight, winograd.TILE, b, b))
            out = self.bb.emit_te(winograd.conv3x3_nchwc, src[0], u, winograd.TILE,
                                  primfunc_name_hint=winograd.FUNC_NAME)
            return out, cout
        if groups == 1:
            in_block = cin if cin < b else b  # the stem's 3 channels: one block of 3
            src = self.to_blocked(call.args[0], in_block)
            w = self.relax.const(block_conv_weight(weight, in_block, b))
            out = self.bb.emit_te(conv_nchwc, src[0], w, strides, padding, dilation, in_block, b,
                                  primfunc_name_hint="conv2d_NCHWc")
            return out, cout
        if groups == cin == cout and cin_g == 1:
            src = self.to_blocked(call.args[0], b)
            w = self.relax.const(block_depthwise_weight(weight, b))
            out = self.bb.emit_te(depthwise_nchwc, src[0], w, strides, padding, dilation,
                                  primfunc_name_hint="depthwise_conv2d_NCHWc")
            return out, cout
        return None

    def matmul(self, call: Any) -> Any | None:
        """x (M, K) @ constant W (K, N), a classifier: W re-laid out as (N/b, K, b) so that each block of b outputs
        reads its weights as one sequential stream (row-major W is read 4 KB apart per step of K: a GEMV at half
        the memory bandwidth); the (M, N) result is plain again. None when it does not apply."""
        weight = _const_array(call.args[1])
        xshape = _shape(call.args[0])
        if weight is None or weight.ndim != 2 or weight.dtype != np.float32 or xshape is None or len(xshape) != 2 \
                or xshape[1] != weight.shape[0] or str(call.ty.dtype) != "float32":
            return None
        b = self.block
        k, n = weight.shape
        padded = np.zeros((k, _ceil_to(n, b)), np.float32)
        padded[:, :n] = weight
        blocked = np.ascontiguousarray(padded.reshape(k, -1, b).transpose(1, 0, 2))
        op = self.relax.op
        out = self.bb.emit_te(matmul_blocked, self.arg(call.args[0]), self.relax.const(blocked),
                              primfunc_name_hint="matmul_blocked")
        out = self.bb.emit(op.reshape(out, [xshape[0], padded.shape[1]]))
        if padded.shape[1] != n:
            out = self.bb.emit(op.strided_slice(out, axes=[1], begin=[0], end=[n]))
        return out

    def elementwise(self, op_name: str, call: Any) -> tuple[Any, int] | None:
        args = list(call.args)
        lead = next((a for a in args if a in self.blocked), None)
        if lead is None:
            return None
        new_lead, channels = self.blocked[lead]
        b = int(new_lead.ty.shape[4])
        new_args = []
        for a in args:
            if a in self.blocked:
                other, other_c = self.blocked[a]
                if other_c != channels or int(other.ty.shape[4]) != b or _shape(a) != _shape(lead):
                    return None
                new_args.append(other)
                continue
            value = _const_array(a)
            if value is None:
                return None
            divisor = op_name == "relax.divide" and a is args[-1]
            relaid = block_activation_const(value, channels, b, 1.0 if divisor else 0.0)
            if relaid is None:
                return None
            new_args.append(self.relax.const(relaid, str(value.dtype)))
        new_call = self.relax.Call(call.op, new_args, call.attrs, call.ty_args)
        return self.bb.emit(new_call), channels

    def tir_clip(self, call: Any) -> tuple[Any, int] | None:
        """The frontend's Clip halves: call_tir(maximum|minimum, (x, c)) with a one-element constant c."""
        callee, args = call.args[0], call.args[1].fields
        kind = _tir_clip_kind(self.mod[callee])
        if kind is None or len(args) != 2 or args[0] not in self.blocked:
            return None
        value = _const_array(args[1])
        if value is None or value.size != 1:
            return None
        op = self.relax.op.maximum if kind == "max" else self.relax.op.minimum
        new, channels = self.blocked[args[0]]
        return self.bb.emit(op(new, self.relax.const(float(value.reshape(())), "float32"))), channels

    def same_shape_alias(self, call: Any) -> tuple[Any, int] | None:
        """broadcast_to(x, shape of x): the blocked x itself."""
        source = call.args[0]
        if source in self.blocked and _shape(call) == _shape(source):
            return self.blocked[source]
        return None

    def sum_of_stack(self, call: Any) -> tuple[Any, int] | None:
        """sum(stack((a, b, ...), axis=0), axis=[0]) of blocked a, b, ...: a + b + ... in blocks."""
        stacked = self.deferred.get(call.args[0])
        axis = [int(a) for a in call.attrs.axis] if call.attrs.axis is not None else None
        if stacked is None or axis != [0] or bool(call.attrs.keepdims):
            return None
        parts = [self.blocked[f] for f in stacked.args[0].fields]
        total, channels = parts[0]
        for part, _ in parts[1:]:
            total = self.bb.emit(self.relax.op.add(total, part))
        return total, channels

    def spatial_mean(self, call: Any) -> tuple[Any, int] | None:
        """Global average pooling, mean over H and W with keepdims, of a blocked tensor: a (N, C/b, 1, 1, b) block.

        The head's pooled vector then goes back to NCHW as C numbers, not the (C, 7, 7) map before the pool."""
        source = call.args[0]
        axis = sorted(int(a) for a in call.attrs.axis) if call.attrs.axis is not None else None
        if source not in self.blocked or axis != [2, 3] or not bool(call.attrs.keepdims):
            return None
        new, channels = self.blocked[source]
        return self.bb.emit(self.relax.op.mean(new, axis=[2, 3], keepdims=True)), channels

    def pool(self, call: Any) -> tuple[Any, int] | None:
        """max_pool2d / avg_pool2d of a blocked NCHW tensor: the same pooling in NCHW[b]c (TOPI pools any layout);
        padded channels stay finite (a max or mean of finite values)."""
        source, attrs = call.args[0], call.attrs
        if source not in self.blocked or attrs.layout != "NCHW" or (attrs.out_layout or "NCHW") != "NCHW":
            return None
        new, channels = self.blocked[source]
        layout = f"NCHW{int(new.ty.shape[4])}c"
        op = self.relax.op.nn.max_pool2d if call.op.name == "relax.nn.max_pool2d" else self.relax.op.nn.avg_pool2d
        pooled = op(new, pool_size=[int(v) for v in attrs.pool_size], strides=[int(v) for v in attrs.strides],
                    padding=[int(v) for v in attrs.padding], dilation=[int(v) for v in attrs.dilation],
                    ceil_mode=bool(attrs.ceil_mode), count_include_pad=bool(attrs.count_include_pad),
                    layout=layout, out_layout=layout)
        return self.bb.emit(pooled), channels

    def defer(self, var: Any, value: Any) -> bool:
        """Hold back a tuple with a blocked field, or a stack along a new axis 0 of equally blocked tensors."""
        relax = self.relax
        if isinstance(value, relax.Tuple) and any(f in self.blocked for f in value.fields):
            self.deferred[var] = value
            return True
        if (isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.stack"
                and int(value.attrs.axis) == 0 and isinstance(value.args[0], relax.Tuple)):
            fields = value.args[0].fields
            if fields and all(f in self.blocked for f in fields) and \
                    len({(_shape(f), self.blocked[f][1], _shape(self.blocked[f][0])) for f in fields}) == 1:
                self.deferred[var] = value
                return True
        return False

    def binding(self, binding: Any) -> None:
        relax = self.relax
        var, value = binding.var, binding.value
        result = None
        if self.defer(var, value):
            return
        if isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.matmul":
            plain = self.matmul(value)
            if plain is not None:
                self.env[var] = plain
                return
        if isinstance(value, relax.TupleGetItem) and value.tuple_value in self.deferred:
            field = self.deferred[value.tuple_value].fields[value.index]
            result = self.blocked.get(field)
        elif isinstance(value, relax.Call) and hasattr(value.op, "name"):
            name = value.op.name
            if name == "relax.nn.conv2d":
                result = self.conv2d(value)
                self.converted += result is not None
            elif name in _ELEMENTWISE_BINARY or name in _ELEMENTWISE_UNARY:
                result = self.elementwise(name, value)
            elif name == "relax.call_tir":
                result = self.tir_clip(value)
            elif name == "relax.broadcast_to":
                result = self.same_shape_alias(value)
            elif name == "relax.sum":
                result = self.sum_of_stack(value)
            elif name == "relax.mean":
                result = self.spatial_mean(value)
            elif name in ("relax.nn.max_pool2d", "relax.nn.avg_pool2d"):
                result = self.pool(value)
        if result is not None:
            self.blocked[var] = result
            return
        new_value = self._plain_value(value)
        self.env[var] = self.bb.emit(new_value)

    def _plain_value(self, value: Any) -> Any:
        relax = self.relax
        if isinstance(value, relax.Call):
            return relax.Call(value.op, [self.arg(a) for a in value.args], value.attrs, value.ty_args)
        if isinstance(value, relax.Tuple):
            return relax.Tuple([self.arg(f) for f in value.fields])
        if isinstance(value, relax.TupleGetItem):
            return relax.TupleGetItem(self.arg(value.tuple_value), value.index)
        return self.arg(value)


def to_blocked(mod: Any, block: int = 16, func_name: str = "main", winograd: bool = True) -> tuple[Any, int]:
    """Rewrite `func_name` of a freshly imported (not yet legalised) Relax module to NCHW[block]c convolutions
    (3x3 stride-1 ones as Winograd convolutions unless `winograd` is False). Returns (module, number of
    convolutions converted). Needs the target in context (TOPI reads it)."""
    from tvm import relax

    func = mod[func_name]
    body = func.body
    if (not isinstance(body, relax.SeqExpr) or len(body.blocks) != 1
            or not isinstance(body.blocks[0], relax.DataflowBlock)):
        return mod, 0
    blocker = _Blocker(mod, block, winograd)
    bb = blocker.bb
    scratch = f"{func_name}__blocked"
    with bb.function(scratch, list(func.params), attrs=func.attrs, private=True):
        with bb.dataflow():
            for binding in body.blocks[0].bindings:
                blocker.binding(binding)
            out = bb.emit_output(blocker.arg(body.body))
        bb.emit_func_output(out)
    if not blocker.converted:
        return mod, 0
    import tvm

    built = bb.get()
    rewritten = built[scratch]
    for key, value in (func.attrs or {}).items():
        rewritten = rewritten.with_attr(key, value)
    functions = {gv: f for gv, f in built.functions_items() if gv.name_hint != scratch}
    functions[mod.get_global_var(func_name)] = rewritten
    new_mod = tvm.IRModule(functions, attrs=mod.attrs)
    return relax.transform.DeadCodeElimination()(new_mod), blocker.converted


def apply(mod: Any, target: Any, conv_layout: str = "NCHW", winograd: bool = True) -> tuple[Any, int]:
    """The model in the convolution layout compile and tune both use: NCHW as imported, or NCHWc blocked for
    the target's vector width (with Winograd 3x3 convolutions unless `winograd` is False: --winograd=no).
    Returns (module, convolutions converted)."""
    import tvm
    from tvm import relax

    if conv_layout not in LAYOUTS:
        raise ValueError(f"unknown convolution layout {conv_layout!r}: choose one of {', '.join(LAYOUTS)}")
    if conv_layout == "NCHW":
        return mod, 0
    with target, tvm.transform.PassContext(opt_level=3):
        mod = relax.transform.DecomposeOpsForInference()(mod)
        mod = relax.transform.FoldConstant()(mod)  # bias reshapes -> constants the rewrite can re-lay out
        return to_blocked(mod, block_for(conv_layout, 32 * default_schedule.vector_lanes(target)), winograd=winograd)
