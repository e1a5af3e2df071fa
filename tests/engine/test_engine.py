"""The engine through its API (no subprocess): fixture scripts under tests/fixtures/repo."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from cm_script_engine import api
from cm_script_engine.cache import CacheStore

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
REPO = str(FIXTURES / "repo")


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"

    def _run(tags: str = "", **kwargs):
        i = {"action": "run", "automation": "script", "tags": tags, "out": "con", **kwargs}
        return api.run(i, repo_paths=[REPO], cache_root=str(cache))

    _run.cache = cache
    return _run


def ok(result):
    assert result["return"] == 0, result.get("error")
    return result


def test_chain_flows_env_and_skips_conditional_deps(run):
    r = ok(run("fx,chain"))
    env = r["new_env"]
    assert env["FX_VAR_MODEL"] == "onnx"  # the dep asked for _onnx, overriding default_variations (tf)
    assert env["FX_VAR_PRECISION"] == "fp32"  # group default
    assert env["FX_VAR_COMBINED"] == "yes"  # "onnx,fp32" applies when both are on
    assert env["FX_VAR_DERIVED"] == "fp32-onnx"  # <<<VAR>>> substitution
    assert env["FX_LEAF_SIZE"] == "small"
    assert open(env["FX_CACHED_FILE"]).read().strip() == "small hello from base"
    assert [s["alias"] for s in r["deps"]] == ["fx-variations", "fx-leaf", "fx-cached", "fx-base", "fx-leaf"]
    assert "fx-fail" not in [s["alias"] for s in r["deps"]]


def test_enable_if_env_runs_dependency_and_failure_names_step(run):
    r = run("fx,chain", env={"FX_CHAIN_FAIL": "yes"})
    assert r["return"] == 2
    assert "script 'fx-fail' failed" in r["error"] and "exited with code 3" in r["error"]
    assert "the last words" in r["error"]
    assert "re-run just this step: cm run script --tags=fx,fail" in r["error"]


def test_default_variations_and_dynamic_and_base(run):
    assert ok(run("fx,variations"))["new_env"]["FX_VAR_MODEL"] == "tf"
    env = ok(run("fx,variations,_batch_size.8"))["new_env"]
    assert env["FX_VAR_BATCH"] == "8"
    env = ok(run("fx,variations,_full"))["new_env"]
    assert (env["FX_VAR_MODEL"], env["FX_VAR_PRECISION"]) == ("onnx", "fp16")
    assert "FX_VAR_COMBINED" not in env


def test_add_deps_recursive_and_adr_override_named_dep(run):
    assert ok(run("fx,variations,_leafy"))["new_env"]["FX_LEAF_SIZE"] == "big"
    assert ok(run("fx,chain", adr={"leaf": {"tags": "_big"}}))["new_env"]["FX_LEAF_SIZE"] == "big"


def test_variation_errors(run):
    r = run("fx,variations,_fp6")
    assert r["return"] == 1 and "no variation '_fp6'" in r["error"] and "did you mean '_fp16'" in r["error"]
    r = run("fx,variations,_fp16,_fp32")
    assert "both in group 'precision'" in r["error"]


def test_unknown_and_ambiguous_tags(run):
    r = run("fx,nonexistent")
    assert r["return"] == 1 and "no script matches tags 'fx,nonexistent'" in r["error"]
    r = run("fx,dup")
    assert "2 scripts match" in r["error"] and "fx-dup-1" in r["error"] and "fx-dup-2" in r["error"]
    assert ok(run("fx,dup,dup2"))
    assert ok(run(artifact="fx-dup-1"))


def test_cache_hit_and_keys(run, tmp_path):
    counter = tmp_path / "counter"
    env = {"FX_COUNTER_FILE": str(counter)}
    first = ok(run("fx,cached", env=env))
    second = ok(run("fx,cached", env=env))
    assert first["new_env"] == second["new_env"]
    assert counter.read_text().count("run") == 1  # second run was a hit and ran nothing
    assert second["steps"][0]["cache"] == "hit"
    assert first["new_env"]["FX_CACHED_FILE"].startswith(first["cache_path"])  # tmp prefix rewritten
    assert second["new_state"] == {"fx_cached": {"size": "small"}}
    big = ok(run("fx,cached", size="big", env=env))  # an input that changes the result
    assert big["cache_path"] != first["cache_path"]
    assert open(big["new_env"]["FX_CACHED_FILE"]).read().startswith("big")
    ok(run("fx,cached", env=env, new=True))
    assert counter.read_text().count("run") == 3
    assert len(CacheStore(str(run.cache)).entries()) == 2


def test_side_effect_free_deps_key_the_cache_even_on_a_hit(run):
    small = ok(run("fx,cached"))
    big = ok(run("fx,cached", adr={"leaf": {"tags": "_big"}}))
    assert big["cache_path"] != small["cache_path"]
    again = ok(run("fx,cached", adr={"leaf": {"tags": "_big"}}))
    assert again["cache_path"] == big["cache_path"]
    # a hit resolves its deps too, in their declared order: their results are part of its key
    assert [s["alias"] for s in again["steps"]] == ["fx-cached", "fx-base", "fx-leaf"]


def test_editing_a_script_invalidates_its_cache(run, tmp_path):
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(FIXTURES / "repo", repo)
    cache = str(tmp_path / "c")
    i = {"action": "run", "automation": "script", "tags": "fx,echo", "text": "a"}
    first = ok(api.run(dict(i), repo_paths=[str(repo)], cache_root=cache))
    assert ok(api.run(dict(i), repo_paths=[str(repo)], cache_root=cache))["cache_path"] == first["cache_path"]
    with open(repo / "script" / "fx-echo" / "run.py", "a") as f:
        f.write("# edited\n")
    assert ok(api.run(dict(i), repo_paths=[str(repo)], cache_root=cache))["cache_path"] != first["cache_path"]


def test_failed_cached_script_leaves_nothing(run):
    r = run("fx,hook-error")
    assert r["return"] == 1 and "input FX_NEEDED is missing" in r["error"]
    assert CacheStore(str(run.cache)).entries() == []
    assert os.listdir(run.cache / ".tmp") == []


def test_env_values_arrive_literally(run):
    nasty = "a; rm -rf / $(touch pwned) `id` 'q\""
    r = ok(run("fx,echo", text=nasty))
    assert open(r["new_env"]["FX_ECHO_FILE"]).read() == nasty
    assert r["new_state"] == {}  # echo is not in new_state_keys
    assert not os.path.exists("pwned")


def test_versions_and_path_lists(run):
    r = ok(run("fx,versions"))
    assert r["version"] == "2.0" and r["new_env"]["FX_VERSIONED"] == "two"
    assert r["new_env"]["+PATH"] == ["/opt/fx/bin"]
    assert ok(run("fx,versions", version="1.0"))["new_env"]["FX_VERSIONED"] == "one"
    assert "no version '3.0'" in run("fx,versions", version="3.0")["error"]
    ok(run("fx,needs-version"))
    r = run("fx,needs-version", adr={"versions": {"version": "1.0"}})
    assert "older than the required minimum 1.5" in r["error"]


def test_plus_path_reaches_subprocess(run):
    from cm_script_engine import env as envlib

    process_env = envlib.for_process({"+PATH": ["/opt/a", "/opt/b"], "X": "1"}, base={"PATH": "/usr/bin"})
    assert process_env["PATH"] == os.pathsep.join(["/opt/a", "/opt/b", "/usr/bin"])


def test_dry_run_predicts_hits_and_runs_nothing(run, tmp_path, capsys):
    counter = tmp_path / "counter"
    r = ok(run("fx,chain", dry_run=True, env={"FX_COUNTER_FILE": str(counter)}))
    assert not counter.exists()
    out = capsys.readouterr().out
    assert "fx-cached  [cache miss: would run]" in out
    assert "fx-leaf _small  [no side effects: run to predict]" in out
    ok(run("fx,chain", env={"FX_COUNTER_FILE": str(counter)}))
    r = ok(run("fx,chain", print_deps=True, env={"FX_COUNTER_FILE": str(counter)}))
    assert "fx-cached  [cache hit]" in capsys.readouterr().out
    assert [s["cache"] for s in r["steps"] if s["alias"] == "fx-cached"] == ["hit"]


def test_schema_rejects_misspelled_key(tmp_path):
    r = api.run({"tags": "typo"}, repo_paths=[str(FIXTURES / "bad_repo")], cache_root=str(tmp_path))
    assert r["return"] == 1
    assert "_cm.yaml: unknown key 'new_env_key'" in r["error"] and "did you mean 'new_env_keys'" in r["error"]


def test_concurrent_runs_make_one_entry(tmp_path):
    cache = str(tmp_path / "cache")
    counter = tmp_path / "counter"
    results = []

    def go():
        i = {"tags": "fx,cached", "env": {"FX_COUNTER_FILE": str(counter)}, "silent": True}
        results.append(api.run(i, repo_paths=[REPO], cache_root=cache))

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r["return"] == 0 for r in results)
    assert counter.read_text().count("run") == 1
    assert len(CacheStore(cache).entries()) == 1


def test_show_and_remove_cache(run):
    ok(run("fx,cached"))
    ok(run("fx,cached", size="big"))
    root = str(run.cache)
    assert len(api.show_cache({"tags": "fx,cached"}, root)["list"]) == 2
    r = api.remove_cache({"tags": "cached"}, root)
    assert r["return"] == 1 and "2 cache entries match" in r["error"] and "--all" in r["error"]
    assert api.remove_cache({"tags": "cached", "all": True}, root)["return"] == 0
    assert api.show_cache({}, root)["list"] == []
    assert "no cache entry matches" in api.remove_cache({"tags": "cached"}, root)["error"]


def test_dependency_cycle_is_an_error(run):
    r = run("fx,cycle-a")
    assert r["return"] == 1 and "dependency cycle: fx-cycle-a -> fx-cycle-b -> fx-cycle-a" in r["error"]


def test_hook_exception_names_script_and_hook(run):
    r = run("fx,hook-raise")
    assert r["return"] == 1
    assert r["error"] == "script 'fx-hook-raise' postprocess() raised KeyError: 'CM_MISSING'"
