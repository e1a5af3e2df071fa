"""File helpers shared by the scripts: content hashes and atomic writes."""
from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's content, read in 1 MiB chunks (a 100 MB model: ~0.2 s)."""
    return file_digests(path, ("sha256",))["sha256"]


def file_digests(path: str | os.PathLike[str], algorithms: tuple[str, ...] = ("sha256", "md5")) -> dict[str, str]:
    """Hex digests of a file in one read (a download checked against a published md5 records its sha256 too)."""
    digests = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            for digest in digests.values():
                digest.update(chunk)
    return {name: digest.hexdigest() for name, digest in digests.items()}


@contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w", encoding: str | None = "utf-8") -> Iterator:
    """Write to a temporary file beside `path` and rename it into place on success only."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=folder)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def resolve_user_path(path: str) -> str:
    """The absolute path of a path the user typed on the command line.

    Scripts run in their cache entry's folder, not where `cm` was started: a relative path is taken from the
    caller's directory (the shell's PWD, which os.chdir does not change, and which run steps inherit).
    """
    expanded = os.path.expanduser(path.strip())
    if not os.path.isabs(expanded):
        caller = os.environ.get("PWD", "")
        expanded = os.path.join(caller if caller and os.path.isdir(caller) else os.getcwd(), expanded)
    return os.path.abspath(expanded)
