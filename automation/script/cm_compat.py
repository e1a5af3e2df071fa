"""What CM's engine gives the hooks of scripts written for it (MLCommons' collection), as documented behaviour.

A `customize.py` written for CM gets, besides env/state/meta: `input`, `automation`, `artifact`, `customize`,
`os_info` (with `bits`, `env_separator`, `run_bat`, ...), `recursion_spaces`, `script_tags`,
`found_script_tags`, `variation_tags`, `const`, `const_state` and `run_script_input`. Through
`i['automation']` it calls the methods below; `run_script_input` is the handle those methods take to run one
of the script's native scripts again (`run.sh`, `install.sh`, ...) and to call its `detect_version` hook.

Version detection protocol: a native script writes the tool's version banner to `tmp-ver.out` in the working
directory; the `detect_version(i)` hook parses it with `automation.parse_version(...)`, which stores the
version in the env key given and in `CM_DETECTED_VERSION`, and returns `{'version': ...}`. `find_artifact`
with `detect_version` does that for each candidate file and keeps those within `CM_VERSION`,
`CM_VERSION_MIN` and `CM_VERSION_MAX`.
"""
from __future__ import annotations

import copy
import functools
import glob
import os
import platform
import re
import struct
import subprocess
from collections.abc import Callable
from typing import Any

from .deps import version_tuple
from .errors import ScriptError

TMP_FILE_VER = "tmp-ver.out"
NOT_FOUND = 16  # CM's code for "not found, no problem"
# Env keys that belong to one script: not passed to its dependencies (unless a dep's force_env_keys names them)
LOCAL_ENV_KEYS = ["CM_VERSION", "CM_VERSION_MIN", "CM_VERSION_MAX", "CM_VERSION_MAX_USABLE", "CM_DETECTED_VERSION",
                  "CM_INPUT", "CM_OUTPUT", "CM_OUTBASENAME", "CM_OUTDIRNAME", "CM_NAME", "CM_EXTRA_CACHE_TAGS",
                  "CM_TMP_*", "CM_GIT_*", "CM_RENEW_CACHE_ENTRY"]
# CM turns these inputs into env (`--extra_cache_tags=x` -> CM_EXTRA_CACHE_TAGS=x) for every script; `--path`
# becomes CM_TMP_PATH (where find_artifact looks).
INPUTS_TO_ENV = ["input", "output", "outdirname", "outbasename", "name", "extra_cache_tags", "skip_compile",
                 "skip_run", "accept_license", "skip_system_deps", "git_ssh", "gh_token", "hf_token"]
_FILE_SUFFIXES = ["", ".[0-9]", ".[0-9][0-9]", "-[0-9]", "-[0-9][0-9]", "[0-9]", "[0-9][0-9]", "[0-9].[0-9]",
                  "[0-9][0-9].[0-9]", "[0-9][0-9].[0-9][0-9]"]


@functools.lru_cache(maxsize=1)
def _long_bit() -> str:
    try:
        out = subprocess.run(["getconf", "LONG_BIT"], capture_output=True, text=True, timeout=5).stdout.strip()
        return out if out in ("32", "64") else str(8 * struct.calcsize("P"))
    except (OSError, subprocess.SubprocessError):
        return str(8 * struct.calcsize("P"))


def host_os_info() -> dict[str, Any]:
    """CM's `os_info` for this (POSIX) host."""
    system = platform.system().lower()
    return {
        "platform": "darwin" if system.startswith("darwin") else "linux",
        "bat_ext": ".sh",
        "set_env": 'export ${key}="${value}"',
        "env_separator": ":",
        "env_var": "${env_var}",
        "set_exec_file": 'chmod 755 "${file_name}"',
        "bat_rem": "# ${rem}",
        "run_local_bat": ". ./${bat_file}",
        "run_local_bat_from_python": 'bash -c ". ./${bat_file}"',
        "run_bat": ". ${bat_file}",
        "start_script": ["#!/bin/bash", ""],
        "env": {},
        "bits": _long_bit(),
        "python_bits": str(8 * struct.calcsize("P")),
    }


def version_within(found: str, version: str = "", low: str = "", high: str = "") -> bool:
    if version and found != version:
        return False
    if low and version_tuple(found) < version_tuple(low):
        return False
    return not (high and version_tuple(found) > version_tuple(high))


class _CMindStandIn:
    """What hooks use of cmind's CM object (`access`, `logger`) when the engine runs without `cm`."""

    def __init__(self) -> None:
        import logging

        self.logger = logging.getLogger("cm")

    def __getattr__(self, name: str) -> Any:
        import cmind

        return getattr(cmind, name)


class Artifact:
    """What CM passes as `i['artifact']`: the script's folder and meta."""

    def __init__(self, path: str, meta: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta
        self.original_meta = meta


class ScriptAutomation:
    """`i['automation']` for hooks: CM's script-automation methods, implemented on this engine.

    `run_native(run_script_input, script_name, env)` runs one of the script's native scripts in the working
    directory and merges what it wrote back into env (given by the engine). Attributes the caller's automation
    object has (`cmind`, `path`, ...) are reachable through this one too."""

    tmp_file_ver = TMP_FILE_VER

    def __init__(self, engine_automation: Any, run_native: Callable[[dict, str, dict], None]) -> None:
        self._engine_automation = engine_automation
        self._run_native = run_native
        self.os_info = host_os_info()

    def __getattr__(self, name: str) -> Any:
        if name == "cmind":  # cmind's CM object under `cm`; through the API (tests), a stand-in with its API
            return getattr(self._engine_automation, "cmind", None) or _CMindStandIn()
        if self._engine_automation is not None and not name.startswith("__"):
            return getattr(self._engine_automation, name)
        raise AttributeError(name)

    # -- running the script's native scripts and its detect_version hook ---------------------------------------

    def run_native_script(self, i: dict[str, Any]) -> dict[str, Any]:
        """Run `<script_name>.sh` of the current script with env `i['env']` (updated with what it writes back);
        with `detect_version`, then call the script's detect_version hook."""
        rsi = i["run_script_input"]
        env = i.get("env") if isinstance(i.get("env"), dict) else rsi.get("env", {})
        try:
            self._run_native(rsi, i["script_name"], env)
        except ScriptError as e:
            return {"return": 2, "error": e.message}
        if i.get("detect_version"):
            return self._detect_version_hook(rsi, env)
        return {"return": 0, "env_tmp": copy.deepcopy(env)}

    def _detect_version_hook(self, rsi: dict[str, Any], env: dict[str, Any]) -> dict[str, Any]:
        module = rsi.get("customize_code")
        hook = getattr(module, "detect_version", None) if module is not None else None
        if hook is None:
            return {"return": 0}
        ii = dict(rsi.get("customize_common_input") or {})
        ii.update(env=env, state=rsi.get("state", {}), meta=rsi.get("meta", {}))
        result = hook(ii)
        return result if isinstance(result, dict) else {"return": 0}

    def _run_and_detect(self, rsi: dict[str, Any], env: dict[str, Any]) -> dict[str, Any]:
        """Run the script's run.sh (which writes tmp-ver.out), then its detect_version hook."""
        try:
            self._run_native(rsi, rsi.get("script_name") or "run", env)
        except ScriptError as e:
            return {"return": 2, "error": e.message}
        return self._detect_version_hook(rsi, env)

    def detect_version_using_script(self, i: dict[str, Any]) -> dict[str, Any]:
        """Run run.sh and the detect_version hook; the version if it meets CM_VERSION[_MIN|_MAX], else 16."""
        env = i.get("env", {})
        result = self._run_and_detect(i["run_script_input"], env)
        found = str(result.get("version") or "") if result.get("return", 1) == 0 else ""
        if found and version_within(found, env.get("CM_VERSION", ""), env.get("CM_VERSION_MIN", ""),
                                    env.get("CM_VERSION_MAX", "")):
            return {"return": 0, "detected_version": found}
        return {"return": NOT_FOUND, "error": "version was not detected"}

    # -- finding files -----------------------------------------------------------------------------------------

    def get_default_path_list(self, i: dict[str, Any]) -> list[str]:
        """The directories of the host env variable `default_path_env_key` (PATH, LD_LIBRARY_PATH, ...)."""
        key = i.get("default_path_env_key", "")
        separator = (i.get("os_info") or self.os_info)["env_separator"]
        return os.environ.get(key, "").split(separator) if key else []

    def find_file_in_paths(self, i: dict[str, Any]) -> dict[str, Any]:
        """Files named `file_name` (or versioned spellings: gcc-12, python3.11, ...) or matching `file_name_re`
        in `paths`, without duplicates; with `detect_version`, only those whose version fits the env's
        constraints; with `select`, the first one."""
        file_name = i.get("file_name_re") or i.get("file_name") or ""
        is_re = bool(i.get("file_name_re"))
        if not file_name:
            return {"return": 1, "error": "find_file_in_paths: file_name or file_name_re is required"}
        hook = i.get("hook")
        found: list[str] = []

        def add(candidate: str) -> dict[str, Any] | None:
            for existing in found:
                try:
                    if os.path.samefile(existing, candidate):
                        return None
                except OSError:
                    pass
            if hook is not None:
                r = hook({"file": candidate})
                if r["return"] > 0:
                    return r
                if r.get("skip"):
                    return None
            found.append(candidate)
            return None

        for path in i.get("paths", []):
            if not os.path.isdir(path):
                continue
            if is_re:
                candidates = [os.path.join(path, f) for f in sorted(os.listdir(path)) if re.match(file_name, f)]
            else:
                candidates = [f for suffix in _FILE_SUFFIXES for f in sorted(glob.glob(os.path.join(path, file_name)
                                                                                       + suffix))]
            for candidate in candidates:
                error = add(candidate)
                if error:
                    return error
        if i.get("select") and i.get("detect_version"):
            env = i.get("env", {})
            rsi = i["run_script_input"]
            good = []
            for candidate in found:
                trial_env = env
                trial_env[i["env_path_key"]] = candidate
                r = self._run_and_detect(rsi, trial_env)
                if r.get("return", 1) > 0:
                    if r.get("return") != 2:
                        return r
                    continue
                version = r.get("version") or ""
                if version and version != -1 and version_within(
                        str(version), env.get("CM_VERSION", ""), env.get("CM_VERSION_MIN", ""),
                        env.get("CM_VERSION_MAX", "")):
                    good.append(candidate)
            found = good
        if i.get("select") and len(found) > 1:
            found = found[:1]  # CM asks unless --quiet; we never prompt and take the first, as --quiet does
        return {"return": 0, "found_files": found}

    def find_artifact(self, i: dict[str, Any]) -> dict[str, Any]:
        """Find `file_name` in CM_TMP_PATH (`--path`), the file CM_INPUT (`--input`) or the default paths; put
        its folder on `+<default_path_env_key>` when it is not a default one (and `extra_paths` that exist
        beside it, such as ../include, on their env keys); set `env_path_key` to the file. 16 if not found."""
        file_name = i["file_name"]
        os_info = i.get("os_info") or self.os_info
        env = i["env"]
        separator = os_info["env_separator"]
        rsi = i.get("run_script_input", {})
        state_copy = copy.deepcopy(rsi.get("state", {}))
        path = env.get("CM_TMP_PATH", "")
        if path and env.get("CM_TMP_PATH_IGNORE_NON_EXISTANT", "") != "yes":
            for folder in path.split(separator):
                if folder.strip() and not os.path.isdir(folder):
                    return {"return": 1, "error": f"path {folder} doesn't exist"}
        forced = env.get("CM_INPUT", "").strip()
        if forced:
            if not os.path.isfile(forced):
                return {"return": 1, "error": f"file {forced} doesn't exist"}
            file_name, path = os.path.basename(forced), os.path.dirname(forced)
        default_paths = self.get_default_path_list(i)
        folders = default_paths if not path else path.split(separator)
        unique: list[str] = []
        for folder in folders:
            if folder not in unique:
                unique.append(folder)
        r = self.find_file_in_paths({
            "paths": unique, "file_name": file_name, "select": True,
            "detect_version": i.get("detect_version", False), "env_path_key": i.get("env_path_key", ""),
            "env": copy.deepcopy(env), "hook": i.get("hook"), "run_script_input": rsi})
        rsi["state"] = state_copy
        if r["return"] > 0:
            return r
        if not r["found_files"]:
            return {"return": NOT_FOUND, "error": f"{file_name} not found"}
        file_path = r["found_files"][0]
        found_path = os.path.dirname(file_path)
        if found_path not in default_paths:
            key = "+" + i.get("default_path_env_key", "")
            paths = env.get(key, [])
            if found_path not in paths:
                paths.insert(0, found_path)
                env[key] = paths
            for extra, env_key in (i.get("extra_paths") or {}).items():
                extra_path = os.path.normpath(os.path.join(found_path, "..", extra))
                if os.path.exists(extra_path):
                    env.setdefault(env_key, []).append(extra_path)
        if i.get("env_path_key"):
            env[i["env_path_key"]] = file_path
        return {"return": 0, "found_path": found_path, "found_file_path": file_path,
                "found_file_name": os.path.basename(file_path), "default_path_list": default_paths}

    def find_file_deep(self, i: dict[str, Any]) -> dict[str, Any]:
        """Folders under `paths` (recursively) that hold a file named `file_name`; only those containing one of
        `restrict_paths` when given."""
        found: list[str] = []
        for top in i["paths"]:
            for root, dirs, files in os.walk(top):
                dirs.sort()
                if i["file_name"] in files:
                    found.append(root)
        restrict = i.get("restrict_paths") or []
        if restrict:
            found = [p for p in found if any(r in p for r in restrict)]
        return {"return": 0, "found_paths": found}

    def find_file_back(self, i: dict[str, Any]) -> dict[str, Any]:
        """The nearest folder at or above `path` that holds the file `file_name` ('' if none)."""
        path = i["path"]
        while path:
            if os.path.isfile(os.path.join(path, i["file_name"])):
                break
            parent = os.path.dirname(path)
            path = "" if parent == path else parent
        return {"return": 0, "found_path": path}

    # -- versions, deps, odds and ends -------------------------------------------------------------------------

    def parse_version(self, i: dict[str, Any]) -> dict[str, Any]:
        """Search `match_text` in `file_name` (default tmp-ver.out); group `group_number` is the version, stored in
        `which_env[env_key]` and `which_env['CM_DETECTED_VERSION']`."""
        file_name = i.get("file_name") or TMP_FILE_VER
        try:
            with open(file_name, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            return {"return": NOT_FOUND, "error": f"file {file_name} not found"}
        match = re.search(i["match_text"], text)
        if match is None:
            return {"return": 1, "error": f"version was not detected ({text.strip()[:200]})", "string": text}
        group = int(i["group_number"])  # env values are strings here (CM keeps a meta's integers as they are)
        if not match.lastindex or match.lastindex < group:
            return {"return": 1, "error": f"version was not detected: group {group} of {i['match_text']!r} did not "
                                          f"match in {file_name}"}
        version = match.group(group)
        i["which_env"][i["env_key"]] = version
        i["which_env"]["CM_DETECTED_VERSION"] = version
        return {"return": 0, "version": version, "string": text}

    def update_deps(self, i: dict[str, Any]) -> dict[str, Any]:
        """Merge `update_deps` ({name: {tags, version, ...}}) into the deps in `deps` that carry that name."""
        for name, update in (i.get("update_deps") or {}).items():
            for dep in i["deps"]:
                if name in (dep.get("names") or []):
                    for key, value in update.items():
                        if key == "tags" and dep.get("tags"):
                            dep["tags"] = ",".join(dict.fromkeys(str(dep["tags"]).split(",") + str(value).split(",")))
                        elif isinstance(value, dict) and isinstance(dep.get(key), dict):
                            dep[key] = {**dep[key], **value}
                        else:
                            dep[key] = value
        return {"return": 0}

    def clean_some_tmp_files(self, i: dict[str, Any]) -> dict[str, Any]:
        work = (i.get("env") or {}).get("CM_TMP_CURRENT_SCRIPT_WORK_PATH", "")
        for name in ("tmp-run.bat", "tmp-state.json"):
            if work and os.path.isfile(os.path.join(work, name)):
                os.remove(os.path.join(work, name))
        return {"return": 0}

    def _available_variations(self, i: dict[str, Any]) -> dict[str, Any]:
        meta = i["meta"]
        names = " ".join(sorted("_" + v for v in (meta.get("variations") or {})))
        return {"return": 1, "error": f"a variation is required for '{meta.get('alias')}'. Available: {names}"}


def inputs_to_env(inputs: dict[str, Any]) -> dict[str, str]:
    """CM's standard inputs as env (`--extra_cache_tags` -> CM_EXTRA_CACHE_TAGS, `--path` -> CM_TMP_PATH)."""
    env = {f"CM_{k.upper()}": str(inputs[k]) for k in INPUTS_TO_ENV if inputs.get(k) not in (None, "")}
    if inputs.get("path"):
        env["CM_TMP_PATH"] = os.path.abspath(os.path.expanduser(str(inputs["path"])))
    for key in ("skip_compile", "skip_run", "accept_license", "skip_system_deps", "git_ssh"):
        if inputs.get(key) is True:
            env[f"CM_{key.upper()}"] = "yes"
    return env
