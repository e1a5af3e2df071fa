"""The Mojo toolchain from PyPI (`mojo`): find it, install it when asked, report its version, build with it."""
from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

# What the PyPI `mojo` wheels exist for (1.2): Linux x86-64 and arm64, macOS on Apple silicon.
SUPPORTED_PLATFORMS = {("Linux", "x86_64"), ("Linux", "aarch64"), ("Darwin", "arm64")}
PIP_REQUIREMENT = "mojo>=1.2,<2"
MIN_VERSION = (1, 2)


class MojoToolchainError(RuntimeError):
    """No usable Mojo toolchain (one line: what is wrong and what to do)."""


def check_platform(system: str | None = None, machine: str | None = None) -> None:
    system = system or platform.system()
    machine = machine or platform.machine()
    if (system, machine) not in SUPPORTED_PLATFORMS:
        raise MojoToolchainError(
            f"Mojo from PyPI runs on Linux x86-64/arm64 and macOS on Apple silicon, not {system} {machine}: "
            "use the _onnxruntime or _tvm backend here")


def find_mojo() -> str:
    """The `mojo` driver of this Python environment (its scripts folder first), else one on PATH; '' if none."""
    local = Path(sysconfig.get_path("scripts")) / "mojo"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("mojo") or ""


def install_mojo() -> None:
    """pip install the toolchain into this Python environment (about 700 MB, seconds from a local mirror)."""
    print(f"[get-mojo] installing {PIP_REQUIREMENT} with pip into {sys.prefix}", flush=True)
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", PIP_REQUIREMENT], check=False)
    if proc.returncode != 0:
        raise MojoToolchainError(f"pip install '{PIP_REQUIREMENT}' failed (exit code {proc.returncode}); "
                                 "install it yourself and run again")


def mojo_version(mojo: str) -> tuple[str, str]:
    """(version, full line) from `mojo --version`, e.g. ('1.2.0', 'Mojo 1.2.0 (2016d0cd)')."""
    try:
        out = subprocess.run([mojo, "--version"], capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise MojoToolchainError(f"{mojo} --version failed ({e}); reinstall: pip install '{PIP_REQUIREMENT}'") \
            from e
    m = re.search(r"Mojo\s+(\d+\.\d+(?:\.\d+)?)", out)
    if not m:
        raise MojoToolchainError(f"could not read the version from '{out.strip()}' ({mojo} --version)")
    version = m.group(1)
    if tuple(int(p) for p in version.split(".")[:2]) < MIN_VERSION:
        raise MojoToolchainError(f"Mojo {version} is older than 1.2, which our kernels are written for: "
                                 f"pip install -U '{PIP_REQUIREMENT}'")
    return version, out.strip().splitlines()[0]


def mojo_build(mojo: str, source: Path, output: Path, shared_lib: bool = False) -> None:
    """`mojo build` one root file (its folder's modules are imported from it); raise with the compiler's errors."""
    cmd = [mojo, "build", str(source), "-o", str(output)]
    if shared_lib:
        cmd[2:2] = ["--emit", "shared-lib"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(source.parent), check=False)
    if proc.returncode != 0 or not output.is_file():
        errors = [ln for ln in proc.stderr.splitlines() if "error" in ln][:5]
        raise MojoToolchainError(f"mojo build {source.name} failed: {' | '.join(errors) or proc.stderr[-500:]}")


SOURCE_ROOT = "capi.mojo"  # the library's root file in the sources folder
NATIVE_ROOT = "harness_main.mojo"  # the native LoadGen harness's main
LIBRARY_NAME = "libmlperf_mojo.so"
NATIVE_NAME = "mlperf-mojo-harness"


def build_backend(mojo: str, sources: Path, out_dir: Path, native: bool = True) -> dict[str, str]:
    """Build the kernel library (and the native harness) from `sources` into out_dir; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / LIBRARY_NAME
    mojo_build(mojo, sources / SOURCE_ROOT, lib, shared_lib=True)
    result = {"library": str(lib)}
    if native and (sources / NATIVE_ROOT).is_file():
        exe = out_dir / NATIVE_NAME
        mojo_build(mojo, sources / NATIVE_ROOT, exe)
        result["native"] = str(exe)
    return result
