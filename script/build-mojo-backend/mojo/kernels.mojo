# The operators of the image-classification networks, in NHWC with channels padded to a multiple of 16
# (the planner pads weights and biases with zeros, so padded channels stay exactly 0 through every layer).
#
# Every kernel computes a slice [begin, end) of its "work items" so the thread pool (pool.mojo) can split one
# operator across cores with no shared writes: items are output rows x channel blocks (convolutions, pooling),
# flat vector ranges (Add, activations) or batch rows (Softmax).
from std.math import exp
from std.memory import Pointer
from std.sys import simd_width_of
from std.utils import StaticTuple

comptime VW = simd_width_of[DType.float32]()
comptime Vec = SIMD[DType.float32, VW]
comptime FPtr = Pointer[Float32, MutUntrackedOrigin]
# register tile of the dense convolution: R output pixels x NV vectors of output channels
comptime NV = 4 if VW >= 16 else 2
comptime R = 6 if VW >= 16 else 4
# bytes of one output-channel block's weights above which the dense convolution walks rows first
comptime BIG_WEIGHT_BLOCK = 65536
comptime ACT_NONE = 0
comptime ACT_RELU = 1
comptime ACT_CLIP = 2


@always_inline
def fptr(addr: Int) -> FPtr:
    return FPtr(unsafe_from_address=addr)


@always_inline
def activate(v: Vec, act: Int, lo: Float32, hi: Float32) -> Vec:
    if act == ACT_RELU:
        return max(v, Vec(0))
    if act == ACT_CLIP:
        return min(max(v, Vec(lo)), Vec(hi))
    return v


@always_inline
def split(n: Int, tid: Int, nthreads: Int) -> Tuple[Int, Int]:
    """The contiguous share [begin, end) of n items that thread tid computes."""
    var base = n // nthreads
    var extra = n % nthreads
    var begin = tid * base + min(tid, extra)
    var size = base + (1 if tid < extra else 0)
    return (begin, begin + size)


# ------------------------------------------------------------------------------------------ dense convolution


@always_inline
def _conv_tile[
    RT: Int, NVT: Int
](
    rows: StaticTuple[Int, R],
    w: FPtr,
    y: FPtr,
    c_in: Int,
    co_pad: Int,
    co0: Int,
    tap: Int,
    mut acc: StaticTuple[Vec, R * NV],
):
    """acc[r][v] += sum_ci x_r[ci] * w[tap, ci, co0 + v*VW : ...] for RT pixels, NVT vectors."""
    var wp = w.unsafe_offset(tap * c_in * co_pad + co0)
    for ci in range(c_in):
        comptime for v in range(NVT):
            var wv = wp.unsafe_load[width=VW](v * VW)
            comptime for r in range(RT):
                var a = Vec(fptr(rows[r]).unsafe_load(ci))
                acc[r * NV + v] = a.fma(wv, acc[r * NV + v])
        wp = wp.unsafe_offset(co_pad)


@always_inline
def _conv_pixels[
    RT: Int, NVT: Int
](
    x: FPtr, w: FPtr, b: FPtr, y: FPtr, zeros: Int,
    n: Int, oh: Int, ow0: Int, co0: Int,
    h: Int, wd: Int, c_in: Int, cs_in: Int, ow_n: Int, co_pad: Int,
    kh_n: Int, kw_n: Int, sh: Int, sw: Int, pt: Int, pl: Int, oh_n: Int,
    act: Int, lo: Float32, hi: Float32,
):
    var x_addr = Int(x)
    var acc = StaticTuple[Vec, R * NV](fill=Vec(0))
    comptime for v in range(NVT):
        var bv = b.unsafe_load[width=VW](co0 + v * VW)
        comptime for r in range(RT):
            acc[r * NV + v] = bv
    var rows = StaticTuple[Int, R](fill=zeros)
    for kh in range(kh_n):
        var ih = oh * sh - pt + kh
        var row_ok = ih >= 0 and ih < h
        for kw in range(kw_n):
            comptime for r in range(RT):
                var iw = (ow0 + r) * sw - pl + kw
                if row_ok and iw >= 0 and iw < wd:
                    rows[r] = x_addr + ((n * h + ih) * wd + iw) * cs_in * 4
                else:
                    rows[r] = zeros  # a padding tap reads a row of zeros: no branch in the inner loop
            _conv_tile[RT, NVT](rows, w, y, c_in, co_pad, co0, kh * kw_n + kw, acc)
    var yp = y.unsafe_offset(((n * oh_n + oh) * ow_n + ow0) * co_pad + co0)
    comptime for r in range(RT):
        comptime for v in range(NVT):
            (yp.unsafe_offset(r * co_pad)).unsafe_store(v * VW, activate(acc[r * NV + v], act, lo, hi))


def conv2d(
    x: FPtr, w: FPtr, b: FPtr, y: FPtr, zeros: Int, batch: Int,
    h: Int, wd: Int, c_in: Int, cs_in: Int, oh_n: Int, ow_n: Int, co_pad: Int,
    kh_n: Int, kw_n: Int, sh: Int, sw: Int, pt: Int, pl: Int,
    act: Int, lo: Float32, hi: Float32, tid: Int, nthreads: Int,
):
    """Dense (group=1) convolution, weights [KH, KW, C_in, CO_pad]. Items: output rows x blocks of NV vectors
    of output channels. Small weight blocks: blocks fastest (one input row feeds every block from L1); large
    ones (ResNet's 256-2048 channels): rows fastest, so consecutive items reuse one block's weights from L2."""
    var blocks = (co_pad + NV * VW - 1) // (NV * VW)
    var rows = batch * oh_n
    var rows_fastest = kh_n * kw_n * c_in * NV * VW * 4 > BIG_WEIGHT_BLOCK
    var span = split(rows * blocks, tid, nthreads)
    for item in range(span[0], span[1]):
        var row = item % rows if rows_fastest else item // blocks
        var co0 = (item // rows if rows_fastest else item % blocks) * NV * VW
        var n = row // oh_n
        var oh = row % oh_n
        var full = (co_pad - co0) >= NV * VW
        var ow = 0
        while ow + R <= ow_n:
            if full:
                _conv_pixels[R, NV](x, w, b, y, zeros, n, oh, ow, co0, h, wd, c_in, cs_in, ow_n, co_pad,
                                    kh_n, kw_n, sh, sw, pt, pl, oh_n, act, lo, hi)
            else:
                var c = co0
                while c < co_pad:
                    _conv_pixels[R, 1](x, w, b, y, zeros, n, oh, ow, c, h, wd, c_in, cs_in, ow_n, co_pad,
                                       kh_n, kw_n, sh, sw, pt, pl, oh_n, act, lo, hi)
                    c += VW
            ow += R
        while ow < ow_n:
            if full:
                _conv_pixels[1, NV](x, w, b, y, zeros, n, oh, ow, co0, h, wd, c_in, cs_in, ow_n, co_pad,
                                    kh_n, kw_n, sh, sw, pt, pl, oh_n, act, lo, hi)
            else:
                var c = co0
                while c < co_pad:
                    _conv_pixels[1, 1](x, w, b, y, zeros, n, oh, ow, c, h, wd, c_in, cs_in, ow_n, co_pad,
                                       kh_n, kw_n, sh, sw, pt, pl, oh_n, act, lo, hi)
                    c += VW
            ow += 1


# -------------------------------------------------------------------------------------- depthwise convolution


def depthwise_conv2d(
    x: FPtr, w: FPtr, b: FPtr, y: FPtr, batch: Int,
    h: Int, wd: Int, c_pad: Int, oh_n: Int, ow_n: Int,
    kh_n: Int, kw_n: Int, sh: Int, sw: Int, pt: Int, pl: Int,
    act: Int, lo: Float32, hi: Float32, tid: Int, nthreads: Int,
):
    """Depthwise convolution (group = channels, one filter each), weights [KH, KW, C_pad]. SIMD across channels."""
    var cb = 4 * VW
    var blocks = (c_pad + cb - 1) // cb
    var span = split(batch * oh_n * blocks, tid, nthreads)
    for item in range(span[0], span[1]):
        var row = item // blocks
        var c0 = (item % blocks) * cb
        var c1 = min(c0 + cb, c_pad)
        var n = row // oh_n
        var oh = row % oh_n
        var kh0 = max(0, pt - oh * sh)
        var kh1 = min(kh_n, h + pt - oh * sh)
        var yp = y.unsafe_offset(((n * oh_n + oh) * ow_n) * c_pad)
        for ow in range(ow_n):
            var iw0 = ow * sw - pl
            var kw0 = max(0, -iw0)
            var kw1 = min(kw_n, wd - iw0)
            var c = c0
            if c1 - c0 == cb:
                var a0 = b.unsafe_load[width=VW](c)
                var a1 = b.unsafe_load[width=VW](c + VW)
                var a2 = b.unsafe_load[width=VW](c + 2 * VW)
                var a3 = b.unsafe_load[width=VW](c + 3 * VW)
                for kh in range(kh0, kh1):
                    var ih = oh * sh - pt + kh
                    var xr = x.unsafe_offset(((n * h + ih) * wd) * c_pad)
                    var wr = w.unsafe_offset((kh * kw_n) * c_pad)
                    for kw in range(kw0, kw1):
                        var xp = xr.unsafe_offset((iw0 + kw) * c_pad + c)
                        var wp = wr.unsafe_offset(kw * c_pad + c)
                        a0 = xp.unsafe_load[width=VW](0).fma(wp.unsafe_load[width=VW](0), a0)
                        a1 = xp.unsafe_load[width=VW](VW).fma(wp.unsafe_load[width=VW](VW), a1)
                        a2 = xp.unsafe_load[width=VW](2 * VW).fma(wp.unsafe_load[width=VW](2 * VW), a2)
                        a3 = xp.unsafe_load[width=VW](3 * VW).fma(wp.unsafe_load[width=VW](3 * VW), a3)
                var o = yp.unsafe_offset(ow * c_pad + c)
                o.unsafe_store(0, activate(a0, act, lo, hi))
                o.unsafe_store(VW, activate(a1, act, lo, hi))
                o.unsafe_store(2 * VW, activate(a2, act, lo, hi))
                o.unsafe_store(3 * VW, activate(a3, act, lo, hi))
            else:
                while c < c1:
                    var a = b.unsafe_load[width=VW](c)
                    for kh in range(kh0, kh1):
                        var ih = oh * sh - pt + kh
                        for kw in range(kw0, kw1):
                            var xv = (x.unsafe_offset(((n * h + ih) * wd + iw0 + kw) * c_pad + c)).unsafe_load[width=VW](0)
                            a = xv.fma((w.unsafe_offset((kh * kw_n + kw) * c_pad + c)).unsafe_load[width=VW](0), a)
                    (yp.unsafe_offset(ow * c_pad + c)).unsafe_store(0, activate(a, act, lo, hi))
                    c += VW


# ------------------------------------------------------------------------------------------------ elementwise


def add(x: FPtr, z: FPtr, y: FPtr, size: Int, act: Int, lo: Float32, hi: Float32, tid: Int, nthreads: Int):
    """y = act(x + z) over `size` floats (a multiple of VW: channels are padded)."""
    var span = split(size // VW, tid, nthreads)
    for i in range(span[0] * VW, span[1] * VW, VW):
        y.unsafe_store(i, activate(x.unsafe_load[width=VW](i) + z.unsafe_load[width=VW](i), act, lo, hi))


def activation(x: FPtr, y: FPtr, size: Int, act: Int, lo: Float32, hi: Float32, tid: Int, nthreads: Int):
    """y = act(x): a ReLU or Clip that could not be fused into the operator before it."""
    var span = split(size // VW, tid, nthreads)
    for i in range(span[0] * VW, span[1] * VW, VW):
        y.unsafe_store(i, activate(x.unsafe_load[width=VW](i), act, lo, hi))


# ---------------------------------------------------------------------------------------------------- pooling


def max_pool(
    x: FPtr, y: FPtr, batch: Int, h: Int, wd: Int, c_pad: Int, oh_n: Int, ow_n: Int,
    kh_n: Int, kw_n: Int, sh: Int, sw: Int, pt: Int, pl: Int, tid: Int, nthreads: Int,
):
    """Max pooling; padding taps are skipped (ONNX: they never win)."""
    var span = split(batch * oh_n, tid, nthreads)
    for row in range(span[0], span[1]):
        var n = row // oh_n
        var oh = row % oh_n
        var kh0 = max(0, pt - oh * sh)
        var kh1 = min(kh_n, h + pt - oh * sh)
        for ow in range(ow_n):
            var iw0 = ow * sw - pl
            var kw0 = max(0, -iw0)
            var kw1 = min(kw_n, wd - iw0)
            for c in range(0, c_pad, VW):
                var m = Vec(Float32.MIN)
                for kh in range(kh0, kh1):
                    var ih = oh * sh - pt + kh
                    for kw in range(kw0, kw1):
                        m = max(m, (x.unsafe_offset(((n * h + ih) * wd + iw0 + kw) * c_pad + c)).unsafe_load[width=VW](0))
                (y.unsafe_offset(((n * oh_n + oh) * ow_n + ow) * c_pad + c)).unsafe_store(0, m)


def global_avg_pool(x: FPtr, y: FPtr, batch: Int, hw: Int, c_pad: Int, tid: Int, nthreads: Int):
    """Mean over all pixels: [N, H, W, C] -> [N, C] (also AveragePool whose kernel covers the whole map)."""
    var blocks = c_pad // VW
    var span = split(batch * blocks, tid, nthreads)
    var inv = Float32(1.0) / Float32(hw)
    for item in range(span[0], span[1]):
        var n = item // blocks
        var c = (item % blocks) * VW
        var s = Vec(0)
        var xp = x.unsafe_offset(n * hw * c_pad + c)
        for p in range(hw):
            s += (xp.unsafe_offset(p * c_pad)).unsafe_load[width=VW](0)
        (y.unsafe_offset(n * c_pad + c)).unsafe_store(0, s * inv)


# ------------------------------------------------------------------------------------------------ dense layers


def gemm(
    x: FPtr, w: FPtr, b: FPtr, y: FPtr, batch: Int, k: Int, k_stride: Int, n_pad: Int,
    act: Int, lo: Float32, hi: Float32, tid: Int, nthreads: Int,
):
    """y[N, n_pad] = act(x[N, k] @ w[k, n_pad] + b): Gemm/MatMul with the weight pre-transposed by the planner."""
    var blocks = (n_pad + NV * VW - 1) // (NV * VW)
    var span = split(batch * blocks, tid, nthreads)
    for item in range(span[0], span[1]):
        var n = item // blocks
        var c0 = (item % blocks) * NV * VW
        var c1 = min(c0 + NV * VW, n_pad)
        var xr = x.unsafe_offset(n * k_stride)
        var c = c0
        if c1 - c0 == NV * VW:
            var acc = StaticTuple[Vec, NV](fill=Vec(0))
            comptime for v in range(NV):
                acc[v] = b.unsafe_load[width=VW](c + v * VW)
            var wp = w.unsafe_offset(c)
            for i in range(k):
                var a = Vec(xr.unsafe_load(i))
                comptime for v in range(NV):
                    acc[v] = a.fma(wp.unsafe_load[width=VW](v * VW), acc[v])
                wp = wp.unsafe_offset(n_pad)
            comptime for v in range(NV):
                (y.unsafe_offset(n * n_pad + c + v * VW)).unsafe_store(0, activate(acc[v], act, lo, hi))
        else:
            while c < c1:
                var a = b.unsafe_load[width=VW](c)
                for i in range(k):
                    a = Vec(xr.unsafe_load(i)).fma((w.unsafe_offset(i * n_pad + c)).unsafe_load[width=VW](0), a)
                (y.unsafe_offset(n * n_pad + c)).unsafe_store(0, activate(a, act, lo, hi))
                c += VW


def softmax(x: FPtr, y: FPtr, batch: Int, classes: Int, stride: Int, tid: Int, nthreads: Int):
    """Row-wise softmax over the first `classes` columns of [N, stride]."""
    var span = split(batch, tid, nthreads)
    for n in range(span[0], span[1]):
        var xr = x.unsafe_offset(n * stride)
        var yr = y.unsafe_offset(n * stride)
        var m = Float32.MIN
        for i in range(classes):
            m = max(m, xr.unsafe_load(i))
        var s: Float32 = 0
        for i in range(classes):
            var e = exp(xr.unsafe_load(i) - m)
            yr.unsafe_store(i, e)
            s += e
        var inv = Float32(1.0) / s
        for i in range(classes):
            yr.unsafe_store(i, yr.unsafe_load(i) * inv)
        for i in range(classes, stride):
            yr.unsafe_store(i, Float32(0))


# ------------------------------------------------------------------------------------------------------ layout


def nchw_to_nhwc(x: FPtr, y: FPtr, batch: Int, c: Int, hw: Int, c_pad: Int, tid: Int, nthreads: Int):
    """The graph's NCHW input into our NHWC layout, channels zero-padded to c_pad."""
    var span = split(batch * hw, tid, nthreads)
    for item in range(span[0], span[1]):
        var n = item // hw
        var p = item % hw
        var yp = y.unsafe_offset(item * c_pad)
        for ch in range(c):
            yp.unsafe_store(ch, x.unsafe_load((n * c + ch) * hw + p))
        for ch in range(c, c_pad):
            yp.unsafe_store(ch, Float32(0))


def nhwc_to_nchw(x: FPtr, y: FPtr, batch: Int, c: Int, hw: Int, c_pad: Int, tid: Int, nthreads: Int):
    """Back to NCHW (a graph output that is still a feature map)."""
    var span = split(batch * c, tid, nthreads)
    for item in range(span[0], span[1]):
        var n = item // c
        var ch = item % c
        var yp = y.unsafe_offset(item * hw)
        for p in range(hw):
            yp.unsafe_store(p, x.unsafe_load((n * hw + p) * c_pad + ch))
