"""Dependencies: when they run, which tags they resolve to, and overrides addressed by `names`.

Overrides come from the command line (`--adr.<name>.tags=...`) and from `add_deps_recursive` /
`add_deps` of variations; all are dicts `{name: {tags, version, version_min, version_max, env}}`.
"""
from __future__ import annotations

import copy
import fnmatch
import re
from collections.abc import Mapping
from typing import Any

from .errors import ScriptError
from .meta import split_tags

_TRUE = {"yes", "on", "true", "1"}
_FALSE = {"no", "off", "false", "0", ""}
VERSION_FIELDS = ("version", "version_min", "version_max")


def _env_matches(value: Any, allowed: Any) -> bool:
    allowed_list = allowed if isinstance(allowed, list) else [allowed]
    text = str(value).strip().lower() if value is not None else ""
    for a in allowed_list:
        a_text = str(a).strip().lower()
        if a is True or a_text in _TRUE:  # CM's rule: any value that is set and not false-like
            ok = text not in _FALSE
        elif a is False or a_text in _FALSE - {""}:
            ok = text in _FALSE
        elif any(c in a_text for c in "*?["):  # a glob: "?*" means "set to anything non-empty"
            ok = fnmatch.fnmatchcase(text, a_text)
        else:
            ok = text == a_text
        if ok:
            return True
    return False


def conditions_hold(conditions: Mapping[str, Any] | None, env: Mapping[str, Any]) -> bool:
    """All `KEY: [values]` pairs hold in env (CM's meaning for enable_if_env and skip_if_env)."""
    return all(_env_matches(env.get(key), allowed) for key, allowed in (conditions or {}).items())


def any_condition_holds(conditions: Mapping[str, Any] | None, env: Mapping[str, Any]) -> bool:
    """One of the `KEY: [values]` pairs holds (CM's enable_if_any_env and skip_if_any_env)."""
    return any(_env_matches(env.get(key), allowed) for key, allowed in (conditions or {}).items())


def should_run(dep: Mapping[str, Any], env: Mapping[str, Any]) -> bool:
    if dep.get("enable_if_env") and not conditions_hold(dep["enable_if_env"], env):
        return False
    if dep.get("enable_if_any_env") and not any_condition_holds(dep["enable_if_any_env"], env):
        return False
    if dep.get("skip_if_env") and conditions_hold(dep["skip_if_env"], env):
        return False
    if dep.get("skip_if_any_env") and any_condition_holds(dep["skip_if_any_env"], env):
        return False
    return True


def resolve_tags(dep: Mapping[str, Any], env: Mapping[str, Any]) -> list[str]:
    """Dep tags plus tags computed from env (`update_tags_from_env[_with_prefix]`)."""
    tags = split_tags(dep.get("tags"))
    for key in dep.get("update_tags_from_env") or []:
        tags += split_tags(env.get(key))
    for prefix, keys in (dep.get("update_tags_from_env_with_prefix") or {}).items():
        for key in keys:
            for value in split_tags(env.get(key)):
                tags.append(prefix + value)
    return list(dict.fromkeys(tags))


def merge_overrides(*layers: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Combine override dicts; later layers win, tags accumulate."""
    result: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for name, override in (layer or {}).items():
            if not isinstance(override, dict):
                raise ScriptError(f"override for dependency '{name}' must be a mapping like --adr.{name}.tags=...")
            current = result.setdefault(name, {})
            for key, value in override.items():
                if key == "tags" and current.get("tags"):
                    current["tags"] = ",".join(split_tags(current["tags"]) + split_tags(value))
                elif key == "env":
                    current["env"] = {**current.get("env", {}), **value}
                else:
                    current[key] = value
    return result


def apply_overrides(dep: Mapping[str, Any], overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A copy of dep with the overrides of every name it carries applied."""
    result = copy.deepcopy(dict(dep))
    for name in dep.get("names") or []:
        override = overrides.get(name)
        if not override:
            continue
        if override.get("tags"):
            result["tags"] = ",".join(dict.fromkeys(split_tags(result.get("tags")) + split_tags(override["tags"])))
        for key in VERSION_FIELDS:
            if key in override:
                result[key] = str(override[key])
        if override.get("env"):
            result["env"] = {**(result.get("env") or {}), **override["env"]}
    return result


def version_tuple(version: str) -> tuple:
    parts = re.findall(r"\d+|[A-Za-z]+", str(version))
    return tuple((0, int(p)) if p.isdigit() else (-1, p) for p in parts)


def check_version(script: str, found: str, spec: Mapping[str, Any]) -> None:
    """Raise when the version a script reports is outside the requested range."""
    wanted, low, high = (spec.get(k) for k in VERSION_FIELDS)
    if not (wanted or low or high):
        return
    if not found:
        return  # the script reports no version: nothing to compare
    if wanted and version_tuple(found) != version_tuple(wanted):
        raise ScriptError(f"script '{script}' provides version {found}, but version {wanted} was requested")
    if low and version_tuple(found) < version_tuple(low):
        raise ScriptError(f"script '{script}' provides version {found}, older than the required minimum {low}")
    if high and version_tuple(found) > version_tuple(high):
        raise ScriptError(f"script '{script}' provides version {found}, newer than the allowed maximum {high}")
