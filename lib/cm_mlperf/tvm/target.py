"""compile-tvm-model's target: the dict-form llvm target for an LLVM CPU name, with the CPU name checked
against the LLVM built into TVM and the target's CPU features checked against this host's.

    target = make_target(mcpu, num_cores)            # raises TVMCompileError on an unknown mcpu
    missing = missing_host_features(target, flags)   # features this host lacks (its code would SIGILL here)
"""
from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from typing import Any

from cm_mlperf.tvm.errors import TVMCompileError

# LLVM CPU feature -> /proc/cpuinfo flag: if the target needs it and the host lacks it, the library
# would die with SIGILL here (so it cannot be verified on this machine).
LLVM_FEATURE_TO_CPUINFO_FLAG: dict[str, str] = {
    "avx": "avx",
    "avx2": "avx2",
    "fma": "fma",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512dq": "avx512dq",
    "avx512vl": "avx512vl",
    "avx512vnni": "avx512_vnni",
    "avx512bf16": "avx512_bf16",
    "avx512fp16": "avx512_fp16",
    "avxvnni": "avx_vnni",
    "amx-tile": "amx_tile",
    "amx-bf16": "amx_bf16",
    "amx-int8": "amx_int8",
}
MCPU_FLAG_HINT = "--mcpu=<llvm cpu> (env CM_TVM_MCPU)"


def llvm_triple() -> str:
    """The LLVM triple TVM generates code for by default (this host's)."""
    from tvm.target import codegen

    return str(codegen.llvm_get_system_triple())


def known_llvm_cpus() -> list[str]:
    """CPU names LLVM accepts for this host's triple ([] if TVM cannot list them)."""
    import tvm
    from tvm.target import codegen

    try:
        return sorted(str(c) for c in codegen.llvm_get_cpu_archlist(tvm.target.Target({"kind": "llvm"})))
    except Exception:  # noqa: BLE001 - listing is only for the error message
        return []


def check_mcpu(mcpu: str) -> None:
    """Raise TVMCompileError if LLVM (as built into TVM) does not know this CPU name."""
    from tvm.target import codegen

    if not mcpu:
        raise TVMCompileError(f"no LLVM CPU name given: pass {MCPU_FLAG_HINT}, or run detect-cpu")
    triple = llvm_triple()
    try:
        valid = bool(codegen.llvm_is_valid_cpu(mcpu, triple))
    except Exception:  # noqa: BLE001 - cannot check: let LLVM decide at build time
        return
    if not valid:
        close = difflib.get_close_matches(mcpu, known_llvm_cpus(), n=5, cutoff=0.5)
        hint = f" Close names: {', '.join(close)}." if close else ""
        raise TVMCompileError(
            f"LLVM {codegen.llvm_version_major(allow_none=True)} in TVM does not know the CPU '{mcpu}' "
            f"(triple {triple}).{hint} Override it with {MCPU_FLAG_HINT}, e.g. x86-64, haswell, "
            f"skylake-avx512, znver3 or sapphirerapids.")


def target_dict(mcpu: str, num_cores: int) -> dict[str, Any]:
    """The dict form of the llvm target (TVM 0.27 rejects the "llvm -mcpu=..." string form)."""
    return {"kind": "llvm", "mcpu": mcpu, "num-cores": int(num_cores)}


def make_target(mcpu: str, num_cores: int) -> Any:
    """A tvm.target.Target for CPU code tuned to `mcpu` using `num_cores` threads (mcpu checked first)."""
    import tvm

    if int(num_cores) < 1:
        raise TVMCompileError(f"num-cores must be at least 1, got {num_cores} (--threads)")
    check_mcpu(mcpu)
    try:
        return tvm.target.Target(target_dict(mcpu, num_cores))
    except Exception as e:  # noqa: BLE001
        raise TVMCompileError(f"TVM rejected the target {target_dict(mcpu, num_cores)}: {e}. "
                              f"Override the CPU with {MCPU_FLAG_HINT}") from e


def missing_host_features(target: Any, host_flags: Sequence[str]) -> list[str]:
    """CPU features the target's code may use that this host (its cpuinfo flags) lacks."""
    from tvm.target import codegen

    if not host_flags:
        return []
    try:
        features = {str(f) for f in codegen.llvm_get_cpu_features(target)}
    except Exception:  # noqa: BLE001
        return []
    have = set(host_flags)
    return sorted(f for f, flag in LLVM_FEATURE_TO_CPUINFO_FLAG.items() if f in features and flag not in have)


def target_json(target: Any) -> str:
    """The target as a JSON string that tvm.target.Target(json.loads(s)) rebuilds."""
    attrs = dict(getattr(target, "attrs", {}) or {})
    out: dict[str, Any] = {"kind": str(target.kind.name)}
    for key in ("mtriple", "mcpu", "mattr", "num-cores"):
        value = attrs.get(key)
        if value is None or value == "":
            continue
        if key == "num-cores":
            out[key] = int(value)
        elif isinstance(value, str):
            out[key] = str(value)
        else:
            out[key] = [str(v) for v in value]
    return json.dumps(out, sort_keys=True)
