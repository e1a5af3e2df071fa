"""The real `cm` CLI (cmind) in a subprocess, against a temporary CM home."""
from __future__ import annotations

import json
import subprocess

from conftest import FIXTURE_REPO, REPO_ROOT, cm_env


def cm(home, *args, cache=None, cwd=None):
    return subprocess.run(["cm", *args], env=cm_env(home, cache), capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_register_is_idempotent(tmp_path):
    env = cm_env(tmp_path)
    first = subprocess.run(["cm-register-repo", str(REPO_ROOT)], env=env, capture_output=True, text=True)
    again = subprocess.run(["cm-register-repo", str(REPO_ROOT)], env=env, capture_output=True, text=True)
    assert first.returncode == 0 and "registered" in first.stdout
    assert again.returncode == 0 and "already registered" in again.stdout
    assert json.loads((tmp_path / "repos.json").read_text()) == [str(REPO_ROOT)]


def test_run_chain_json_then_cache_hit(cm_home, tmp_path):
    first = cm(cm_home, "run", "script", "--tags=fx,chain", "--out=json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)  # stdout is pure JSON; progress went to stderr
    assert result["return"] == 0 and result["new_env"]["FX_VAR_MODEL"] == "onnx"
    assert {d["alias"] for d in result["deps"]} >= {"fx-variations", "fx-leaf", "fx-cached", "fx-base"}
    again = json.loads(cm(cm_home, "run", "script", "--tags=fx,chain", "--out=json", cwd=tmp_path).stdout)
    assert [d["cache"] for d in again["deps"] if d["alias"] == "fx-cached"] == ["hit"]
    assert "fx-base" in [d["alias"] for d in again["deps"]]  # a hit resolves its deps: their keys are in its key


def test_cli_inputs_env_adr_and_verbose(cm_home, tmp_path):
    r = cm(cm_home, "run", "script", "--tags=fx,chain", "--adr.leaf.tags=_big", "--env.FX_BASE_GREETING=hi",
           "-v", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "FX_LEAF_SIZE=big" in r.stdout  # -v prints each step's env changes
    assert "FX_BASE_OUT=hi from base" in r.stdout


def test_cli_alias_and_errors_exit_non_zero(cm_home, tmp_path):
    assert cm(cm_home, "run", "script", "fx-base", cwd=tmp_path).returncode == 0
    r = cm(cm_home, "run", "script", "--tags=fx,no-such-tag", cwd=tmp_path)
    assert r.returncode != 0 and "no script matches tags 'fx,no-such-tag'" in r.stderr + r.stdout
    r = cm(cm_home, "run", "script", "--tags=fx,fail", cwd=tmp_path)
    assert r.returncode != 0 and "exited with code 3" in r.stderr + r.stdout


def test_cli_dry_run_show_and_rm_cache(cm_home, tmp_path):
    r = cm(cm_home, "run", "script", "--tags=fx,chain", "--dry-run", cwd=tmp_path)
    assert r.returncode == 0 and "fx-cached  [cache miss: would run]" in r.stdout
    assert cm(cm_home, "run", "script", "--tags=fx,cached", "--size=big", cwd=tmp_path).returncode == 0
    shown = cm(cm_home, "show", "cache", "--tags=fx,cached", cwd=tmp_path)
    assert shown.returncode == 0 and "fx-cached" in shown.stdout
    removed = cm(cm_home, "rm", "cache", "--tags=fx,cached", cwd=tmp_path)
    assert removed.returncode == 0 and "removed" in removed.stdout
    assert "no cache entries match" in cm(cm_home, "show", "cache", "--tags=fx,cached", cwd=tmp_path).stdout


def test_hook_calls_another_script_through_its_automation(cm_home, tmp_path):
    r = cm(cm_home, "run", "script", "--tags=fx,caller", "--out=json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["new_env"]["FX_CALLER_GOT"] == "nested from base"


def test_fixture_repo_is_separate_from_main_repo():
    assert (FIXTURE_REPO / "cmr.yaml").is_file() and FIXTURE_REPO != REPO_ROOT
