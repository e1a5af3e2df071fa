"""The `script` automation: a CM-compatible engine that finds, chains, runs and caches scripts.

The engine knows nothing about MLPerf. Modules, one job each:
errors (one exception type), meta (load + validate `_cm.yaml`), search (find scripts by tags),
variations (resolve `_tags`), env (merge, substitute, filter), deps (conditions and overrides),
cache (keyed, atomic, locked entries), runner (hooks and run.sh), engine (the recursion),
report (what the user sees), module.py (wires it to cmind).
"""
