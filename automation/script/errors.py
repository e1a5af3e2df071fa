"""One exception type for every failure the engine reports, turned into CM's return dict at the edge."""
from __future__ import annotations

from typing import Any


class ScriptError(Exception):
    """A failure with a message that says what was wrong and what to do about it."""

    def __init__(self, message: str, code: int = 1, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.extra = extra

    def to_cm(self) -> dict[str, Any]:
        return {"return": self.code, "error": self.message, **self.extra}


def check(result: Any, where: str) -> dict[str, Any]:
    """Raise ScriptError when a CM-style dict reports an error; return it otherwise."""
    if result is None:
        return {"return": 0}
    if not isinstance(result, dict) or "return" not in result:
        raise ScriptError(f"{where} must return a dict with 'return' (got {type(result).__name__})")
    if result["return"] > 0:
        raise ScriptError(f"{where}: {result.get('error', 'failed without an error message')}", result["return"])
    return result
