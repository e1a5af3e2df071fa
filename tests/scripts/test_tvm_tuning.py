"""tune-tvm-model and compile-tvm-model's _tune variation: a real MetaSchedule tuning of a tiny generated ONNX model
(conv + relu + matmul, 6 KB, three tuning tasks) through the engine, the tuned build checked against onnxruntime,
resuming from the database, the errors for bad inputs, and the app's _tune variation. No network; about 45-60 s
on two cores (two short tunings with a small search population)."""
from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from cm_mlperf.tvm.steps import tune_from_env

from tests.conftest import REPO_ROOT, SCRIPTS_DIR, load_script_module, save_onnx

TRIALS = "12"  # 3 tasks x 4 trials: the least the budget rule accepts
POPULATION = "64"  # a small evolutionary-search population keeps each batch to seconds


def make_tune_onnx(path: Path, seed: int = 1) -> Path:
    """conv(3->8, 3x3, s2) + relu + flatten + matmul(128->10) + add, 8x8 input: three MetaSchedule tasks."""
    from onnx import helper

    rng = np.random.default_rng(seed)
    arrays = {"w": (0.3 * rng.standard_normal((8, 3, 3, 3))).astype(np.float32),
              "b": (0.1 * rng.standard_normal(8)).astype(np.float32),
              "fc": (0.3 * rng.standard_normal((128, 10))).astype(np.float32),
              "fb": (0.1 * rng.standard_normal(10)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"], axis=1),
             helper.make_node("MatMul", ["f", "fc"], ["m"]),
             helper.make_node("Add", ["m", "fb"], ["logits"])]
    return save_onnx(path, "tinytune", nodes, [1, 3, 8, 8], [1, 10], arrays)



def full_step(customize, step, i: dict) -> dict:
    """What the engine does: customize.preprocess (cheap checks), then the run step in this process."""
    from cm_mlperf.run_step import StepError

    r = customize.preprocess(i)
    if r["return"]:
        return r
    try:
        new_env, _ = step(i["env"])
    except StepError as e:
        return {"return": 1, "error": str(e)}
    i["env"].update(new_env)
    return {"return": 0}


def model_env(path: Path) -> dict[str, str]:
    # NCHW convolutions (--conv_layout=nchw): three tasks, counted below; test_tvm_layout.py tunes the NCHWc default
    return {"CM_ML_MODEL_FILE_WITH_PATH": str(path), "CM_ML_MODEL_NAME": "tinytune", "CM_ML_MODEL_INPUT_NAME": "x",
            "CM_ML_MODEL_OUTPUT_NAME": "logits", "CM_ML_MODEL_IMAGE_HEIGHT": "8", "CM_ML_MODEL_IMAGE_WIDTH": "8",
            "CM_TVM_TUNING_POPULATION": POPULATION, "CM_TVM_NUM_THREADS": "2", "CM_TVM_CONV_LAYOUT": "nchw"}


def engine_run(cache: Path, tags: str, env: dict[str, str], **inputs) -> dict:
    from cm_script_engine import api

    i = {"action": "run", "automation": "script", "tags": tags, "env": dict(env), **inputs}
    return api.run(i, repo_paths=[str(REPO_ROOT)], cache_root=str(cache))


def records(folder: Path) -> list[str]:
    return [ln for ln in (folder / "database_tuning_record.json").read_text().splitlines() if ln.strip()]


def _i(env: dict[str, str]) -> dict:
    return {"env": dict(env), "state": {}, "input": {}, "meta": {},
            "run_script_input": {"path": str(SCRIPTS_DIR / "tune-tvm-model")}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    pytest.importorskip("onnx")
    return make_tune_onnx(tmp_path_factory.mktemp("tune-model") / "tinytune.onnx")


@pytest.fixture(scope="module")
def tuned(tiny, tmp_path_factory) -> dict:
    """`cm run script --tags=compile,tvm-model,_tune --tuning_trials=12` through the engine, in a fresh cache."""
    pytest.importorskip("tvm")
    pytest.importorskip("onnxruntime")
    cache = tmp_path_factory.mktemp("cache")
    old = os.getcwd()
    os.chdir(cache.parent)
    try:
        r = engine_run(cache, "compile,tvm-model,_tune", model_env(tiny), tuning_trials=TRIALS)
    finally:
        os.chdir(old)
    assert r["return"] == 0, r.get("error")
    return {"result": r, "cache": cache, "env": r["new_env"]}


@pytest.fixture(scope="module")
def tune_customize():
    pytest.importorskip("tvm")
    return load_script_module("tune-tvm-model")


@pytest.fixture(scope="module")
def tune_model_mod():
    pytest.importorskip("tvm")
    return importlib.import_module("cm_mlperf.tvm.tune")


# ----------------------------------------------------------------------------- tuning, then compiling with it

def test_tune_writes_a_database_with_records(tuned):
    env, cache = tuned["env"], tuned["cache"]
    steps = {s["alias"]: s for s in tuned["result"]["steps"]}
    assert steps["tune-tvm-model"]["cache"] == "miss" and steps["compile-tvm-model"]["variations"] == ["tune"]
    db = Path(env["CM_TVM_TUNING_DATABASE_DIR"])
    # the refined database (one record per task), inside the tuning's own cache entry next to the full search
    assert db.name == "refined" and db.parent.parent == cache and db.parent.name.startswith("tune-tvm-model-")
    assert len(records(db.parent)) >= len(records(db)) == 3
    assert (db / "database_workload.json").is_file() and (db / "database_tuning_record.json").is_file()
    workloads = [ln for ln in (db / "database_workload.json").read_text().splitlines() if ln.strip()]
    assert len(workloads) == 3 and len(records(db)) >= 3
    assert int(env["CM_TVM_TUNING_TRIALS_DONE"]) >= int(TRIALS) and float(env["CM_TVM_TUNING_SECONDS"]) > 0
    info = json.loads((db / "tuning-info.json").read_text())
    assert info["tasks"] == 3 and info["tasks_with_records"] == 3
    assert info["functions_with_tuned_schedule"] == info["functions"] == 3  # what the tuned build will apply
    assert info["trials_requested"] == int(TRIALS) and info["cost_model"] in ("xgb", "random")
    assert all(t["trials"] > 0 for t in info["per_task"])
    refined = info["refined"]
    assert refined["refined"] == 3 and {t["task"] for t in refined["per_task"]} == {t["task"] for t in info["per_task"]}
    assert all(t["chosen"] == "metaschedule" or t["chosen"].startswith("default ") for t in refined["per_task"])
    assert str(db) not in (db / "tuning-info.json").read_text()  # no absolute paths of the entry in its files


def test_tuned_library_matches_onnxruntime(tuned, tiny):
    env = tuned["env"]
    assert float(env["CM_TVM_MODEL_VERIFIED_MAX_REL_ERR"]) < 1e-4
    info = json.loads(Path(env["CM_TVM_COMPILE_INFO"]).read_text())
    assert info["tuning_database"] is True and info["verification"]["passed"] is True
    verify = importlib.import_module("cm_mlperf.tvm.verify")
    x = np.random.default_rng(5).standard_normal((4, 3, 8, 8)).astype(np.float32)
    report = verify.verify_against_onnxruntime(env["CM_TVM_MODEL_SO"], tiny, {"other": x[:1]}, log=lambda m: None)
    assert report["passed"] and report["max_rel_err"] < 1e-4


def test_second_run_hits_and_trials_change_the_compile_key(tuned, tiny):
    env = model_env(tiny)
    r = engine_run(tuned["cache"], "compile,tvm-model,_tune", env, tuning_trials=TRIALS, quiet=True)
    assert r["return"] == 0 and [s["cache"] for s in r["steps"] if s["alias"] == "compile-tvm-model"] == ["hit"]
    assert r["new_env"]["CM_TVM_MODEL_SO"] == tuned["env"]["CM_TVM_MODEL_SO"]
    # compile's key is computed before its dependencies run, so the database path cannot be in it: the
    # _tune variation's inputs are. Another trial count is a miss for both scripts.
    r = engine_run(tuned["cache"], "compile,tvm-model,_tune", env, tuning_trials="16", dry_run=True)
    assert r["return"] == 0
    assert {s["alias"]: s["cache"] for s in r["steps"] if s["alias"] in ("compile-tvm-model", "tune-tvm-model")} == {
        "compile-tvm-model": "miss", "tune-tvm-model": "miss"}


def test_resume_keeps_every_record(tuned, tiny, tune_customize, tmp_path, monkeypatch, capsys):
    src = Path(tuned["env"]["CM_TVM_TUNING_DATABASE_DIR"])
    before = records(src)
    monkeypatch.chdir(tmp_path)
    env = {**model_env(tiny), "CM_TVM_TUNING_TRIALS": "3", "CM_TVM_TUNING_RESUME_FROM": str(src)}
    i = _i(env)
    r = full_step(tune_customize, tune_from_env, i)
    assert r["return"] == 0, r.get("error")
    out = capsys.readouterr().out
    assert "--trials=3 is below 3 tasks x 4 trials" in out and "raised to 12" in out  # the budget rule, said
    assert Path(i["env"]["CM_TVM_TUNING_DATABASE_DIR"]) == tmp_path / "refined"  # the search itself: in tmp_path
    after = records(tmp_path)
    assert set(before) <= set(after) and len(after) > len(before)  # nothing lost, new records added
    assert records(src) == before  # the source database is left as it was
    info = json.loads((tmp_path / "tuning-info.json").read_text())
    assert info["resumed"]["records"] == len(before) and info["tasks_covered_before"] == 3
    assert info["database"]["workloads"] == 3  # same tasks: no duplicate workloads
    assert info["trials_total"] == info["resumed"]["trials"] + info["trials_done"]  # what a manifest reports


def test_resumed_focus_tunes_only_the_costly_tasks(tuned, tiny, tune_customize, tmp_path, monkeypatch, capsys):
    src = Path(tuned["env"]["CM_TVM_TUNING_DATABASE_DIR"])
    monkeypatch.chdir(tmp_path)
    env = {**model_env(tiny), "CM_TVM_TUNING_TRIALS": "4", "CM_TVM_TUNING_RESUME_FROM": str(src),
           "CM_TVM_TUNING_FOCUS": "0.5"}
    r = full_step(tune_customize, tune_from_env, _i(env))
    assert r["return"] == 0, r.get("error")
    info = json.loads((tmp_path / "tuning-info.json").read_text())
    assert info["focus"]["tasks"] < info["tasks"] == 3 and "focus 0.50: tuning the" in capsys.readouterr().out
    tried = [t for t in info["per_task"] if t["trials"]]
    assert len(tried) == info["focus"]["tasks"] and len(info["per_task"]) == 3  # every task reported
    assert all(t["database_best_seconds"] for t in info["per_task"])


# ----------------------------------------------------------------------------- clear errors, checked before tuning

@pytest.mark.parametrize("extra,message", [
    ({"CM_TVM_TUNING_TRIALS": "lots"}, "--trials must be an integer, got 'lots'"),
    ({"CM_TVM_TUNING_TRIALS": "0"}, "--trials must be at least 1"),
    ({"CM_TVM_TUNING_TRIALS": "2.5"}, "--trials must be an integer"),
    ({"CM_TVM_TUNING_RESUME_FROM": "/nonexistent/tuning-db"}, "--resume_from=/nonexistent/tuning-db: no such"),
    ({"CM_TVM_TUNING_RESUME_FROM": "relative/db-that-is-nowhere"}, "as an absolute path"),
    ({"CM_TVM_TUNING_BUILDER": "magic"}, "unknown --builder=magic"),
    ({"CM_TVM_TUNING_FOCUS": "80%"}, "--focus=80%: give a share of the model's time between 0 and 1"),
    ({"CM_TVM_TUNING_FOCUS": "0"}, "--focus=0: give a share"),
])
def test_bad_inputs_are_clear_errors(tiny, tune_customize, tmp_path, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    r = tune_customize.preprocess(_i({**model_env(tiny), **extra}))
    assert r["return"] == 1 and message in r["error"], r.get("error")
    assert not any(tmp_path.iterdir())  # failed before writing anything


def test_resume_from_a_folder_that_is_no_database(tiny, tune_customize, tmp_path, monkeypatch):
    empty = tmp_path / "not-a-db"
    empty.mkdir()
    (empty / "database_workload.json").write_text("")
    monkeypatch.chdir(tmp_path)
    r = tune_customize.preprocess(_i({**model_env(tiny), "CM_TVM_TUNING_RESUME_FROM": str(empty)}))
    assert r["return"] == 1 and "is not a MetaSchedule JSON database: database_tuning_record.json missing" in r["error"]
    (empty / "database_tuning_record.json").write_text("{not json\n")
    r = tune_customize.preprocess(_i({**model_env(tiny), "CM_TVM_TUNING_RESUME_FROM": str(empty)}))
    assert r["return"] == 1 and "database_tuning_record.json line 1 is not JSON" in r["error"]


def test_tasks_come_from_the_module_the_tuned_build_applies_the_database_to(tiny, tuned, tune_model_mod):
    """tune-tvm-model extracts tasks from tuning_module(); compile-tvm-model's tuned pipeline applies the database
    after its own first passes. They must give the same module, or no record would ever match."""
    import tvm

    build = importlib.import_module("cm_mlperf.tvm.build")
    target = tune_model_mod.tvm_target.make_target("x86-64", 2)
    mod = tune_model_mod.tvm_frontend.import_onnx(str(tiny), "x", [1, 3, 8, 8])
    seq = build.make_pipeline("default", target, tuned["env"]["CM_TVM_TUNING_DATABASE_DIR"])
    names = [p.info.name for p in seq.passes]
    cut = names.index("MetaScheduleApplyDatabase")
    with target, tvm.transform.PassContext(opt_level=3):
        theirs = tvm.transform.Sequential(list(seq.passes[:cut]))(mod)
    tvm.ir.assert_structural_equal(tune_model_mod.tuning_module(mod, target), theirs)


# ----------------------------------------------------------------------------- pure helpers

def test_focus_picks_the_tasks_that_take_the_time(tune_model_mod):
    """--focus=0.8 keeps the tasks whose best latency x calls make 80 % of the model's time, largest first, and
    always the tasks without a record."""
    from types import SimpleNamespace as NS

    us = {"big": 300.0, "mid": 100.0, "small": 10.0, "tiny": 1.0, "new": None}
    calls = {"big": 1, "mid": 4, "small": 3, "tiny": 1, "new": 1}  # cost: 300, 400, 30, 1, ?
    tasks = [NS(task_name=n, weight=calls[n], dispatched=[n]) for n in us]

    class DB:
        def query_tuning_record(self, mod, target, name):
            return None if us[mod] is None else NS(run_secs=[us[mod] * 1e-6])

    chosen, info = tune_model_mod.focus_tasks(tasks, DB(), None, 0.8)
    assert [t.task_name for t in chosen] == ["big", "mid", "new"] and info["without_record"] == 1
    assert info["share_selected"] == pytest.approx(700 / 731)
    assert [t.task_name for t in tune_model_mod.focus_tasks(tasks, DB(), None, 0.5)[0]] == ["mid", "new"]
    assert len(tune_model_mod.focus_tasks(tasks, DB(), None, 1.0)[0]) == 5


def test_budget_gives_every_task_a_batch(tune_model_mod):
    plan = tune_model_mod.plan_budget(2000, 35)
    assert (plan["budget"], plan["per_iter"], plan["raised"]) == (2000, 57, False)  # 35 x 57 <= 2000
    plan = tune_model_mod.plan_budget(20000, 35)
    assert plan["per_iter"] == 64  # MetaSchedule's usual batch once the budget allows it
    plan = tune_model_mod.plan_budget(50, 35)
    assert plan["raised"] and plan["budget"] == 140 and plan["per_iter"] == 4
    assert "raised to 140" in plan["note"]
    with pytest.raises(tune_model_mod.TVMTuningError, match="at least 1"):
        tune_model_mod.plan_budget(0, 3)


def test_cheap_stack_matches_inspect_stack():
    import inspect

    builders = importlib.import_module("cm_mlperf.tvm.tune_builders")

    def probe():
        return inspect.stack(), builders._cheap_stack()

    slow, cheap = probe()
    assert slow[0].function == "probe" and len(slow) == len(cheap)
    for a, b in zip(slow, cheap, strict=True):
        assert (a.frame, a.lineno, a.function) == (b.frame, b.lineno, b.function)
        if os.path.exists(a.filename):
            assert (a.filename, a.code_context) == (b.filename, b.code_context)
    with builders.cheap_inspect_stack():
        assert inspect.stack is builders._cheap_stack
    assert inspect.stack is not builders._cheap_stack


# ----------------------------------------------------------------------------- the app's _tune variation

def test_app_tune_variation_adds_tune_to_the_compile_dependency():
    meta = yaml.safe_load((SCRIPTS_DIR / "run-mlperf-inference-app" / "_cm.yaml").read_text())
    assert meta["variations"]["tune"]["add_deps_recursive"] == {"tvm-model": {"tags": "_tune"}}
    assert meta["variations"]["tune"]["input_mapping"] == {"rpc_tracker": "CM_TVM_RPC_TRACKER",
                                                           "rpc_key": "CM_TVM_RPC_KEY",
                                                           "tuning_focus": "CM_TVM_TUNING_FOCUS"}
    assert meta["input_mapping"]["tuning_trials"] == "CM_TVM_TUNING_TRIALS"
    compile_meta = yaml.safe_load((SCRIPTS_DIR / "compile-tvm-model" / "_cm.yaml").read_text())
    dep = compile_meta["variations"]["tune"]["deps"][0]
    assert dep["tags"] == "tune,tvm,model" and dep["names"] == ["tvm-tuning"]
    assert "CM_TVM_TUNING_DATABASE_DIR" in compile_meta["cache_key_env"]


def test_app_dry_run_with_tune_plans_the_tuning(tmp_path, monkeypatch):
    pytest.importorskip("tvm")
    monkeypatch.chdir(tmp_path)
    r = engine_run(tmp_path / "cache", "run-mlperf,inference,_tvm,_tune,_quick", {}, tuning_trials="12",
                   dry_run=True)
    assert r["return"] == 0, r.get("error")
    steps = [(s["alias"], s["variations"]) for s in r["steps"]]
    assert ("compile-tvm-model", ["tune"]) in steps
    aliases = [a for a, _ in steps]
    assert aliases.index("tune-tvm-model") > aliases.index("compile-tvm-model")  # a dependency of the compile
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").glob("tune-tvm-model-*"))


# ----------------------------------------------------------------------------- share: export, import, apply

def test_export_then_import_applies_the_database_in_a_fresh_compile(tuned, tiny, tmp_path, monkeypatch):
    """`export,tvm,tuning-db` packs the tuned database (best records + manifest); a compile in another cache given
    --tuning_db=<the .tar.gz> applies it (the build runs in run.py, a fresh process) and says so; the compile key
    follows the database's content."""
    db = Path(tuned["env"]["CM_TVM_TUNING_DATABASE_DIR"])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PWD", str(tmp_path))
    r = engine_run(tmp_path / "cache-x", "export,tvm,tuning-db", {}, tuning_db=str(db), output="shared.tar.gz",
                   quiet=True)
    assert r["return"] == 0, r.get("error")
    archive = tmp_path / "shared.tar.gz"
    manifest = r["new_state"]["manifest"]
    assert archive.is_file() and manifest["records"] == manifest["workloads"] == 3  # pruned: best per task
    assert manifest["model_name"] == "tinytune" and manifest["trials"] >= int(TRIALS) and manifest["family"]

    cache = tmp_path / "cache-2"
    r = engine_run(cache, "compile,tvm-model", model_env(tiny), tuning_db=str(archive), quiet=True)
    assert r["return"] == 0, r.get("error")
    env = r["new_env"]
    assert env["CM_TVM_TUNED"] == "yes" and env["CM_TVM_TUNING_DB_SOURCE"] == "user"
    assert "MetaSchedule-tuned" in env["CM_TVM_FRAMEWORK"] and float(env["CM_TVM_MODEL_VERIFIED_MAX_REL_ERR"]) < 1e-4
    applied = Path(env["CM_TVM_MODEL_SO"]).parent / "tuning-db"
    assert len(records(applied)) == 3  # the applied copy is kept in the compile's entry

    r = engine_run(cache, "compile,tvm-model", model_env(tiny), tuning_db="no", quiet=True)
    assert r["return"] == 0, r.get("error")
    assert r["new_env"]["CM_TVM_TUNED"] == "no" and "untuned" in r["new_env"]["CM_TVM_FRAMEWORK"]
    assert r["new_env"]["CM_TVM_MODEL_SO"] != env["CM_TVM_MODEL_SO"]  # another key: another library
