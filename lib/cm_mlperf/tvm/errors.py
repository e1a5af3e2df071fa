"""compile-tvm-model's exception types, shared by every tvm_* module (import them from here)."""
from __future__ import annotations

from typing import Any


class TVMCompileError(RuntimeError):
    """Compiling the model failed; the message says what was wrong and what to do."""


class TVMVerificationError(TVMCompileError):
    """The compiled library disagrees with onnxruntime beyond the tolerance."""

    def __init__(self, message: str, report: dict[str, Any]):
        super().__init__(message)
        self.report = report
