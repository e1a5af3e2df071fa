"""The system description JSON (`systems/<system>.json`) of a submission, filled from what the run detected.

Inputs are CM env keys recorded with each run (detect-os: CM_HOST_OS_*, detect-cpu: CM_HOST_CPU_* and
CM_HOST_MEMORY_GB, get-tvm / compile-tvm-model: CM_TVM_*) and the harness result (backend version).
Anything can be overridden by the user (inputs or a JSON file); the round's required fields are always present.
"""
from __future__ import annotations

import os
import shutil
from typing import Any

from cm_mlperf.submission import rules

BACKEND_NAMES = {"onnxruntime": "ONNX Runtime", "tvm": "Apache TVM", "mojo": "Mojo",
                 "mojo-native": "Mojo (native harness)"}


def _major(version: str) -> str:
    return version.split(".")[0] if version else ""


def framework_string(backend: str, env: dict[str, str], backend_version: str = "") -> str:
    """'Apache TVM 0.27.0 (LLVM 22, tuned)', 'ONNX Runtime 1.32.0': the real backend, its version, TVM's tuning."""
    name = BACKEND_NAMES.get(backend, backend)
    if backend == "tvm":
        version = env.get("CM_TVM_VERSION") or backend_version
        details = []
        if env.get("CM_TVM_LLVM_VERSION"):
            details.append(f"LLVM {_major(env['CM_TVM_LLVM_VERSION'])}")
        details.append("tuned" if env.get("CM_TVM_TUNED", "").lower() in ("yes", "true", "1") else "untuned")
        return f"{name} {version} ({', '.join(details)})".replace("  ", " ")
    return f"{name} {backend_version}".strip()


def _storage() -> tuple[str, str]:
    """Capacity of the file system holding the results, and its kind (rotational or not) where Linux says."""
    total = shutil.disk_usage(os.getcwd()).total
    kind = "SSD"
    try:
        for dev in os.listdir("/sys/block"):
            with open(f"/sys/block/{dev}/queue/rotational", encoding="utf-8") as f:
                if f.read().strip() == "1":
                    kind = "HDD"
                    break
    except OSError:
        pass
    return f"{total / 1e9:.0f} GB", kind


def describe(env: dict[str, str], *, division: str, submitter: str, system_name: str, backend: str,
             backend_version: str = "", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every field of the round's system description, detected where possible, then the user's overrides."""
    cores = env.get("CM_HOST_CPU_PHYSICAL_CORES") or env.get("CM_HOST_CPU_TOTAL_CORES") or str(os.cpu_count() or 1)
    sockets = env.get("CM_HOST_CPU_SOCKETS") or "1"
    memory = env.get("CM_HOST_MEMORY_GB")
    capacity, storage_type = _storage()
    os_name = env.get("CM_HOST_OS_NAME") or " ".join(
        x for x in (env.get("CM_HOST_OS_FLAVOR", ""), env.get("CM_HOST_OS_VERSION", "")) if x) or "Linux"
    kernel = env.get("CM_HOST_OS_KERNEL_VERSION", "")
    software = [f"Python {env['CM_HOST_PYTHON_VERSION']}"] if env.get("CM_HOST_PYTHON_VERSION") else []
    if env.get("CM_MLPERF_LOADGEN_VERSION"):
        software.append(f"MLPerf LoadGen {env['CM_MLPERF_LOADGEN_VERSION'].split(' ')[0]}")
    if backend == "tvm" and env.get("CM_TVM_TUNING_DB_USED"):
        software.append(f"MetaSchedule database {env['CM_TVM_TUNING_DB_USED']}")
    software.append("mlperf-tvm-cm")
    desc: dict[str, Any] = {
        "division": division,
        "submitter": submitter,
        "status": "available",
        "system_name": system_name,
        "system_type": "edge",
        "system_type_detail": "CPU server",
        "number_of_nodes": "1",
        "host_processor_model_name": env.get("CM_HOST_CPU_MODEL_NAME") or "unknown CPU",
        "host_processors_per_node": sockets,
        "host_processor_core_count": cores,
        "host_processor_frequency": "",
        "host_processor_caches": "",
        "host_processor_interconnect": "",
        "host_memory_capacity": f"{float(memory):.0f} GB" if memory else "unknown",
        "host_memory_configuration": "not disclosed (virtual machine)" if memory else "unknown",
        "host_storage_capacity": capacity,
        "host_storage_type": storage_type,
        "host_networking": "not used by the benchmark (local LoadGen)",
        "host_network_card_count": "0",
        "host_networking_topology": "N/A",
        "accelerators_per_node": "0",
        "accelerator_model_name": "N/A",
        "accelerator_memory_capacity": "N/A",
        "accelerator_frequency": "",
        "accelerator_host_interconnect": "N/A",
        "accelerator_interconnect": "N/A",
        "accelerator_interconnect_topology": "",
        "accelerator_memory_configuration": "N/A",
        "accelerator_on-chip_memories": "",
        "cooling": "air",
        "framework": framework_string(backend, env, backend_version),
        "operating_system": f"{os_name} (Linux {kernel})" if kernel else os_name,
        "other_software_stack": ", ".join(software),
        "hw_notes": "",
        "sw_notes": f"CPU target {env['CM_HOST_CPU_LLVM_MCPU']}" if env.get("CM_HOST_CPU_LLVM_MCPU") else "",
    }
    for key, value in (overrides or {}).items():
        desc[key] = value if isinstance(value, str) else str(value) if isinstance(value, (int, float)) else value
    return {k: desc.get(k, "") for k in rules.SYSTEM_FIELDS} | {k: v for k, v in desc.items()
                                                               if k not in rules.SYSTEM_FIELDS}


def problems(desc: dict[str, Any], division: str = "", submitter: str = "") -> list[str]:
    """What reviewers reject in a system description: missing or empty required fields, wrong division etc."""
    out = [f"field {k} is missing" for k in rules.SYSTEM_FIELDS if k not in desc]
    out += [f"field {k} is empty: it needs a meaningful answer" for k in rules.SYSTEM_FIELDS_NON_EMPTY
            if k in desc and not str(desc[k]).strip()]
    if str(desc.get("status", "")).lower() not in rules.STATUSES:
        out.append(f"status '{desc.get('status')}' is not one of {', '.join(rules.STATUSES)}")
    if desc.get("system_type") not in rules.SYSTEM_TYPES:
        out.append(f"system_type '{desc.get('system_type')}' is not one of {', '.join(rules.SYSTEM_TYPES)}")
    if division and desc.get("division") != division:
        out.append(f"division is '{desc.get('division')}' but the folder is '{division}'")
    if submitter and str(desc.get("submitter", "")).lower() != submitter.lower():
        out.append(f"submitter is '{desc.get('submitter')}' but the folder is '{submitter}'")
    if str(desc.get("accelerator_model_name", "")).upper() == "N/A" and desc.get("accelerators_per_node") != "0":
        out.append("accelerators_per_node must be the string \"0\" on a CPU-only system")
    return out
