"""Cache entries as CM `cache` artifacts, so that what CM's tools read finds them.

Every entry folder also holds CM's two files: `_cm.json` (automation `cache`, uid 541d6f712a6b464e, the
entry's uid, tags and `associated_script_artifact`) and `cm-cached-state.json` (`new_env`, `new_state`,
`version`), as CM's engine writes them. `cm find cache --tags=...` (our `cache` automation) and a hook that
searches the cache through `cm.access({'action': 'find', 'automation': 'cache', ...})` get CM artifact
objects (`.path`, `.meta`) for them.
"""
from __future__ import annotations

import json
import os
from typing import Any

CACHE_AUTOMATION_UID = "541d6f712a6b464e"
META_FILE = "_cm.json"
STATE_FILE = "cm-cached-state.json"


def _relocated(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [_relocated(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: _relocated(v, old, new) for k, v in value.items()}
    return value


def cm_meta(final_dir: str, script: Any, tags: list[str], version: str) -> dict[str, Any]:
    meta = {
        "alias": "",
        "automation_alias": "cache",
        "automation_uid": CACHE_AUTOMATION_UID,
        "uid": os.path.basename(final_dir).rsplit("-", 1)[-1][:16],
        "tags": tags,
        "associated_script_artifact": f"{script.alias},{script.uid}" if script.uid else script.alias,
        "associated_script_artifact_uid": script.uid,
    }
    if version:
        meta["version"] = version
    return meta


def write(workdir: str, final_dir: str, script: Any, tags: list[str], result: Any) -> None:
    """Write CM's files into a run's working folder (paths already pointing where it will be renamed to)."""
    with open(os.path.join(workdir, META_FILE), "w", encoding="utf-8") as f:
        json.dump(cm_meta(final_dir, script, tags, result.version), f, indent=2, sort_keys=True)
    state = {"new_env": result.new_env, "new_state": result.new_state, "version": result.version}
    with open(os.path.join(workdir, STATE_FILE), "w", encoding="utf-8") as f:
        json.dump(_relocated(state, workdir, final_dir), f, indent=2, sort_keys=True)


class CacheArtifact:
    """What CM's search returns for a cache entry: `.path`, `.meta`, `.repo_path`."""

    def __init__(self, path: str, meta: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta
        self.original_meta = meta
        self.repo_path = os.path.dirname(path)
        self.repo_meta: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"CacheArtifact({self.path!r})"


def artifact(path: str, record: dict[str, Any]) -> CacheArtifact:
    """The CM artifact of an entry: its _cm.json, or one made from our record (entries made before CM's files)."""
    try:
        with open(os.path.join(path, META_FILE), encoding="utf-8") as f:
            return CacheArtifact(path, json.load(f))
    except (OSError, ValueError):
        tags = record.get("cm_tags") or [*record.get("tags", []), *("_" + v for v in record.get("variations", []))]
        return CacheArtifact(path, {"alias": "", "automation_alias": "cache", "automation_uid": CACHE_AUTOMATION_UID,
                                    "uid": os.path.basename(path).rsplit("-", 1)[-1][:16], "tags": tags})
