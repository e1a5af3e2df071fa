"""Unit tests of the engine's small modules."""
from __future__ import annotations

import pytest
from cm_script_engine import deps, env, meta, search, variations
from cm_script_engine.errors import ScriptError


def test_parse_tags_splits_variations():
    assert search.parse_tags("run-mlperf, inference,_tvm,_batch_size.8") == (
        ["run-mlperf", "inference"], ["tvm", "batch_size.8"])


def test_conditions_values_booleans_and_globs():
    assert deps.conditions_hold({"A": ["yes"]}, {"A": "on"})
    assert not deps.conditions_hold({"A": ["yes"]}, {})
    assert deps.conditions_hold({"A": ["no"]}, {})
    assert deps.conditions_hold({"P": ["?*"]}, {"P": "/data/imagenet"})
    assert not deps.conditions_hold({"P": ["?*"]}, {"P": ""})
    assert deps.conditions_hold({"B": ["tvm", "onnxruntime"], "S": ["Offline"]}, {"B": "tvm", "S": "offline"})


def test_update_tags_from_env():
    dep = {"tags": "get,ml-model", "update_tags_from_env_with_prefix": {"_": ["M"]}, "update_tags_from_env": ["T"]}
    assert deps.resolve_tags(dep, {"M": "onnx", "T": "resnet50"}) == ["get", "ml-model", "resnet50", "_onnx"]


def test_overrides_accumulate_tags_and_apply_by_name():
    merged = deps.merge_overrides({"m": {"tags": "_a"}}, {"m": {"tags": "_b", "version": "2"}})
    assert merged == {"m": {"tags": "_a,_b", "version": "2"}}
    dep = deps.apply_overrides({"tags": "get,x", "names": ["m"]}, merged)
    assert dep["tags"] == "get,x,_a,_b" and dep["version"] == "2"


def test_env_merge_lists_substitution_and_select():
    e = env.merge({"+PATH": ["/a"]}, {"+PATH": ["/b", "/a"], "X": True})
    assert e == {"+PATH": ["/a", "/b"], "X": "yes"}
    assert env.substitute({"A": "1", "B": "<<<A>>>-<<<MISSING>>>"})["B"] == "1-"
    assert env.select({"CM_A": 1, "CM_B": 2, "X": 3}, ["CM_*"]) == {"CM_A": 1, "CM_B": 2}
    assert env.parse_env_file("A=1\n# c\nB='x=y'\n\nC\n") == {"A": "1", "B": "x=y"}


def test_meta_validation_names_file_key_and_suggestion(tmp_path):
    bad = {"alias": "x", "variations": {"a": {"grup": "g"}}}
    with pytest.raises(ScriptError, match=r"_cm.yaml: unknown key 'grup' in variation 'a'; did you mean 'group'"):
        meta.validate(bad, "x/_cm.yaml")
    with pytest.raises(ScriptError, match=r"deps\[0\] has no 'tags'"):
        meta.validate({"deps": [{"names": ["a"]}]}, "x/_cm.yaml")
    with pytest.raises(ScriptError, match="unknown key 'enable_if_envs'"):
        meta.validate({"deps": [{"tags": "a", "enable_if_envs": {}}]}, "x/_cm.yaml")
    broken = tmp_path / "_cm.yaml"
    broken.write_text("tags: [a\n")
    with pytest.raises(ScriptError, match="cannot be parsed"):
        meta.load_script(str(tmp_path))


def test_variations_combined_cannot_be_selected_directly():
    m = {"variations": {"a": {}, "b": {}, "a,b": {"env": {"X": "1"}}}}
    assert variations.resolve(m, ["a", "b"], "s").blocks[-1] == {"env": {"X": "1"}}
    with pytest.raises(ScriptError, match="combined variation"):
        variations.resolve(m, ["a,b"], "s")


def test_version_checks():
    deps.check_version("s", "1.10", {"version_min": "1.9"})
    with pytest.raises(ScriptError, match="newer than the allowed maximum"):
        deps.check_version("s", "2.0", {"version_max": "1.9"})


def test_path_inputs_become_absolute(tmp_path, monkeypatch):
    from cm_script_engine.api import absolute_path_inputs

    monkeypatch.chdir(tmp_path)
    got = absolute_path_inputs({"model_path": "m.onnx", "imagenet_path": "/abs", "model_url": "http://x/y",
                                "results_dir": "out", "count": "5", "tuning_database": "db"})
    assert got == {"model_path": str(tmp_path / "m.onnx"), "imagenet_path": "/abs", "model_url": "http://x/y",
                   "results_dir": str(tmp_path / "out"), "count": "5", "tuning_database": str(tmp_path / "db")}
