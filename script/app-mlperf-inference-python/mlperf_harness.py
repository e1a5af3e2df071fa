"""MLPerf Inference image-classification harness: LoadGen QSL + SUT around a pluggable backend.

Use `run_benchmark(settings)` from Python (it runs LoadGen in a child process, see below) or the CLI:

    python mlperf_harness.py --backend onnxruntime --scenario Offline --mode performance \
        --model-path m.onnx --dataset-path preprocessed/ --output-dir out/ --min-duration 10000

Why a child process: LoadGen counts `TestSettings.FromConfig` calls per process, and from the second one
on logs the error "Multiple conf files are used", which reviewers reject. One run = one process.

The pieces: mlperf_settings (HarnessSettings, env, user.conf), mlperf_sut (QSL, SUT, warm-up),
mlperf_logs (LoadGen log parsing), mlperf_backends, mlperf_rounds; this module runs them.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import mlperf_backends
import mlperf_rounds
from mlperf_logs import accuracy_log_indices, format_summary, parse_logs
from mlperf_settings import MODES, HarnessSettings, build_user_conf, settings_from_env
from mlperf_sut import SampleLibrary, SystemUnderTest, list_samples, measure

RESULT_FILE = "harness_result.json"
SETTINGS_FILE = "harness_settings.json"
# Offline: target_qps is raised by this factor so the single query lasts past min_duration even when
# the measured warm-up throughput underestimates the steady state (LoadGen sizes the query as
# target_qps x min_duration x 1.1; a query that ends early makes the run INVALID).
OFFLINE_QPS_HEADROOM = 1.1
# Server: start below the measured throughput so queues (and the latency tail) stay bounded.
SERVER_QPS_FRACTION = 0.75


# -------------------------------------------------------------------------------------------------- run


def _resolve_batch_size(s: HarnessSettings, backend: Any, samples_per_query: int) -> int:
    if s.batch_size:
        return s.batch_size
    if getattr(backend, "fixed_batch_size", None):
        return backend.fixed_batch_size
    return {"SingleStream": 1, "MultiStream": samples_per_query}.get(s.scenario, 8)


def _run_in_process(s: HarnessSettings) -> dict[str, Any]:
    import mlperf_loadgen as lg

    rnd = mlperf_rounds.get_round(s.round)
    out = Path(s.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULT_FILE).unlink(missing_ok=True)

    paths = list_samples(s.dataset_path, s.count)
    qsl = SampleLibrary(paths)
    default_psc = rnd.performance_sample_count(s.model_key, s.scenario) or qsl.size
    wanted_psc = s.performance_sample_count or default_psc
    # Never claim more samples than the QSL really holds.
    psc = min(qsl.size, wanted_psc)
    if psc < wanted_psc:
        print(f"[harness] performance sample count {wanted_psc} > dataset size {qsl.size}: using {psc}")

    backend = mlperf_backends.create_backend(s.backend)
    t0 = time.perf_counter()
    backend.load(s.model, s.threads, s.batch_size)
    print(f"[harness] {backend.name} {backend.version()} loaded in {time.perf_counter() - t0:.1f} s "
          f"({s.threads} threads); QSL {qsl.size} samples, performance sample count {psc}")

    spq = int(rnd.value(s.model_key, "MultiStream", "samples_per_query") or 8)
    batch_size = _resolve_batch_size(s, backend, spq)
    measured: dict[str, float] | None = None
    exact_latency_ns = None
    if s.mode == "performance":
        if s.scenario in ("Offline", "Server") and not s.target_qps:
            measured = measure(backend, qsl, batch_size)
            factor = OFFLINE_QPS_HEADROOM if s.scenario == "Offline" else SERVER_QPS_FRACTION
            s.target_qps = round(measured["samples_per_second"] * factor, 3)
            print(f"[harness] warm-up: {measured['samples_per_second']:.1f} samples/s at batch {batch_size} "
                  f"-> target_qps {s.target_qps}")
        elif s.scenario in ("SingleStream", "MultiStream") and not s.target_latency_ms:
            measured = measure(backend, qsl, 1 if s.scenario == "SingleStream" else spq)
            s.target_latency_ms = measured["latency_ms"]
            # user.conf holds whole ms; below 1 ms LoadGen would plan far too few queries, so set the
            # expected latency on TestSettings directly, halved because LoadGen's own per-query overhead
            # is comparable at that scale (it plans 2 x min_duration / expected latency queries).
            if s.target_latency_ms < 1.0:
                exact_latency_ns = max(1, int(s.target_latency_ms * 1e6 / 2))
            print(f"[harness] warm-up: {measured['latency_ms']:.2f} ms per query -> target_latency")

    base = Path(s.user_conf).read_text() if s.user_conf else ""
    user_conf_path = out / "user.conf"
    user_conf_path.write_text(build_user_conf(s, psc, base))
    shutil.copyfile(rnd.conf_path, out / "mlperf.conf")

    ts = lg.TestSettings()
    ts.scenario = getattr(lg.TestScenario, s.scenario)
    ts.mode = lg.TestMode.AccuracyOnly if s.mode == "accuracy" else lg.TestMode.PerformanceOnly
    # conf_type=1: LoadGen applies its built-in (today's) mlperf.conf, then our user.conf. One call only.
    rc = ts.FromConfig(str(user_conf_path), s.model_key, s.scenario, 1)
    if rc != 0:
        raise RuntimeError(f"LoadGen rejected {user_conf_path} (FromConfig returned {rc})")
    if not rnd.builtin:
        for key, val in rnd.seeds().items():
            setattr(ts, key, val)
    if ts.performance_sample_count_override == 0 or ts.performance_sample_count_override > qsl.size:
        ts.performance_sample_count_override = psc
    if exact_latency_ns:
        if s.scenario == "SingleStream":
            ts.single_stream_expected_latency_ns = exact_latency_ns
        else:
            ts.multi_stream_expected_latency_ns = exact_latency_ns

    log_settings = lg.LogSettings()
    log_settings.log_output.outdir = str(out)
    log_settings.log_output.copy_summary_to_stdout = False
    log_settings.enable_trace = False

    progress = None
    if s.progress:
        from tqdm import tqdm

        total = qsl.size if s.mode == "accuracy" else None
        progress = tqdm(total=total, unit="img", desc=f"{s.scenario} {s.mode}", mininterval=1.0,
                        disable=None, file=sys.stderr)
    sut_impl = SystemUnderTest(lg, backend, qsl, s.scenario, batch_size, s.model.label_offset, s.workers, progress)
    sut = lg.ConstructSUT(sut_impl.issue_queries, sut_impl.flush_queries)
    qsl_handle = lg.ConstructQSL(qsl.size, psc, qsl.load, qsl.unload)
    print(f"[harness] LoadGen {s.scenario} {s.mode} (round {s.round}, batch {batch_size}) -> {out}")
    t0 = time.perf_counter()
    try:
        lg.StartTestWithLogSettings(sut, qsl_handle, ts, log_settings)
    finally:
        sut_impl.stop()
        lg.DestroyQSL(qsl_handle)
        lg.DestroySUT(sut)
        if progress is not None:
            progress.close()
    wall = time.perf_counter() - t0
    if sut_impl.errors:
        raise RuntimeError(f"inference failed on {len(sut_impl.errors)} batch(es): {sut_impl.errors[0]}")

    result = parse_logs(out, s.round)
    if s.mode == "accuracy":
        # LoadGen writes no verdict for an accuracy run: it is complete when every QSL sample was logged.
        seen = accuracy_log_indices(out / "mlperf_log_accuracy.json")
        complete = seen == set(range(qsl.size)) and not result["loadgen_errors"]
        result.update({"validity": "VALID" if complete else "INVALID", "valid": complete,
                       "accuracy_samples_logged": len(seen)})
    result.update({
        "backend": backend.name,
        "backend_version": backend.version(),
        "model": s.model.name,
        "round": s.round,
        "samples_processed": sut_impl.samples_done,
        "qsl_size": qsl.size,
        "performance_sample_count": psc,
        "batch_size": batch_size,
        "threads": s.threads,
        "target_qps": s.target_qps,
        "target_latency_ms": s.target_latency_ms,
        "warmup": measured,
        "wall_time_s": round(wall, 3),
        "accuracy_log": str(out / "mlperf_log_accuracy.json") if s.mode == "accuracy" else None,
    })
    (out / RESULT_FILE).write_text(json.dumps(result, indent=2))
    print(format_summary(result))
    return result


def run_benchmark(settings: HarnessSettings, isolated: bool = True) -> dict[str, Any]:
    """Run one LoadGen test and return the parsed result dict.

    isolated=True (default) runs it in a fresh Python process (see the module docstring); the child
    writes `harness_result.json` into the output directory, which is read back here.
    """
    s = settings.normalised()
    if not isolated:
        return _run_in_process(s)
    out = Path(s.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULT_FILE).unlink(missing_ok=True)
    settings_path = out / SETTINGS_FILE
    settings_path.write_text(s.to_json())
    cmd = [sys.executable, str(Path(__file__).resolve()), "--settings-json", str(settings_path)]
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0 or not (out / RESULT_FILE).is_file():
        raise RuntimeError(f"the MLPerf harness failed (exit code {proc.returncode}); see its output above")
    return json.loads((out / RESULT_FILE).read_text())


def load_result(output_dir: str | Path) -> dict[str, Any]:
    """The result dict a finished run left in its output directory."""
    path = Path(output_dir) / RESULT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {RESULT_FILE} in {output_dir}: the harness did not finish")
    return json.loads(path.read_text())


# -------------------------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Unset options fall back to the CM env (CM_MLPERF_*, CM_ML_MODEL_*, ...).")
    p.add_argument("--settings-json", help="read all settings from this JSON file (written by run_benchmark)")
    p.add_argument("--backend", choices=sorted(mlperf_backends.BACKENDS))
    p.add_argument("--scenario")
    p.add_argument("--mode", choices=MODES)
    p.add_argument("--model-path", help="ONNX model (onnxruntime)")
    p.add_argument("--model-name")
    p.add_argument("--input-name")
    p.add_argument("--output-name")
    p.add_argument("--label-offset", type=int)
    p.add_argument("--tvm-so", help="compiled Relax VM library (tvm)")
    p.add_argument("--tvm-batch-size", type=int)
    p.add_argument("--dataset-path", help="folder of preprocessed .npy + val_map.txt")
    p.add_argument("--output-dir")
    p.add_argument("--count", type=int, help="QSL size (first N samples)")
    p.add_argument("--target-qps", type=float)
    p.add_argument("--target-latency", type=float, help="ms")
    p.add_argument("--min-duration", type=int, help="ms")
    p.add_argument("--min-query-count", type=int)
    p.add_argument("--performance-sample-count", type=int)
    p.add_argument("--threads", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--workers", type=int)
    p.add_argument("--round", choices=sorted(mlperf_rounds.ROUNDS))
    p.add_argument("--user-conf")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.settings_json:
        s = HarnessSettings.from_dict(json.loads(Path(args.settings_json).read_text()))
    else:
        s = settings_from_env(dict(os.environ))
        simple = {"backend": "backend", "scenario": "scenario", "mode": "mode", "dataset_path": "dataset_path",
                  "output_dir": "output_dir", "count": "count", "target_qps": "target_qps",
                  "target_latency": "target_latency_ms", "min_duration": "min_duration_ms",
                  "min_query_count": "min_query_count", "performance_sample_count": "performance_sample_count",
                  "threads": "threads", "batch_size": "batch_size", "workers": "workers", "round": "round",
                  "user_conf": "user_conf"}
        for arg, attr in simple.items():
            if getattr(args, arg) is not None:
                setattr(s, attr, getattr(args, arg))
        model = {"model_path": "onnx_path", "model_name": "name", "input_name": "input_name",
                 "output_name": "output_name", "label_offset": "label_offset", "tvm_so": "tvm_so",
                 "tvm_batch_size": "tvm_batch_size"}
        for arg, attr in model.items():
            if getattr(args, arg) is not None:
                setattr(s.model, attr, getattr(args, arg))
        if args.no_progress:
            s.progress = False
    try:
        run_benchmark(s, isolated=False)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"[harness] error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
