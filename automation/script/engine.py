"""The recursion: find a script, apply its variations, build its env, resolve its dependencies,
run its steps (or reuse its cache entry), and pass the declared part of its env back up.

Order of a script's steps, as in CM: deps -> preprocess -> prehook_deps -> run.sh/run.py ->
postprocess -> posthook_deps -> post_deps.
"""
from __future__ import annotations

import copy
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any

from . import cm_artifact, cm_compat, runner
from . import deps as depslib
from . import env as envlib
from . import inputs as inputslib
from .cache import CacheStore, make_key
from .codehash import hash_code
from .errors import ScriptError
from .fingerprint import fingerprint, looks_like_path
from .meta import ScriptMeta, split_tags
from .report import Reporter
from .search import ScriptIndex, parse_tags
from .variations import resolve as resolve_variations

PRE_RUN_DEPS = ("deps",)
POST_RUN_DEPS = ("posthook_deps", "post_deps")


@dataclass
class RunContext:
    """What the whole tree of one `cm run script` shares."""

    index: ScriptIndex
    cache: CacheStore
    reporter: Reporter
    output: IO[str]
    automation: Any = None
    user_env: dict[str, Any] = field(default_factory=dict)
    force_new: bool = False
    dry_run: bool = False
    steps: list[dict[str, Any]] = field(default_factory=list)
    stack: list[str] = field(default_factory=list)
    failed_in: str = ""  # the innermost script a failure or an interrupt came from
    detected: dict[str, ScriptResult] = field(default_factory=dict)  # side-effect-free results of this run
    user_paths: set[str] = field(default_factory=set)  # paths the user gave: fingerprinted in full (folders too)
    quiet: bool = False  # --quiet: CM's CM_QUIET=yes, and the first of several matching scripts is taken
    cwd: str = field(default_factory=os.getcwd)  # where `cm` was called (CM's CM_TMP_CURRENT_PATH)

    def path_fingerprints(self, values: dict[str, Any]) -> dict[str, str]:
        """Fingerprints of the absolute paths among env values (see fingerprint.py): what a result read by path.

        Paths inside the cache are skipped (the producing entry's key and its verified files cover them). A
        folder is walked when the user gave it (an input or --env); other folders (installed packages, say)
        count by their own status only, since walking site-packages on every run would cost seconds.
        """
        result = {}
        for key, value in sorted(values.items()):
            if not looks_like_path(value) or value.startswith(self.cache.root + os.sep):
                continue
            if value in self.user_paths or os.path.isfile(value):
                result[key] = fingerprint(value)
            elif os.path.isdir(value):
                st = os.stat(value)
                result[key] = f"dir:{st.st_mtime_ns}:{st.st_ctime_ns}"
        return result


@dataclass
class ScriptResult:
    new_env: dict[str, Any]
    new_state: dict[str, Any]
    version: str = ""
    cache_path: str | None = None
    key: str = ""  # identifies this result in its consumers' cache keys (the entry key when cached)
    env: dict[str, Any] | None = None  # the script's whole env after its run (CM's `env` in the result)
    state: dict[str, Any] | None = None
    extra_cache_tags: list[str] = field(default_factory=list)  # hooks' add_extra_cache_tags


@dataclass
class _Prepared:
    """A script with its variations, version and env resolved, ready to run or to look up in the cache."""

    script: ScriptMeta
    variations: list[str]
    blocks: list[dict[str, Any]]
    env: dict[str, Any]
    version: str
    key_patterns: list[str]
    own_env: dict[str, Any]
    done_deps: set[int] = field(default_factory=set)  # deps already run (a cached script's, before its key)
    dep_keys: list[str] = field(default_factory=list)  # keys of the results of those deps, in order

    @property
    def key_env(self) -> dict[str, Any]:
        return envlib.select(self.env, self.key_patterns)

    @property
    def external_env(self) -> dict[str, Any]:
        """Key env that came from outside the script (what a re-run command must pass)."""
        return {k: v for k, v in self.key_env.items() if self.own_env.get(k) != v}

    def collect(self, key: str) -> list[Any]:
        items: list[Any] = []
        for block in self.blocks:
            value = block.get(key)
            items += list(value.keys()) if isinstance(value, dict) else list(value or [])
        return items

    def merged(self, key: str) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for block in self.blocks:
            result.update(block.get(key) or {})
        return result


def os_info() -> dict[str, Any]:
    """CM's os_info (platform, bits, env_separator, run_bat, ...) plus the running Python."""
    return {**cm_compat.host_os_info(), "platform": platform.system().lower(), "env_separator": os.pathsep,
            "python": sys.executable}


def _select_version(script: ScriptMeta, blocks: list[dict[str, Any]], requested: str) -> tuple[str, list]:
    version = requested
    if not version:
        for block in reversed(blocks):
            version = block.get("version") or block.get("default_version") or ""
            if version:
                break
    versions = script.meta.get("versions") or {}
    if version and versions:
        if version not in versions:
            raise ScriptError(
                f"script '{script.alias}' has no version '{version}' (versions: {', '.join(sorted(versions))})"
            )
        return str(version), [versions[version] or {}]
    return str(version or ""), []


def prepare(ctx: RunContext, script: ScriptMeta, requested_variations: list[str], inputs: dict[str, Any],
            incoming_env: dict[str, Any], version_spec: dict[str, Any]) -> _Prepared:
    resolved = resolve_variations(script.meta, requested_variations, script.alias)
    blocks = [script.meta, *resolved.blocks]
    version, version_blocks = _select_version(script, blocks, str(version_spec.get("version") or ""))
    blocks += version_blocks

    env = copy.deepcopy(incoming_env)
    own_env: dict[str, Any] = {}
    for block in blocks:
        envlib.merge(env, block.get("default_env"), only_missing=True)
        envlib.merge(own_env, block.get("default_env"))
    for block in blocks:
        envlib.merge(env, block.get("env"))
        envlib.merge(own_env, block.get("env"))
    input_mapping: dict[str, str] = {}
    for block in blocks:
        input_mapping.update(block.get("input_mapping") or {})
    if not script.strict:
        envlib.merge(env, cm_compat.inputs_to_env(inputs))
    for name, env_key in input_mapping.items():
        if name in inputs and inputs[name] is not None:
            env[env_key] = envlib.normalise(inputs[name])
    for block in blocks:  # CM's `const`: env no caller can change
        envlib.merge(env, block.get("const"))
    envlib.merge(env, ctx.user_env)
    if version:
        env["CM_VERSION"] = version
    for spec_key, env_key in (("version_min", "CM_VERSION_MIN"), ("version_max", "CM_VERSION_MAX"),
                              ("version_max_usable", "CM_VERSION_MAX_USABLE")):
        if version_spec.get(spec_key):
            env[env_key] = str(version_spec[spec_key])
    if ctx.quiet:
        env.setdefault("CM_QUIET", "yes")
    if not script.strict:  # what CM's engine tells every script about itself (local: never passed on)
        env.update(CM_TMP_CURRENT_SCRIPT_PATH=script.path, CM_TMP_CURRENT_PATH=ctx.cwd,
                   CM_TMP_CURRENT_SCRIPT_REPO_PATH=os.path.dirname(os.path.dirname(script.path)),
                   CM_TMP_PIP_VERSION_STRING=_pip_version_string(env))
    envlib.substitute(env)

    prepared = _Prepared(script, resolved.selected, blocks, env, version, [], own_env)
    prepared.key_patterns = list(input_mapping.values()) + prepared.collect("default_env") + prepared.collect("env")
    prepared.key_patterns += prepared.collect("cache_key_env")
    return prepared


def _pip_version_string(env: dict[str, Any]) -> str:
    """CM's pip specifier from the version request (get-generic-python-lib installs with it)."""
    version, low, high = (str(env.get(k, "")) for k in ("CM_VERSION", "CM_VERSION_MIN", "CM_VERSION_MAX"))
    if version:
        return "==" + version
    if low and high:
        return f">={low},<={high}"
    return (">=" + low) if low else (("<=" + high) if high else "")


def key_inputs(ctx: RunContext, prepared: _Prepared) -> dict[str, Any]:
    """Everything a cached result depends on (Bazel's and Nix's idea): the code it runs (its folder and the
    collection modules it imports), its variations, version and key env, fingerprints of the files and
    folders that env names, and the keys of the dependencies whose outputs it consumed."""
    key_env = prepared.key_env
    return {
        "uid": prepared.script.uid or prepared.script.alias,
        "code": hash_code(prepared.script.path, ctx.index.repo_paths),
        "variations": prepared.variations,
        "version": prepared.version,
        "env": key_env,
        "paths": ctx.path_fingerprints(key_env),
        "deps": prepared.dep_keys,
        "packages": installed_packages(prepared.script.meta.get("cache_key_packages") or []),
    }


def installed_packages(names: list[str]) -> dict[str, str]:
    """Version and installed-files fingerprint of each Python distribution a script declares it depends on
    (`cache_key_packages`): a reinstall or an upgrade of the package is a new key. '' when not installed."""
    import importlib.metadata

    result = {}
    for name in names:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            result[name] = ""
            continue
        record = getattr(dist, "_path", None)
        stamp = fingerprint(os.path.join(str(record), "RECORD")) if record else ""
        result[name] = f"{dist.version}:{stamp}"
    return result


def cache_key(ctx: RunContext, prepared: _Prepared) -> str:
    return make_key(key_inputs(ctx, prepared))


def result_key(ctx: RunContext, alias: str, result: ScriptResult) -> str:
    """The key of an uncached result: what it handed on, with fingerprints of the paths among it."""
    return make_key({"script": alias, "env": result.new_env, "state": result.new_state, "version": result.version,
                     "paths": ctx.path_fingerprints(result.new_env)})


def rerun_command(prepared: _Prepared) -> str:
    tags = ",".join(prepared.script.tags + ["_" + v for v in prepared.variations])
    parts = ["cm", "run", "script", f"--tags={tags}"]
    parts += [f"--env.{k}={envlib._flat(v)}" for k, v in sorted(prepared.external_env.items())]
    if prepared.script.meta.get("cache"):
        parts.append("--new")
    return " ".join(shlex.quote(p) for p in parts)


def run_script(ctx: RunContext, tags: list[str], variations: list[str], *, artifact: str = "",
               inputs: dict[str, Any] | None = None, env: dict[str, Any] | None = None,
               state: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None,
               version_spec: dict[str, Any] | None = None, depth: int = 0) -> ScriptResult:
    inputs = inputs or {}
    version_spec = version_spec or {}
    state = state if state is not None else {}
    caller_repo = os.path.dirname(os.path.dirname(ctx.stack[-1].partition("|")[0])) if ctx.stack else ""
    script = ctx.index.find_one(tags, artifact, variations, quiet=ctx.quiet, prefer_repo=caller_repo,
                                has_cache=lambda s: any(e.alias == s.alias for e in ctx.cache.find([], variations)))
    if depth == 0 and script.strict:  # inputs reach the script the user runs: check them before anything runs
        variations = inputslib.select_variations(script.meta, script.alias, variations, inputs)
        inputs = inputslib.check_values(inputslib.descriptions(script.meta, script.alias, variations), inputs)
    # the same script with other variations is another node (CM's get-generic-python-lib needs its own _pip)
    node = script.path + "|" + ",".join(sorted(variations))
    if node in ctx.stack:
        chain = " -> ".join(_node_label(p) for p in [*ctx.stack, node])
        raise ScriptError(f"dependency cycle: {chain}")
    prepared = prepare(ctx, script, variations, inputs, env or {}, version_spec)
    if script.strict:  # our hook for checks that need the resolved env: before any dependency runs (and dry runs)
        runner.call_hook(script.path, "check_inputs", {"env": prepared.env, "input": inputs, "meta": script.meta,
                                                       "variation_tags": prepared.variations}, script.alias)
    step = {"alias": script.alias, "tags": ",".join(script.tags), "variations": prepared.variations,
            "depth": depth, "cache": "none"}
    ctx.steps.append(step)
    started = time.perf_counter()
    detection_key = ""
    if script.meta.get("side_effect_free") and not script.meta.get("cache") and not ctx.dry_run:
        # a detection script asked again in the same run (detect-cpu by several scripts) answers the same
        # (its own outputs in the incoming env, as an earlier run of it left them, do not make it a new question)
        outputs = prepared.collect("new_env_keys")
        asked = {k: v for k, v in prepared.key_env.items() if not envlib.matches(k, outputs)}
        detection_key = make_key({"path": script.path, "variations": prepared.variations, "env": asked,
                                  "version": prepared.version})
        earlier = ctx.detected.get(detection_key)
        if earlier is not None and any(earlier.new_env.get(k, v) != v for k, v in prepared.key_env.items()
                                       if k not in asked):
            earlier = None  # an output key given a different value by the caller: an override, run again
        if earlier is not None:
            step["cache"] = "same run"
            depslib.check_version(script.alias, earlier.version, version_spec)
            return ScriptResult(copy.deepcopy(earlier.new_env), copy.deepcopy(earlier.new_state), earlier.version,
                                None, earlier.key)
    ctx.stack.append(node)
    try:
        if script.meta.get("cache"):
            result = _run_cached(ctx, prepared, inputs, state, overrides or {}, depth, step)
        elif ctx.dry_run and script.meta.get("side_effect_free"):
            # detection scripts only compute env: running them makes the predicted cache keys exact
            ctx.reporter.dry_run(depth, script.alias, prepared.variations, "no side effects: run to predict")
            was_silent = ctx.reporter.silent
            ctx.dry_run, ctx.reporter.silent = False, True
            try:
                result = _execute(ctx, prepared, inputs, state, overrides or {}, depth, os.getcwd())
            finally:
                ctx.dry_run, ctx.reporter.silent = True, was_silent
        else:
            if ctx.dry_run:
                ctx.reporter.dry_run(depth, script.alias, prepared.variations, "runs every time")
                step["cache"] = "unknown"  # its outputs (and so its consumers' keys) are known only when it runs
            result = _execute(ctx, prepared, inputs, state, overrides or {}, depth, os.getcwd())
    except BaseException:
        ctx.failed_in = ctx.failed_in or script.alias
        raise
    finally:
        ctx.stack.pop()
    if not result.key:
        result.key = result_key(ctx, script.alias, result)
    if detection_key:
        ctx.detected[detection_key] = result
    step["seconds"] = round(time.perf_counter() - started, 3)
    if step["cache"] != "hit" and not ctx.dry_run:
        ctx.reporter.finish(depth, script.alias, step["seconds"], result.cache_path)
    ctx.reporter.env_changes(depth, script.alias, envlib.diff(env or {}, result.new_env))
    depslib.check_version(script.alias, result.version, version_spec)
    return result


def _node_label(node: str) -> str:
    path, _, variations = node.partition("|")
    return os.path.basename(path) + "".join(",_" + v for v in variations.split(",") if v)


def _run_cached(ctx: RunContext, prepared: _Prepared, inputs: dict[str, Any], state: dict[str, Any],
                overrides: dict[str, Any], depth: int, step: dict[str, Any]) -> ScriptResult:
    alias = prepared.script.alias
    # Dependencies first, hit or miss: their results are part of this script's key (cached ones are hits).
    complete = _run_pre_deps(ctx, prepared, state, overrides, depth)
    force_new = ctx.force_new and depth == 0
    if ctx.dry_run:
        key = cache_key(ctx, prepared) if complete else ""
        entry = None if force_new or not key else ctx.cache.lookup(alias, key, ctx.reporter.notice)
        status = "cache hit" if entry else (
            "cache miss: would run" if complete else "cache unknown until a dependency runs")
        ctx.reporter.dry_run(depth, alias, prepared.variations, status)
        step["cache"] = "hit" if entry else "miss"
        if entry:
            return _from_entry(entry.record, entry.path)
        return _execute(ctx, prepared, inputs, state, overrides, depth, os.getcwd())
    key = cache_key(ctx, prepared)
    with ctx.cache.lock(alias, key):
        entry = None if force_new else ctx.cache.lookup(alias, key, ctx.reporter.notice)
        if entry is not None:
            step.update(cache="hit", cache_path=entry.path)
            ctx.reporter.cache_hit(depth, alias, prepared.variations, entry.path)
            return _from_entry(entry.record, entry.path)
        step["cache"] = "miss"
        ctx.reporter.start(depth, alias, prepared.variations, cached=True)
        workdir = ctx.cache.new_workdir(alias)
        try:
            started = time.perf_counter()
            result = _execute(ctx, prepared, inputs, state, overrides, depth, workdir)
            cm_tags = cm_cache_tags(prepared, result)
            cm_artifact.write(workdir, ctx.cache.entry_dir(alias, key), prepared.script, cm_tags, result)
            record = {
                "tags": prepared.script.tags, "uid": prepared.script.uid, "variations": prepared.variations,
                "cm_tags": cm_tags,
                "version": result.version, "new_env": result.new_env, "new_state": result.new_state,
                "key_inputs": key_inputs(ctx, prepared),
                "protected": bool(prepared.script.meta.get("cache_protected")),
                "seconds": round(time.perf_counter() - started, 3),
            }
            entry = ctx.cache.commit(workdir, alias, key, record)
        except BaseException:
            ctx.cache.discard(workdir)  # nothing half-written stays behind
            raise
    step["cache_path"] = entry.path
    return ScriptResult(entry.record["new_env"], entry.record["new_state"], result.version, entry.path, key)


def cm_cache_tags(prepared: _Prepared, result: ScriptResult) -> list[str]:
    """The tags CM gives a cache entry: the script's, `_variations`, `script-artifact-<uid>`, `version-X`, and the
    extra tags from `--extra_cache_tags`, `extra_cache_tags_from_env` and the hooks' `add_extra_cache_tags`."""
    script, env = prepared.script, result.env or prepared.env
    tags = list(script.tags) + ["_" + v for v in prepared.variations]
    if script.uid:
        tags.append(f"script-artifact-{script.uid}")
    if result.version:
        tags.append(f"version-{result.version}")
    tags += split_tags(env.get("CM_EXTRA_CACHE_TAGS"))
    for item in script.meta.get("extra_cache_tags_from_env") or []:
        if isinstance(item, dict):
            tags += [str(item.get("prefix", "")) + t for t in split_tags(env.get(item.get("env", "")))]
    tags += split_tags(result.extra_cache_tags)
    return list(dict.fromkeys(tags))


def _conditions(dep: dict[str, Any]) -> str:
    def values(v: Any) -> str:
        return "|".join(envlib.normalise(x) for x in (v if isinstance(v, list) else [v]))

    parts = [f"if {k}={values(v)}" for k, v in (dep.get("enable_if_env") or {}).items()]
    parts += [f"unless {k}={values(v)}" for k, v in (dep.get("skip_if_env") or {}).items()]
    return " and ".join(parts) or "if enabled"


def _from_entry(record: dict[str, Any], path: str) -> ScriptResult:
    return ScriptResult(copy.deepcopy(record.get("new_env", {})), copy.deepcopy(record.get("new_state", {})),
                        record.get("version", ""), path, record.get("key", ""))


def _execute(ctx: RunContext, prepared: _Prepared, inputs: dict[str, Any], state: dict[str, Any],
             overrides: dict[str, Any], depth: int, run_dir: str) -> ScriptResult:
    script, env = prepared.script, prepared.env
    child_overrides = depslib.merge_overrides(prepared.merged("add_deps_recursive"), overrides)
    direct_overrides = depslib.merge_overrides(
        prepared.merged("add_deps_recursive"), prepared.merged("add_deps"), overrides)
    if not prepared.script.meta.get("cache") and not ctx.dry_run:
        ctx.reporter.start(depth, script.alias, prepared.variations, cached=False)

    def run_deps(list_key: str) -> None:
        for block in prepared.blocks:
            for dep in block.get(list_key) or []:
                if id(dep) not in prepared.done_deps:
                    _run_dependency(ctx, dep, env, state, direct_overrides, child_overrides, depth,
                                    prepared.variations)

    for list_key in PRE_RUN_DEPS:
        run_deps(list_key)
    if ctx.dry_run:
        # hooks do not run under --dry-run, so what they would set is unknown: a later dependency whose condition
        # fails on the env known now is still shown, with the condition it waits for
        for list_key in ("prehook_deps", *POST_RUN_DEPS):
            for block in prepared.blocks:
                for dep in block.get(list_key) or []:
                    resolved = depslib.apply_overrides(dep, direct_overrides)
                    if depslib.should_run(resolved, env):
                        _run_dependency(ctx, dep, env, state, direct_overrides, child_overrides, depth,
                                        prepared.variations)
                    else:
                        ctx.reporter.dry_run(depth + 1, ",".join(depslib.resolve_tags(resolved, env)), [],
                                             f"after {script.alias}'s preprocess, {_conditions(resolved)}")
        return ScriptResult(envlib.select(env, prepared.collect("new_env_keys")), {}, prepared.version)

    version = prepared.version
    extra_tags: list[str] = []
    previous_cwd = os.getcwd()
    os.chdir(run_dir)
    try:
        hook_input = _hook_input(ctx, prepared, inputs, state, run_dir, depth)
        pre = runner.call_hook(script.path, "preprocess", hook_input, script.alias)
        extra_tags += list(pre.get("add_extra_cache_tags") or [])
        run_deps("prehook_deps")
        if not pre.get("skip"):
            run_env, run_state = runner.run_native(
                script.path, run_dir, env, script.alias, rerun_command(prepared), ctx.output,
                script_name=None if script.strict else (script.meta.get("script_name") or "run"),
                cm_style=not script.strict)
            _merge_run_env(env, run_env)
            state.update(run_state)
        post = runner.call_hook(script.path, "postprocess", hook_input, script.alias)
        extra_tags += list(post.get("add_extra_cache_tags") or [])
        version = str(post.get("version") or pre.get("version") or env.get("CM_VERSION") or version)
    finally:
        os.chdir(previous_cwd)
    for list_key in POST_RUN_DEPS:
        run_deps(list_key)
    new_env = envlib.select(env, prepared.collect("new_env_keys"))
    new_state = {k: v for k, v in state.items() if envlib.matches(k, prepared.collect("new_state_keys"))}
    return ScriptResult(new_env, new_state, version, env=env, state=state, extra_cache_tags=extra_tags)


def _merge_run_env(env: dict[str, Any], run_env: dict[str, Any]) -> None:
    """What run.sh wrote back; a `+KEY` line extends the list (CM's rule)."""
    for key, value in run_env.items():
        if envlib.is_list_key(key):
            envlib.merge(env, {key: [v for v in str(value).split(os.pathsep) if v]})
        else:
            env[key] = value


def _hook_input(ctx: RunContext, prepared: _Prepared, inputs: dict[str, Any], state: dict[str, Any], run_dir: str,
                depth: int) -> dict[str, Any]:
    """The dict a customize.py hook gets: ours plus what CM's engine gives (see cm_compat)."""
    script, env = prepared.script, prepared.env
    module = runner.load_customize(script.path)
    info = os_info()

    def run_native(rsi: dict[str, Any], script_name: str, run_env: dict[str, Any]) -> None:
        produced, produced_state = runner.run_native(
            script.path, os.getcwd(), run_env, script.alias, rerun_command(prepared), ctx.output,
            script_name=script_name, cm_style=True)
        _merge_run_env(run_env, produced)
        rsi.setdefault("state", {}).update(produced_state)

    automation = cm_compat.ScriptAutomation(ctx.automation, run_native)
    common = {
        "input": inputs, "automation": automation, "artifact": cm_compat.Artifact(script.path, script.meta),
        "customize": script.meta.get("customize", {}), "os_info": info, "recursion_spaces": "  " * (depth + 1),
        "script_tags": script.tags, "found_script_tags": script.tags, "variation_tags": prepared.variations,
    }
    const = prepared.merged("const")
    run_script_input = {
        # CM's keys (its hooks pass this dict back to the automation's methods)
        "path": script.path, "bat_ext": info["bat_ext"], "os_info": info, "const": const, "state": state,
        "const_state": {}, "reuse_cached": False, "recursion": depth > 0, "recursion_spaces": "  " * (depth + 1),
        "tmp_file_run": "tmp-run", "tmp_file_run_env": runner.RUN_ENV_FILE,
        "tmp_file_run_state": runner.RUN_STATE_FILE, "tmp_file_state": "tmp-state.json",
        "local_env_keys": cm_compat.LOCAL_ENV_KEYS, "posthook_deps": [], "add_deps_recursive": {},
        "found_script_tags": script.tags, "variation_tags_string": ",".join("_" + v for v in prepared.variations),
        "found_cached": False, "verbose": ctx.reporter.verbose, "meta": script.meta, "self": automation,
        "customize_code": module, "customize_common_input": common, "run_state": {}, "env": env,
        "script_name": script.meta.get("script_name", ""),
        # ours
        "run_dir": run_dir, "alias": script.alias, "tags": script.tags, "variations": prepared.variations,
        "version": prepared.version, "depth": depth, "dry_run": ctx.dry_run,
    }
    return {**common, "env": env, "state": state, "meta": script.meta, "const": const, "const_state": {},
            "run_script_input": run_script_input}


def _run_pre_deps(ctx: RunContext, prepared: _Prepared, state: dict[str, Any], overrides: dict[str, Any],
                  depth: int) -> bool:
    """Run a cached script's `deps` before its key is made, recording each result's key. Returns False under
    --dry-run when a dependency would run (its outputs, and so this key, are not known yet)."""
    child_overrides = depslib.merge_overrides(prepared.merged("add_deps_recursive"), overrides)
    direct_overrides = depslib.merge_overrides(
        prepared.merged("add_deps_recursive"), prepared.merged("add_deps"), overrides)
    complete = True
    for block in prepared.blocks:
        for dep in block.get("deps") or []:
            before = len(ctx.steps)
            result = _run_dependency(ctx, dep, prepared.env, state, direct_overrides, child_overrides, depth,
                                     prepared.variations)
            prepared.done_deps.add(id(dep))
            if result is not None:
                prepared.dep_keys.append(result.key)
                complete = complete and not any(s["cache"] in ("miss", "unknown") for s in ctx.steps[before:])
    return complete


def _run_dependency(ctx: RunContext, dep: dict[str, Any], env: dict[str, Any], state: dict[str, Any],
                    direct_overrides: dict[str, Any], child_overrides: dict[str, Any],
                    depth: int, caller_variations: list[str] | None = None) -> ScriptResult | None:
    dep = depslib.apply_overrides(dep, direct_overrides)
    if not depslib.should_run(dep, env):
        ctx.reporter.skipped(depth + 1, str(dep.get("tags")), "enable_if_env/skip_if_env")
        return None
    tags, variations = parse_tags(depslib.resolve_tags(dep, env))
    if dep.get("inherit_variation_tags"):  # CM: the caller's variations go to the dependency too
        variations += [v for v in caller_variations or [] if v not in variations]
    # CM's local keys (CM_VERSION*, CM_TMP_*, ...) describe the caller, not the dependency
    forced = set(dep.get("force_env_keys") or [])
    child_env = {k: copy.deepcopy(v) for k, v in env.items()
                 if k in forced or not envlib.matches(k, cm_compat.LOCAL_ENV_KEYS)}
    envlib.merge(child_env, dep.get("env"))
    version_spec = {k: dep[k] for k in (*depslib.VERSION_FIELDS, "version_max_usable") if dep.get(k)}
    if dep.get("reuse_version") and env.get("CM_VERSION") and not version_spec.get("version"):
        version_spec["version"] = env["CM_VERSION"]
    result = run_script(ctx, tags, variations, env=child_env, state=copy.deepcopy(state),
                        overrides=child_overrides, version_spec=version_spec, depth=depth + 1)
    envlib.merge(env, result.new_env)
    envlib.merge(env, ctx.user_env)
    state.update(result.new_state)
    return result
