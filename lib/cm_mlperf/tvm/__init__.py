"""Apache TVM helpers shared by compile-tvm-model, tune-tvm-model, get-tvm-tuning-db, export-tvm-tuning-db and the
benchmarks: import, target, build, verify, tune, and the tuning databases (shipped, imported, exported).

Keep this module free of imports (see cm_mlperf/__init__.py).
"""
