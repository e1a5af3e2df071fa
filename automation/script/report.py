"""What the user sees while a chain runs: one line per step, env changes with -v, the dry-run tree."""
from __future__ import annotations

from typing import IO, Any


class Reporter:
    def __init__(self, stream: IO[str], verbose: bool = False, silent: bool = False) -> None:
        self.stream = stream
        self.verbose = verbose
        self.silent = silent

    def _line(self, depth: int, text: str) -> None:
        if not self.silent:
            self.stream.write("  " * depth + text + "\n")
            self.stream.flush()

    @staticmethod
    def _label(alias: str, variations: list[str]) -> str:
        return alias + ("" if not variations else " " + ",".join("_" + v for v in variations))

    def notice(self, text: str) -> None:
        """A one-line notice that is shown even with --silent (a damaged cache entry, leftovers removed)."""
        self.stream.write(text + "\n")
        self.stream.flush()

    def start(self, depth: int, alias: str, variations: list[str], cached: bool) -> None:
        self._line(depth, f"* {self._label(alias, variations)}" + (" (cache miss: running)" if cached else ""))

    def cache_hit(self, depth: int, alias: str, variations: list[str], path: str) -> None:
        self._line(depth, f"* {self._label(alias, variations)} (cache hit: {path})")

    def skipped(self, depth: int, tags: str, reason: str) -> None:
        if self.verbose:
            self._line(depth, f"- skip dependency '{tags}' ({reason})")

    def finish(self, depth: int, alias: str, seconds: float, cache_path: str | None) -> None:
        where = f", cached in {cache_path}" if cache_path else ""
        self._line(depth, f"  done {alias} in {seconds:.2f} s{where}")

    def env_changes(self, depth: int, alias: str, changes: dict[str, Any]) -> None:
        if self.verbose and changes:
            self._line(depth, f"  env from {alias}:")
            for key in sorted(changes):
                self._line(depth, f"    {key}={changes[key]}")

    def dry_run(self, depth: int, alias: str, variations: list[str], status: str) -> None:
        self._line(depth, f"{self._label(alias, variations)}  [{status}]")
