"""Inputs of the script a user runs (`--name=value`): known names, variations they imply, allowed values.

Checked while the run is resolved, before any dependency runs (and under `--dry-run`), so a typo or an
out-of-range value costs well under a second, not a model conversion and a compile:

- a name no input_mapping / input_description of the script or its variations declares fails with the
  closest known name;
- a name only some variations declare selects the variation that lists it in `selected_by_inputs`
  (when nothing else of its group was asked for), or fails naming the variations that take it;
- `input_description.<name>` may constrain the value: `choices` (matched case-insensitively and
  normalised to the spelling listed), `type` (integer, number, boolean, string), the JSON Schema
  keywords `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`, `pattern`, and `path`
  (`file`: an existing file; `dir`: an existing folder; `new-dir`: a folder, created later if missing,
  that must not be a file).
"""
from __future__ import annotations

import difflib
import os
from typing import Any

from .errors import ScriptError
from .variations import resolve as resolve_variations

_SCHEMA_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "pattern")
_TYPES = {"integer": int, "number": float}
_BOOLEAN = {"yes": True, "true": True, "on": True, "1": True, "no": False, "false": False, "off": False, "0": False}


def _declared(block: dict[str, Any]) -> set[str]:
    return set((block.get("input_mapping") or {}).keys()) | set((block.get("input_description") or {}).keys())


def _variation_inputs(meta: dict[str, Any]) -> dict[str, set[str]]:
    return {name: _declared(block or {}) for name, block in (meta.get("variations") or {}).items()}


def select_variations(meta: dict[str, Any], alias: str, requested: list[str], inputs: dict[str, Any]) -> list[str]:
    """`requested` plus the variations the inputs imply; ScriptError for an input no variation in play takes."""
    own = _declared(meta)
    by_variation = _variation_inputs(meta)
    variations = list(requested)
    for name in sorted(inputs):
        if name in own:
            continue
        selected = set(resolve_variations(meta, variations, alias).selected)
        takers = sorted(v for v, names in by_variation.items() if name in names)
        if any(v in selected for v in takers):
            continue
        if not takers:
            known = sorted(own.union(*by_variation.values()))
            hint = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            raise ScriptError(
                f"unknown input --{name} for script '{alias}'"
                + (f"; did you mean --{hint[0]}?" if hint else "")
                + (f" (its inputs: {', '.join('--' + k for k in known)})" if known else " (it takes no inputs)"))
        chosen_groups = {(meta["variations"][v] or {}).get("group") for v in requested if v in meta["variations"]}
        implied = [v for v in takers if name in ((meta["variations"][v] or {}).get("selected_by_inputs") or [])
                   and (meta["variations"][v] or {}).get("group") not in chosen_groups]
        if len(implied) == 1:
            variations.append(implied[0])
            continue
        raise ScriptError(
            f"--{name} is an input of variation {' or '.join('_' + v for v in takers)} of '{alias}', "
            f"which this run does not use: add {' or '.join('_' + v for v in takers)} to --tags, or drop --{name}")
    return variations


def descriptions(meta: dict[str, Any], alias: str, variations: list[str]) -> dict[str, Any]:
    """`input_description` of the script and of the variations in play (theirs win)."""
    result = dict(meta.get("input_description") or {})
    for block in resolve_variations(meta, variations, alias).blocks:
        result.update(block.get("input_description") or {})
    return result


def _as_type(flag: str, value: Any, kind: str) -> Any:
    if kind in _TYPES:
        try:
            number = _TYPES[kind](str(value).strip())
        except ValueError:
            raise ScriptError(f"{flag}={value}: must be {'an integer' if kind == 'integer' else 'a number'}") from None
        return number
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word not in _BOOLEAN:
            raise ScriptError(f"{flag}={value}: must be yes or no")
        return _BOOLEAN[word]
    return value


def _check_path(flag: str, value: str, kind: str) -> None:
    if kind == "file" and not os.path.isfile(value):
        raise ScriptError(f"{flag}={value}: no such file" + (" (it is a folder)" if os.path.isdir(value) else ""))
    if kind == "dir" and not os.path.isdir(value):
        raise ScriptError(f"{flag}={value}: no such folder" + (" (it is a file)" if os.path.exists(value) else ""))
    if kind == "new-dir" and os.path.exists(value) and not os.path.isdir(value):
        raise ScriptError(f"{flag}={value}: is a file; give a folder (it is created if missing)")


def check_values(descriptions: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """Inputs with their values checked against `input_description` and normalised (choices' spelling)."""
    result = dict(inputs)
    for name, spec in (descriptions or {}).items():
        if name not in inputs or inputs[name] is None or not isinstance(spec, dict):
            continue
        flag, value = f"--{name}", inputs[name]
        if spec.get("choices"):
            spelled = {str(c).lower(): c for c in spec["choices"]}
            if str(value).lower() not in spelled:
                hint = difflib.get_close_matches(str(value).lower(), list(spelled), n=1, cutoff=0.6)
                raise ScriptError(f"{flag}={value}: use one of {', '.join(map(str, spec['choices']))}"
                                  + (f" (did you mean {spelled[hint[0]]}?)" if hint else ""))
            result[name] = spelled[str(value).lower()]
            continue
        typed = _as_type(flag, value, str(spec.get("type", "string")))
        constraints = {k: spec[k] for k in _SCHEMA_KEYS if k in spec}
        if constraints:
            import jsonschema  # only when a constrained input is given: keeps a plain run's start-up short

            schema = {"type": "string" if "pattern" in constraints else ["number", "boolean"], **constraints}
            error = next(jsonschema.Draft202012Validator(schema).iter_errors(typed), None)
            if error is not None:
                raise ScriptError(f"{flag}={value}: {error.message}")
        if spec.get("path"):
            _check_path(flag, str(value), str(spec["path"]))
    return result
