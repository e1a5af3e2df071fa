"""The `mojo` backend of the harness: the ONNX graph executed by our own Mojo kernels (cm_mlperf.mojo).

The kernel library comes from build-mojo-backend (CM_MOJO_BACKEND_LIB in the run's env). The plan is made
once at load time; a batch of any size runs image by image through it, all cores on each image.
"""
from __future__ import annotations

import os

import numpy as np

LIB_ENV = "CM_MOJO_BACKEND_LIB"
VERSION_ENV = "CM_MOJO_VERSION"


def _installed_mojo() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mojo")
    except PackageNotFoundError:
        return "unknown"


class MojoBackend:
    name = "mojo"

    def __init__(self) -> None:
        self.fixed_batch_size: int | None = None
        self._engine = None

    def load(self, model, threads: int, batch_size: int) -> None:
        from cm_mlperf.mojo.engine import MojoEngine

        lib = os.environ.get(LIB_ENV, "")
        if not lib:
            raise FileNotFoundError(f"no Mojo kernel library: set {LIB_ENV} (cm run script --tags=build,mojo-backend)")
        if not model.onnx_path or not os.path.isfile(model.onnx_path):
            raise FileNotFoundError(f"ONNX model not found: '{model.onnx_path}' (set CM_ML_MODEL_FILE_WITH_PATH)")
        # a batch runs one image per pass through the plan (see cm_mlperf.mojo.engine): any batch size is taken
        self._engine = MojoEngine(lib, model.onnx_path, threads=threads, input_name=model.input_name,
                                  output_name=model.output_name)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self._engine.run(batch)

    def version(self) -> str:
        return f"{os.environ.get(VERSION_ENV, '') or _installed_mojo()} (our kernels)"

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
