"""Load a script's `_cm.yaml` / `_cm.json` and validate every key against the schema.

CM silently ignores a misspelled key; we name the file, the key and the closest valid key.
"""
from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import ScriptError

try:  # the C loader parses our metas several times faster
    _YamlLoader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _YamlLoader = yaml.SafeLoader

META_FILES = ("_cm.yaml", "_cm.json")

DEP_LIST_KEYS = ("deps", "prehook_deps", "posthook_deps", "post_deps")

DEP_KEYS = {
    "tags", "names", "enable_if_env", "skip_if_env", "version", "version_min", "version_max",
    "env", "update_tags_from_env", "update_tags_from_env_with_prefix", "desc", "force_new",
}

# Keys shared by the script itself, its variations and its versions.
_COMMON_KEYS = {
    "env", "default_env", *DEP_LIST_KEYS, "add_deps", "add_deps_recursive", "new_env_keys",
    "new_state_keys", "input_mapping", "cache_key_env", "default_variations",
}

VARIATION_KEYS = _COMMON_KEYS | {
    "group", "default", "base", "alias", "desc", "version", "default_version", "input_description",
    "selected_by_inputs",
}
VERSION_KEYS = _COMMON_KEYS | {"desc"}
SCRIPT_KEYS = _COMMON_KEYS | {
    "alias", "uid", "automation_alias", "automation_uid", "tags", "cache", "desc", "category",
    "variations", "versions", "default_version", "input_description", "docs", "default_variation",
    "side_effect_free", "cache_protected", "cache_key_packages",
}


@dataclass
class ScriptMeta:
    """A script directory and its validated meta."""

    path: str
    meta: dict[str, Any]
    meta_file: str
    tags: list[str] = field(default_factory=list)

    @property
    def alias(self) -> str:
        return self.meta.get("alias") or os.path.basename(self.path)

    @property
    def uid(self) -> str:
        return str(self.meta.get("uid", ""))


def split_tags(tags: Any) -> list[str]:
    """Tags arrive as a comma string (CLI) or a list (YAML): normalise to a stripped list."""
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = tags.split(",")
    return [str(t).strip() for t in tags if str(t).strip()]


def _closest(key: str, valid: set[str]) -> str:
    match = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else f"; valid keys: {', '.join(sorted(valid))}"


def _check_keys(where: str, block: Any, valid: set[str], meta_file: str) -> None:
    if not isinstance(block, dict):
        raise ScriptError(f"{meta_file}: {where} must be a mapping, got {type(block).__name__}")
    for key in block:
        if key not in valid:
            raise ScriptError(f"{meta_file}: unknown key '{key}' in {where}{_closest(str(key), valid)}")


def _check_deps(where: str, block: dict[str, Any], meta_file: str) -> None:
    for list_key in DEP_LIST_KEYS:
        deps = block.get(list_key)
        if deps is None:
            continue
        if not isinstance(deps, list):
            raise ScriptError(f"{meta_file}: {where}.{list_key} must be a list of dependencies")
        for n, dep in enumerate(deps):
            _check_keys(f"{where}.{list_key}[{n}]", dep, DEP_KEYS, meta_file)
            if not dep.get("tags"):
                raise ScriptError(f"{meta_file}: {where}.{list_key}[{n}] has no 'tags'")
    for list_key in ("add_deps", "add_deps_recursive"):
        for name, override in (block.get(list_key) or {}).items():
            _check_keys(f"{where}.{list_key}.{name}", override, DEP_KEYS, meta_file)


def validate(meta: dict[str, Any], meta_file: str) -> None:
    """Raise ScriptError on the first unknown key anywhere in the meta."""
    _check_keys("the script", meta, SCRIPT_KEYS, meta_file)
    if "docker" in meta:  # pragma: no cover - rejected above; kept explicit for the reader
        raise ScriptError(f"{meta_file}: 'docker' is not supported")
    _check_deps("the script", meta, meta_file)
    for name, variation in (meta.get("variations") or {}).items():
        _check_keys(f"variation '{name}'", variation or {}, VARIATION_KEYS, meta_file)
        _check_deps(f"variation '{name}'", variation or {}, meta_file)
    for name, version in (meta.get("versions") or {}).items():
        _check_keys(f"version '{name}'", version or {}, VERSION_KEYS, meta_file)
        _check_deps(f"version '{name}'", version or {}, meta_file)


def load_meta_file(meta_file: str) -> dict[str, Any]:
    try:
        with open(meta_file, encoding="utf-8") as f:
            if meta_file.endswith(".json"):
                data = json.load(f)
            else:
                data = yaml.load(f, Loader=_YamlLoader)
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise ScriptError(f"{meta_file}: cannot be parsed ({str(e).splitlines()[0]})") from e
    if not isinstance(data, dict):
        raise ScriptError(f"{meta_file}: must hold a mapping at the top level")
    return data


def load_script(path: str) -> ScriptMeta | None:
    """Load and validate the script in `path`; None if the folder holds no meta file."""
    for name in META_FILES:
        meta_file = os.path.join(path, name)
        if os.path.isfile(meta_file):
            meta = load_meta_file(meta_file)
            validate(meta, meta_file)
            return ScriptMeta(path=path, meta=meta, meta_file=meta_file, tags=split_tags(meta.get("tags")))
    return None
