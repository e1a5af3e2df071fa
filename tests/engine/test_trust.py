"""Trustworthy runs (issue 9): a cache that cannot go stale, inputs checked before any work, faults that leave
nothing behind. Each test here failed on the engine before these guarantees were built."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cm_script_engine import api
from cm_script_engine.cache import CacheStore
from conftest import FIXTURE_REPO, cm_env
from conftest import process_alive as _alive

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"

    def _run(tags: str = "", repo: str = str(FIXTURE_REPO), **kwargs):
        i = {"action": "run", "automation": "script", "tags": tags, "out": "con", **kwargs}
        return api.run(i, repo_paths=[repo], cache_root=str(cache))

    _run.cache = cache
    return _run


def ok(result):
    assert result["return"] == 0, result.get("error")
    return result


# ------------------------------------------------------------------------------------------- stale results


def test_overwritten_input_file_is_not_a_hit(run, tmp_path):
    data = tmp_path / "model.txt"
    data.write_text("weights-1")
    first = ok(run("fx,path", data_path=str(data)))
    assert first["new_env"]["FX_PATH_TEXT"] == "weights-1"
    assert ok(run("fx,path", data_path=str(data)))["steps"][0]["cache"] == "hit"
    data.write_text("weights-2")  # the same path, new content (and the same size)
    second = ok(run("fx,path", data_path=str(data)))
    assert second["steps"][0]["cache"] == "miss"
    assert second["new_env"]["FX_PATH_TEXT"] == "weights-2"


def test_replaced_file_keeping_mtime_is_not_a_hit(run, tmp_path):
    data = tmp_path / "model.txt"
    data.write_text("aaaa")
    ok(run("fx,path", data_path=str(data)))
    stat = data.stat()
    replacement = tmp_path / "new.txt"
    replacement.write_text("bbbb")
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as `cp -p` would
    os.replace(replacement, data)
    assert ok(run("fx,path", data_path=str(data)))["new_env"]["FX_PATH_TEXT"] == "bbbb"


def test_replaced_image_in_a_folder_is_not_a_hit(run, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for n in range(3):
        (folder / f"img{n}.txt").write_text(f"v{n}")
    assert ok(run("fx,path", data_path=str(folder)))["new_env"]["FX_PATH_TEXT"] == "v0+v1+v2"
    (folder / "img1.txt").write_text("w1")
    assert ok(run("fx,path", data_path=str(folder)))["new_env"]["FX_PATH_TEXT"] == "v0+w1+v2"


def test_consumer_of_a_changed_dependency_is_rebuilt(run, tmp_path):
    """fx-cached consumes fx-leaf's output: a different dependency result means a different key."""
    small = ok(run("fx,cached"))
    big = ok(run("fx,cached", adr={"leaf": {"tags": "_big"}}))
    assert small["cache_path"] != big["cache_path"]


def test_damaged_entry_is_rebuilt_with_a_notice(run, tmp_path, capsys):
    data = tmp_path / "m.txt"
    data.write_text("x")
    first = ok(run("fx,path", data_path=str(data)))
    os.remove(Path(first["cache_path"]) / "copy.txt")
    capsys.readouterr()
    again = ok(run("fx,path", data_path=str(data)))
    out = capsys.readouterr().out
    assert "is damaged (copy.txt is missing)" in out and "running fx-path again" in out
    assert again["steps"][0]["cache"] == "miss"
    assert (Path(again["cache_path"]) / "copy.txt").is_file()


def test_edited_shared_code_in_the_repository_is_not_a_hit(run, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    shutil.copytree(FIXTURE_REPO, repo)
    monkeypatch.syspath_prepend(str(repo))  # fxshared importable, as `pip install -e` makes cm_mlperf
    monkeypatch.setenv("PYTHONPATH", str(repo))
    first = ok(run("fx,shared-user", repo=str(repo)))
    assert first["new_env"]["FX_SHARED_GREETING"] == "hello"
    assert ok(run("fx,shared-user", repo=str(repo)))["steps"][0]["cache"] == "hit"
    (repo / "fxshared" / "words.py").write_text('def greeting():\n    return "bonjour"\n')
    again = ok(run("fx,shared-user", repo=str(repo)))
    assert again["steps"][0]["cache"] == "miss" and again["new_env"]["FX_SHARED_GREETING"] == "bonjour"


# ------------------------------------------------------------------------------------ inputs checked first


def test_misspelled_input_fails_with_did_you_mean(run):
    r = run("fx,inputs", scenaro="SingleStream")
    assert r["return"] == 1 and "unknown input --scenaro" in r["error"] and "did you mean --scenario?" in r["error"]


def test_misspelled_input_fails_under_dry_run_too(run):
    assert run("fx,inputs", scenaro="x", dry_run=True)["return"] == 1


def test_input_of_another_variation_selects_it_or_fails(run):
    r = ok(run("fx,inputs", model_path="/m.onnx"))  # only _custom lists it in selected_by_inputs
    assert r["new_env"]["FX_MODEL"] == "custom" and r["new_env"]["FX_MODEL_PATH"] == "/m.onnx"
    assert ok(run("fx,inputs,_big", model_path="/m.onnx"))["new_env"]["FX_MODEL"] == "big"
    r = run("fx,inputs,_builtin", model_path="/m.onnx")
    assert r["return"] == 1 and "--model_path is an input of variation _big or _custom" in r["error"]


@pytest.mark.parametrize("flag,value,message", [
    ("scenario", "Foo", "--scenario=Foo: use one of Offline, SingleStream"),
    ("threads", "0", "--threads=0: 0 is less than the minimum of 1"),
    ("threads", "two", "--threads=two: must be an integer"),
    ("rate", "-5", "--rate=-5: -5.0 is less than or equal to the minimum of 0"),
])
def test_bad_values_name_the_flag(run, flag, value, message):
    r = run("fx,inputs", dry_run=True, **{flag: value})
    assert r["return"] == 1 and r["error"] == message


def test_choices_are_normalised(run):
    assert ok(run("fx,inputs", scenario="singlestream"))["new_env"]["FX_SCENARIO"] == "SingleStream"


def test_results_folder_that_is_a_file_fails_first(run, tmp_path):
    (tmp_path / "afile").write_text("")
    r = run("fx,inputs", out_dir=str(tmp_path / "afile"))
    assert r["return"] == 1 and "is a file; give a folder" in r["error"]


# ----------------------------------------------------------------------------- faults leave nothing behind


def _cm(home, *args, **kw):
    return subprocess.run(["cm", *args], env=cm_env(home), capture_output=True, text=True, timeout=120, **kw)


def test_native_crash_names_the_script_and_the_rerun(cm_home, tmp_path):
    r = _cm(cm_home, "run", "script", "--tags=fx,segv", cwd=tmp_path)
    assert r.returncode == 2
    assert "script 'fx-segv' crashed" in r.stderr and "SIGSEGV" in r.stderr
    assert "about to crash" in r.stderr and "re-run just this step: cm run script --tags=fx,segv" in r.stderr
    assert os.listdir(Path(cm_home) / "cache" / ".tmp") == []


def _start_slow(home: Path, tmp_path: Path) -> tuple[subprocess.Popen, int]:
    pid_file = tmp_path / "child.pid"
    proc = subprocess.Popen(
        ["cm", "run", "script", "--tags=fx,slow", "--seconds=60", f"--pid_file={pid_file}"],
        env=cm_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    for line in proc.stdout:
        if line.strip() == "started":
            break
    return proc, int(pid_file.read_text())


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, -9)])
def test_interrupt_leaves_nothing_behind(cm_home, tmp_path, sig, code):
    proc, child = _start_slow(cm_home, tmp_path)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code
    if sig != signal.SIGKILL:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert lines == ["CM error: interrupted in fx-slow; nothing cached!"], err
    deadline = time.time() + 10
    while _alive(child) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(child), "the run step outlived cm"
    cache = Path(cm_home) / "cache"
    assert CacheStore(str(cache)).entries() == []
    if sig == signal.SIGKILL:  # nothing could clean up: the next command does
        assert len(CacheStore(str(cache)).leftovers()) == 1
        assert "unfinished" in _cm(cm_home, "show", "cache").stdout
    again = _cm(cm_home, "run", "script", "--tags=fx,slow", "--seconds=0", f"--pid_file={tmp_path / 'p2'}",
                cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert os.listdir(cache / ".tmp") == []
    assert len(CacheStore(str(cache)).entries()) == 1


def test_show_cache_is_readable_and_survives_a_closed_pipe(cm_home, tmp_path):
    data = tmp_path / "d.txt"
    data.write_text("x")
    assert _cm(cm_home, "run", "script", "--tags=fx,path", f"--data_path={data}", cwd=tmp_path).returncode == 0
    shown = _cm(cm_home, "show", "cache")
    assert shown.returncode == 0
    assert "fx-path" in shown.stdout and "made" in shown.stdout and f"FX_DATA_PATH={data}" in shown.stdout
    piped = subprocess.run("cm show cache | head -1", shell=True, env=cm_env(cm_home), capture_output=True,
                           text=True, timeout=60)
    assert "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr


def test_api_interrupt_returns_130_and_discards_the_entry(run, tmp_path, monkeypatch):
    import cm_script_engine.runner as runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_native", interrupted)
    r = run("fx,slow", pid_file=str(tmp_path / "p"))
    assert r == {"return": 130, "error": "interrupted in fx-slow; nothing cached"}
    assert os.listdir(run.cache / ".tmp") == []


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip("process-death guarantees are Linux-specific (prctl)")


def test_run_step_keeps_the_terminal_for_progress_bars(cm_home, tmp_path):
    """On a terminal, a run step gets one too (tqdm draws live); in a pipe it gets a pipe."""
    import pty

    primary, secondary = pty.openpty()
    proc = subprocess.Popen(["cm", "run", "script", "--tags=fx,tty"], env=cm_env(cm_home), stdout=secondary,
                            stderr=secondary, cwd=tmp_path)
    os.close(secondary)
    seen = b""
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(primary)
    assert proc.wait(timeout=60) == 0
    assert b"tty=yes" in seen
    piped = _cm(cm_home, "run", "script", "--tags=fx,tty", cwd=tmp_path)
    assert "tty=no" in piped.stdout


def test_cache_removal_keeps_protected_entries_unless_named(cm_home, tmp_path):
    data = tmp_path / "d.txt"
    data.write_text("x")
    assert _cm(cm_home, "run", "script", "--tags=fx,path", f"--data_path={data}", cwd=tmp_path).returncode == 0
    assert _cm(cm_home, "run", "script", "--tags=fx,slow", f"--pid_file={tmp_path / 'p'}", cwd=tmp_path).returncode == 0
    removed = _cm(cm_home, "rm", "cache", "--tags=fx", "--all")
    assert removed.returncode == 0 and "kept" in removed.stdout and "cm rm cache fx-slow" in removed.stdout
    assert [e.alias for e in CacheStore(str(Path(cm_home) / "cache")).entries()] == ["fx-slow"]
    assert _cm(cm_home, "rm", "cache", "fx-slow").returncode == 0
    assert CacheStore(str(Path(cm_home) / "cache")).entries() == []


def test_detection_script_runs_once_per_run_and_packages_key_the_cache(run, tmp_path):
    """detect-like scripts asked by several scripts in one run answer from the first time; `cache_key_packages`
    puts an installed distribution's version and files into a key."""
    from cm_script_engine.engine import installed_packages

    r = ok(run("fx,chain"))
    leaf_steps = [s for s in r["steps"] if s["alias"] == "fx-leaf"]
    assert [s["cache"] for s in leaf_steps] == ["none", "same run"]
    packages = installed_packages(["pyyaml", "no-such-distribution-x"])
    assert packages["pyyaml"].startswith(__import__("yaml").__version__ + ":")
    assert packages["no-such-distribution-x"] == ""


def test_unregistered_collection_says_to_register(tmp_path):
    r = subprocess.run(["cm", "run", "script", "--tags=run-mlperf,inference,_tvm"], env=cm_env(tmp_path / "empty"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 4 and "run cm-register-repo" in r.stderr


@pytest.mark.parametrize("words", [["show", "cache"], ["rm", "cache"], ["find", "cache"], ["run", "script"]])
def test_help_prints_without_a_traceback(cm_home, words):
    r = _cm(cm_home, *words, "-h")
    assert r.returncode == 0 and "Traceback" not in r.stdout + r.stderr and "def " in r.stdout


def test_dry_run_shows_the_steps_after_preprocess(run, capsys):
    ok(run("fx,after", dry_run=True))
    out = capsys.readouterr().out
    assert "fx,echo  [after fx-after's preprocess, if FX_AFTER_ENABLED=yes]" in out
    assert ok(run("fx,after", env={"FX_TEXT": "hi"}))["steps"][-1]["alias"] == "fx-echo"  # and it runs for real
