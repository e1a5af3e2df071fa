"""Winograd convolution F(m x m, 3 x 3) on blocked (NCHW[b]c) tensors: fewer multiplications for 3x3 stride-1
convolutions, the bulk of ResNet-50's arithmetic.

onnxruntime's CPU kernels compute 3x3 convolutions directly (an NCHWc direct kernel or im2col + SGEMM), at close
to the machine's fp32 peak; the only way past them in fp32 is less arithmetic. Winograd's minimal filtering
(Lavin & Gray, arXiv:1509.09308) computes each m x m output tile from an (m+2) x (m+2) input tile with
(m+2)^2 multiplications per channel pair instead of 9 m^2: 2.25x fewer for m = 2, 4x for m = 4. The convolution
becomes three loop nests in one function:

- input transform: V[e, n, ci, tile, c] = sum_xy B[x, e] d[ci, tile + x, tile + y, c] B[y, n];
- (m+2)^2 independent matrix products over the input channels, laid out like a 1x1 NCHWc convolution (so the
  default schedule's register tiles and MetaSchedule's search treat them alike):
  M[e, n, ko, tile, k] = sum_{ci, c} V[e, n, ci, tile, c] U[e, n, ko, ci, c, k];
- output transform: Y[ko, h, w, k] = sum_en A[e, h % m] M[e, n, ko, tile(h, w), k] A[n, w % m], with the
  layer's bias, normalisation and activation fused after it as after any convolution.

The filter transform U = G g G^T is done once at compile time (numpy). The transform matrices come from TVM's own
Cook-Toom construction with its accuracy-tuned interpolation points; fp32 error stays around 1e-6 relative for
m = 2 and 1e-5 for m = 4, far inside compile-tvm-model's check against onnxruntime.
"""
from __future__ import annotations

from typing import Any

import numpy as np

KERNEL = 3
TILE = 2  # m: output tile F(2x2, 3x3). F(4x4, 3x3) needs 4x fewer products but its dense 6x6 transforms cost more
MIN_CHANNELS = 32  # below this the transforms outweigh the product they save
FUNC_NAME = "conv2d_winograd_NCHWc"  # the TIR function's name (fused ones: fused_conv2d_winograd_NCHWc..._relu)


def is_winograd_task(task_name: str) -> bool:
    """Whether a tuning task is one of these convolutions. MetaSchedule's generic search does badly on them (a
    ResNet block's: 124 us after 12 trials, our schedule 24 us) and slowly (~40 s per evolution step over their
    unrolled transforms), so tune-tvm-model leaves them to refine and the default schedule."""
    return FUNC_NAME in task_name


def applies(weight_shape: tuple[int, ...], in_channels: int, strides: tuple[int, ...], padding: tuple[int, ...],
            dilation: tuple[int, ...], block: int) -> bool:
    """Whether a groups-1 conv2d (OIHW weights) is one this module computes: 3x3, stride 1, dilation 1, padding 1
    on every side, input channels in whole blocks and at least MIN_CHANNELS."""
    return (tuple(weight_shape[2:]) == (KERNEL, KERNEL) and tuple(strides) == (1, 1) and tuple(dilation) == (1, 1)
            and tuple(padding) == (1, 1, 1, 1) and in_channels % block == 0 and in_channels >= MIN_CHANNELS)


def transform_matrices(m: int, r: int = KERNEL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A, B, G) of F(m, r): A (m+r-1, m), B (m+r-1, m+r-1), G (m+r-1, r), as TOPI builds them."""
    from tvm.topi.nn import winograd_util

    points = winograd_util._interpolation_points(m + r - 2)  # noqa: SLF001 - TVM's accuracy-tuned points
    a, b, g = winograd_util._cook_toom_convolution(points, m, r)  # noqa: SLF001
    return np.asarray(a, np.float64), np.asarray(b, np.float64), np.asarray(g, np.float64)


def transform_weight(weight: np.ndarray, m: int, in_block: int, out_block: int) -> np.ndarray:
    """OIHW 3x3 weights -> U (alpha, alpha, O/ob, I/ib, ib, ob), channels zero-padded to whole blocks."""
    o, i, kh, kw = weight.shape
    if (kh, kw) != (KERNEL, KERNEL):
        raise ValueError(f"Winograd F({m},3) needs 3x3 weights, not {kh}x{kw}")
    _, _, g = transform_matrices(m)
    op, ip = -(-o // out_block) * out_block, -(-i // in_block) * in_block
    padded = np.zeros((op, ip, KERNEL, KERNEL), np.float64)
    padded[:o, :i] = weight
    u = np.einsum("ex,oixy,ny->enoi", g, padded, g)  # (alpha, alpha, O, I)
    alpha = m + KERNEL - 1
    u = u.reshape(alpha, alpha, op // out_block, out_block, ip // in_block, in_block).transpose(0, 1, 2, 4, 5, 3)
    return np.ascontiguousarray(u.astype(weight.dtype))


def _sparse_sum(coefficients: dict[tuple[int, int], float], load: Any) -> Any:
    """sum of c * load(x, y) over the non-zero coefficients, +-1 as plain adds and subtractions."""
    total = None
    for (x, y), c in coefficients.items():
        term = load(x, y)
        if c == -1.0:
            total = -term if total is None else total - term
            continue
        if c != 1.0:
            term = term * float(c)
        total = term if total is None else total + term
    return total


def _two_sided(matrix: np.ndarray, load: Any) -> dict[tuple[int, int], Any]:
    """matrix^T X matrix written out per output position: {(p, q): sum_xy matrix[x, p] matrix[y, q] load(x, y)},
    keeping only the non-zero products (the input transform with B, the output transform with A)."""
    rows, cols = matrix.shape
    return {(p, q): _sparse_sum({(x, y): matrix[x, p] * matrix[y, q] for x in range(rows) for y in range(rows)
                                 if matrix[x, p] * matrix[y, q] != 0}, load)
            for p in range(cols) for q in range(cols)}


def _by_case(cases: dict[tuple[int, int], Any], i: Any, j: Any) -> Any:
    """The expression of case (i, j): a chain of if_then_else that a schedule unrolling i and j folds away."""
    from tvm import tirx

    items = list(cases.items())
    expr = items[-1][1]
    for (ci, cj), value in reversed(items[:-1]):
        expr = tirx.if_then_else(tirx.all(i == ci, j == cj), value, expr)
    return expr


def conv3x3_nchwc(data: Any, u: Any, m: int) -> Any:
    """3x3, stride 1, padding 1 convolution of (N, C/ib, H, W, ib) data with transformed weights u
    (alpha, alpha, K/ob, C/ib, ib, ob); returns (N, K/ob, H, W, ob).

    The transforms are written out term by term from the (mostly 0 and +-1) matrices, one expression per
    (row, column) case of the tile, chosen by conditions a schedule folds away by unrolling those two loops
    (`schedule` below)."""
    from tvm import te, topi

    a_mat, b_mat, _ = transform_matrices(m)
    n_, cb, h, w, ib = (int(x) for x in data.shape)
    alpha, _, kb, _, _, ob = (int(x) for x in u.shape)
    nh, nw = -(-h // m), -(-w // m)
    padded = topi.nn.pad(data, (0, 0, 1, 1, 0), (0, 0, nh * m + 1 - h, nw * m + 1 - w, 0), name="data_pad")

    def input_tile(e: Any, f: Any, c: Any, i: Any, th: Any, tw: Any, ci: Any) -> Any:
        return _by_case(_two_sided(b_mat, lambda x, y: padded[i, c, th * m + x, tw * m + y, ci]), e, f)

    v = te.compute((alpha, alpha, cb, n_, nh, nw, ib), input_tile, name="winograd_input")
    co = te.reduce_axis((0, cb), name="co")
    ci_ = te.reduce_axis((0, ib), name="ci")
    mm = te.compute(
        (alpha, alpha, kb, n_, nh, nw, ob),
        lambda e, f, k, i, th, tw, kc: te.sum(v[e, f, co, i, th, tw, ci_] * u[e, f, k, co, ci_, kc], axis=[co, ci_]),
        name="winograd_product")

    def output_point(i: Any, k: Any, yy: Any, xx: Any, kc: Any) -> Any:
        return _by_case(_two_sided(a_mat, lambda e, f: mm[e, f, k, i, yy // m, xx // m, kc]), yy % m, xx % m)

    return te.compute((n_, kb, h, w, ob), output_point, name="winograd_output")


# ----------------------------------------------------------------------------- the schedule

BLOCKS = ("winograd_input", "winograd_product", "winograd_output")


def is_winograd(sch: Any) -> bool:
    """Whether the function is (or contains, fused with its epilogue) a conv3x3_nchwc."""
    return all(_find(sch, name) is not None for name in BLOCKS)


def _find(sch: Any, name: str) -> Any:
    try:
        return sch.get_sblock(name)
    except Exception:  # noqa: BLE001 - no such block
        return None


def _vector_inner(sch: Any, loop: Any, lanes: int) -> None:
    """Vectorise a channel-block loop (split when the block is wider than a vector)."""
    from cm_mlperf.tvm import default_schedule

    extent = default_schedule._int_extent(sch, loop) or 0  # noqa: SLF001
    if extent > lanes and extent % lanes == 0:
        loop = sch.split(loop, factors=[None, lanes])[1]
    sch.vectorize(loop)


def schedule(sch: Any, lanes: int, threads: int, knobs: Any) -> bool:
    """Schedule the three nests of a conv3x3_nchwc (and its fused epilogue) in place; True when done.

    The transforms: tile loops outside, the (alpha x alpha) or (m x m) case loops unrolled inside so each case's
    expression is a constant choice, the channel block as the vector. The product: the default schedule's
    register tiles (knobs), like a 1x1 convolution."""
    from cm_mlperf.tvm import default_schedule as ds

    if not is_winograd(sch):
        return False
    alpha = ds._int_extent(sch, sch.get_loops(sch.get_sblock("winograd_product"))[0])  # noqa: SLF001
    m = alpha - KERNEL + 1
    pad = _find(sch, "data_pad")
    if pad is not None:
        ds._schedule_block(sch, pad, lanes, threads, knobs)  # noqa: SLF001 - vector copy

    e, f, c, i, th, tw, ci = sch.get_loops(sch.get_sblock("winograd_input"))
    sch.reorder(c, i, th, tw, e, f, ci)
    sch.unroll(e)
    sch.unroll(f)
    _vector_inner(sch, ci, lanes)
    ds._parallel(sch, [c, i, th, tw], threads, knobs.chunks)  # noqa: SLF001

    ds._schedule_block(sch, sch.get_sblock("winograd_product"), lanes, threads, knobs)  # noqa: SLF001

    out = sch.get_sblock("winograd_output")
    while True:  # the fused epilogue (bias, normalisation, activation, residual) into the transform's write
        consumers = sch.get_consumers(out)
        if len(consumers) != 1 or not ds._is_spatial_only(sch, consumers[0]):  # noqa: SLF001
            break
        sch.reverse_compute_inline(consumers[0])
    i_, k, yy, xx, kc = sch.get_loops(out)
    yo, yi = sch.split(yy, factors=[None, m])
    xo, xi = sch.split(xx, factors=[None, m])
    sch.reorder(i_, k, yo, xo, yi, xi, kc)
    sch.unroll(yi)
    sch.unroll(xi)
    _vector_inner(sch, kc, lanes)
    ds._parallel(sch, [i_, k, yo, xo], threads, knobs.chunks)  # noqa: SLF001
    return True

