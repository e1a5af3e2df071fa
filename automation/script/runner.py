"""Run one script's steps: `customize.py` hooks and the native `run.sh` / `run.py`.

Commands are argument lists, never shell strings built from user values; env reaches the process as
its environment. Results come back through CM's files `tmp-run-env.out` and `tmp-run-state.json`.
"""
from __future__ import annotations

import collections
import ctypes
import importlib.util
import json
import os
import signal
import subprocess
import sys
from types import ModuleType
from typing import IO, Any

from . import env as envlib
from .errors import ScriptError, check

RUN_ENV_FILE = "tmp-run-env.out"
RUN_STATE_FILE = "tmp-run-state.json"
NATIVE_ENTRY_POINTS = (("run.sh", ("bash",)), ("run.py", (sys.executable,)))
TAIL_LINES = 25

_customize_modules: dict[str, ModuleType | None] = {}


def load_customize(script_path: str) -> ModuleType | None:
    """Import `customize.py` by path (once per process), with its folder first on sys.path."""
    if script_path in _customize_modules:
        return _customize_modules[script_path]
    file = os.path.join(script_path, "customize.py")
    module = None
    if os.path.isfile(file):
        name = "cm_customize_" + os.path.basename(script_path).replace("-", "_")
        spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickling look modules up by name
        with _on_sys_path(script_path):
            try:
                spec.loader.exec_module(module)
            except Exception as e:  # report any import failure as the script's fault, with where
                raise ScriptError(f"{file}: cannot be imported ({type(e).__name__}: {e})") from e
    _customize_modules[script_path] = module
    return module


class _on_sys_path:
    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> None:
        sys.path.insert(0, self.path)

    def __exit__(self, *exc: Any) -> None:
        try:
            sys.path.remove(self.path)
        except ValueError:  # pragma: no cover - a hook removed it itself
            pass


def call_hook(script_path: str, hook: str, hook_input: dict[str, Any], alias: str) -> dict[str, Any]:
    """Call preprocess/postprocess if customize.py defines it; exceptions become a clear error."""
    module = load_customize(script_path)
    function = getattr(module, hook, None) if module else None
    if function is None:
        return {"return": 0}
    with _on_sys_path(script_path):
        try:
            result = function(hook_input)
        except ScriptError:
            raise
        except Exception as e:
            raise ScriptError(f"script '{alias}' {hook}() raised {type(e).__name__}: {e}") from e
    return check(result, f"script '{alias}' {hook}()")


def native_entry_point(script_path: str, script_name: str | None = None,
                       env: dict[str, Any] | None = None) -> list[str] | None:
    """Our scripts: run.sh, else run.py. A named script (CM's `script_name`, or a hook's run_native_script):
    `<name>.sh`, preferring CM's OS-specific spellings `<name>-<flavor>[-<version>][-<platform>].sh`."""
    if script_name is None:
        for name, interpreter in NATIVE_ENTRY_POINTS:
            full = os.path.join(script_path, name)
            if os.path.isfile(full):
                return [*interpreter, full]
        return None
    env = env or {}
    flavor, version, machine = (str(env.get(k, "")) for k in
                                ("CM_HOST_OS_FLAVOR", "CM_HOST_OS_VERSION", "CM_HOST_PLATFORM_FLAVOR"))
    for parts in ((flavor, version, machine), (flavor, machine), (flavor, version), (flavor,), (machine,), ()):
        if parts and not all(parts):
            continue
        full = os.path.join(script_path, "-".join((script_name, *parts)) + ".sh")
        if os.path.isfile(full):
            return ["bash", full]
    return None


def run_native(
    script_path: str,
    run_dir: str,
    env: dict[str, Any],
    alias: str,
    rerun_command: str,
    output: IO[str],
    script_name: str | None = None,
    cm_style: bool = False,
) -> tuple[dict[str, str], dict[str, Any]]:
    """Run run.sh/run.py in run_dir; return the env and state it wrote back. Raise on non-zero exit.

    cm_style (a script written for CM's engine): the env's own CM_PYTHON_BIN_WITH_PATH (a Python that
    get-python3 found) is kept, and CM's CM_TMP_CURRENT_SCRIPT_WORK_PATH is set."""
    command = native_entry_point(script_path, script_name, env)
    if command is None:
        return {}, {}
    for name in (RUN_ENV_FILE, RUN_STATE_FILE):
        if os.path.exists(os.path.join(run_dir, name)):
            os.remove(os.path.join(run_dir, name))
    process_env = envlib.for_process(env)
    process_env.update(CM_TMP_CURRENT_SCRIPT_PATH=script_path, CM_TMP_CURRENT_PATH=run_dir)
    if cm_style:
        process_env["CM_TMP_CURRENT_SCRIPT_WORK_PATH"] = run_dir
        process_env.setdefault("CM_PYTHON_BIN_WITH_PATH", sys.executable)
    else:
        process_env["CM_PYTHON_BIN_WITH_PATH"] = sys.executable
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    code = _run_relaying(command, run_dir, process_env, output, tail)
    if code < 0:
        raise ScriptError(
            f"script '{alias}' crashed: {os.path.basename(command[-1])} was killed by signal "
            f"{_signal_name(-code)}.\n  last lines of its output:\n    " + ("\n    ".join(tail) or "(no output)")
            + f"\n  re-run just this step: {rerun_command}", code=2)
    if code != 0:
        last = "\n    ".join(tail) or "(no output)"
        raise ScriptError(
            f"script '{alias}' failed: {os.path.basename(command[-1])} exited with code {code}.\n"
            f"  last lines of its output:\n    {last}\n"
            f"  re-run just this step: {rerun_command}",
            code=2,
        )
    return read_run_results(run_dir, alias)


def _terminal_of(output: IO[str]) -> int | None:
    try:
        return output.fileno() if output.isatty() else None
    except (AttributeError, OSError, ValueError):
        return None


def _run_relaying(command: list[str], run_dir: str, process_env: dict[str, str], output: IO[str],
                  tail: collections.deque[str]) -> int:
    """Run the step, copy its output to `output` and keep its last lines. On a terminal the step gets a
    pseudo-terminal of the same size, so progress bars (tqdm) draw live, with elapsed and remaining time;
    elsewhere (CI logs, pipes) it writes to a pipe."""
    terminal = _terminal_of(output)
    if terminal is None or not sys.platform.startswith("linux"):
        with subprocess.Popen(command, cwd=run_dir, env=process_env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1,
                              preexec_fn=_die_with_parent) as process:
            try:
                for line in process.stdout:
                    output.write(line)
                    output.flush()
                    tail.append(line.rstrip("\n"))
                return process.wait()
            except BaseException:  # interrupted (Ctrl-C, SIGTERM): the step must not outlive us
                stop_process(process)
                raise
    import fcntl
    import pty
    import termios

    primary, secondary = pty.openpty()
    try:
        fcntl.ioctl(secondary, termios.TIOCSWINSZ, fcntl.ioctl(terminal, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        pass
    try:
        process = subprocess.Popen(command, cwd=run_dir, env=process_env, stdin=subprocess.DEVNULL, stdout=secondary,
                                   stderr=secondary, preexec_fn=_die_with_parent)
    finally:
        os.close(secondary)
    pending = ""
    try:
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the step closed its terminal (it exited)
                break
            if not chunk:
                break
            text = chunk.decode(errors="replace")
            output.write(text)
            output.flush()
            pending += text
            *lines, pending = pending.replace("\r\n", "\n").split("\n")
            tail.extend(line.rsplit("\r", 1)[-1] for line in lines)
        if pending.strip():
            tail.append(pending.rsplit("\r", 1)[-1])
        return process.wait()
    except BaseException:
        stop_process(process)
        raise
    finally:
        os.close(primary)


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: Linux sends it SIGTERM when `cm` dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except OSError:  # pragma: no cover
            pass


def stop_process(process: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def read_run_results(run_dir: str, alias: str) -> tuple[dict[str, str], dict[str, Any]]:
    new_env: dict[str, str] = {}
    new_state: dict[str, Any] = {}
    env_file = os.path.join(run_dir, RUN_ENV_FILE)
    if os.path.isfile(env_file):
        with open(env_file, encoding="utf-8") as f:
            new_env = envlib.parse_env_file(f.read())
    state_file = os.path.join(run_dir, RUN_STATE_FILE)
    if os.path.isfile(state_file):
        try:
            with open(state_file, encoding="utf-8") as f:
                new_state = json.load(f)
        except ValueError as e:
            raise ScriptError(f"script '{alias}' wrote an invalid {RUN_STATE_FILE}: {e}") from e
    return new_env, new_state
