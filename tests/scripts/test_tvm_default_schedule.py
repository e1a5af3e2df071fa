"""cm_mlperf.tvm.default_schedule: the parallel + vector schedule for TIR functions without a tuning record.

A tiny generated ONNX model (conv 3x3 + relu + residual add + global average pool + matmul + add, 32x32 input)
compiled untuned and checked against onnxruntime; its scheduled TIR inspected (parallel and vector loops); a
function the pass cannot schedule left exactly as it was; a function with a tuning record (a real MetaSchedule
JSON database written here) not touched. No network; about 15 s."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tvm")
from cm_mlperf.tvm import build as tvm_build  # noqa: E402
from cm_mlperf.tvm import default_schedule as ds  # noqa: E402
from cm_mlperf.tvm import frontend as tvm_frontend  # noqa: E402
from cm_mlperf.tvm import target as tvm_target  # noqa: E402

from tests.conftest import save_onnx

SHAPE = [1, 3, 32, 32]
MCPU = "x86-64"  # every x86-64 CPU runs it (4 float32 lanes); the AVX-512 widths are checked on targets alone


def make_onnx(path: Path, seed: int = 5) -> Path:
    """conv(3->16, 3x3, pad 1) + relu + add(residual constant) + global average pool + flatten + matmul(16->32)
    + add: one fused conv function with an epilogue, a pooling reduction, a matmul, a reshape."""
    from onnx import helper

    rng = np.random.default_rng(seed)
    arrays = {"w": (0.3 * rng.standard_normal((16, 3, 3, 3))).astype(np.float32),
              "b": (0.1 * rng.standard_normal(16)).astype(np.float32),
              "r": (0.1 * rng.standard_normal((1, 16, 32, 32))).astype(np.float32),
              "fc": (0.3 * rng.standard_normal((16, 32))).astype(np.float32),
              "fb": (0.1 * rng.standard_normal(32)).astype(np.float32)}
    n = helper.make_node
    nodes = [n("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             n("Relu", ["c"], ["rl"]),
             n("Add", ["rl", "r"], ["a"]),
             n("GlobalAveragePool", ["a"], ["g"]),
             n("Flatten", ["g"], ["f"], axis=1),
             n("MatMul", ["f", "fc"], ["m"]),
             n("Add", ["m", "fb"], ["logits"])]
    return save_onnx(path, "tinysched", nodes, SHAPE, [1, 32], arrays)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    pytest.importorskip("onnx")
    return make_onnx(tmp_path_factory.mktemp("dsched") / "tinysched.onnx")


@pytest.fixture(scope="module")
def target():
    return tvm_target.make_target(MCPU, 2)


def run_until(mod, target, pipeline, last: str, database_dir=None):
    """The module as the pipeline leaves it right after its pass named `last` (the TIR before lowering)."""
    import tvm

    names = [p.info.name for p in pipeline.passes]
    with target, tvm_build.open_database(database_dir), tvm.transform.PassContext(opt_level=3):
        return tvm.transform.Sequential(list(pipeline.passes[:names.index(last) + 1]))(mod)


def prim_funcs(mod) -> dict:
    import tvm

    return {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}


def write_database(mod, target, folder: Path, task_part: str) -> str:
    """A real MetaSchedule JSON database with one record: the task whose name contains task_part, scheduled by
    a trace that only unrolls its last block's innermost loop (nothing the default schedule would do)."""
    from cm_mlperf.tvm import tune
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    tasks = ms.relax_integration.extract_tasks(tune.tuning_module(mod, target), target)
    task = next(t for t in tasks if task_part in t.task_name)
    folder.mkdir(parents=True, exist_ok=True)
    db = ms.database.JSONDatabase(work_dir=str(folder))
    func = task.dispatched[0]
    sch = s_tir.Schedule(func)
    last = sch.get_child_blocks(sch.get_sblock("root"))[-1]
    sch.unroll(sch.get_loops(last)[-1])
    db.commit_tuning_record(ms.database.TuningRecord(sch.trace, db.commit_workload(func), run_secs=[1e-6],
                                                     target=target))
    return task.task_name


# ----------------------------------------------------------------------------- target facts

def test_vector_lanes_follow_the_cpu():
    assert ds.vector_lanes(tvm_target.make_target("znver4", 2)) == 16  # AVX-512
    assert ds.vector_lanes(tvm_target.make_target("haswell", 2)) == 8  # AVX2
    assert ds.vector_lanes(tvm_target.make_target("x86-64", 2)) == 4  # SSE2
    assert ds.num_threads(tvm_target.make_target("x86-64", 3)) == 3


# ----------------------------------------------------------------------------- untuned build

def test_untuned_build_matches_onnxruntime(tiny, tmp_path):
    pytest.importorskip("onnxruntime")
    from cm_mlperf.tvm.compile import compile_model

    info = compile_model(tiny, batch_size=1, mcpu=MCPU, num_cores=2, input_name="x", out_dir=str(tmp_path),
                         height=32, width=32, verify=True)
    assert info["pipeline"] == "default"
    assert info["verification"]["passed"] and info["verification"]["max_rel_err"] < 1e-4


def test_untuned_functions_get_parallel_and_vector_loops(tiny, target):

    mod = tvm_frontend.import_onnx(str(tiny), "x", SHAPE)
    pipeline = tvm_build.make_pipeline("default", target)
    before = prim_funcs(run_until(mod, target, pipeline, "f_zero_pipeline"))
    after = prim_funcs(run_until(mod, target, pipeline, "DefaultCPUSchedule"))
    assert before.keys() == after.keys()
    assert not any(ds.is_scheduled(f) for f in before.values())  # nothing was scheduled before the pass
    conv = next(name for name in after if "conv2d" in name)
    script = after[conv].script()
    assert "T.parallel" in script and "T.vectorized" in script, script
    assert "T.parallel" not in before[conv].script() and "T.vectorized" not in before[conv].script()
    matmul = next(name for name in after if "matmul" in name)
    assert "T.vectorized" in after[matmul].script()
    pool = next(name for name in after if name.startswith("mean"))
    assert all(ds.is_scheduled(after[n]) for n in (conv, matmul, pool))
    for name, func in after.items():  # what it left alone (a 16-element reshape: nothing to gain) is not marked
        assert ds.is_scheduled(func) == (func.script() != before[name].script()), name


def test_default_pipeline_is_the_tuned_one_minus_the_database(target, tmp_path):
    (tmp_path / "database_workload.json").write_text("")
    (tmp_path / "database_tuning_record.json").write_text("")
    tuned = [p.info.name for p in tvm_build.make_pipeline("default", target, tmp_path).passes]
    untuned = [p.info.name for p in tvm_build.make_pipeline("default", target).passes]
    assert tuned[tuned.index("MetaScheduleApplyDatabase") + 1] == "DefaultCPUSchedule"
    assert untuned == [n for n in tuned if n != "MetaScheduleApplyDatabase"]


# ----------------------------------------------------------------------------- what the pass leaves alone

def dynamic_func():
    """A function with a symbolic extent: no fixed loop to split or share out."""
    from tvm.script import tirx as T

    @T.prim_func(private=True, s_tir=True)
    def double(a: T.handle, b: T.handle):
        n = T.int64()
        A = T.match_buffer(a, (n,), "float32")
        B = T.match_buffer(b, (n,), "float32")
        for i in range(n):
            with T.sblock("double"):
                vi = T.axis.spatial(n, i)
                B[vi] = A[vi] * T.float32(2)

    return double


def test_a_function_it_cannot_schedule_is_left_as_it_was(target):
    import tvm

    func = dynamic_func()
    mod = tvm.IRModule({"double": func})
    out = ds.default_schedule_pass(target)(mod)
    tvm.ir.assert_structural_equal(out["double"], func)
    assert not ds.is_scheduled(out["double"])


def test_a_schedule_error_leaves_the_function_unchanged(tiny, target, monkeypatch):
    """Any failure half-way (here: every block's schedule raises) gives back the function as it came."""
    import tvm

    mod = prim_funcs(run_until(tvm_frontend.import_onnx(str(tiny), "x", SHAPE), target,
                               tvm_build.make_pipeline("default", target), "f_zero_pipeline"))
    conv = next(f for name, f in mod.items() if "conv2d" in name)

    def boom(*_a, **_k):
        raise tvm.s_tir.ScheduleError("injected")

    monkeypatch.setattr(ds, "_schedule_block", boom)
    assert ds.schedule_func(conv, target) is None
    out = ds.default_schedule_pass(target)(tvm.IRModule({"conv": conv}))
    tvm.ir.assert_structural_equal(out["conv"], conv)


def test_a_tuned_function_is_not_touched(tiny, target, tmp_path):
    mod = tvm_frontend.import_onnx(str(tiny), "x", SHAPE)
    db = tmp_path / "db"
    tuned_name = write_database(mod, target, db, "matmul")
    pipeline = tvm_build.make_pipeline("default", target, db)
    applied = prim_funcs(run_until(mod, target, pipeline, "MetaScheduleApplyDatabase", db))
    after = prim_funcs(run_until(mod, target, pipeline, "DefaultCPUSchedule", db))
    import tvm

    assert ds.is_scheduled(applied[tuned_name])  # MetaScheduleApplyDatabase marks what it applied
    tvm.ir.assert_structural_equal(after[tuned_name], applied[tuned_name])
    assert "T.unroll" in after[tuned_name].script() and "T.parallel" not in after[tuned_name].script()
    conv = next(name for name in after if "conv2d" in name)
    assert "T.parallel" in after[conv].script()  # the functions without a record are still scheduled


def test_tuned_build_with_a_partial_database_matches_onnxruntime(tiny, tmp_path):
    pytest.importorskip("onnxruntime")
    from cm_mlperf.tvm.compile import compile_model

    mod = tvm_frontend.import_onnx(str(tiny), "x", SHAPE)
    db = tmp_path / "db"
    write_database(mod, tvm_target.make_target(MCPU, 2), db, "matmul")
    info = compile_model(tiny, batch_size=1, mcpu=MCPU, num_cores=2, input_name="x", out_dir=str(tmp_path / "out"),
                         height=32, width=32, verify=True, database_dir=str(db))
    assert info["tuning_database"] and info["verification"]["max_rel_err"] < 1e-4


def test_columns_tile_the_output_channel_blocks_and_compute_the_same(target):
    """Knobs(cols=2): a 1x1 NCHWc convolution's tile spans two output-channel blocks (an axis its input does not
    depend on), unrolled inside the reduction; a depthwise one (every read moves with every axis) gets none."""
    import tvm
    from cm_mlperf.tvm import layout as tvm_layout
    from tvm import te

    data = te.placeholder((1, 2, 6, 6, 4), name="data")  # 8 channels in blocks of 4
    weight = te.placeholder((4, 2, 1, 1, 4, 4), name="weight")  # 16 output channels
    with target:  # TOPI's conv2d_NCHWc asks for the target
        out = tvm_layout.conv_nchwc(data, weight, (1, 1), (0, 0, 0, 0), (1, 1), 4, 4)
    conv = te.create_prim_func([data, weight, out])
    rng = np.random.default_rng(0)
    args = [rng.standard_normal((1, 2, 6, 6, 4)).astype("float32"),
            rng.standard_normal((4, 2, 1, 1, 4, 4)).astype("float32"), np.zeros((1, 4, 6, 6, 4), "float32")]
    results = {}
    for knobs in (ds.Knobs(rows=6), ds.Knobs(rows=3, cols=2)):
        sch = ds.schedule(conv, target, knobs)
        assert sch is not None
        trace = str(sch.trace)
        results[knobs.cols] = trace
        lib = tvm.compile(sch.mod, target=target)
        tensors = [tvm.runtime.tensor(a) for a in args]
        lib(*tensors)
        want = np.einsum("ncyxi,Ockhio->nOyxo", args[0], args[1])  # TOPI's (O/b, I/b, KH, KW, ib, ob) weights
        np.testing.assert_allclose(tensors[2].numpy(), want, rtol=1e-4, atol=1e-4)
    assert results[2].count("unroll") > results[1].count("unroll")  # the columns' loop, unrolled too

    dw = te.placeholder((2, 3, 3, 4), name="dw")
    depthwise = te.create_prim_func([data, dw, tvm_layout.depthwise_nchwc(data, dw, (1, 1), (1, 1, 1, 1), (1, 1))])
    assert str(ds.schedule(depthwise, target, ds.Knobs(rows=3, cols=2)).trace) == \
        str(ds.schedule(depthwise, target, ds.Knobs(rows=3)).trace)
