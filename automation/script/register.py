"""`cm-register-repo`: register this collection with cmind, idempotently.

`cm init repo --here` errors when the repo is already registered; set-up commands and CI re-run, so
this checks cmind's repos.json first and registers only when needed.
"""
from __future__ import annotations

import argparse
import os
import sys


def find_repo_root(start: str) -> str | None:
    path = os.path.abspath(start)
    while True:
        if os.path.isfile(os.path.join(path, "cmr.yaml")):
            return path
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


def default_repo_root() -> str | None:
    """The checkout this package was installed from (editable install), else the current directory's repo."""
    here = os.path.dirname(os.path.abspath(__file__))
    return find_repo_root(here) or find_repo_root(os.getcwd())


def register(repo_root: str) -> str:
    import cmind

    found = cmind.access({"action": "search", "automation": "repo"})
    if found["return"] > 0:
        raise RuntimeError(found["error"])
    if any(os.path.realpath(repo.path) == os.path.realpath(repo_root) for repo in found["list"]):
        return f"already registered with cm: {repo_root}"
    previous = os.getcwd()
    os.chdir(repo_root)
    try:
        result = cmind.access({"action": "init", "automation": "repo", "here": True})
    finally:
        os.chdir(previous)
    if result["return"] > 0:
        raise RuntimeError(result["error"])
    return f"registered with cm: {repo_root}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", help="repository root (default: this checkout)")
    args = parser.parse_args(argv)
    root = find_repo_root(args.path) if args.path else default_repo_root()
    if root is None:
        print("error: no cmr.yaml found; run cm-register-repo inside the repository or pass its path", file=sys.stderr)
        return 1
    try:
        print(register(root))
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
