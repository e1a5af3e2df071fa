"""Helpers shared by the collection's scripts (installed by `pip install -e .`).

Scripts import these instead of importing each other's files by path, so the engine can see (and key
cache entries on) every piece of code a script uses. Keep `__init__` modules free of imports: the
engine resolves `cm_mlperf.*` modules without executing them.
"""
