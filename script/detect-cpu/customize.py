"""detect-cpu: CPU model, cores, ISA flags, memory, and the LLVM mcpu they imply (not cached)."""
from __future__ import annotations

from typing import Any

import cpu_facts


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    env = i["env"]
    # --mcpu maps to CM_HOST_CPU_LLVM_MCPU; a value already in env (user or parent) wins over detection,
    # unless an earlier detect-cpu in the same chain derived it from the flags itself.
    derived_before = env.get("CM_HOST_CPU_LLVM_MCPU_SOURCE") in ("isa-flags", "archspec")
    override = "" if derived_before else env.get("CM_HOST_CPU_LLVM_MCPU", "")
    override = override or str(i.get("input", {}).get("mcpu", "") or "")
    facts = cpu_facts.cpu_env(mcpu_override=override)
    env.update(facts)
    print(f"[detect-cpu] {facts['CM_HOST_CPU_MODEL_NAME']} ({facts['CM_HOST_CPU_VENDOR_ID']}): "
          f"{facts['CM_HOST_CPU_PHYSICAL_CORES']} cores / {facts['CM_HOST_CPU_TOTAL_CORES']} threads, "
          f"{facts['CM_HOST_CPU_SOCKETS']} socket(s), {facts['CM_HOST_MEMORY_GB']} GiB; LLVM mcpu "
          f"{facts['CM_HOST_CPU_LLVM_MCPU']} ({facts['CM_HOST_CPU_LLVM_MCPU_SOURCE']}), family "
          f"{facts['CM_HOST_CPU_FAMILY']}")
    return {"return": 0}


def postprocess(i: dict[str, Any]) -> dict[str, Any]:
    return {"return": 0}
