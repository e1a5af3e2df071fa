"""Cache entries: keyed by everything that changes a result, created atomically, guarded by a file lock.

An entry is a folder `<root>/<alias>-<key16>/` holding the files the script produced and
`cm-cache-entry.json` (the new env/state, how the key was made, and the size of every file in the
entry). A run works in a temporary folder `<root>/.tmp/<alias>-<pid>-*` and renames it into place only
on success, so a killed run leaves no half-entry; what a killed run left in `.tmp` is removed by the
next command that opens the cache once its process is gone. A hit is verified: every recorded file
must be present with its size, else the entry is removed and rebuilt. What goes into a key is the
engine's business (engine.cache_key); this module stores and finds entries.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from filelock import FileLock

from .errors import ScriptError

ENTRY_FILE = "cm-cache-entry.json"


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
        own_tags = set(self.record.get("tags", [])) | {self.alias} | set(self.record.get("cm_tags", []))
        return set(tags).issubset(own_tags) and set(variations).issubset(self.record.get("variations", []))


class CacheStore:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def entry_dir(self, alias: str, key: str) -> str:
        return os.path.join(self.root, f"{alias}-{key[:16]}")

    def lock(self, alias: str, key: str) -> FileLock:
        lock_dir = os.path.join(self.root, ".locks")
        os.makedirs(lock_dir, exist_ok=True)
        return FileLock(os.path.join(lock_dir, f"{alias}-{key[:16]}.lock"))

    def lookup(self, alias: str, key: str, notice=None) -> CacheEntry | None:
        """The verified entry for key, or None. A damaged entry is removed (with a one-line notice)."""
        path = self.entry_dir(alias, key)
        record = _read_record(path)
        if record is None:
            if os.path.isdir(path):
                self._remove_damaged(path, alias, "its record is missing or unreadable", notice)
            return None
        if record.get("key") != key:
            return None
        problem = _damage(path, record.get("files"))
        if problem:
            self._remove_damaged(path, alias, problem, notice)
            return None
        return CacheEntry(path, record)

    def _remove_damaged(self, path: str, alias: str, problem: str, notice) -> None:
        (notice or _stderr_notice)(f"cache entry {path} is damaged ({problem}): removing it and running {alias} again")
        trash = self.new_workdir(alias + "-damaged")
        try:
            os.rename(path, os.path.join(trash, "old"))
        except OSError:
            pass
        shutil.rmtree(trash, ignore_errors=True)

    def new_workdir(self, alias: str) -> str:
        """A fresh folder under .tmp, named with this process's pid so a later run can tell it was abandoned."""
        tmp_root = os.path.join(self.root, ".tmp")
        os.makedirs(tmp_root, exist_ok=True)
        return tempfile.mkdtemp(prefix=f"{alias}-{os.getpid()}-", dir=tmp_root)

    def leftovers(self) -> list[str]:
        """Folders in .tmp whose process is gone (a killed run)."""
        tmp_root = os.path.join(self.root, ".tmp")
        try:
            names = os.listdir(tmp_root)
        except OSError:
            return []
        return [os.path.join(tmp_root, n) for n in sorted(names) if not _owner_alive(n)]

    def sweep(self) -> list[str]:
        """Remove what killed runs left in .tmp; returns what was removed."""
        removed = self.leftovers()
        for path in removed:
            shutil.rmtree(path, ignore_errors=True)
        return removed

    def commit(self, workdir: str, alias: str, key: str, record: dict[str, Any]) -> CacheEntry:
        """Write the record into workdir and rename it into place; paths inside it are rewritten."""
        final = self.entry_dir(alias, key)
        record = _replace_prefix(record, workdir, final)
        record.update(key=key, script=alias, created=time.strftime("%Y-%m-%dT%H:%M:%S"), path=final,
                      created_at=time.time(), files=_manifest(workdir))
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


def _manifest(folder: str) -> dict[str, int]:
    """Relative name -> size of every file an entry holds (its record aside): what a hit must still find."""
    files: dict[str, int] = {}
    for root, _dirs, names in os.walk(folder):
        for name in names:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, folder)
            if rel.startswith(ENTRY_FILE) or os.path.islink(full):
                continue
            files[rel] = os.path.getsize(full)
    return files


def _damage(path: str, files: dict[str, int] | None) -> str:
    """Why an entry cannot be trusted ('' when every recorded file is there with its size)."""
    for rel, size in (files or {}).items():
        try:
            actual = os.path.getsize(os.path.join(path, rel))
        except OSError:
            return f"{rel} is missing"
        if actual != size:
            return f"{rel} has {actual} bytes, {size} when it was made"
    return ""


def _owner_alive(name: str) -> bool:
    """Whether the process that made .tmp/<alias>-<pid>-xxxx is still running (unknown names count as alive)."""
    parts = name.rsplit("-", 2)
    if len(parts) < 3 or not parts[1].isdigit():
        return True
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stderr_notice(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def folder_size(path: str) -> int:
    total = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _read_record(path: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(path, ENTRY_FILE), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
