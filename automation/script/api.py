"""The engine's entry points, called by the cmind automations (`module.py`) with CM's input dict."""
from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from .cache import CacheStore, folder_size
from .deps import merge_overrides
from .engine import RunContext, run_script
from .errors import ScriptError
from .report import Reporter
from .search import ScriptIndex, parse_tags

# Input keys that steer the engine; every other key is an input of the script itself.
CONTROL_KEYS = {
    "action", "automation", "tags", "artifact", "artifacts", "cmd", "out", "env", "adr", "new",
    "dry_run", "dry-run", "print_deps", "quiet", "v", "verbose", "silent", "version", "version_min",
    "version_max", "version_max_usable", "parsed_automation", "parsed_artifact", "parsed_artifacts", "all", "force",
    "f", "h", "help", "con", "j", "json",
}


_NOT_A_PATH = {"no", "none", "off"}  # `--tuning_db=no`: a word, not a file named "no"
PATH_INPUT_SUFFIXES = ("_path", "_dir", "_file", "_conf", "_database", "_db")


def absolute_path_inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    """Inputs that name paths are resolved against the caller's directory here, once: hooks of cached
    scripts run in their cache entry's folder, where a relative path would point elsewhere."""
    result = dict(inputs)
    for key, value in inputs.items():
        if (key.endswith(PATH_INPUT_SUFFIXES) and isinstance(value, str) and value
                and "://" not in value and not os.path.isabs(value)
                and value.lower() not in _NOT_A_PATH):
            result[key] = os.path.abspath(os.path.expanduser(value))
    return result


def index_dir(cache_root: str) -> str:
    """Where the script index lives: beside the cache entries (one per CM home, or per CM_CACHE_DIR)."""
    return os.path.join(cache_root, ".index")


def cache_root(cm_home: str) -> str:
    """`CM_CACHE_DIR` if set, else `<CM home>/cache` (CM_REPOS moves the home, and so the cache)."""
    return os.path.abspath(os.environ.get("CM_CACHE_DIR") or os.path.join(cm_home, "cache"))


def _flag(i: dict[str, Any], *names: str) -> bool:
    return any(i.get(n) not in (None, False, "", "no", "false", "0") for n in names)


class Interrupted(BaseException):
    """SIGTERM while a run is in progress (SIGINT arrives as KeyboardInterrupt)."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Interrupted()


def run(i: dict[str, Any], repo_paths: list[str], cache_root: str, automation: Any = None) -> dict[str, Any]:
    """`cm run script`: returns CM's dict with new_env, new_state and the resolved dependency list.

    Ctrl-C and SIGTERM end the run with one line naming the step that was interrupted, exit code 130 or 143
    (128 + the signal, as shells report it); the step's child process is stopped and its cache folder dropped.
    """
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if _main_thread() else None
    try:
        return _run(i, repo_paths, cache_root, automation, _set)
    except (KeyboardInterrupt, Interrupted) as e:
        code = 130 if isinstance(e, KeyboardInterrupt) else 143
        where = (_current[0].failed_in if _current else "") or "cm"
        return {"return": code, "error": f"interrupted in {where}; nothing cached"}
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        _current.clear()


_current: list[RunContext] = []


def _set(ctx: RunContext) -> None:
    _current.clear()
    _current.append(ctx)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _user_paths(inputs: dict[str, Any], env: dict[str, Any]) -> set[str]:
    paths = {v for k, v in inputs.items() if k.endswith(PATH_INPUT_SUFFIXES) and isinstance(v, str) and v}
    paths |= {v for v in env.values() if isinstance(v, str) and os.path.isabs(v)}
    return paths


def _run(i: dict[str, Any], repo_paths: list[str], cache_root: str, automation: Any, register) -> dict[str, Any]:
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
            index=ScriptIndex(repo_paths, index_dir(cache_root)),
            cache=CacheStore(cache_root),
            reporter=Reporter(sys.stdout, verbose=_flag(i, "v", "verbose"), silent=_flag(i, "silent")),
            output=sys.stdout,
            automation=automation,
            user_env={k: v for k, v in env.items()},
            force_new=_flag(i, "new"),
            dry_run=dry_run,
            quiet=_flag(i, "quiet"),
        )
        register(ctx)
        inputs = absolute_path_inputs({k: v for k, v in i.items() if k not in CONTROL_KEYS})
        ctx.user_paths = _user_paths(inputs, env)
        if not dry_run:
            removed = ctx.cache.sweep()
            if removed:
                ctx.reporter.notice(f"removed {len(removed)} unfinished folder(s) that a killed run left in "
                                    f"{os.path.dirname(removed[0])}")
        version_spec = {k: i[k] for k in ("version", "version_min", "version_max", "version_max_usable") if i.get(k)}
        result = run_script(ctx, tags, variations, artifact=i.get("artifact") or "", inputs=inputs,
                            env=dict(env), overrides=merge_overrides(adr), version_spec=version_spec)
    except ScriptError as e:
        return e.to_cm()
    return {
        "return": 0,
        "env": result.env if result.env is not None else {**env, **result.new_env},
        "new_env": result.new_env,
        "state": result.state if result.state is not None else dict(result.new_state),
        "new_state": result.new_state,
        "version": result.version,
        "cache_path": result.cache_path,
        "deps": ctx.steps[1:],
        "steps": ctx.steps,
        "dry_run": dry_run,
    }


def search(i: dict[str, Any], repo_paths: list[str], cache_root: str | None = None) -> dict[str, Any]:
    """`cm find script --tags=...`: the matching scripts (variation tags are ignored)."""
    try:
        index = ScriptIndex(repo_paths, index_dir(cache_root) if cache_root else None)
        tags, _ = parse_tags(i.get("tags"))
        found = index.find_by_artifact(i["artifact"]) if i.get("artifact") else index.find_by_tags(tags)
    except ScriptError as e:
        return e.to_cm()
    if i.get("out") == "con":
        for script in found:
            print(f"{script.alias:45s} {script.path}")
    return {"return": 0, "list": [{"alias": s.alias, "uid": s.uid, "path": s.path, "tags": s.tags} for s in found]}


def engine_version(i: dict[str, Any], repo_paths: list[str], cache_root: str, engine_path: str) -> dict[str, Any]:
    """What `cm version script` prints: this engine, where it is, and per collection how many scripts it runs and
    whether they were written for CM's own engine (which then does not run: this one does)."""
    from importlib import metadata

    from .search import written_for_cm_engine

    try:
        version = metadata.version("mlperf-tvm-cm")
    except metadata.PackageNotFoundError:
        version = "unknown"
    try:
        scripts = ScriptIndex(repo_paths, index_dir(cache_root)).scripts
    except ScriptError as e:
        return e.to_cm()
    collections = []
    for repo in repo_paths:
        count = sum(1 for s in scripts if s.path.startswith(os.path.join(repo, "script") + os.sep))
        if count or os.path.isdir(os.path.join(repo, "script")):
            collections.append({"path": repo, "scripts": count, "written_for_cm_engine": written_for_cm_engine(repo)})
    result = {"return": 0, "engine": "cm_script_engine", "version": version, "engine_path": engine_path,
              "collections": collections}
    if i.get("out") == "con":
        print(f"script automation: cm_script_engine {version} (mlperf-tvm-cm) at {engine_path}")
        for c in collections:
            kind = "written for CM's engine, run by this one" if c["written_for_cm_engine"] else "run by this engine"
            print(f"  {c['path']}: {c['scripts']} scripts ({kind})")
    return result


def _matching_entries(i: dict[str, Any], root: str):
    tags, variations = parse_tags(i.get("tags"))
    if i.get("artifact"):
        tags.append(str(i["artifact"]))
    return CacheStore(root).find(tags, variations)


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _short(value: Any, width: int = 70) -> str:
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= width else "..." + text[-(width - 3):]


def _print_entries(entries: list, root: str, leftovers: list[str]) -> None:
    if not entries:
        print(f"no cache entries match in {root}")
    now = time.time()
    for entry in entries:
        record = entry.record
        variations = ",".join("_" + v for v in record.get("variations", []))
        made = record.get("seconds", 0)
        age = _age(now - record["created_at"]) if record.get("created_at") else record.get("created", "")
        print(f"{entry.alias} {variations}".rstrip())
        print(f"  {_size(folder_size(entry.path))}, made {age} in {made:.1f} s: {entry.path}")
        key_env = (record.get("key_inputs") or {}).get("env") or {}
        for name, value in sorted(key_env.items()):
            print(f"    {name}={_short(value)}")
    for path in leftovers:
        print(f"unfinished (a killed run left it; the next run or `cm rm cache --all` removes it): {path}")


def show_cache(i: dict[str, Any], root: str) -> dict[str, Any]:
    """`cm show cache [--tags=...]`: each entry's script, variations, size, age and key inputs."""
    try:
        entries = _matching_entries(i, root)
    except ScriptError as e:
        return e.to_cm()
    store = CacheStore(root)
    leftovers = store.leftovers() if not i.get("tags") else []
    if i.get("out") == "con":
        try:
            _print_entries(entries, root, leftovers)
            sys.stdout.flush()
        except BrokenPipeError:  # `cm show cache | head`: the reader has gone, which is fine
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
    return {"return": 0, "list": [{"path": e.path, **e.record} for e in entries], "unfinished": leftovers}


def find_cache(i: dict[str, Any], root: str) -> dict[str, Any]:
    """`cm find cache --tags=...` and a hook's `cm.access({'action': 'find', 'automation': 'cache', ...})`: CM
    artifact objects (`.path`, `.meta` with CM's tags) of the matching entries, CM's tags included."""
    from .cm_artifact import artifact

    try:
        entries = _matching_entries(i, root)
    except ScriptError as e:
        return e.to_cm()
    found = [artifact(e.path, e.record) for e in entries]
    if i.get("out") == "con":
        for item in found:
            print(item.path)
    return {"return": 0, "list": found}


def _named(i: dict[str, Any], alias: str) -> bool:
    """Whether a removal request names this script itself (its alias as the artifact or as a tag)."""
    tags, _ = parse_tags(i.get("tags"))
    return alias == str(i.get("artifact") or "").split(":")[-1] or alias in tags


def remove_cache(i: dict[str, Any], root: str) -> dict[str, Any]:
    """`cm rm cache --tags=...`: several matches need --all, since we never prompt. Entries of scripts marked
    `cache_protected` (hours of tuning) are removed only when the request names that script."""
    try:
        matched = _matching_entries(i, root)
        entries = [e for e in matched if not e.record.get("protected") or _named(i, e.alias)]
        kept = [e for e in matched if e not in entries]
        sweeping = _flag(i, "all", "force", "f") and not i.get("tags")
        if not entries and not kept and not (sweeping and CacheStore(root).leftovers()):
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
        for entry in kept:
            if i.get("out") == "con":
                print(f"kept {entry.path} (protected: remove it by name, cm rm cache {entry.alias})")
        if sweeping:
            for path in store.sweep():
                if i.get("out") == "con":
                    print(f"removed unfinished {path}")
    except ScriptError as e:
        return e.to_cm()
    return {"return": 0, "removed": [e.path for e in entries], "kept": [e.path for e in kept]}
