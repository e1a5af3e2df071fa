"""Record what CM's own engine (cmind 2.3.9 + MLCommons' cm4mlops 0.6.25) returns for MLCommons' offline scripts.

Run it with the Python of a virtual environment that has `cmind==2.3.9` (not this project's: cmind 4.2 there), with
MLCommons' collection unpacked and registered in a scratch CM home:

    python3 -m venv /tmp/cm239 && /tmp/cm239/bin/pip install cmind==2.3.9
    tar xzf ../shared/thirdparty/mlcommons-cm4mlops-0.6.25.tar.gz -C /tmp/cm4mlops
    (cd /tmp/cm4mlops && CM_REPOS=/tmp/cm239-home /tmp/cm239/bin/cm init repo --here)
    cd tests/engine/cm_reference && CM_REPOS=/tmp/cm239-home /tmp/cm239/bin/python record.py cm-2.3.9.json

Each run is made twice (a miss, then a hit) and the second result is kept: that is what a cached run returns.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import sys

import cmind

# Scripts of MLCommons' collection that need no network here; extra inputs where the script asks for them.
REQUESTS = [
    ("detect,os", {}),
    ("detect,cpu", {}),
    ("get,sys-utils-min", {}),
    ("get,python3", {}),
    ("get,generic-python-lib,_numpy", {}),
    ("get,generic-python-lib,_package.onnx", {}),
    ("get,cmake", {}),
    ("get,gcc", {}),
    ("get,java", {}),
    ("get,openssl", {}),
    ("dump,pip,freeze", {}),
    ("print,hello-world", {}),
    ("get,cache,dir", {}),
    ("create,custom,cache,entry", {"extra_cache_tags": "cm-ref-test"}),
    ("get,compiler", {}),
    ("get,generic-sys-util,_wget", {"skip_system_deps": True}),
]


def main() -> None:
    results = {}
    for tags, extra in REQUESTS:
        for _ in range(2):
            with contextlib.redirect_stdout(sys.stderr):
                r = cmind.access({"action": "run", "automation": "script", "tags": tags, "quiet": True, **extra})
        results[tags] = {"return": r["return"], "error": r.get("error", ""),
                         "new_env": r.get("new_env", {}), "new_state": r.get("new_state", {}),
                         "version": r.get("version", "")}
    with open(sys.argv[1], "w", encoding="utf-8") as f:  # native scripts write to fd 1: not stdout
        json.dump({"cmind": cmind.__version__, "python": sys.version.split()[0], "host": platform.node(),
                   "cwd": os.getcwd(), "cm_home": os.environ.get("CM_REPOS", ""),
                   "path": os.environ.get("PATH", ""), "results": results}, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
