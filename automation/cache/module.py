"""`cm show cache`, `cm find cache`, `cm rm cache --tags=...`: thin wiring to the script engine's cache."""
from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

from cmind.automation import Automation

_SCRIPT_AUTOMATION = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "script", "module.py")
_spec = importlib.util.spec_from_file_location("cm_script_automation_module", _SCRIPT_AUTOMATION)
_script_module = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("cm_script_automation_module", _script_module)
_spec.loader.exec_module(_script_module)
api = _script_module.api


class CAutomation(Automation):
    """CM's `cache` automation (alias cache, uid 541d6f712a6b464e)."""

    def _root(self) -> str:
        return api.cache_root(self.cmind.repos.path)

    def show(self, i: dict[str, Any]) -> dict[str, Any]:
        """cm show cache [--tags=...]: each entry's script, variations, size, age, time to make and key inputs,
        then any folders a killed run left unfinished. --out=json: the full records."""
        return api.show_cache(i, self._root())

    def search(self, i: dict[str, Any]) -> dict[str, Any]:
        """cm find cache [--tags=...] (and a hook's cm.access find cache): CM artifact objects (.path, .meta with
        CM's tags) of the matching entries; the paths are printed."""
        return api.find_cache(i, self._root())

    def delete(self, i: dict[str, Any]) -> dict[str, Any]:
        """cm rm cache --tags=... [--all] | cm rm cache <script alias>: remove entries (several need --all;
        entries of cache_protected scripts, such as tuning results, only when the script is named)."""
        return api.remove_cache(i, self._root())
