"""Detect the installed Apache TVM (Relax) Python package: version, LLVM, the `llvm` target.

Never installs anything: a missing or broken TVM becomes one clear error naming the pip command.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
from typing import Any

INSTALL_HINT = "pip install 'apache-tvm==0.27.*' 'apache-tvm-ffi==0.1.14.post0'"
SUPPORTED_SERIES = "0.27"
# apache-tvm-ffi versions known to break TVM 0.27: version -> why.
KNOWN_BAD_FFI: dict[str, str] = {
    "0.1.15.post2": "segfaults in tvm.ir.save_json, which crashes MetaSchedule's JSON tuning database",
}


class TVMProbeError(RuntimeError):
    """TVM is missing, does not import, or cannot generate CPU code."""


def dist_version(name: str) -> str:
    """The installed version of a distribution, '' if not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return ""


def ffi_warnings(ffi_version: str) -> list[str]:
    """Warnings about the installed apache-tvm-ffi version (empty when it is fine)."""
    if ffi_version in KNOWN_BAD_FFI:
        return [f"apache-tvm-ffi {ffi_version} {KNOWN_BAD_FFI[ffi_version]}; pin it: {INSTALL_HINT}"]
    return []


def tvm_warnings(tvm_version: str) -> list[str]:
    """Warnings about a TVM outside the release series this collection was written and tested for."""
    if tvm_version and not tvm_version.startswith(SUPPORTED_SERIES + "."):
        return [f"apache-tvm {tvm_version} is not the tested {SUPPORTED_SERIES} series; if compiling fails: "
                f"{INSTALL_HINT}"]
    return []


def llvm_version(tvm_module: Any) -> str:
    """The LLVM version TVM was built with ('' if unknown): libinfo's LLVM_VERSION, else the major."""
    try:
        info = dict(tvm_module.support.libinfo())
    except Exception:  # noqa: BLE001 - very old/odd builds
        info = {}
    for key in ("LLVM_VERSION", "TVM_LLVM_VERSION"):
        if info.get(key):
            return str(info[key])
    try:
        from tvm.target import codegen

        major = codegen.llvm_version_major(allow_none=True)
        return str(major) if major else ""
    except Exception:  # noqa: BLE001
        return ""


def probe_tvm() -> dict[str, Any]:
    """Import TVM and check it can compile for CPU. Returns versions and warnings; raises TVMProbeError."""
    try:
        tvm = importlib.import_module("tvm")
    except ImportError as e:
        raise TVMProbeError(f"Apache TVM is not installed or does not import ({e}); install it with: "
                            f"{INSTALL_HINT}") from e
    except Exception as e:  # noqa: BLE001 - a broken native library raises all sorts of things
        raise TVMProbeError(f"Apache TVM failed to import ({type(e).__name__}: {e}); reinstall it with: "
                            f"{INSTALL_HINT}") from e
    version = str(getattr(tvm, "__version__", "") or dist_version("apache-tvm"))
    try:
        info = dict(tvm.support.libinfo())
    except Exception:  # noqa: BLE001
        info = {}
    llvm_on = str(info.get("USE_LLVM", "")).upper() not in ("", "OFF", "0", "FALSE")
    try:
        llvm_on = llvm_on or bool(tvm.runtime.enabled("llvm"))
    except Exception:  # noqa: BLE001
        pass
    if not llvm_on:
        raise TVMProbeError(f"Apache TVM {version} was built without LLVM, so it cannot compile for CPU; install "
                            f"the PyPI wheel: {INSTALL_HINT}")
    try:
        relax = importlib.import_module("tvm.relax")
        has_onnx = importlib.util.find_spec("tvm.relax.frontend.onnx") is not None
    except Exception as e:  # noqa: BLE001
        raise TVMProbeError(f"Apache TVM {version} has no usable Relax ({e}); this collection needs TVM "
                            f"{SUPPORTED_SERIES} (Relax): {INSTALL_HINT}") from e
    ffi_version = dist_version("apache-tvm-ffi")
    return {
        "version": version,
        "llvm_version": llvm_version(tvm),
        "ffi_version": ffi_version,
        "package_path": os.path.dirname(os.path.abspath(tvm.__file__)),
        "has_relax": relax is not None,
        "has_onnx_frontend": has_onnx,
        "warnings": ffi_warnings(ffi_version) + tvm_warnings(version),
    }
