"""The Python side of the Mojo backend: ONNX graph -> plan (plan.py), the compiled kernels via ctypes (engine.py),
building the library (build.py). The Mojo sources live in script/build-mojo-backend/mojo/."""
