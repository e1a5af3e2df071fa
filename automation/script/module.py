"""Wires the engine to cmind: `cm run script`, `cm find script`. The work happens in the sibling modules."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from typing import Any

from cmind.automation import Automation


def _load_engine_package():
    """Import this folder as the package `cm_script_engine` (installed by `pip install -e .`, else by path)."""
    try:
        import cm_script_engine.api as api

        if os.path.samefile(os.path.dirname(api.__file__), os.path.dirname(__file__)):
            return api
    except ImportError:
        pass
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location(
        "cm_script_engine", os.path.join(here, "__init__.py"), submodule_search_locations=[here])
    package = importlib.util.module_from_spec(spec)
    sys.modules["cm_script_engine"] = package
    spec.loader.exec_module(package)
    import cm_script_engine.api as api

    return api


api = _load_engine_package()


@contextlib.contextmanager
def _stdout_to_stderr():
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


class CAutomation(Automation):
    """CM's `script` automation (alias script, uid 5b4e0237da074764)."""

    def __init__(self, cmind: Any, automation_file: str) -> None:
        super().__init__(cmind, automation_file)

    def run(self, i: dict[str, Any]) -> dict[str, Any]:
        """cm run script --tags=<tags,_variations> [--key=value] [--env.K=V] [--adr.name.tags=...] [--new]
        [--dry-run] [-v] [--quiet] [--out=json | -j]"""
        as_json = i.get("out") == "json" or bool(i.get("j") or i.get("json"))
        if not as_json:
            return api.run(i, repo_paths=self._repo_paths(), cache_root=self.cache_root(), automation=self)
        with _stdout_to_stderr():  # keep stdout pure JSON, child processes included
            result = api.run(i, repo_paths=self._repo_paths(), cache_root=self.cache_root(), automation=self)
        if i.get("out") != "json":  # -j: cmind prints JSON only for --out=json, so print it here
            import json

            print(json.dumps(result, indent=2, default=str))
            sys.stdout.flush()
        return result

    def search(self, i: dict[str, Any]) -> dict[str, Any]:
        """cm find script --tags=...: list the matching scripts."""
        return api.search(i, repo_paths=self._repo_paths(), cache_root=self.cache_root())

    def version(self, i: dict[str, Any]) -> dict[str, Any]:
        """cm version script: which engine runs `cm run script`, and the collections it runs."""
        return api.engine_version(i, repo_paths=self._repo_paths(), cache_root=self.cache_root(),
                                  engine_path=os.path.dirname(os.path.abspath(__file__)))

    def _repo_paths(self) -> list[str]:
        return [repo.path for repo in self.cmind.repos.lst]

    def cache_root(self) -> str:
        return api.cache_root(self.cmind.repos.path)
