"""CPU facts from /proc/cpuinfo text, and the LLVM `-mcpu` name they imply.

Pure functions of the cpuinfo text, so tests can feed fixture texts of other machines.
The mcpu choice is data (`X86_MCPU_RULES`, `AARCH64_PARTS`): the first rule whose vendor matches
and whose flags are all present wins.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

# (vendor_id or None for any vendor, cpuinfo flags that must all be present, LLVM mcpu).
# Ordered from the newest ISA to the oldest: the first match wins.
X86_MCPU_RULES: list[tuple[str | None, tuple[str, ...], str]] = [
    ("GenuineIntel", ("amx_tile",), "sapphirerapids"),
    ("GenuineIntel", ("avx512_fp16",), "sapphirerapids"),
    ("GenuineIntel", ("avx512_vnni", "avx512_bf16"), "cooperlake"),
    ("GenuineIntel", ("avx512_vnni", "avx512_vbmi2"), "icelake-server"),
    ("GenuineIntel", ("avx512_vnni",), "cascadelake"),
    ("GenuineIntel", ("avx512f",), "skylake-avx512"),
    ("AuthenticAMD", ("avx512f", "avx512_vp2intersect"), "znver5"),
    ("AuthenticAMD", ("avx512f",), "znver4"),
    ("AuthenticAMD", ("avx2", "vaes"), "znver3"),
    ("AuthenticAMD", ("avx2", "clwb"), "znver2"),
    ("AuthenticAMD", ("avx2",), "znver1"),
    (None, ("avx512f",), "skylake-avx512"),
    ("GenuineIntel", ("avx2", "avx_vnni"), "alderlake"),
    (None, ("avx2",), "haswell"),
    (None, ("avx",), "sandybridge"),
]
X86_FALLBACK = "x86-64"

# (CPU implementer, CPU part) from an aarch64 /proc/cpuinfo -> LLVM mcpu.
AARCH64_PARTS: dict[tuple[str, str], str] = {
    ("0x41", "0xd03"): "cortex-a53",
    ("0x41", "0xd07"): "cortex-a57",
    ("0x41", "0xd08"): "cortex-a72",
    ("0x41", "0xd0b"): "cortex-a76",
    ("0x41", "0xd0c"): "neoverse-n1",
    ("0x41", "0xd40"): "neoverse-v1",
    ("0x41", "0xd49"): "neoverse-n2",
    ("0x41", "0xd4f"): "neoverse-v2",
    ("0x41", "0xd8e"): "neoverse-n3",
    ("0xc0", "0xac3"): "ampere1",
    ("0xc0", "0xac4"): "ampere1a",
}
AARCH64_FALLBACK = "generic"

# Friendly names of aarch64 parts, for CM_HOST_CPU_MODEL_NAME when cpuinfo has no "model name".
_AARCH64_VENDORS = {"0x41": "ARM", "0x42": "Broadcom", "0x43": "Cavium", "0x48": "HiSilicon",
                    "0x51": "Qualcomm", "0x61": "Apple", "0xc0": "Ampere"}


def parse_cpuinfo(text: str) -> list[dict[str, str]]:
    """Split /proc/cpuinfo text into one dict per blank-line separated block (usually one per CPU)."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = line.partition(":")
        if sep:
            current[key.strip().lower()] = value.strip()
    if current:
        blocks.append(current)
    return blocks


def _processors(blocks: list[dict[str, str]]) -> list[dict[str, str]]:
    procs = [b for b in blocks if "processor" in b and b["processor"].isdigit()]
    return procs or blocks


def _first(blocks: list[dict[str, str]], *keys: str) -> str:
    for block in blocks:
        for key in keys:
            if block.get(key):
                return block[key]
    return ""


def llvm_mcpu(vendor: str, flags: set[str] | list[str], arch: str = "x86_64",
              implementer: str = "", part: str = "") -> str:
    """The LLVM CPU name for these ISA flags (x86) or CPU implementer/part (aarch64)."""
    arch = arch.lower()
    if arch in ("aarch64", "arm64"):
        return AARCH64_PARTS.get((implementer.lower(), part.lower()), AARCH64_FALLBACK)
    if arch not in ("x86_64", "amd64", "i686", "i386", "x86"):
        return "generic"
    have = set(flags)
    for rule_vendor, needed, mcpu in X86_MCPU_RULES:
        if rule_vendor is not None and rule_vendor != vendor:
            continue
        if all(flag in have for flag in needed):
            return mcpu
    return X86_FALLBACK


def cpu_facts(cpuinfo_text: str, arch: str | None = None) -> dict[str, object]:
    """Facts from cpuinfo text: model, vendor, flags, logical/physical cores, sockets, mcpu."""
    arch = (arch or platform.machine() or "x86_64").lower()
    blocks = parse_cpuinfo(cpuinfo_text)
    procs = _processors(blocks)
    vendor = _first(procs, "vendor_id")
    flags = _first(procs, "flags", "features").split()
    implementer = _first(procs, "cpu implementer")
    part = _first(procs, "cpu part")
    model = _first(procs, "model name", "hardware", "cpu model", "processor name")
    if not model and implementer:
        model = f"{_AARCH64_VENDORS.get(implementer.lower(), implementer)} " + \
            AARCH64_PARTS.get((implementer.lower(), part.lower()), f"part {part}")
    if not vendor and implementer:
        vendor = _AARCH64_VENDORS.get(implementer.lower(), implementer)

    logical = sum(1 for b in procs if "processor" in b) or None
    socket_ids = {b["physical id"] for b in procs if "physical id" in b}
    sockets = len(socket_ids) or None
    core_ids = {(b.get("physical id", "0"), b["core id"]) for b in procs if "core id" in b}
    physical = len(core_ids) or None
    if physical is None:
        per_socket = _first(procs, "cpu cores")
        if per_socket.isdigit():
            physical = int(per_socket) * (sockets or 1)
    return {
        "model_name": model,
        "vendor_id": vendor,
        "flags": flags,
        "arch": arch,
        "logical_cores": logical,
        "physical_cores": physical,
        "sockets": sockets,
        "implementer": implementer,
        "part": part,
        "llvm_mcpu": llvm_mcpu(vendor, flags, arch, implementer, part),
    }


def read_cpuinfo(path: str = "/proc/cpuinfo") -> str:
    """The text of /proc/cpuinfo, or '' where there is none (macOS, Windows)."""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def memory_gb() -> float:
    """Total RAM in GiB (psutil, else /proc/meminfo), 0.0 if unknown."""
    try:
        import psutil

        return psutil.virtual_memory().total / 2**30
    except Exception:  # noqa: BLE001 - psutil missing or unsupported platform
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def _archspec_facts(vendor: str, flags: list[str], arch: str) -> tuple[str, str, list[str], str]:
    """(microarchitecture, family, family extras, LLVM cpu name or "") from archspec; generic values without it."""
    try:
        from cm_mlperf.tvm import family as cpu_family
    except ImportError:  # archspec not installed: the rule table decides alone
        return arch, arch, [], ""
    return (cpu_family.microarchitecture(vendor, flags, arch), cpu_family.family_from_flags(flags, arch),
            cpu_family.family_extras(flags), cpu_family.llvm_cpu_name(vendor, flags, arch))


def cpu_env(cpuinfo_text: str | None = None, arch: str | None = None, mcpu_override: str = "") -> dict[str, str]:
    """The CM_HOST_CPU_* / CM_HOST_MEMORY_GB env for this host (or for the given cpuinfo text)."""
    text = read_cpuinfo() if cpuinfo_text is None else cpuinfo_text
    facts = cpu_facts(text, arch)
    logical = facts["logical_cores"] or os.cpu_count() or 1
    physical = facts["physical_cores"]
    if physical is None:
        try:
            import psutil

            physical = psutil.cpu_count(logical=False)
        except Exception:  # noqa: BLE001
            physical = None
    physical = physical or logical
    model = facts["model_name"] or platform.processor() or "unknown"
    vendor, flags, arch = str(facts["vendor_id"] or ""), list(facts["flags"]), str(facts["arch"])
    # archspec (a maintained CPU database) names the microarchitecture and the -march LLVM takes for it; the rule
    # table above is the fallback for CPUs archspec cannot place (an unknown model, a bare x86-64 level)
    microarch, family, extras, from_archspec = _archspec_facts(vendor, flags, arch)
    mcpu = mcpu_override.strip() or from_archspec or str(facts["llvm_mcpu"])
    source = "override" if mcpu_override.strip() else ("archspec" if from_archspec else "isa-flags")
    return {
        "CM_HOST_CPU_MODEL_NAME": str(model),
        "CM_HOST_CPU_VENDOR_ID": str(facts["vendor_id"] or "unknown"),
        "CM_HOST_CPU_ARCH": str(facts["arch"]),
        "CM_HOST_CPU_TOTAL_CORES": str(logical),
        "CM_HOST_CPU_PHYSICAL_CORES": str(physical),
        "CM_HOST_CPU_SOCKETS": str(facts["sockets"] or 1),
        "CM_HOST_CPU_FLAGS": " ".join(facts["flags"]),
        "CM_HOST_CPU_LLVM_MCPU": mcpu,
        "CM_HOST_CPU_LLVM_MCPU_SOURCE": source,
        "CM_HOST_CPU_MICROARCH": microarch,
        "CM_HOST_CPU_FAMILY": family,
        "CM_HOST_CPU_FAMILY_EXTRAS": " ".join(extras),
        "CM_HOST_MEMORY_GB": f"{memory_gb():.1f}",
    }
