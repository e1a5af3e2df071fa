#!/usr/bin/env python3
"""The README's main command on the built-in default: cold (a fresh CM home and cache, packages installed) and warm.

    python benchmarks/first_run.py [--warm-runs 3] [--tags run-mlperf,inference,_tvm]

Prints a table: seconds for the cold run and the median of the warm runs, against the goals (cold <= 120 s,
warm <= 60 s on a 2-core machine). Each run is the real `cm` CLI in a subprocess, in a temporary folder.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOALS = {"cold": 120.0, "warm": 60.0}


def timed_run(tags: str, env: dict[str, str], cwd: str) -> float:
    started = time.perf_counter()
    result = subprocess.run(["cm", "run", "script", f"--tags={tags}"], env=env, cwd=cwd, capture_output=True,
                            text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"`cm run script --tags={tags}` failed:\n{result.stderr[-3000:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", default="run-mlperf,inference,_tvm")
    parser.add_argument("--warm-runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="first-run-") as tmp:
        env = dict(os.environ, CM_REPOS=os.path.join(tmp, "cm-home"))
        env.pop("CM_CACHE_DIR", None)
        subprocess.run(["cm-register-repo", str(REPO)], env=env, check=True, capture_output=True)
        cold = timed_run(args.tags, env, tmp)
        warm = [timed_run(args.tags, env, tmp) for _ in range(args.warm_runs)]
    rows = [("cold (fresh CM home)", cold, GOALS["cold"]), (f"warm (median of {len(warm)})", statistics.median(warm),
                                                            GOALS["warm"])]
    print(f"cm run script --tags={args.tags}  ({os.cpu_count()} CPUs)")
    print(f"{'run':28s} {'seconds':>8s} {'goal':>6s} {'ratio':>6s}")
    for name, seconds, goal in rows:
        print(f"{name:28s} {seconds:8.1f} {goal:6.0f} {seconds / goal:6.2f}")
    met = all(seconds <= goal for _, seconds, goal in rows)
    print(f"goals {'met' if met else 'NOT met'} (warm runs: {', '.join(f'{w:.1f}' for w in warm)} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
