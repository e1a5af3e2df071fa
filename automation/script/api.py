"""The engine's entry points, called by the cmind automations (`module.py`) with CM's input dict."""
from __future__ import annotations

import os
import sys
from typing import Any

from .cache import CacheStore
from .deps import merge_overrides
from .engine import RunContext, run_script
from .errors import ScriptError
from .report import Reporter
from .search import ScriptIndex, parse_tags

# Input keys that steer the engine; every other key is an input of the script itself.
CONTROL_KEYS = {
    "action", "automation", "tags", "artifact", "artifacts", "cmd", "out", "env", "adr", "new",
    "dry_run", "dry-run", "print_deps", "quiet", "v", "verbose", "silent", "version", "version_min",
    "version_max", "parsed_automation", "parsed_artifact", "parsed_artifacts", "all", "force", "f", "h", "help",
    "con",
}


PATH_INPUT_SUFFIXES = ("_path", "_dir", "_file", "_conf", "_database")


def absolute_path_inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    """Inputs that name paths are resolved against the caller's directory here, once: hooks of cached
    scripts run in their cache entry's folder, where a relative path would point elsewhere."""
    result = dict(inputs)
    for key, value in inputs.items():
        if (key.endswith(PATH_INPUT_SUFFIXES) and isinstance(value, str) and value
                and "://" not in value and not os.path.isabs(value)):
            result[key] = os.path.abspath(os.path.expanduser(value))
    return result


def cache_root(cm_home: str) -> str:
    """`CM_CACHE_DIR` if set, else `<CM home>/cache` (CM_REPOS moves the home, and so the cache)."""
    return os.path.abspath(os.environ.get("CM_CACHE_DIR") or os.path.join(cm_home, "cache"))


def _flag(i: dict[str, Any], *names: str) -> bool:
    return any(i.get(n) not in (None, False, "", "no", "false", "0") for n in names)


def run(i: dict[str, Any], repo_paths: list[str], cache_root: str, automation: Any = None) -> dict[str, Any]:
    """`cm run script`: returns CM's dict with new_env, new_state and the resolved dependency list."""
    try:
        tags, variations = parse_tags(i.get("tags"))
        env = i.get("env") or {}
        if not isinstance(env, dict):
            raise ScriptError("--env must be given as --env.KEY=VALUE")
        adr = i.get("adr") or {}
        if not isinstance(adr, dict):
            raise ScriptError("--adr must be given as --adr.<dependency name>.tags=...")
        dry_run = _flag(i, "dry_run", "dry-run", "print_deps")
        ctx = RunContext(
            index=ScriptIndex(repo_paths),
            cache=CacheStore(cache_root),
            reporter=Reporter(sys.stdout, verbose=_flag(i, "v", "verbose"), silent=_flag(i, "silent")),
            output=sys.stdout,
            automation=automation,
            user_env={k: v for k, v in env.items()},
            force_new=_flag(i, "new"),
            dry_run=dry_run,
        )
        inputs = absolute_path_inputs({k: v for k, v in i.items() if k not in CONTROL_KEYS})
        version_spec = {k: i[k] for k in ("version", "version_min", "version_max") if i.get(k)}
        result = run_script(ctx, tags, variations, artifact=i.get("artifact") or "", inputs=inputs,
                            env=dict(env), overrides=merge_overrides(adr), version_spec=version_spec)
    except ScriptError as e:
        return e.to_cm()
    return {
        "return": 0,
        "new_env": result.new_env,
        "new_state": result.new_state,
        "version": result.version,
        "cache_path": result.cache_path,
        "deps": ctx.steps[1:],
        "steps": ctx.steps,
        "dry_run": dry_run,
    }


def search(i: dict[str, Any], repo_paths: list[str]) -> dict[str, Any]:
    """`cm find script --tags=...`: the matching scripts (variation tags are ignored)."""
    try:
        index = ScriptIndex(repo_paths)
        tags, _ = parse_tags(i.get("tags"))
        found = index.find_by_artifact(i["artifact"]) if i.get("artifact") else index.find_by_tags(tags)
    except ScriptError as e:
        return e.to_cm()
    if i.get("out") == "con":
        for script in found:
            print(f"{script.alias:45s} {script.path}")
    return {"return": 0, "list": [{"alias": s.alias, "uid": s.uid, "path": s.path, "tags": s.tags} for s in found]}


def _matching_entries(i: dict[str, Any], root: str):
    tags, variations = parse_tags(i.get("tags"))
    if i.get("artifact"):
        tags.append(str(i["artifact"]))
    return CacheStore(root).find(tags, variations)


def show_cache(i: dict[str, Any], root: str) -> dict[str, Any]:
    """`cm show cache [--tags=...]`: one line per entry, the full record with --out=json."""
    try:
        entries = _matching_entries(i, root)
    except ScriptError as e:
        return e.to_cm()
    if i.get("out") == "con":
        if not entries:
            print(f"no cache entries match in {root}")
        for entry in entries:
            variations = ",".join("_" + v for v in entry.record.get("variations", []))
            print(f"{entry.alias} {variations}\n  path: {entry.path}\n  created: {entry.record.get('created')}"
                  f"  ({entry.record.get('seconds', 0)} s to make)")
    return {"return": 0, "list": [{"path": e.path, **e.record} for e in entries]}


def remove_cache(i: dict[str, Any], root: str) -> dict[str, Any]:
    """`cm rm cache --tags=...`: several matches need --all, since we never prompt."""
    try:
        entries = _matching_entries(i, root)
        if not entries:
            raise ScriptError(f"no cache entry matches tags '{i.get('tags', '')}' in {root}")
        if len(entries) > 1 and not _flag(i, "all", "force", "f"):
            listing = "; ".join(f"{e.alias} {','.join('_' + v for v in e.record.get('variations', []))} ({e.path})"
                                for e in entries)
            raise ScriptError(f"{len(entries)} cache entries match: {listing}. "
                              "Narrow --tags to pick one, or add --all to remove them all")
        store = CacheStore(root)
        for entry in entries:
            store.remove(entry)
            if i.get("out") == "con":
                print(f"removed {entry.path}")
    except ScriptError as e:
        return e.to_cm()
    return {"return": 0, "removed": [e.path for e in entries]}
