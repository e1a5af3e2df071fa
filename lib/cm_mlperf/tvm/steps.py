"""The run steps of compile-tvm-model and tune-tvm-model: env in, work in the current directory, env out.

Each script's run.py is `run_step.main(compile_from_env)` (or tune_from_env): the engine starts it as a child
process with the script's env, so TVM is imported and the minutes of compiling or tuning happen there, never in the
engine's process. Tests call these functions directly with a dict.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cm_mlperf.run_step import StepError, env_int

TRUE_WORDS = ("yes", "true", "on", "1")
DB_COPY = "tuning-db"  # the database a compile applied, pruned and retargeted, kept in its cache entry


def _model(env: Mapping[str, str]) -> str:
    model = env.get("CM_ML_MODEL_FILE_WITH_PATH", "")
    if not model:
        raise StepError("no model: CM_ML_MODEL_FILE_WITH_PATH is not set (run a get-ml-model script first, or pass "
                        "--env.CM_ML_MODEL_FILE_WITH_PATH=/path/model.onnx)")
    return model


def choose_mcpu(env: Mapping[str, str], num_cores: int, log: Any = print) -> tuple[str, str]:
    """(LLVM CPU name, where it came from): --mcpu, else what LLVM reports for this host when this host runs all
    the features it implies, else detect-cpu's name (archspec / ISA flags)."""
    user = (env.get("CM_TVM_MCPU") or "").strip()
    if user:
        return user, "--mcpu"
    detected = (env.get("CM_HOST_CPU_LLVM_MCPU") or "").strip()
    if detected and env.get("CM_HOST_CPU_LLVM_MCPU_SOURCE") == "override":
        return detected, "--mcpu"
    from tvm.target import codegen

    from cm_mlperf.tvm import target as tvm_target

    llvm_name = str(codegen.llvm_get_system_cpu() or "")
    flags = env.get("CM_HOST_CPU_FLAGS", "").split()
    if llvm_name and llvm_name != "generic":
        try:
            if not tvm_target.missing_host_features(tvm_target.make_target(llvm_name, num_cores), flags):
                return llvm_name, "llvm-host"
        except Exception:  # noqa: BLE001 - LLVM named a CPU it cannot target: use detect-cpu's
            pass
    if detected:
        return detected, "detect-cpu"
    return llvm_name or "x86-64", "llvm-host"


def _materialise_db(env: Mapping[str, str], target: Mapping[str, Any], log: Any) -> tuple[str | None, dict[str, str]]:
    """The database folder to apply (a pruned, retargeted copy in ./tuning-db) and what to say about it."""
    from cm_mlperf.tvm import databases

    tuned_here = env.get("CM_TVM_TUNING_DATABASE_DIR", "")
    if tuned_here:  # the _tune variation's own database
        trials = env.get("CM_TVM_TUNING_TRIALS_DONE", "?")
        return tuned_here, {"CM_TVM_TUNING_DB_USED": f"tuned in this run ({trials} trials)",
                            "CM_TVM_TUNING_DB_SOURCE": "tune"}
    path = env.get("CM_TVM_TUNING_DB_PATH", "")
    if not path:
        return None, {"CM_TVM_TUNING_DB_USED": "untuned", "CM_TVM_TUNING_DB_SOURCE": "none"}
    copy = Path(DB_COPY).resolve()
    try:
        src = databases.unpack(path, copy.with_name(DB_COPY + "-unpacked")) if databases.is_archive(path) else path
        manifest = databases.read_manifest(src)
        counts = databases.prune(src, copy, target=target)
        if manifest:
            (copy / databases.MANIFEST).write_text((Path(src) / databases.MANIFEST).read_text())
    except databases.TuningDatabaseError as e:
        raise StepError(str(e)) from e
    name = env.get("CM_TVM_TUNING_DB_NAME") or manifest.get("name") or Path(path).name
    log(f"tuning database {name}: {counts['records']} best records of {counts['workloads_before']} workloads, "
        f"retargeted to {target.get('mcpu')}")
    return str(copy), {"CM_TVM_TUNING_DB_USED": name, "CM_TVM_TUNING_DB_SOURCE": env.get("CM_TVM_TUNING_DB_SOURCE", "")}


def compile_from_env(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, Any]]:
    """compile-tvm-model's run step: import, apply the chosen database, build, verify; results as env."""
    from cm_mlperf.tvm import compile as tvm_compile
    from cm_mlperf.tvm import verify as tvm_verify
    from cm_mlperf.tvm.build import DEFAULT_PIPELINE
    from cm_mlperf.tvm.errors import TVMCompileError
    from cm_mlperf.tvm.log import log
    from cm_mlperf.tvm.target import target_dict

    model = _model(env)
    batch = env_int(env, "CM_TVM_BATCH_SIZE", 1, "--batch_size", minimum=1)
    cores = env_int(env, "CM_HOST_CPU_PHYSICAL_CORES", os.cpu_count() or 1, "CM_HOST_CPU_PHYSICAL_CORES", minimum=1)
    threads = env_int(env, "CM_TVM_NUM_THREADS", cores, "--threads", minimum=1)
    try:
        rtol = float(env.get("CM_TVM_VERIFY_RTOL", "") or tvm_verify.DEFAULT_RTOL)
    except ValueError:
        raise StepError(f"--verify_rtol must be a number, got {env['CM_TVM_VERIFY_RTOL']!r}") from None
    try:
        mcpu, mcpu_source = choose_mcpu(env, threads)
        log(f"LLVM CPU {mcpu} (from {mcpu_source})")
        db_dir, db_env = _materialise_db(env, target_dict(mcpu, threads), log)
        info = tvm_compile.compile_model(
            model, out_dir=os.getcwd(), batch_size=batch, mcpu=mcpu, num_cores=threads,
            model_name=env.get("CM_ML_MODEL_NAME", "") or Path(model).stem,
            input_name=env.get("CM_ML_MODEL_INPUT_NAME", "") or None,
            layout=env.get("CM_ML_MODEL_INPUT_LAYOUT", "") or "NCHW",
            height=env_int(env, "CM_ML_MODEL_IMAGE_HEIGHT", 224, "CM_ML_MODEL_IMAGE_HEIGHT"),
            width=env_int(env, "CM_ML_MODEL_IMAGE_WIDTH", 224, "CM_ML_MODEL_IMAGE_WIDTH"),
            pipeline=env.get("CM_TVM_PIPELINE", "") or DEFAULT_PIPELINE,
            verify=str(env.get("CM_TVM_VERIFY", "yes")).strip().lower() in TRUE_WORDS, rtol=rtol,
            preprocessed_path=env.get("CM_DATASET_PREPROCESSED_PATH", "") or None, database_dir=db_dir,
            host_flags=env.get("CM_HOST_CPU_FLAGS", "").split(), model_sha256=env.get("CM_ML_MODEL_SHA256", ""),
            conv_layout=conv_layout(env), winograd=winograd(env))
    except TVMCompileError as e:
        raise StepError(str(e)) from e
    verification = info["verification"]
    outputs = info["outputs"]
    wanted = env.get("CM_ML_MODEL_OUTPUT_NAME", "")
    tuned = db_dir is not None
    used = db_env["CM_TVM_TUNING_DB_USED"]
    framework = f"Apache TVM {info['tvm_version']} ({'MetaSchedule-tuned: ' + used if tuned else 'untuned'})"
    return {
        "CM_TVM_MODEL_SO": info["so_path"],
        "CM_TVM_COMPILE_INFO": os.path.join(os.getcwd(), "compile-info.json"),
        "CM_TVM_TARGET": info["target_json"],
        "CM_TVM_BATCH_SIZE": str(info["batch_size"]),
        "CM_TVM_MCPU": info["mcpu"],
        "CM_TVM_NUM_THREADS": str(info["num_cores"]),
        "CM_TVM_PIPELINE": info["pipeline"],
        "CM_TVM_MODEL_OUTPUTS": ",".join(outputs),
        "CM_TVM_MODEL_OUTPUT_INDEX": str(outputs.index(wanted) if wanted in outputs else 0),
        "CM_TVM_MODEL_VERIFIED_MAX_REL_ERR": ("skipped" if verification.get("skipped")
                                              else f"{verification['max_rel_err']:.3e}"),
        "CM_TVM_TUNED": "yes" if tuned else "no",
        "CM_TVM_TUNING_DB_USED": used,
        "CM_TVM_TUNING_DB_SOURCE": db_env["CM_TVM_TUNING_DB_SOURCE"],
        "CM_TVM_FRAMEWORK": framework,
        "CM_TVM_CONV_LAYOUT_USED": info["conv_layout"],
        # for the process that runs the library (the harness): TVM reads it when its thread pool starts
        **runtime_spin_env(env),
    }, {}


def runtime_spin_env(env: Mapping[str, str]) -> dict[str, str]:
    """TVM_THREAD_POOL_SPIN_COUNT from --thread_spin (CM_TVM_THREAD_POOL_SPIN_COUNT; default 0: workers sleep at
    once, see cm_mlperf.tvm.runtime)."""
    from cm_mlperf.tvm import runtime as tvm_runtime

    raw = (env.get("CM_TVM_THREAD_POOL_SPIN_COUNT", "") or tvm_runtime.DEFAULT_SPIN_COUNT).strip()
    if not raw.isdigit():
        raise StepError(f"--thread_spin={raw}: give a whole number of spins (0: TVM's idle worker threads sleep at "
                        f"once, best on a shared machine; TVM's own default spins a while)")
    return {tvm_runtime.SPIN_COUNT_ENV: tvm_runtime.runtime_env(spin_count=raw)[tvm_runtime.SPIN_COUNT_ENV]}


def tune_from_env(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, Any]]:
    """tune-tvm-model's run step: MetaSchedule tuning into the current directory, resumed from --resume_from or
    from the database get-tvm-tuning-db chose (the shipped one for this model, batch and CPU family)."""
    from cm_mlperf.tvm import databases, tune_builders
    from cm_mlperf.tvm import tune as tvm_tune
    from cm_mlperf.tvm.errors import TVMCompileError

    trials = env_int(env, "CM_TVM_TUNING_TRIALS", tvm_tune.DEFAULT_TRIALS, "--trials", minimum=1)
    batch = env_int(env, "CM_TVM_BATCH_SIZE", 1, "--batch_size", minimum=1)
    cores = env_int(env, "CM_HOST_CPU_PHYSICAL_CORES", os.cpu_count() or 1, "CM_HOST_CPU_PHYSICAL_CORES", minimum=1)
    threads = env_int(env, "CM_TVM_NUM_THREADS", cores, "--threads", minimum=1)
    population = env_int(env, "CM_TVM_TUNING_POPULATION", tvm_tune.DEFAULT_POPULATION, "--search_population",
                         minimum=2)
    builder = (env.get("CM_TVM_TUNING_BUILDER", "") or tune_builders.DEFAULT_BUILDER).strip()
    if builder not in tune_builders.BUILDERS:
        raise StepError(f"unknown --builder={builder}: choose one of {', '.join(tune_builders.BUILDERS)}")
    rpc = rpc_settings(env)
    model = _model(env)
    cost_model = (env.get("CM_TVM_TUNING_COST_MODEL", "") or "auto").strip()
    focus = tuning_focus(env)
    try:
        tvm_tune.choose_cost_model(cost_model)
        resume = (env.get("CM_TVM_TUNING_RESUME_FROM", "") or "").strip()
        if resume:
            tvm_tune.check_database_dir(resume)
        elif env.get("CM_TVM_TUNING_DB_PATH"):  # grow the shipped / given database rather than start at zero
            path = env["CM_TVM_TUNING_DB_PATH"]
            resume = str(databases.unpack(path, Path("resume-db").resolve())) if databases.is_archive(path) else path
        mcpu, _ = choose_mcpu(env, threads)
        info = tvm_tune.tune_model(
            model, out_dir=os.getcwd(), batch_size=batch, mcpu=mcpu, num_cores=threads, trials=trials,
            resume_from=resume or None, model_name=env.get("CM_ML_MODEL_NAME", "") or Path(model).stem,
            input_name=env.get("CM_ML_MODEL_INPUT_NAME", "") or None,
            layout=env.get("CM_ML_MODEL_INPUT_LAYOUT", "") or "NCHW",
            height=env_int(env, "CM_ML_MODEL_IMAGE_HEIGHT", 224, "CM_ML_MODEL_IMAGE_HEIGHT"),
            width=env_int(env, "CM_ML_MODEL_IMAGE_WIDTH", 224, "CM_ML_MODEL_IMAGE_WIDTH"),
            builder=builder, cost_model=cost_model, population=population,
            host_flags=env.get("CM_HOST_CPU_FLAGS", "").split(), model_sha256=env.get("CM_ML_MODEL_SHA256", ""),
            rpc=rpc, focus=focus, conv_layout=conv_layout(env), winograd=winograd(env))
        database_dir = info["database_dir"]
        if str(env.get("CM_TVM_TUNING_REFINE", "yes")).strip().lower() in TRUE_WORDS:
            database_dir = refine_tuned(model, info, env, mcpu, threads, batch)
    except (TVMCompileError, databases.TuningDatabaseError) as e:
        raise StepError(str(e)) from e
    return {
        "CM_TVM_TUNING_DATABASE_DIR": database_dir,
        "CM_TVM_TUNING_TRIALS_DONE": str(info["trials_done"]),
        "CM_TVM_TUNING_SECONDS": f"{info['seconds']:.1f}",
        "CM_TVM_TUNING_INFO": os.path.join(database_dir, "tuning-info.json"),
    }, {}


def refine_tuned(model: str, info: Mapping[str, Any], env: Mapping[str, str], mcpu: str, threads: int,
                 batch: int) -> str:
    """cm_mlperf.tvm.refine on a freshly tuned database, into its refined/ subfolder (with the tuning's info, so
    exports still count the trials); returns that folder."""
    from cm_mlperf.tvm import refine

    tuned = Path(info["database_dir"])
    refined = refine.refine_database(
        model, batch_size=batch, mcpu=mcpu, num_cores=threads, conv_layout=info.get("conv_layout", "NCHW"),
        winograd=bool(info.get("winograd", True)), database_dir=tuned, out_dir=tuned / "refined",
        input_name=env.get("CM_ML_MODEL_INPUT_NAME", "") or None,
        layout=env.get("CM_ML_MODEL_INPUT_LAYOUT", "") or "NCHW",
        height=env_int(env, "CM_ML_MODEL_IMAGE_HEIGHT", 224, "CM_ML_MODEL_IMAGE_HEIGHT"),
        width=env_int(env, "CM_ML_MODEL_IMAGE_WIDTH", 224, "CM_ML_MODEL_IMAGE_WIDTH"))
    with_refine = {**json.loads((tuned / "tuning-info.json").read_text()),
                   "refined": {k: v for k, v in refined.items() if k != "database_dir"}}
    (Path(refined["database_dir"]) / "tuning-info.json").write_text(json.dumps(with_refine, indent=2, default=str))
    return refined["database_dir"]


def winograd(env: Mapping[str, str]) -> bool:
    """--winograd (CM_TVM_WINOGRAD): yes (default) computes NCHWc 3x3 stride-1 convolutions with Winograd F(2x2, 3x3),
    no keeps every convolution direct."""
    raw = str(env.get("CM_TVM_WINOGRAD", "") or "yes").strip().lower()
    if raw in TRUE_WORDS:
        return True
    if raw in ("no", "false", "off", "0"):
        return False
    raise StepError(f"--winograd must be yes or no, got {env['CM_TVM_WINOGRAD']!r}")


def conv_layout(env: Mapping[str, str]) -> str:
    """The convolution layout to compile / tune in: get-tvm-tuning-db's CM_TVM_CONV_LAYOUT_USED, else --conv_layout
    (CM_TVM_CONV_LAYOUT, when a step runs without that script), else NCHW."""
    from cm_mlperf.tvm import databases

    used = (env.get("CM_TVM_CONV_LAYOUT_USED", "") or "").strip()
    if used:
        return databases.normalise_layout(used, "CM_TVM_CONV_LAYOUT_USED") or "NCHW"
    try:
        return databases.normalise_layout(env.get("CM_TVM_CONV_LAYOUT", "") or "nchw") or "NCHW"
    except databases.TuningDatabaseError as e:
        raise StepError(str(e)) from e


def tuning_focus(env: Mapping[str, str]) -> float:
    """--focus: the share of the model's time whose tasks are tuned (0 < f <= 1, default 1: every task)."""
    raw = (env.get("CM_TVM_TUNING_FOCUS", "") or "1").strip()
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 1.0:
        raise StepError(f"--focus={raw}: give a share of the model's time between 0 and 1 (e.g. 0.8 tunes the tasks "
                        f"that take 80% of it, by their best records); 1 tunes every task")
    return value


def rpc_settings(env: Mapping[str, str]) -> dict[str, Any] | None:
    """--rpc_tracker=HOST:PORT --rpc_key=KEY as a dict, None when not asked for; StepError naming the flag."""
    tracker = (env.get("CM_TVM_RPC_TRACKER", "") or "").strip()
    key = (env.get("CM_TVM_RPC_KEY", "") or "").strip()
    if not tracker and not key:
        return None
    if not tracker or not key:
        raise StepError("distributed tuning needs both --rpc_tracker=HOST:PORT and --rpc_key=KEY (the key the RPC "
                        "servers registered with: cm run script --tags=start,tvm,rpc-server --rpc_key=KEY)")
    host, sep, port = tracker.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise StepError(f"--rpc_tracker={tracker}: expected HOST:PORT, e.g. 127.0.0.1:9190")
    return {"host": host, "port": int(port), "key": key,
            "timeout": env_int(env, "CM_TVM_RPC_SESSION_TIMEOUT", 120, "--rpc_timeout", minimum=1),
            "servers": env_int(env, "CM_TVM_RPC_SERVERS", 0, "--rpc_servers", minimum=0)}


def export_from_env(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, Any]]:
    """export-tvm-tuning-db's run step: prune a database to its best records, write its manifest, pack it."""
    import shutil
    import tempfile

    from cm_mlperf.tvm import databases, family

    src = (env.get("CM_TVM_EXPORT_FROM", "") or "").strip()
    if not src:
        raise StepError("give the database to export: --tuning_db=FOLDER (a tune-tvm-model cache entry, see "
                        "`cm show cache --tags=tune,tvm,model`, or any database folder / .tar.gz)")
    out = (env.get("CM_TVM_EXPORT_OUTPUT", "") or "").strip()
    try:
        with tempfile.TemporaryDirectory(prefix="tvm-db-export-") as tmp:
            folder = databases.unpack(src, Path(tmp) / "in") if databases.is_archive(src) else \
                databases.check_folder(src)
            # what the database is for: tune-tvm-model's tuning-info.json, else refine-info.json (refined only)
            info_path = next((Path(folder) / n for n in ("tuning-info.json", "refine-info.json")
                              if (Path(folder) / n).is_file()), None)
            info = json.loads(info_path.read_text()) if info_path else {}
            old = databases.read_manifest(folder)
            flags = env.get("CM_HOST_CPU_FLAGS", "").split()
            fam = env.get("CM_TVM_EXPORT_FAMILY") or old.get("family") or env.get("CM_HOST_CPU_FAMILY") or \
                family.family_from_flags(flags)
            model = info.get("model_name") or old.get("model_name") or "model"
            batch = int(info.get("batch_size") or old.get("batch_size") or 1)
            layout = info.get("conv_layout") or old.get("conv_layout") or "NCHW"
            blocked = "" if layout == "NCHW" else f"-{layout.lower()}"  # NCHW keeps the names shipped before layouts
            name = env.get("CM_TVM_EXPORT_NAME") or old.get("name") or f"{model}-b{batch}{blocked}-{fam}"
            pruned = Path(tmp) / name
            counts = databases.prune(folder, pruned)
            # totals over every run the database grew from (a resumed run's tuning-info.json counts only its own)
            totals = databases.history_totals(folder)
            manifest = databases.make_manifest(
                pruned, name=name, model_name=model,
                model_sha256=info.get("onnx_sha256") or old.get("model_sha256") or env.get("CM_ML_MODEL_SHA256", ""),
                batch_size=batch, family=fam,
                conv_layout=layout,
                # this CPU's extras (VNNI, AMX...) only describe a database of this CPU's family
                family_extras=old.get("family_extras") or (
                    family.family_extras(flags) if fam == family.family_from_flags(flags) else []),
                tuned_on=old.get("tuned_on") or {"cpu": env.get("CM_HOST_CPU_MODEL_NAME", ""),
                                                 "vendor": env.get("CM_HOST_CPU_VENDOR_ID", ""),
                                                 "mcpu": info.get("mcpu", ""), "threads": info.get("num_cores")},
                target=info.get("target") or old.get("target"), tvm_version=info.get("tvm_version") or
                old.get("tvm_version", ""), trials=totals["trials"], tuning_seconds=totals["tuning_seconds"],
                info=info or None)
            if not info and old.get("per_task"):
                manifest["per_task"] = old["per_task"]
                (pruned / databases.MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
            target = Path(out or f"{name}.tar.gz")
            if not target.is_absolute():
                target = Path(os.environ.get("PWD", os.getcwd())) / target
            if databases.is_archive(target):
                databases.write_archive(pruned, target)
            else:
                if target.exists() and any(target.iterdir()):
                    raise StepError(f"--output={target} is a folder that is not empty: give a new folder or a .tar.gz")
                shutil.copytree(pruned, target, dirs_exist_ok=True)
    except databases.TuningDatabaseError as e:
        raise StepError(str(e)) from e
    print(f"[export-tvm-tuning-db] {target}: {name}, {counts['records']} best records of "
          f"{counts['workloads_before']} workloads, {manifest['trials']} trials, family {fam}", flush=True)
    return {"CM_TVM_EXPORTED_TUNING_DB": str(target), "CM_TVM_EXPORTED_TUNING_DB_NAME": name}, {"manifest": manifest}
