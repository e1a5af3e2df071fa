"""get-mojo's run step: find the `mojo` driver (pip install it when missing and allowed), report its version."""
from __future__ import annotations

from collections.abc import Mapping

from cm_mlperf import run_step
from cm_mlperf.mojo import toolchain


def main(env: Mapping[str, str]) -> tuple[dict[str, str], dict]:
    try:
        toolchain.check_platform()
        mojo = toolchain.find_mojo()
        if not mojo:
            if env.get("CM_MOJO_INSTALL", "yes").lower() in ("no", "0", "false", "off"):
                raise toolchain.MojoToolchainError(
                    f"Mojo is not installed and --install=no: pip install '{toolchain.PIP_REQUIREMENT}'")
            toolchain.install_mojo()
            mojo = toolchain.find_mojo()
            if not mojo:
                raise toolchain.MojoToolchainError("pip installed mojo but no `mojo` driver was found in this "
                                                   "environment's scripts folder or on PATH")
        version, line = toolchain.mojo_version(mojo)
    except toolchain.MojoToolchainError as e:
        raise run_step.StepError(str(e)) from None
    print(f"[get-mojo] {line} at {mojo}")
    return {"CM_MOJO_BIN": mojo, "CM_MOJO_VERSION": version, "CM_MOJO_VERSION_LINE": line}, {}


if __name__ == "__main__":
    run_step.main(main)
