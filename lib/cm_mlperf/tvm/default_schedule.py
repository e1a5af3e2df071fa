"""A simple CPU schedule for the TIR functions that no tuning record covers: multi-core and vector loops.

Relax legalises each operator into naive TIR: one core, scalar loops. MetaScheduleApplyDatabase replaces the
functions that have a tuning record (and marks them `tirx.is_scheduled`); everything else, and every function of an
untuned build, would stay naive. `default_schedule_pass()` gives those functions, block by block:

- element-wise producers inlined into element-wise consumers (bias add -> relu -> residual add become one loop),
  plain copies inlined everywhere; padding before a reduction stays separate, so the convolution's inner loop
  stays free of boundary tests;
- the innermost spatial loop split by the vector width (16 float32 with AVX-512, 8 with AVX2, 4 with SSE) and
  vectorised, when every access along it is contiguous (a stride-2 convolution's input is not: left to LLVM);
- in a reduction block (convolution, matmul, pooling) a register tile: the vector loop, and up to MAX_ROWS
  unrolled rows of it from the next spatial loop, moved inside the reduction loops, its accumulators in a local
  buffer written out once per tile with the element-wise epilogue folded into that write-out (MetaSchedule's
  cache_write + reverse_compute_inline); a contiguous axis too short for a vector becomes unrolled scalar
  accumulators instead of one serial chain;
- the fewest leading spatial loops that give each thread several chunks fused into one `parallel` loop, when
  the block has enough work to share.

A function whose schedule fails in any way is left exactly as it was: this pass never breaks a build.

    seq = [..., relax.transform.MetaScheduleApplyDatabase(), default_schedule_pass(), default_build_pipeline()]
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

SCHEDULED_ATTR = "tirx.is_scheduled"  # what MetaScheduleApplyDatabase and dlight set on the functions they schedule
MIN_PARALLEL_WORK = 1 << 14  # loop iterations (all loops of a block): below this a parallel launch costs more
MIN_VECTOR_LANES = 4  # narrower vectors are not worth a split
MAX_ROWS = 8  # vector accumulators per reduction tile (of 16-32 registers)
PARALLEL_CHUNKS_PER_THREAD = 8  # parallel loop extent aimed at: enough chunks to balance the threads


@dataclass(frozen=True)
class Knobs:
    """The few choices of this schedule, fixed by default; cm_mlperf.tvm.refine times a handful per kernel."""

    rows: int = MAX_ROWS  # at most this many unrolled rows of vector accumulators per reduction tile
    chunks: int = PARALLEL_CHUNKS_PER_THREAD  # parallel chunks aimed at per thread
    inline: bool = True  # inline element-wise producers first
    cols: int = 1  # unrolled columns of the tile along an axis the rows' input does not depend on (output channels)

    def label(self) -> str:
        cols = f"-cols{self.cols}" if self.cols > 1 else ""
        return f"rows{self.rows}{cols}-chunks{self.chunks}{'' if self.inline else '-noinline'}"


DEFAULT_KNOBS = Knobs()


def vector_lanes(target: Any, dtype_bits: int = 32) -> int:
    """Elements per vector register for the target: 16 float32 with AVX-512, 8 with AVX/AVX2, else 4."""
    from tvm.target import codegen

    features: set[str] = set()
    try:
        features = set(codegen.llvm_get_cpu_features(target))
    except Exception:  # noqa: BLE001  (a target LLVM cannot describe: assume the narrowest)
        pass
    if "avx512f" in features:
        bits = 512
    elif "avx" in features or "avx2" in features:
        bits = 256
    else:
        bits = 128
    return max(1, bits // dtype_bits)


def num_threads(target: Any) -> int:
    """The target's `num-cores` (the threads the runtime will use), 1 when it does not say."""
    try:
        return max(1, int(target.attrs.get("num-cores", 1) or 1))
    except (AttributeError, TypeError, ValueError):
        return 1


def is_scheduled(func: Any) -> bool:
    attrs = getattr(func, "attrs", None)
    return bool(attrs is not None and SCHEDULED_ATTR in attrs and int(attrs[SCHEDULED_ATTR]))


# ----------------------------------------------------------------------------- loop analysis

def _int_extent(sch: Any, loop: Any) -> int | None:
    from tvm import tirx

    loop_stmt = sch.get(loop)
    if not isinstance(loop_stmt.min, tirx.IntImm) or int(loop_stmt.min) != 0:
        return None
    return int(loop_stmt.extent) if isinstance(loop_stmt.extent, tirx.IntImm) else None


def _loop_kinds(sch: Any, block: Any, loops: list[Any]) -> list[str] | None:
    """'S' (bound to one data-parallel block iterator), 'R' (one reduction iterator) or 'O' (anything else) per
    loop; None when the block does not sit right under its innermost loop (not a plain loop nest)."""
    from tvm import s_tir, tirx

    realize = sch.get(loops[-1]).body
    if not isinstance(realize, s_tir.SBlockRealize) or not realize.block.same_as(sch.get(block)):
        return None
    kind_of: dict[Any, str] = {}
    uses: dict[Any, int] = {}
    for iv, value in zip(realize.block.iter_vars, realize.iter_values, strict=True):
        if isinstance(value, tirx.Var):
            kind_of[value] = {tirx.IterVar.DataPar: "S", tirx.IterVar.CommReduce: "R"}.get(int(iv.iter_type), "O")
            uses[value] = uses.get(value, 0) + 1
        else:  # a compound binding (an earlier split or fuse): not a loop we can reason about simply
            for v in tirx.analysis.undefined_vars(value):
                uses[v] = uses.get(v, 0) + 2
    kinds = []
    for loop in loops:
        var = sch.get(loop).loop_var
        kinds.append(kind_of.get(var, "O") if uses.get(var, 0) == 1 else "O")
    return kinds


def _vector_factor(extent: int, lanes: int) -> int:
    """The largest power of two <= lanes that divides extent (at least MIN_VECTOR_LANES), else 0."""
    factor = lanes
    while factor >= MIN_VECTOR_LANES:
        if extent % factor == 0:
            return factor
        factor //= 2
    return 0


def _is_spatial_only(sch: Any, block: Any) -> bool:
    from tvm import tirx

    return all(int(iv.iter_type) == tirx.IterVar.DataPar for iv in sch.get(block).iter_vars)


# ----------------------------------------------------------------------------- the schedule

def _is_copy(sch: Any, block: Any) -> bool:
    """A block that only copies (a padding of zero width): nothing is lost by reading its source directly."""
    from tvm import ir, tirx

    body = sch.get(block).body
    return isinstance(body, tirx.BufferStore) and isinstance(body.value, ir.TensorLoad)


def _inline_elementwise(sch: Any, root: Any) -> None:
    """compute_inline every element-wise block whose consumers are all element-wise, and every plain copy: fewer
    passes over memory. Padding and other producers of a reduction stay (inlined, they would put a boundary test
    in its inner loop)."""
    from tvm import s_tir

    failed: set[str] = set()
    progress = True
    while progress:
        progress = False
        outputs = {sch.get(b).name_hint for b in sch.get_output_blocks(root)}
        for block in sch.get_child_blocks(root):
            name = sch.get(block).name_hint
            if name in failed or name in outputs or not _is_spatial_only(sch, block):
                continue
            consumers = sch.get_consumers(block)
            if not consumers or not (_is_copy(sch, block) or all(_is_spatial_only(sch, c) for c in consumers)):
                continue
            try:
                sch.compute_inline(block)
            except s_tir.ScheduleError:  # checked before the IR changes: the schedule is still whole
                failed.add(name)
                continue
            progress = True
            break


def _contiguous_in(sch: Any, block: Any, var: Any) -> bool:
    """Whether every buffer access of the block moves by 0 or 1 element along its last axis when `var` (a block
    iterator) steps, and not at all along the others: then vectors are plain loads and stores. A strided or
    gathered access (a stride-2 convolution's input) would be scalarised, slower than the naive loop."""
    from tvm import sym

    stmt = sch.get(block)
    for region in list(stmt.reads) + list(stmt.writes):
        dims = list(region.region)
        for i, rng in enumerate(dims):
            if int(getattr(rng.extent, "value", 0)) != 1:
                return False
            coef = sym.detect_linear_equation(rng.min, [var])
            if len(coef) != 2 or not hasattr(coef[0], "value"):
                return False
            step = int(coef[0].value)
            if step != 0 and (i != len(dims) - 1 or step != 1):
                return False
    return True


def _parallel(sch: Any, loops: list[Any], threads: int, chunks: int = PARALLEL_CHUNKS_PER_THREAD) -> bool:
    """Fuse the fewest outer loops that give every thread several chunks, and run them in parallel. Fusing more
    would only add a division per iteration (to recover the indices) and nothing to share."""
    want = threads * chunks
    n, extent = 0, 1
    while n < len(loops) and extent < want:
        extent *= _int_extent(sch, loops[n]) or 1
        n += 1
    if threads < 2 or extent < 2 * threads:
        return False
    sch.parallel(sch.fuse(*loops[:n]) if n > 1 else loops[0])
    return True


def _unroll_factor(extent: int, lanes: int) -> int:
    """The largest divisor of extent in [2, lanes]: that many independent accumulators, else 0."""
    return next((d for d in range(min(extent, lanes), 1, -1) if extent % d == 0), 0)


def _schedule_block(sch: Any, block: Any, lanes: int, threads: int, knobs: Knobs = DEFAULT_KNOBS) -> bool:
    """Vectorise and parallelise one root-level loop nest; True when it changed anything."""
    from tvm import s_tir, tirx

    loops = sch.get_loops(block)
    if not loops or len(sch.get_child_blocks(loops[0])) != 1:
        return False  # the loop nest is shared with other blocks: leave it
    extents = [_int_extent(sch, lp) for lp in loops]
    kinds = _loop_kinds(sch, block, loops)
    if kinds is None or any(e is None for e in extents) or any(
            sch.get(lp).kind != tirx.ForKind.SERIAL or sch.get(lp).annotations for lp in loops):
        return False  # dynamic shapes, odd bindings, or loops already annotated
    n_lead = len(kinds) - len("".join(kinds).lstrip("S"))
    if n_lead == 0 or any(k != "R" for k in kinds[n_lead:]):
        return False
    reduction = list(loops[n_lead:])
    spatial = list(loops[:n_lead])
    spatial_vars = [_block_var_of(sch, block, lp) for lp in spatial]  # before any split makes bindings compound
    last = extents[n_lead - 1]

    # the tile: the innermost spatial loop's last `size` iterations, as one vector when the accesses along it are
    # contiguous, else (reductions only) as unrolled independent accumulators instead of one serial chain
    contiguous = _contiguous_in(sch, block, _block_var_of(sch, block, spatial[-1]))
    size = _vector_factor(last, lanes) if contiguous else 0
    how = "vector" if size else ""
    if contiguous and not size and reduction:
        size = _unroll_factor(last, lanes)
        how = "unroll" if size else ""
    tile = None
    if how and size:
        if last == size:
            tile = spatial.pop()
        else:
            spatial[-1], tile = sch.split(spatial[-1], factors=[None, size])

    def finish(loop: Any) -> None:
        (sch.vectorize if how == "vector" else sch.unroll)(loop)

    rows = cols = None  # a reduction's vector tile gets rows: independent accumulators, each weight load used more
    if reduction and how == "vector":
        at = next((i for i in range(len(spatial) - 1, -1, -1) if (_int_extent(sch, spatial[i]) or 1) > 1), None)
        u = _unroll_factor(_int_extent(sch, spatial[at]), knobs.rows) if at is not None else 0
        # and columns: an axis the rows' input does not move along (a convolution's output-channel blocks), so
        # each input value loaded feeds cols x rows accumulators
        at_cols = _cols_axis(sch, block, spatial, spatial_vars, at, knobs.cols) if u else None
        for i in sorted((j for j in (at, at_cols) if j is not None), reverse=True):  # the later index first
            width = u if i == at else knobs.cols
            if _int_extent(sch, spatial[i]) == width:
                unrolled = spatial.pop(i)
            else:
                spatial[i], unrolled = sch.split(spatial[i], factors=[None, width])
            if i == at:
                rows = unrolled
            else:
                cols = unrolled

    if reduction:
        if tile is not None:  # spatial..., reduction..., [cols], [rows], tile: a reduction step updates the tile
            sch.reorder(*reduction, *(lp for lp in (cols, rows) if lp is not None), tile)
        if spatial:  # the accumulators in a local buffer (registers), written out once per tile; an element-wise
            # consumer is folded into that write-out
            out = sch.cache_write(block, 0, "local")
            consumers = sch.get_consumers(out)
            if len(consumers) == 1 and _is_spatial_only(sch, consumers[0]):
                try:
                    sch.reverse_compute_inline(consumers[0])
                except s_tir.ScheduleError:  # checked before the IR changes
                    pass
            sch.reverse_compute_at(out, spatial[-1], preserve_unit_loops=True)
            if tile is not None:
                wb = sch.get_loops(out)[-1]  # the write-out covers the rows too when they are on the same axis
                n = _int_extent(sch, wb) or 0
                if how == "vector" and n > size and n % size == 0:
                    wb = sch.split(wb, factors=[None, size])[1]
                finish(wb)
            for unrolled in (rows, cols):
                if unrolled is not None:
                    sch.unroll(unrolled)

    changed = tile is not None or bool(reduction and spatial)
    if spatial and math.prod(extents) >= MIN_PARALLEL_WORK:
        changed |= _parallel(sch, spatial, threads, knobs.chunks)

    if tile is not None:
        finish(tile)  # before decompose_reduction: vectorize wants a block with its init
    if reduction and (tile is not None or spatial):  # the init: once per tile, not a test in the reduction loops
        outer = len(sch.get_loops(block)) - len(reduction) - (tile is not None) - (rows is not None) - (
            cols is not None)
        init_loops = sch.get_loops(sch.decompose_reduction(block, reduction[0]))[outer:]
        if tile is not None and init_loops and sch.get(init_loops[-1]).kind == tirx.ForKind.SERIAL:
            finish(init_loops[-1])
    return changed


def _cols_axis(sch: Any, block: Any, spatial: list[Any], spatial_vars: list[Any], rows_at: int,
               cols: int) -> int | None:
    """The innermost spatial loop (not the rows') that some input read along the rows does not depend on, with an
    extent `cols` divides; None when cols is 1 or there is none (a depthwise convolution reads every axis)."""
    from tvm import sym

    if cols < 2:
        return None

    def moves(rng_min: Any, var: Any) -> bool:
        coef = sym.detect_linear_equation(rng_min, [var])
        return len(coef) != 2 or not hasattr(coef[0], "value") or int(coef[0].value) != 0

    reads = [list(region.region) for region in sch.get(block).reads]
    row_reads = [dims for dims in reads if any(moves(r.min, spatial_vars[rows_at]) for r in dims)]
    for i in range(len(spatial) - 1, -1, -1):
        extent = _int_extent(sch, spatial[i]) or 1
        if i == rows_at or extent < cols or extent % cols:
            continue
        if any(not any(moves(r.min, spatial_vars[i]) for r in dims) for dims in row_reads):
            return i
    return None


def _block_var_of(sch: Any, block: Any, loop: Any) -> Any:
    """The block iterator bound to `loop` (the loop kinds were checked: exactly one)."""
    realize = sch.get(sch.get_loops(block)[-1]).body
    loop_var = sch.get(loop).loop_var
    for iv, value in zip(realize.block.iter_vars, realize.iter_values, strict=True):
        if value.same_as(loop_var):
            return iv.var
    raise ValueError("loop not bound to a block iterator")


def _schedule_blocks(sch: Any, root: Any, lanes: int, threads: int, knobs: Knobs = DEFAULT_KNOBS) -> bool:
    """_schedule_block on each block under the root, once; a block may fold its consumer in (the list changes)."""
    done: set[str] = set()
    changed = False
    while True:
        todo = [b for b in sch.get_child_blocks(root) if sch.get(b).name_hint not in done]
        if not todo:
            return changed
        done.add(sch.get(todo[0]).name_hint)
        changed |= _schedule_block(sch, todo[0], lanes, threads, knobs)


def schedule(func: Any, target: Any, knobs: Knobs = DEFAULT_KNOBS) -> Any | None:
    """A tvm.s_tir.Schedule of the function with parallel and vector loops (its trace can be stored as a tuning
    record), or None when nothing applies or anything fails."""
    from tvm import s_tir

    from cm_mlperf.tvm import winograd

    lanes = vector_lanes(target)
    threads = num_threads(target)
    for inline in ((True, False) if knobs.inline else (False,)):  # without inlining, should it lead to a dead end
        try:
            sch = s_tir.Schedule(func)
            root = sch.get_sblock("root")
            if winograd.is_winograd(sch):  # its own nests: transforms unrolled by case, the product tiled
                return sch if winograd.schedule(sch, lanes, threads, knobs) else None
            if inline:
                _inline_elementwise(sch, root)
            if _schedule_blocks(sch, root, lanes, threads, knobs):
                return sch
            if not inline:
                return None
        except Exception:  # noqa: BLE001  (ScheduleError, TVMError...: leave the function as it was)
            continue
    return None


def schedule_func(func: Any, target: Any, knobs: Knobs = DEFAULT_KNOBS) -> Any | None:
    """The function with parallel and vector loops, or None when nothing applies or anything fails."""
    sch = schedule(func, target, knobs)
    return None if sch is None else sch.mod["main"].with_attr(SCHEDULED_ATTR, True)


def apply(mod: Any, target: Any | None = None) -> Any:
    """A new IRModule whose unscheduled TIR functions carry the default schedule (see the module doc)."""
    from tvm import tirx
    from tvm.target import Target

    target = target or Target.current(allow_none=True)
    if target is None:
        return mod
    updates = {}
    for gvar, func in mod.functions_items():
        if isinstance(func, tirx.PrimFunc) and not is_scheduled(func):
            new = schedule_func(func, func.attrs.get("target", target) if func.attrs else target)
            if new is not None:
                updates[gvar] = new
    if not updates:
        return mod
    mod = mod.clone()  # a pass must not change the module it was given
    for gvar, func in updates.items():
        mod.update_func(gvar, func)
    return mod


def default_schedule_pass(target: Any | None = None) -> Any:
    """The module pass: `apply` with this target (else the target of the current context when the pass runs)."""
    import tvm

    @tvm.transform.module_pass(opt_level=0, name="DefaultCPUSchedule")
    def _pass(mod: Any, _ctx: Any) -> Any:
        return apply(mod, target)

    return _pass
