"""What code a script runs: its own folder's files plus the modules it imports from the registered repositories.

A script may import shared helpers from a package that lives in a registered repository (our `cm_mlperf`, installed
with `pip install -e .`). Those files change a script's result as much as its own do, so they are part of its cache
key. Imports are found statically (`ast`, nothing is executed), followed transitively, and resolved without
importing: a module counts when its file lies inside one of the repositories; the standard library and installed
third-party packages do not (their versions are the scripts' business: get-tvm and the like report them).
"""
from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import re
import sys
from collections.abc import Iterable

_IGNORED_DIRS = {"__pycache__", ".pytest_cache", "__mojocache__"}
_memo: dict[tuple, str] = {}
_imports_memo: dict[tuple[str, int, int], list[str]] = {}
_module_memo: dict[str, str | None] = {}


def _script_files(path: str) -> list[str]:
    found = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in _IGNORED_DIRS and not d.startswith("."))
        for name in sorted(files):
            if name.endswith(".pyc") or name.startswith("tmp-"):
                continue
            found.append(os.path.join(root, name))
    return found


_IMPORT = re.compile(
    r"^[ \t]*(?:from[ \t]+([A-Za-z_][\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n#]*)|import[ \t]+([^\n#]+))", re.M)


def _imports(file: str) -> list[str]:
    """Absolute module names a Python file imports (a fast scan of import statements; relative ones skipped)."""
    st = os.stat(file)
    memo_key = (file, st.st_mtime_ns, st.st_size)
    if memo_key in _imports_memo:
        return _imports_memo[memo_key]
    with open(file, encoding="utf-8", errors="replace") as f:
        text = f.read()
    names: list[str] = []
    for match in _IMPORT.finditer(text):
        module, imported, plain = match.groups()
        if module:
            names.append(module)
            for part in imported.strip("() \t\n").replace("\n", ",").split(","):
                name = part.strip().split(" as ")[0].strip()
                if name.isidentifier():
                    names.append(f"{module}.{name}")
        else:
            names += [p.strip().split(" as ")[0].strip() for p in plain.split(",") if p.strip()]
    _imports_memo[memo_key] = names
    return names


def _module_file(name: str, search_path: list[str]) -> str | None:
    """The source file of module `name`, found with the import machinery's path finder (no import runs)."""
    cache_key = name + "\0" + "\0".join(search_path)
    if cache_key in _module_memo:
        return _module_memo[cache_key]
    parts = name.split(".")
    locations: list[str] | None = search_path
    origin = None
    for depth, part in enumerate(parts):
        spec = importlib.machinery.PathFinder.find_spec(part, locations)
        if spec is None:
            # an editable install maps top-level packages through its own finder: ask the full meta path once
            if depth == 0:
                try:
                    spec = importlib.util.find_spec(part)
                except (ImportError, ValueError):
                    spec = None
            if spec is None:
                origin = None
                break
        origin = spec.origin if spec.has_location else None
        locations = list(spec.submodule_search_locations or [])
        if not locations and depth < len(parts) - 1:
            break  # `from module import name`: the name is an attribute, the module is the file
    _module_memo[cache_key] = origin
    return origin


def _inside(file: str, roots: Iterable[str]) -> bool:
    real = os.path.realpath(file)
    return any(real.startswith(os.path.realpath(r) + os.sep) for r in roots)


# Installed packages are never collection code, even when a virtualenv sits inside a repository folder.
_INSTALLED = tuple({os.path.realpath(p) + os.sep for p in (sys.prefix, sys.exec_prefix, sys.base_prefix)})


def _collection_module(file: str, roots: Iterable[str]) -> bool:
    return _inside(file, roots) and not os.path.realpath(file).startswith(_INSTALLED)


def code_files(script_path: str, repo_roots: Iterable[str]) -> list[str]:
    """The script's own files plus every repository module its Python files import, transitively."""
    roots = [r for r in repo_roots if r]
    own = _script_files(script_path)
    seen: set[str] = set(own)
    queue = [f for f in own if f.endswith(".py")]
    search_path = [script_path, *sys.path]
    extra: list[str] = []
    while queue:
        file = queue.pop()
        for name in _imports(file):
            top = name.partition(".")[0]
            if top in sys.stdlib_module_names or top in sys.builtin_module_names:
                continue
            top_file = _module_file(top, search_path)
            if not top_file or not _collection_module(top_file, roots):
                continue  # a third-party package: none of its submodules are collection code either
            module = _module_file(name, search_path)
            if not module or module in seen or not module.endswith(".py") or not _collection_module(module, roots):
                continue
            if _inside(module, [script_path]):
                continue
            seen.add(module)
            extra.append(module)
            queue.append(module)
            init = os.path.join(os.path.dirname(module), "__init__.py")
            if init not in seen and os.path.isfile(init) and _inside(init, roots):
                seen.add(init)
                extra.append(init)
    return own + sorted(extra)


def hash_code(script_path: str, repo_roots: Iterable[str]) -> str:
    """sha256 over the names (relative to the script or its repository) and contents of `code_files`."""
    roots = tuple(sorted(r for r in repo_roots if r))
    files = code_files(script_path, roots)
    stamp = tuple((f, os.stat(f).st_mtime_ns, os.stat(f).st_size) for f in files)
    memo_key = (script_path, roots, stamp)
    if memo_key in _memo:
        return _memo[memo_key]
    digest = hashlib.sha256()
    for file in files:
        base = script_path if _inside(file, [script_path]) else next(
            (r for r in roots if _inside(file, [r])), os.path.dirname(file))
        digest.update(os.path.relpath(file, base).encode() + b"\0")
        with open(file, "rb") as f:
            digest.update(hashlib.sha256(f.read()).digest())
    _memo[memo_key] = digest.hexdigest()
    return _memo[memo_key]
