"""build-mojo-backend's run step: compile mojo/ into this cache entry, then load the library to check its ABI."""
from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

from cm_mlperf import run_step
from cm_mlperf.mojo import engine, toolchain

SOURCES = Path(__file__).resolve().parent / "mojo"


def main(env: Mapping[str, str]) -> tuple[dict[str, str], dict]:
    t0 = time.perf_counter()
    print(f"[build-mojo-backend] compiling {SOURCES} with {env.get('CM_MOJO_VERSION_LINE') or env['CM_MOJO_BIN']} "
          "(seconds to a minute; cached afterwards)", flush=True)
    try:
        built = toolchain.build_backend(env["CM_MOJO_BIN"], SOURCES, Path(os.getcwd()))
        lib = engine.load_library(built["library"])
    except (toolchain.MojoToolchainError, engine.MojoLibraryError) as e:
        raise run_step.StepError(str(e)) from None
    width = int(lib.mm_simd_width())
    print(f"[build-mojo-backend] built in {time.perf_counter() - t0:.0f} s: {built['library']} "
          f"(SIMD width {width} float32)" + (f", {built['native']}" if "native" in built else ""))
    return {"CM_MOJO_BACKEND_LIB": built["library"], "CM_MOJO_NATIVE_HARNESS": built.get("native", ""),
            "CM_MOJO_BACKEND_SIMD_WIDTH": str(width), "CM_MOJO_VERSION": env.get("CM_MOJO_VERSION", "")}, {}


if __name__ == "__main__":
    run_step.main(main)
