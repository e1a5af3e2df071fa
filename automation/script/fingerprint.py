"""Fingerprints of files and folders that a cached result depends on by path (a user's model, an ImageNet folder).

A fingerprint is a sha256 over, for each regular file (a folder is walked, names sorted): its relative name, size,
modification time and status-change time (st_ctime, in nanoseconds). Rewriting, replacing, truncating, renaming
or adding a file changes it; the kernel sets st_ctime on every such change and no user call can set it back, so
even a copy that keeps the old mtime (`cp -p`, `rsync -t`) is seen. A file that is only touched, or a folder
copied elsewhere, gives a new fingerprint: a needless rebuild, never a stale hit. No content is read, so a
50,000-image folder costs one `stat` per file (about 0.1 s warm) and a 100 MB model one `stat`; hashing contents
would take seconds to minutes on every run. Symbolic links are followed for the root path, not inside folders
(a link inside is fingerprinted as a link: its target name).
"""
from __future__ import annotations

import hashlib
import os

_MISSING = "missing"


def _stat_line(rel: str, st: os.stat_result) -> bytes:
    return f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\n".encode()


def _walk(root: str, digest: hashlib._Hash) -> int:
    count = 0
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            entries = sorted(os.scandir(os.path.join(root, rel_dir)), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            rel = os.path.join(rel_dir, entry.name) if rel_dir else entry.name
            if entry.is_symlink():
                digest.update(f"{rel}\0->{os.readlink(entry.path)}\n".encode())
            elif entry.is_dir():
                stack.append(rel)
            elif entry.is_file():
                digest.update(_stat_line(rel, entry.stat()))
                count += 1
    return count


def fingerprint(path: str) -> str:
    """A short hex fingerprint of a file or a folder tree (see the module docstring); 'missing' if absent."""
    try:
        st = os.stat(path)
    except OSError:
        return _MISSING
    digest = hashlib.sha256()
    if os.path.isdir(path):
        digest.update(b"dir\n")
        _walk(path, digest)
    else:
        digest.update(_stat_line("", st))
    return digest.hexdigest()[:32]


def looks_like_path(value: object) -> bool:
    return isinstance(value, str) and os.path.isabs(value) and "\n" not in value and len(value) < 4096
