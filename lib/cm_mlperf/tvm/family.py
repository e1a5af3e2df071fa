"""The CPU family a tuning database serves, and the CPU's microarchitecture, from archspec's data.

A MetaSchedule schedule for fp32 code depends on the vector ISA it was measured with (512-bit AVX-512 vs 256-bit
AVX2 loops, FMA), not on the exact core: a database tuned on an AMD EPYC (znver4) serves an Intel Xeon
(sapphirerapids) and back, since both run AVX-512. The family is the highest x86-64 microarchitecture level whose
features the CPU has (archspec's `x86_64_v4` = AVX-512 F/BW/CD/DQ/VL, `x86_64_v3` = AVX2 + FMA, ...): a maintained
definition rather than a table of ours. Extras that matter to some schedules (VNNI, AMX) are reported beside it.

    family_from_flags(flags)          # "x86_64_v4"
    microarchitecture(vendor, flags)  # archspec's best match ("zen4", "sapphirerapids", or a level in a VM)
    llvm_cpu_name(vendor, flags)      # the -march clang/LLVM takes for it ("znver4"), or "" when unknown
"""
from __future__ import annotations

from collections.abc import Iterable

# /proc/cpuinfo spells a few features differently from archspec's JSON (archspec maps them the same way)
_CPUINFO_ALIASES = {"pni": "sse3", "avx512_vnni": "avx512_vnni"}
# Not instruction sets but protection/system features that hypervisors hide from guests: ignored when matching, so a
# VM's Zen 4 is still archspec's zen4
_NOT_ISA = {"pku", "flush_l1d", "ibpb", "ibrs", "stibp", "md_clear", "ssbd", "hypervisor"}
X86_LEVELS = ("x86_64_v4", "x86_64_v3", "x86_64_v2", "x86_64")
FAMILY_EXTRAS = {"avx512_vnni": "vnni", "avx_vnni": "avx-vnni", "amx_tile": "amx", "avx512_bf16": "bf16"}


def _features(flags: Iterable[str]) -> set[str]:
    return {_CPUINFO_ALIASES.get(f, f) for f in flags}


def family_from_flags(flags: Iterable[str], arch: str = "x86_64") -> str:
    """The family name for these cpuinfo flags: an archspec x86-64 level, or the architecture elsewhere."""
    import archspec.cpu

    arch = (arch or "x86_64").lower()
    if arch not in ("x86_64", "amd64"):
        return "aarch64" if arch in ("aarch64", "arm64") else arch
    have = _features(flags)
    for level in X86_LEVELS:
        target = archspec.cpu.TARGETS[level]
        if set(target.features) <= have:
            return level
    return "x86_64"


def family_extras(flags: Iterable[str]) -> list[str]:
    """Matrix/dot-product extras beyond the family (recorded in manifests; fp32 schedules do not use them)."""
    have = set(flags)
    return sorted({name for flag, name in FAMILY_EXTRAS.items() if flag in have})


def microarchitecture(vendor: str, flags: Iterable[str], arch: str = "x86_64") -> str:
    """archspec's most specific microarchitecture compatible with this vendor and these flags.

    In a VM that hides the CPU model archspec can only name a level (x86_64_v4); the flags still tell zen4 from
    sapphirerapids when the vendor is known, because archspec compares feature sets, not model numbers."""
    import archspec.cpu

    have = _features(flags)
    arch = (arch or "x86_64").lower()
    family = "x86_64" if arch in ("x86_64", "amd64") else ("aarch64" if arch in ("aarch64", "arm64") else arch)
    best = None
    for target in archspec.cpu.TARGETS.values():
        if target.family.name != family or target.name == family:
            continue
        if target.vendor not in ("generic", vendor):
            continue
        if not set(target.features) - _NOT_ISA <= have:
            continue
        if best is None or len(target.ancestors) > len(best.ancestors):
            best = target
    return best.name if best is not None else family


def llvm_cpu_name(vendor: str, flags: Iterable[str], arch: str = "x86_64", clang_version: str = "18") -> str:
    """The LLVM CPU name archspec gives clang for this CPU (-march=...), "" for a generic level."""
    import archspec.cpu

    name = microarchitecture(vendor, flags, arch)
    target = archspec.cpu.TARGETS.get(name)
    if target is None or target.vendor == "generic":
        return ""
    try:
        opts = target.optimization_flags("clang", clang_version)
    except Exception:  # noqa: BLE001 - archspec raises when clang lacks the name
        return ""
    for word in opts.split():
        if word.startswith("-march="):
            return word.split("=", 1)[1]
    return ""
