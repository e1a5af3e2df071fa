"""The contract of a script's run step (`run.py`, a child process of `cm`), as in CM.

`customize.py` maps inputs to env; the engine starts `run.py` with that env as its process
environment; `run.py` does the work and hands results back in `tmp-run-env.out` (KEY=VALUE lines) and
`tmp-run-state.json`, in its working directory (the cache entry being built, for cached scripts).

    from cm_mlperf import run_step

    def main(env):
        ...
        return {"CM_X": value}, {"state_key": {...}}   # (new env, new state)

    if __name__ == "__main__":
        run_step.main(main)
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from collections.abc import Callable, Mapping
from typing import Any

RUN_ENV_FILE = "tmp-run-env.out"
RUN_STATE_FILE = "tmp-run-state.json"
_PR_SET_PDEATHSIG = 1


class StepError(Exception):
    """A failure of the run step with a one-line message for the user (no traceback)."""


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to signal this process when its parent dies (cm killed, even by SIGKILL).

    Call it first thing in `run.py` and in every pool worker's initializer: a killed run must not
    leave workers behind. A no-op where prctl is not available.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except OSError:  # pragma: no cover - no libc (musl images name it differently)
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os.kill(os.getpid(), sig)


def _exit_on_signal(signum: int, frame: Any) -> None:
    sys.exit(128 + signum)


def write_results(env: Mapping[str, Any] | None = None, state: Mapping[str, Any] | None = None,
                  directory: str = ".") -> None:
    """Write the step's new env (strings) and state (JSON) where the engine reads them."""
    lines = []
    for key, value in (env or {}).items():
        text = "" if value is None else str(value)
        if "\n" in text:
            raise ValueError(f"env value of {key} spans several lines")
        lines.append(f"{key}={text}")
    with open(os.path.join(directory, RUN_ENV_FILE), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + ("\n" if lines else ""))
    with open(os.path.join(directory, RUN_STATE_FILE), "w", encoding="utf-8") as f:
        json.dump(dict(state or {}), f, indent=2, sort_keys=True)


def env_int(env: Mapping[str, str], key: str, default: int, flag: str, minimum: int | None = None) -> int:
    """An integer setting from env; StepError naming the user's flag when it is not one."""
    raw = str(env.get(key, "") or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise StepError(f"{flag} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise StepError(f"{flag} must be at least {minimum}, got {value}")
    return value


def main(step: Callable[[Mapping[str, str]], tuple[Mapping[str, Any] | None, Mapping[str, Any] | None] | None]) -> None:
    """Run `step(os.environ)`, write its results, exit 1 with one line on StepError."""
    die_with_parent()
    signal.signal(signal.SIGTERM, _exit_on_signal)  # `finally` blocks run: pools are closed, temp files removed
    try:
        result = step(os.environ) or ({}, {})
    except StepError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; cm reports it in one line
        sys.exit(130)
    new_env, new_state = result
    write_results(new_env, new_state)
