"""Shared pytest fixtures and helpers."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPTS_DIR = REPO_ROOT / "script"


def load_script_module(script: str, module: str = "customize") -> ModuleType:
    """Import `script/<script>/<module>.py` by path, with its folder on sys.path (as the engine does)."""
    folder = SCRIPTS_DIR / script
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location(f"_test_{script.replace('-', '_')}_{module}", folder / f"{module}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(folder))
    return mod


@pytest.fixture
def script_module():
    return load_script_module
