"""`cm`: cmind's command, with one thing added: when no registered repository provides the `script` automation,
say how to register this collection instead of cmind's bare 'automation "script" not found'.

`pip install -e .` installs this collection but cannot register it with cm (pip runs no post-install step);
`cm-register-repo` does. Everything else is cmind's own `cm` (cmind.cli.run), unchanged.
"""
from __future__ import annotations

import json
import os
import sys

HINT = ("no registered CM repository provides the 'script' automation: run cm-register-repo in the mlperf-tvm-cm "
        "checkout (pip install -e . installs the collection but cannot register it with cm)")


def cm_home() -> str:
    return os.environ.get("CM_REPOS") or os.path.join(os.path.expanduser("~"), "CM")


def script_automation_registered(home: str | None = None) -> bool:
    """Whether a repository in cmind's repos.json holds automation/script/ (cmind's internal repo has none)."""
    try:
        with open(os.path.join(home or cm_home(), "repos.json"), encoding="utf-8") as f:
            paths = json.load(f)
    except (OSError, ValueError):
        return False
    return any(os.path.isfile(os.path.join(str(p), "automation", "script", "module.py")) for p in paths)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    from cmind.cli import run

    words = [a for a in argv if not a.startswith("-")]
    if len(words) >= 2 and words[1] == "script" and not script_automation_registered():
        print(f"\nCM error: {HINT}!", file=sys.stderr)
        sys.exit(4)
    run(argv)


if __name__ == "__main__":
    main()
