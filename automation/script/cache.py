"""Cache entries: keyed by everything that changes a result, created atomically, guarded by a file lock.

An entry is a folder `<root>/<alias>-<key16>/` holding the files the script produced and
`cm-cache-entry.json` (the new env/state and how the key was made). A run works in a temporary
folder under `<root>/.tmp/` and renames it into place only on success, so a killed run leaves no
half-entry. CM keys by tags only; we also key by the script's own files and its inputs, so an edited
script or a changed input never reuses a stale entry.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from filelock import FileLock

from .errors import ScriptError

ENTRY_FILE = "cm-cache-entry.json"
_IGNORED_NAMES = {"__pycache__", ".pytest_cache", "__mojocache__"}
_dir_hashes: dict[str, str] = {}


def hash_script_dir(path: str) -> str:
    """sha256 over the relative names and contents of a script's own files (memoised per process)."""
    if path in _dir_hashes:
        return _dir_hashes[path]
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in _IGNORED_NAMES and not d.startswith("."))
        for name in sorted(files):
            if name.endswith(".pyc") or name.startswith("tmp-"):
                continue
            full = os.path.join(root, name)
            digest.update(os.path.relpath(full, path).encode() + b"\0")
            with open(full, "rb") as f:
                digest.update(hashlib.sha256(f.read()).digest())
    _dir_hashes[path] = digest.hexdigest()
    return _dir_hashes[path]


def make_key(components: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(components, sort_keys=True, default=str).encode()).hexdigest()


def _replace_prefix(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [_replace_prefix(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: _replace_prefix(v, old, new) for k, v in value.items()}
    return value


@dataclass
class CacheEntry:
    path: str
    record: dict[str, Any]

    @property
    def alias(self) -> str:
        return self.record.get("script", "")

    def matches(self, tags: list[str], variations: list[str]) -> bool:
        own_tags = set(self.record.get("tags", [])) | {self.alias}
        return set(tags).issubset(own_tags) and set(variations).issubset(self.record.get("variations", []))


class CacheStore:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def _entry_dir(self, alias: str, key: str) -> str:
        return os.path.join(self.root, f"{alias}-{key[:16]}")

    def lock(self, alias: str, key: str) -> FileLock:
        lock_dir = os.path.join(self.root, ".locks")
        os.makedirs(lock_dir, exist_ok=True)
        return FileLock(os.path.join(lock_dir, f"{alias}-{key[:16]}.lock"))

    def lookup(self, alias: str, key: str) -> CacheEntry | None:
        path = self._entry_dir(alias, key)
        record = _read_record(path)
        if record is None or record.get("key") != key:
            return None
        return CacheEntry(path, record)

    def new_workdir(self, alias: str) -> str:
        tmp_root = os.path.join(self.root, ".tmp")
        os.makedirs(tmp_root, exist_ok=True)
        return tempfile.mkdtemp(prefix=f"{alias}-", dir=tmp_root)

    def commit(self, workdir: str, alias: str, key: str, record: dict[str, Any]) -> CacheEntry:
        """Write the record into workdir and rename it into place; paths inside it are rewritten."""
        final = self._entry_dir(alias, key)
        record = _replace_prefix(record, workdir, final)
        record.update(key=key, script=alias, created=time.strftime("%Y-%m-%dT%H:%M:%S"), path=final)
        tmp_record = os.path.join(workdir, ENTRY_FILE + ".part")
        with open(tmp_record, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2, sort_keys=True)
        os.replace(tmp_record, os.path.join(workdir, ENTRY_FILE))
        if os.path.exists(final):  # --new over an existing entry: move the old one out of the way first
            stale = self.new_workdir(alias + "-stale")
            os.rename(final, os.path.join(stale, "old"))
            shutil.rmtree(stale, ignore_errors=True)
        os.rename(workdir, final)
        return CacheEntry(final, record)

    @staticmethod
    def discard(workdir: str) -> None:
        shutil.rmtree(workdir, ignore_errors=True)

    def entries(self) -> list[CacheEntry]:
        if not os.path.isdir(self.root):
            return []
        found = []
        for name in sorted(os.listdir(self.root)):
            path = os.path.join(self.root, name)
            record = _read_record(path) if not name.startswith(".") else None
            if record is not None:
                found.append(CacheEntry(path, record))
        return found

    def find(self, tags: list[str], variations: list[str]) -> list[CacheEntry]:
        return [e for e in self.entries() if e.matches(tags, variations)]

    def remove(self, entry: CacheEntry) -> None:
        """Rename first so that a concurrent lookup never sees a half-deleted entry."""
        trash = self.new_workdir(entry.alias + "-removed")
        try:
            os.rename(entry.path, os.path.join(trash, "old"))
        except OSError as e:
            raise ScriptError(f"cannot remove cache entry {entry.path}: {e}") from e
        shutil.rmtree(trash, ignore_errors=True)


def _read_record(path: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(path, ENTRY_FILE), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
