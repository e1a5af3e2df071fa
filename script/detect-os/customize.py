"""detect-os: host OS, kernel, machine and Python facts (not cached: it is cheap)."""
from __future__ import annotations

from typing import Any

import os_facts


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    env = i["env"]
    facts = os_facts.os_env()
    env.update(facts)
    print(f"[detect-os] {facts['CM_HOST_OS_NAME']} ({facts['CM_HOST_OS_TYPE']}, kernel "
          f"{facts['CM_HOST_OS_KERNEL_VERSION']}, {facts['CM_HOST_PLATFORM_FLAVOR']}), "
          f"Python {facts['CM_HOST_PYTHON_VERSION']}")
    return {"return": 0}


def postprocess(i: dict[str, Any]) -> dict[str, Any]:
    return {"return": 0}
