"""get-tvm's run step: probe the installed Apache TVM (importing it takes seconds, so it runs here, once per
installed version: the script is cached on the packages' versions and installed files)."""
from __future__ import annotations

from collections.abc import Mapping

import tvm_probe
from cm_mlperf import run_step


def main(env: Mapping[str, str]) -> tuple[dict[str, str], dict]:
    try:
        info = tvm_probe.probe_tvm()
    except tvm_probe.TVMProbeError as e:
        raise run_step.StepError(str(e)) from None
    if not info["has_onnx_frontend"]:
        raise run_step.StepError(f"Apache TVM {info['version']} lacks tvm.relax.frontend.onnx (is the onnx package "
                                 f"installed?): pip install onnx; {tvm_probe.INSTALL_HINT}")
    for warning in info["warnings"]:
        print(f"[get-tvm] WARNING: {warning}")
    print(f"[get-tvm] Apache TVM {info['version']} (LLVM {info['llvm_version'] or '?'}, apache-tvm-ffi "
          f"{info['ffi_version'] or '?'}) at {info['package_path']}")
    return {"CM_TVM_VERSION": info["version"], "CM_TVM_LLVM_VERSION": info["llvm_version"],
            "CM_TVM_FFI_VERSION": info["ffi_version"], "CM_TVM_PACKAGE_PATH": info["package_path"]}, {}


if __name__ == "__main__":
    run_step.main(main)
