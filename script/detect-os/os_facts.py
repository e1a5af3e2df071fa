"""Host OS facts from `platform` and /etc/os-release (pure helpers, testable with fixture text)."""
from __future__ import annotations

import platform
import shlex
import sys
from pathlib import Path

OS_RELEASE_FILES = ("/etc/os-release", "/usr/lib/os-release")


def parse_os_release(text: str) -> dict[str, str]:
    """Parse os-release(5) text (KEY=value lines, shell quoting) into a dict."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            parts = shlex.split(value)
            value = parts[0] if parts else ""
        except ValueError:
            value = value.strip("\"'")
        out[key.strip()] = value
    return out


def read_os_release() -> dict[str, str]:
    """The first readable os-release file, parsed; {} when there is none (macOS, Windows)."""
    for name in OS_RELEASE_FILES:
        path = Path(name)
        if path.is_file():
            try:
                return parse_os_release(path.read_text(encoding="utf-8", errors="replace"))
            except OSError:
                continue
    return {}


def os_env(os_release: dict[str, str] | None = None) -> dict[str, str]:
    """The CM_HOST_OS_* / CM_HOST_PLATFORM_* / CM_HOST_PYTHON_* env of this host."""
    rel = read_os_release() if os_release is None else os_release
    system = platform.system().lower() or "unknown"
    if system == "darwin":
        flavor, version = "macos", platform.mac_ver()[0]
    elif system == "windows":
        flavor, version = "windows", platform.version()
    else:
        flavor = rel.get("ID", "") or system
        version = rel.get("VERSION_ID", "") or rel.get("BUILD_ID", "")
    return {
        "CM_HOST_OS_TYPE": system,
        "CM_HOST_OS_FLAVOR": flavor.lower(),
        "CM_HOST_OS_VERSION": version,
        "CM_HOST_OS_NAME": rel.get("PRETTY_NAME", "") or f"{platform.system()} {platform.release()}".strip(),
        "CM_HOST_OS_KERNEL_VERSION": platform.release(),
        "CM_HOST_OS_BITS": "64" if sys.maxsize > 2**32 else "32",
        "CM_HOST_PLATFORM_FLAVOR": platform.machine().lower() or "unknown",
        "CM_HOST_PYTHON_VERSION": platform.python_version(),
        "CM_HOST_PYTHON_BIN_WITH_PATH": sys.executable,
    }
