"""Env handling: merging with CM's `+KEY` lists, `<<<VAR>>>` substitution, what flows up, process env.

Values stay data: nothing here goes through a shell, so `--env.X='a; rm -rf /'` arrives as a literal.
"""
from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

_SUBST = re.compile(r"<<<([A-Za-z0-9_+.\-]+)>>>")


def is_list_key(key: str) -> bool:
    """`+PATH`, `+LD_LIBRARY_PATH`, `+CFLAGS`: lists that are prepended to the inherited value."""
    return key.startswith("+")


def normalise(value: Any) -> Any:
    """Env values are strings (lists for `+KEY`); CLI flags arrive as booleans."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return [normalise(v) for v in value]
    if value is None:
        return ""
    return str(value)


def merge(dst: dict[str, Any], src: Mapping[str, Any] | None, *, only_missing: bool = False) -> dict[str, Any]:
    """Merge `src` into `dst` in place. `+KEY` lists are extended without duplicates."""
    for key, value in (src or {}).items():
        value = normalise(value)
        if is_list_key(key):
            items = value if isinstance(value, list) else [value]
            current = list(dst.get(key) or [])
            dst[key] = current + [v for v in items if v not in current]
        elif not only_missing or key not in dst:
            dst[key] = value
    return dst


def substitute(env: dict[str, Any]) -> dict[str, Any]:
    """Replace `<<<VAR>>>` with env values (empty when unset), a few rounds for nested references."""

    def expand(text: str) -> str:
        for _ in range(5):
            new = _SUBST.sub(lambda m: _flat(env.get(m.group(1), "")), text)
            if new == text:
                break
            text = new
        return text

    for key, value in env.items():
        if isinstance(value, str) and "<<<" in value:
            env[key] = expand(value)
        elif isinstance(value, list):
            env[key] = [expand(v) if isinstance(v, str) else v for v in value]
    return env


def _flat(value: Any) -> str:
    return os.pathsep.join(value) if isinstance(value, list) else str(value)


def matches(key: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def select(env: Mapping[str, Any], patterns: Iterable[str]) -> dict[str, Any]:
    """The part of env whose keys match the wildcard patterns (`new_env_keys`, `cache_key_env`)."""
    patterns = list(patterns)
    return {k: v for k, v in env.items() if matches(k, patterns)}


def for_process(env: Mapping[str, Any], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a subprocess sees: os.environ + env, `+KEY` lists prepended to KEY."""
    result = dict(os.environ if base is None else base)
    for key, value in env.items():
        if is_list_key(key):
            name = key[1:]
            separator = " " if name.endswith("FLAGS") else os.pathsep
            parts = [str(v) for v in value] + ([result[name]] if result.get(name) else [])
            result[name] = separator.join(parts)
        else:
            result[key] = _flat(value)
    return result


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """Keys that a step added or changed (for `-v`)."""
    return {k: v for k, v in after.items() if before.get(k) != v}


def parse_env_file(text: str) -> dict[str, str]:
    """CM's tmp-run-env.out: KEY=VALUE lines; blank lines and comments ignored; values kept literal."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        result[key.strip()] = value
    return result
