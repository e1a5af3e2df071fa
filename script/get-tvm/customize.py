"""get-tvm: detect the installed Apache TVM (never installs it)."""
from __future__ import annotations

from typing import Any

import tvm_probe


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    env = i["env"]
    try:
        info = tvm_probe.probe_tvm()
    except tvm_probe.TVMProbeError as e:
        return {"return": 1, "error": str(e)}
    if not info["has_onnx_frontend"]:
        return {"return": 1, "error": f"Apache TVM {info['version']} lacks tvm.relax.frontend.onnx (is the onnx "
                                      f"package installed?): pip install onnx; {tvm_probe.INSTALL_HINT}"}
    env["CM_TVM_VERSION"] = info["version"]
    env["CM_TVM_LLVM_VERSION"] = info["llvm_version"]
    env["CM_TVM_FFI_VERSION"] = info["ffi_version"]
    env["CM_TVM_PACKAGE_PATH"] = info["package_path"]
    for warning in info["warnings"]:
        print(f"[get-tvm] WARNING: {warning}")
    print(f"[get-tvm] Apache TVM {info['version']} (LLVM {info['llvm_version'] or '?'}, apache-tvm-ffi "
          f"{info['ffi_version'] or '?'}) at {info['package_path']}")
    return {"return": 0}


def postprocess(i: dict[str, Any]) -> dict[str, Any]:
    return {"return": 0}
