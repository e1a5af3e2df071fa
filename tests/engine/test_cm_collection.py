"""The engine beside MLCommons' own collection (cm4mlops 0.6.25, unmodified) in one CM home.

Needs `../shared/thirdparty/mlcommons-cm4mlops-0.6.25.tar.gz` (or CM4MLOPS_TARBALL): skipped where absent.
MLCommons' scripts are compared with what CM's own engine (cmind 2.3.9 + that tree) returned, recorded by
`cm_reference/record.py`: same new_env keys and new_state keys everywhere; same values where the recording
was made on this host (paths into each engine's cache aside).
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import tarfile
from pathlib import Path

import pytest
from cm_script_engine import api
from cm_script_engine.search import ScriptIndex
from conftest import REPO_ROOT, cm_env

TARBALL = Path(os.environ.get("CM4MLOPS_TARBALL")
               or REPO_ROOT.parent / "shared" / "thirdparty" / "mlcommons-cm4mlops-0.6.25.tar.gz")
REFERENCE = Path(__file__).resolve().parent / "cm_reference" / "cm-2.3.9.json"
needs_collection = pytest.mark.skipif(
    not TARBALL.is_file(), reason=f"MLCommons' collection not found at {TARBALL} (set CM4MLOPS_TARBALL)")


@pytest.fixture(scope="module")
def mlc_repo(tmp_path_factory) -> Path:
    if not TARBALL.is_file():
        pytest.skip(f"MLCommons' collection not found at {TARBALL} (set CM4MLOPS_TARBALL)")
    root = tmp_path_factory.mktemp("cm4mlops")
    with tarfile.open(TARBALL) as tar:
        tar.extractall(root, filter="data")
    return root


def _cm(home: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["cm", *args], env=cm_env(home), cwd=cwd, capture_output=True, text=True, timeout=600)


def _register_theirs(home: Path, repo: Path) -> None:
    r = subprocess.run(["cm", "init", "repo", "--here"], env=cm_env(home), cwd=repo, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _register_ours(home: Path) -> str:
    r = subprocess.run(["cm-register-repo", str(REPO_ROOT)], env=cm_env(home), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def both_home(mlc_repo, tmp_path_factory) -> Path:
    """MLCommons' collection registered first (the hard order), then ours."""
    home = tmp_path_factory.mktemp("cm-home-both")
    _register_theirs(home, mlc_repo)
    _register_ours(home)
    return home


@needs_collection
@pytest.mark.parametrize("order", ["theirs-first", "ours-first"])
def test_our_engine_runs_for_both_collections(mlc_repo, tmp_path, order):
    home = tmp_path / "home"
    if order == "theirs-first":
        _register_theirs(home, mlc_repo)
        assert "now runs `cm run script` for every registered collection" in _register_ours(home)
    else:
        _register_ours(home)
        _register_theirs(home, mlc_repo)
    assert json.loads((home / "repos.json").read_text())[0] == str(REPO_ROOT)
    shown = _cm(home, "version", "script", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "script automation: cm_script_engine" in shown.stdout and str(REPO_ROOT / "automation") in shown.stdout
    assert f"{mlc_repo}: 286 scripts (written for CM's engine, run by this one)" in shown.stdout
    hello = _cm(home, "run", "script", "--tags=print,hello-world", "--quiet", cwd=tmp_path)
    assert hello.returncode == 0, hello.stderr
    assert "* print-hello-world" in hello.stdout  # our reporter's line: CM's engine logs "INFO:root:" lines
    assert "CM_ENV_TEST1 = TEST1" in hello.stdout
    # both collections define detect-os: ours comes first; MLCommons' is reached by naming its repository
    theirs = _cm(home, "run", "script", "mlcommons@cm4mlops:detect-os", "-j", cwd=tmp_path)
    assert theirs.returncode == 0, theirs.stderr
    assert "+CM_HOST_OS_DEFAULT_LIBRARY_PATH" in json.loads(theirs.stdout)["new_env"]  # only theirs has it


@needs_collection
def test_foreign_metas_warn_once_and_never_fail(mlc_repo, tmp_path):
    lines: list[str] = []
    index = ScriptIndex([str(REPO_ROOT), str(mlc_repo)], str(tmp_path / "index"), warn=lines.append)
    scripts = index.scripts
    assert len([s for s in scripts if not s.strict]) == 286
    assert all(s.strict for s in scripts if s.path.startswith(str(REPO_ROOT)))
    assert len(lines) == 3 and all(line.startswith("warning: ") and "(ignored)" in line for line in lines)
    assert any("'variations.run-harness.alis'" in line for line in lines)  # a real typo CM ignores
    again: list[str] = []
    assert ScriptIndex([str(REPO_ROOT), str(mlc_repo)], str(tmp_path / "index"), warn=again.append).scripts
    assert again == []  # said once, when the meta was indexed


@needs_collection
def test_index_is_used_and_rebuilt_when_a_meta_changes(mlc_repo, tmp_path, monkeypatch):
    import cm_script_engine.search as search

    repos = [str(REPO_ROOT), str(mlc_repo)]
    assert ScriptIndex(repos, str(tmp_path / "index"), warn=lambda _: None).scripts
    parsed: list[str] = []
    real = search.load_script
    monkeypatch.setattr(search, "load_script", lambda path, strict=True: parsed.append(path) or real(path, strict))
    warm = ScriptIndex(repos, str(tmp_path / "index"), warn=lambda _: None)
    assert len(warm.scripts) > 300 and parsed == []  # nothing parsed on a warm start
    hello = mlc_repo / "script" / "print-hello-world" / "_cm.yaml"
    original = hello.read_text()
    try:
        hello.write_text(original.replace("- hello-world", "- hello-world\n- hello-indexed", 1))
        found = ScriptIndex(repos, str(tmp_path / "index"), warn=lambda _: None).find_by_tags(["hello-indexed"])
        assert [s.alias for s in found] == ["print-hello-world"] and parsed == [str(hello.parent)]
    finally:
        hello.write_text(original)


def _requests() -> list:
    import importlib.util

    spec = importlib.util.spec_from_file_location("cm_reference_record", REFERENCE.parent / "record.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.REQUESTS


def _reference() -> dict:
    return json.loads(REFERENCE.read_text())


FAST = ["detect,os", "print,hello-world", "get,sys-utils-min", "get,cache,dir", "detect,cpu",
        "create,custom,cache,entry"]
# in the recording's order: CM prefers a script that has a cache entry (get,compiler takes the get,gcc made before)
SLOW = [t for t, _ in _requests() if t not in FAST]


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One cache for the module's runs, as the recording had one CM home."""
    return tmp_path_factory.mktemp("shared-cache")


def _compare(tags: str, mlc_repo: Path, tmp_path: Path, monkeypatch, cache: Path) -> None:
    reference = _reference()
    expected = reference["results"][tags]
    same_host = reference["host"] == platform.node()
    if same_host:  # the same PATH finds the same tools
        monkeypatch.setenv("PATH", reference["path"])
    monkeypatch.chdir(tmp_path)
    extra = dict(_requests())[tags]
    i = {"action": "run", "automation": "script", "tags": tags, "quiet": True, "silent": True, **extra}
    # MLCommons' collection first: where both define a script (detect-os), theirs is the one compared
    repos = [str(mlc_repo), str(REPO_ROOT)]
    first = api.run(dict(i), repo_paths=repos, cache_root=str(cache))
    assert first["return"] == 0, first.get("error")
    result = api.run(dict(i), repo_paths=repos, cache_root=str(cache))  # cached
    assert result["return"] == 0, result.get("error")
    assert sorted(result["new_env"]) == sorted(expected["new_env"])
    assert sorted(result["new_state"]) == sorted(expected["new_state"])
    if same_host:
        for key, value in expected["new_env"].items():
            if reference["cm_home"] and reference["cm_home"] in json.dumps(value):
                continue  # a path into CM's cache: ours is elsewhere
            assert result["new_env"][key] == value, key
        for key, value in expected["new_state"].items():
            assert result["new_state"][key] == value, key


@needs_collection
@pytest.mark.parametrize("tags", FAST)
def test_mlcommons_script_matches_cm_engine(tags, mlc_repo, tmp_path, monkeypatch, shared_cache):
    _compare(tags, mlc_repo, tmp_path, monkeypatch, shared_cache)


@needs_collection
@pytest.mark.slow
@pytest.mark.parametrize("tags", SLOW)
def test_mlcommons_tool_script_matches_cm_engine(tags, mlc_repo, tmp_path, monkeypatch, shared_cache):
    _compare(tags, mlc_repo, tmp_path, monkeypatch, shared_cache)


@needs_collection
def test_cache_entries_are_cm_artifacts(both_home, tmp_path):
    made = _cm(both_home, "run", "script", "--tags=create,custom,cache,entry", "--extra_cache_tags=my-data,v2",
               "--quiet", "-j", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    result = json.loads(made.stdout)
    assert result["env"] and "CM_CUSTOM_CACHE_ENTRY_PATH" in result["new_env"] and "state" in result
    entry = Path(result["new_env"]["CM_CUSTOM_CACHE_ENTRY_PATH"])
    meta = json.loads((entry / "_cm.json").read_text())
    assert meta["automation_alias"] == "cache" and meta["automation_uid"] == "541d6f712a6b464e"
    assert {"create", "custom", "cache", "entry", "my-data", "v2"} <= set(meta["tags"])
    assert "script-artifact-" + meta["associated_script_artifact_uid"] in meta["tags"]
    state = json.loads((entry / "cm-cached-state.json").read_text())
    assert state["new_env"]["CM_CUSTOM_CACHE_ENTRY_PATH"] == str(entry)
    found = _cm(both_home, "find", "cache", "--tags=my-data", cwd=tmp_path)
    assert found.returncode == 0 and found.stdout.split() == [str(entry)]
    import cmind  # what a hook sees through cm.access()

    os.environ["CM_REPOS"], saved = str(both_home), os.environ.get("CM_REPOS")
    try:
        listed = cmind.access({"action": "find", "automation": "cache", "tags": "custom,my-data"})
    finally:
        os.environ.pop("CM_REPOS") if saved is None else os.environ.__setitem__("CM_REPOS", saved)
    assert listed["return"] == 0 and [a.path for a in listed["list"]] == [str(entry)]
    assert "my-data" in listed["list"][0].meta["tags"]


@needs_collection
@pytest.mark.slow
def test_main_job_resolves_the_same_beside_mlcommons(both_home, tmp_path):
    shown = _cm(both_home, "run", "script", "--tags=run-mlperf,inference,_tvm", "--dry-run", cwd=tmp_path)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    alone = tmp_path / "alone"
    _register_ours(alone)
    ours = _cm(alone, "run", "script", "--tags=run-mlperf,inference,_tvm", "--dry-run", cwd=tmp_path)
    assert ours.returncode == 0, ours.stdout + ours.stderr
    tree = [line.split("[")[0].rstrip() for line in shown.stdout.splitlines() if "[" in line]
    assert tree == [line.split("[")[0].rstrip() for line in ours.stdout.splitlines() if "[" in line]


def _script(repo: Path, name: str, tags: str, extra: str = "") -> None:
    folder = repo / "script" / name
    folder.mkdir(parents=True)
    (folder / "_cm.yaml").write_text(f"alias: {name}\nuid: '{abs(hash(name)) % 10**16:016d}'\n"
                                     f"automation_alias: script\nautomation_uid: 5b4e0237da074764\n"
                                     f"tags: [{tags}]\nnew_env_keys: [PICKED]\nenv:\n  PICKED: {name}\n{extra}")


def test_selection_rules_when_several_scripts_match(tmp_path, monkeypatch):
    """CM's rules: narrow by the requested variations, prefer a script with a cache entry, order by `sort` then
    path, take the first under --quiet; without --quiet, stop and list them (we never prompt)."""
    repo = tmp_path / "repo"
    (repo).mkdir()
    (repo / "cmr.yaml").write_text("alias: sel\nuid: '5e1ec7105e1ec710'\n")
    _script(repo, "pick-a", "pick,tool", "sort: 200\n")
    _script(repo, "pick-b", "pick,tool", "sort: 100\n")
    _script(repo, "pick-c", "pick,tool", "sort: 300\nvariations:\n  fast: {}\n")
    _script(repo, "pick-d", "pick,cached", "cache: true\nsort: 2\n")
    _script(repo, "pick-e", "pick,cached", "cache: true\nsort: 1\n")
    monkeypatch.chdir(tmp_path)

    def run(tags, **kw):
        i = {"tags": tags, "silent": True, **kw}
        return api.run(i, repo_paths=[str(repo)], cache_root=str(tmp_path / "cache"))

    several = run("pick,tool")
    assert several["return"] == 1 and "3 scripts match" in several["error"] and "--quiet" in several["error"]
    assert run("pick,tool", quiet=True)["new_env"]["PICKED"] == "pick-b"  # lowest sort
    assert run("pick,tool,_fast")["new_env"]["PICKED"] == "pick-c"  # the only one with _fast
    assert run("pick,cached", quiet=True)["new_env"]["PICKED"] == "pick-e"
    assert run("", artifact="pick-d")["new_env"]["PICKED"] == "pick-d"  # by alias: it now has a cache entry
    assert run("pick,cached", quiet=True)["new_env"]["PICKED"] in ("pick-d", "pick-e")
    (tmp_path / "cache" / [p for p in os.listdir(tmp_path / "cache") if p.startswith("pick-e")][0]
     / "cm-cache-entry.json").unlink()  # only pick-d keeps an entry now
    assert run("pick,cached", quiet=True)["new_env"]["PICKED"] == "pick-d"  # the cached one wins over sort
