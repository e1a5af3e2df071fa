"""Load a script's `_cm.yaml` / `_cm.json` and validate every key against the schema.

CM silently ignores a misspelled key; in a collection written for this engine we name the file, the key and the
closest valid key, and stop. A collection written for CM's own engine (one that ships its own `script`
automation, like MLCommons') is loaded leniently: keys CM knows are accepted (implemented, or ignored as
documented in docs/engine.md), anything else gives one warning line per script, never a failure.
"""
from __future__ import annotations

import difflib
import json
import os
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
    "enable_if_any_env", "skip_if_any_env", "version_max_usable", "reuse_version", "inherit_variation_tags",
    "force_env_keys",
}
# Dependency keys CM's engine knows besides ours (accepted in CM-written collections; see docs/engine.md for
# which are implemented and which are ignored).
CM_DEP_KEYS = {
    "enable_if_any_env", "skip_if_any_env", "version_max_usable", "reuse_version", "inherit_variation_tags",
    "skip_inherit_variation_groups", "force_env_keys", "force_new_env_keys", "extra_cache_tags",
    "extra_cache_rm_tags", "force_cache", "force-cache", "skip_if_fake_run", "dynamic", "new_env_keys", "adr",
    "env_key", "full_subfolder", "md5sum", "model_filename", "revision", "verify",
}

# Keys shared by the script itself, its variations and its versions.
_COMMON_KEYS = {
    "env", "default_env", *DEP_LIST_KEYS, "add_deps", "add_deps_recursive", "new_env_keys",
    "new_state_keys", "input_mapping", "cache_key_env", "default_variations", "const",
}

VARIATION_KEYS = _COMMON_KEYS | {
    "group", "default", "base", "alias", "desc", "version", "default_version", "input_description",
    "selected_by_inputs",
}
VERSION_KEYS = _COMMON_KEYS | {"desc"}
SCRIPT_KEYS = _COMMON_KEYS | {
    "alias", "uid", "automation_alias", "automation_uid", "tags", "cache", "desc", "category",
    "variations", "versions", "default_version", "input_description", "docs", "default_variation",
    "side_effect_free", "cache_protected", "cache_key_packages", "sort", "extra_cache_tags_from_env",
}


class ScriptMeta:
    """A script directory and its validated meta (read from the index lazily: most scripts are never run)."""

    def __init__(self, path: str, meta: dict[str, Any] | None, meta_file: str, tags: list[str] | None = None,
                 strict: bool = True, warnings: list[str] | None = None, blob: bytes | None = None,
                 summary: dict[str, Any] | None = None) -> None:
        self.path = path
        self.meta_file = meta_file
        self.tags = list(tags or [])
        self.strict = strict  # False: written for CM's own engine (CM's hook API, lenient inputs)
        self.warnings = list(warnings or [])
        self._meta = meta
        self._blob = blob
        # alias, uid, sort, automation fields: what a search needs without unpickling the whole meta
        self.summary = summary if summary is not None else summarise(meta or {})

    @property
    def meta(self) -> dict[str, Any]:
        if self._meta is None:
            import pickle

            self._meta = pickle.loads(self._blob) if self._blob else {}
        return self._meta

    @property
    def alias(self) -> str:
        return self.summary.get("alias") or os.path.basename(self.path)

    @property
    def uid(self) -> str:
        return str(self.summary.get("uid") or "")

    @property
    def sort(self) -> int:
        try:
            return int(self.summary.get("sort") or 0)
        except (TypeError, ValueError):
            return 0

    def __repr__(self) -> str:
        return f"ScriptMeta({self.alias!r}, {self.path!r})"


def summarise(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: meta.get(k) for k in ("alias", "uid", "sort", "automation_alias", "automation_uid", "cache")}


def split_tags(tags: Any) -> list[str]:
    """Tags arrive as a comma string (CLI) or a list (YAML): normalise to a stripped list."""
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = tags.split(",")
    return [str(t).strip() for t in tags if str(t).strip()]


# Top-level and variation keys CM's engine knows besides ours.
CM_SCRIPT_KEYS = {
    "sort", "const", "const_state", "state", "extra_cache_tags_from_env", "clean_files", "print_env_at_the_end",
    "local_env_keys", "adr", "ad", "developers", "category_sort", "name", "tags_help", "private", "tests", "warnings",
    "min_cm_version", "print_env_at_the_end_disabled", "print_files_if_script_error", "clean_output_files",
    "docker", "docker_input_mapping", "docker_off", "can_force_cache", "env_key_mappings",
    "invalid_variation_combinations", "valid_variation_combinations", "variation_groups_order", "predeps",
    "update_meta_if_env", "script_name", "default_gui", "warning", "force_cache", "cache", "names",
    "required_disk_space", "add_deps_tags", "default-variations", "group", "default", "base", "alias",
    "default_variation", "default_version", "selected_by_inputs",
}
# CM spells these two ways; CM-written metas are normalised to our spelling.
CM_SYNONYMS = {"adr": "add_deps_recursive", "ad": "add_deps", "default-variations": "default_variations"}


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


def unknown_keys(meta: dict[str, Any]) -> list[str]:
    """Keys of a CM-written meta that neither engine knows (typos CM ignores), as 'where.key' strings."""
    found = []

    def deps(where: str, block: dict[str, Any]) -> None:
        for list_key in DEP_LIST_KEYS:
            for n, dep in enumerate(block.get(list_key) or []):
                if isinstance(dep, dict):
                    found.extend(f"{where}{list_key}[{n}].{k}" for k in dep if k not in DEP_KEYS | CM_DEP_KEYS)

    found += [str(k) for k in meta if k not in SCRIPT_KEYS | CM_SCRIPT_KEYS]
    deps("", meta)
    for name, variation in (meta.get("variations") or {}).items():
        if isinstance(variation, dict):
            found += [f"variations.{name}.{k}" for k in variation
                      if k not in VARIATION_KEYS | CM_SCRIPT_KEYS and not str(k).isupper()]
            deps(f"variations.{name}.", variation)
    return found


def normalise_cm_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """CM's synonyms (`adr`, `ad`) in our spelling, merged with the canonical key where both are given."""
    blocks = [meta, *[v for v in (meta.get("variations") or {}).values() if isinstance(v, dict)],
              *[v for v in (meta.get("versions") or {}).values() if isinstance(v, dict)]]
    for block in blocks:
        for short, full in CM_SYNONYMS.items():
            if short in block:
                value = block.pop(short)
                if isinstance(value, dict) and isinstance(block.get(full), dict):
                    block[full] = {**value, **block[full]}
                else:
                    block.setdefault(full, value)
        for list_key in DEP_LIST_KEYS:
            for dep in block.get(list_key) or []:
                if isinstance(dep, dict) and "force-cache" in dep:
                    dep.setdefault("force_cache", dep.pop("force-cache"))
    return meta


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


def find_meta_file(path: str) -> str | None:
    for name in META_FILES:
        meta_file = os.path.join(path, name)
        if os.path.isfile(meta_file):
            return meta_file
    return None


def load_script(path: str, strict: bool = True) -> ScriptMeta | None:
    """Load and validate the script in `path`; None if the folder holds no meta file.

    strict=False (a collection written for CM's engine): never raises on keys; `warnings` lists unknown ones."""
    meta_file = find_meta_file(path)
    if meta_file is None:
        return None
    meta = load_meta_file(meta_file)
    warnings: list[str] = []
    if strict:
        validate(meta, meta_file)
    else:
        unknown = unknown_keys(meta)
        if unknown:
            warnings.append(f"warning: {meta_file}: unknown key(s) {', '.join(repr(k) for k in unknown)} (ignored)")
        normalise_cm_meta(meta)
    return ScriptMeta(path=path, meta=meta, meta_file=meta_file, tags=split_tags(meta.get("tags")),
                      strict=strict, warnings=warnings)
