"""Resolve the `_variation` tags of a script into the ordered list of meta blocks to apply.

Handles groups (one variation each, `default: true` or `default_variations` when none is picked),
`base` (a variation that implies others), `alias`, combined keys ("onnx,fp32" applies when both are on)
and dynamic keys ("batch_size.#" matches "_batch_size.8", with '#' replaced by "8" in its values).
"""
from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from typing import Any

from .errors import ScriptError


@dataclass
class ResolvedVariations:
    selected: list[str] = field(default_factory=list)  # names as the user sees them, e.g. "batch_size.8"
    blocks: list[dict[str, Any]] = field(default_factory=list)  # meta blocks in application order


def _substitute_hash(value: Any, text: str) -> Any:
    if isinstance(value, str):
        return value.replace("#", text)
    if isinstance(value, list):
        return [_substitute_hash(v, text) for v in value]
    if isinstance(value, dict):
        return {k: _substitute_hash(v, text) for k, v in value.items()}
    return value


class _Resolver:
    def __init__(self, meta: dict[str, Any], where: str) -> None:
        self.variations: dict[str, dict[str, Any]] = {k: (v or {}) for k, v in (meta.get("variations") or {}).items()}
        self.meta = meta
        self.where = where
        self.selected: list[str] = []
        self.blocks: dict[str, dict[str, Any]] = {}

    def lookup(self, name: str) -> dict[str, Any]:
        """The meta block for `name`, following aliases and expanding dynamic '#' keys."""
        block = self.variations.get(name)
        if block is not None:
            if block.get("alias"):
                return self.lookup(block["alias"])
            return block
        prefix, dot, value = name.partition(".")
        dynamic = self.variations.get(f"{prefix}.#") if dot else None
        if dynamic is not None and value:
            return _substitute_hash(copy.deepcopy(dynamic), value)
        known = sorted(k for k in self.variations if "," not in k)
        hint = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        raise ScriptError(
            f"script '{self.where}' has no variation '_{name}'"
            + (f"; did you mean '_{hint[0]}'?" if hint else "")
            + f" (variations: {', '.join('_' + k for k in known) or 'none'})"
        )

    def add(self, name: str) -> None:
        if name in self.blocks:
            return
        block = self.lookup(name)
        for base in _as_list(block.get("base")):
            self.add(base)
        self.blocks[name] = block
        self.selected.append(name)

    def group_of(self, name: str) -> str | None:
        return self.blocks[name].get("group")

    def add_group_defaults(self) -> None:
        chosen_groups = {self.group_of(n) for n in self.selected}
        wanted: dict[str, str] = dict(self.meta.get("default_variations") or {})
        wanted.update(self.meta.get("default_variation") or {})
        for name in list(self.selected):
            wanted.update(self.blocks[name].get("default_variations") or {})
        for name, block in self.variations.items():
            group = block.get("group")
            if group and block.get("default") and group not in wanted:
                wanted[group] = name
        for group, name in sorted(wanted.items()):
            if group not in chosen_groups:
                self.add(name)
                chosen_groups.add(group)

    def check_groups(self) -> None:
        seen: dict[str, str] = {}
        for name in self.selected:
            group = self.group_of(name)
            if group is None:
                continue
            if group in seen:
                raise ScriptError(
                    f"script '{self.where}': variations '_{seen[group]}' and '_{name}' are both in group "
                    f"'{group}'; pick one"
                )
            seen[group] = name

    def combined(self) -> list[tuple[str, dict[str, Any]]]:
        chosen = set(self.selected)
        return [
            (key, block)
            for key, block in self.variations.items()
            if "," in key and set(p.strip() for p in key.split(",")).issubset(chosen)
        ]


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


def resolve(meta: dict[str, Any], requested: list[str], where: str) -> ResolvedVariations:
    """Turn requested variation names (without '_') into the blocks to apply, defaults included."""
    resolver = _Resolver(meta, where)
    for name in requested:
        if "," in name:
            raise ScriptError(f"'_{name}' is a combined variation: select its parts instead")
        resolver.add(name)
    explicit = len(resolver.selected)
    resolver.add_group_defaults()
    resolver.check_groups()
    # defaults first so that what the user asked for overrides them
    order = resolver.selected[explicit:] + resolver.selected[:explicit]
    blocks = [resolver.blocks[n] for n in order] + [b for _, b in resolver.combined()]
    return ResolvedVariations(selected=sorted(resolver.selected), blocks=blocks)
