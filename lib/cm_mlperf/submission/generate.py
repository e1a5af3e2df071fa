"""Turn finished runs (`<results_dir>/run-NNN/` folders left by run-mlperf-inference-app) into one MLPerf
submission tree of a round, in that round's layout (see layout.py).

Every run is checked before anything is written: a run of another round (its summary or its LoadGen seeds), an
INVALID performance run, or a run at shortened settings (unless asked for) stops the whole generation with one
line naming the run. The tree is assembled in a temporary folder next to the target and moved into place at the
end, so an existing tree is either updated completely or left as it was.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cm_mlperf.files import sha256_file
from cm_mlperf.loadgen.logs import read_detail
from cm_mlperf.submission import layout, rules, sut_description

RUN_SUMMARY = "mlperf-run-summary.json"
INCOMPLETE_MARKER = "INCOMPLETE"
COMPLIANCE_DIR = "compliance"  # in a run's <system>/<model>/<scenario>/: verified TEST0x folders
LOG_FILES = ("mlperf_log_summary.txt", "mlperf_log_detail.txt")


class SubmissionError(ValueError):
    """A run cannot go into the submission; the message says which and why."""


@dataclass
class Result:
    """One system/model/scenario of the tree, from the run(s) that produced it."""
    summary: dict[str, Any]  # of the performance run
    accuracy_summary: dict[str, Any]
    system: str
    model: str  # folder name in the tree
    scenario: str
    notes: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return self.summary.get("env", {})


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SubmissionError(f"{path}: cannot be read ({exc})") from exc


def find_runs(results_dirs: list[str | Path]) -> list[Path]:
    """Finished run folders (with a summary, without the INCOMPLETE marker), oldest first."""
    runs: list[Path] = []
    for base in results_dirs:
        base = Path(base)
        if not base.is_dir():
            raise SubmissionError(f"--results_dir={base}: no such folder (give the folder your runs wrote to)")
        candidates = [base] if (base / RUN_SUMMARY).is_file() else sorted(p for p in base.iterdir() if p.is_dir())
        for run in candidates:
            if (run / RUN_SUMMARY).is_file() and not (run / INCOMPLETE_MARKER).exists():
                runs.append(run)
    if not runs:
        raise SubmissionError(f"no finished runs in {', '.join(map(str, results_dirs))}: run "
                              "`cm run script --tags=run-mlperf,inference,_submission` first")
    return runs


def _locate(run: Path, summary: dict[str, Any]) -> None:
    """Point the summary's log folders into this run folder when the recorded paths are gone (a moved results
    folder): the app's layout is <run>/<system>/<model>/<scenario>/{performance/run_1,accuracy}."""
    scenario_dir = run / summary["system"] / summary["model"] / summary["scenario"]
    for key, sub in (("performance_dir", scenario_dir / "performance" / "run_1"),
                     ("accuracy_dir", scenario_dir / "accuracy")):
        if summary.get(key) and not Path(summary[key]).is_dir():
            summary[key] = str(sub)


def check_run(run: Path, summary: dict[str, Any], round_rules: rules.RoundRules, allow_test_runs: bool) -> None:
    """Refuse what reviewers would reject: another round, INVALID, shortened settings, missing logs."""
    _locate(run, summary)
    if summary.get("round") != round_rules.name:
        raise SubmissionError(f"{run} is a run of round {summary.get('round')}, not {round_rules.name}: "
                              f"use --round={summary.get('round')} or re-run with --round={round_rules.name}")
    if summary.get("quick") and not allow_test_runs:
        raise SubmissionError(f"{run} is a test run at shortened settings ({summary.get('execution_mode')}), not a "
                              "result: re-run with _submission (or pass --allow_test_runs=yes for a practice tree)")
    perf_dir = summary.get("performance_dir")
    if perf_dir:
        if not summary.get("valid"):
            raise SubmissionError(f"{run}: the performance run is INVALID ({summary.get('invalid_reason') or 'see '}"
                                  f"{perf_dir}/mlperf_log_summary.txt): it cannot be submitted; re-run it")
        for name in LOG_FILES:
            if not (Path(perf_dir) / name).is_file():
                raise SubmissionError(f"{run}: {perf_dir}/{name} is missing")
        seeds = read_detail(Path(perf_dir) / "mlperf_log_detail.txt").seeds()
        seeds_round = rules.round_of_seeds(seeds)
        if seeds_round != round_rules.name:
            raise SubmissionError(f"{run}: LoadGen ran with the seeds of {seeds_round or 'no known round'}, not of "
                                  f"{round_rules.name}: reviewers reject it; re-run with --round={round_rules.name}")
    acc_dir = summary.get("accuracy_dir")
    if acc_dir:
        for name in (*LOG_FILES, "mlperf_log_accuracy.json", "accuracy.txt"):
            if not (Path(acc_dir) / name).is_file():
                raise SubmissionError(f"{run}: {acc_dir}/{name} is missing")


def collect(runs: list[Path], round_rules: rules.RoundRules, division: str,
            allow_test_runs: bool = False) -> list[Result]:
    """The newest performance run and newest accuracy run of each system/model/scenario."""
    perf: dict[tuple[str, str, str], dict[str, Any]] = {}
    acc: dict[tuple[str, str, str], dict[str, Any]] = {}
    for run in runs:
        summary = _read_json(run / RUN_SUMMARY)
        check_run(run, summary, round_rules, allow_test_runs)
        try:
            model = rules.mlperf_model_name(summary["model"], division)
        except ValueError as exc:
            raise SubmissionError(f"{run}: {exc}") from exc
        key = (summary["system"], model, summary["scenario"])
        summary["_run"] = str(run)
        if summary.get("performance_dir"):
            perf[key] = summary
        if summary.get("accuracy_dir"):
            acc[key] = summary
    results = []
    for key in sorted(set(perf) | set(acc)):
        if key not in perf:
            raise SubmissionError(f"{acc[key]['_run']}: {'/'.join(key)} has an accuracy run but no performance run: "
                                  "run it with --mode=performance (or _submission)")
        if key not in acc:
            raise SubmissionError(f"{perf[key]['_run']}: {'/'.join(key)} has a performance run but no accuracy run: "
                                  "run it with --mode=accuracy (or _submission)")
        results.append(Result(perf[key], acc[key], *key))
    return results


def truncate_accuracy_log(src: Path, dst: Path) -> str:
    """Copy an accuracy log, truncated as MLPerf's tool does (first and last 4 KiB) when over 10 KiB; returns the
    sha256 of the full log."""
    digest = sha256_file(src)
    size = src.stat().st_size
    if size < rules.MAX_ACCURACY_LOG_BYTES:
        shutil.copyfile(src, dst)
        return digest
    edge = rules.TRUNCATED_EDGE_BYTES
    with open(src, "rb") as f:
        head = f.read(edge)
        f.seek(size - edge)
        tail = f.read(edge)
    dst.write_bytes(head + b"\n\n...\n\n" + tail)
    return digest


def _accuracy_txt(src_dir: Path, digest: str) -> str:
    """accuracy.txt: the scorer's line(s), then hash= of the full accuracy log."""
    lines = [ln for ln in (src_dir / "accuracy.txt").read_text(encoding="utf-8").splitlines()
             if ln.strip() and not ln.startswith("hash=")]
    return "\n".join([*lines, f"hash={digest}"]) + "\n"


def reproduce_command(summary: dict[str, Any]) -> str:
    env = summary.get("env", {})
    tags = ["run-mlperf", "inference", f"_{summary['backend']}", "_submission"]
    tags.append({"efficientnet-lite0": "_efficientnet-lite0", "resnet50": "_resnet50"}.get(summary["model"], ""))
    tags.append(f"_{summary['scenario'].lower()}")
    cmd = f"cm run script --tags={','.join(t for t in tags if t)} --round={summary['round']} " \
          f"--division={summary['division']}"
    if env.get("CM_IMAGENET_PATH"):
        cmd += " --imagenet_path=<ImageNet validation folder>"
    if summary["model"] not in ("efficientnet-lite0", "resnet50"):
        cmd += " --model_path=<your model.onnx>"
    if env.get("CM_MLPERF_COMPLIANCE") == "no":
        cmd += " --compliance=no"
    if env.get("CM_MLPERF_LOADGEN_COUNT"):
        cmd += f" --count={env['CM_MLPERF_LOADGEN_COUNT']}"
    return cmd


def _measurements(summary: dict[str, Any]) -> dict[str, str]:
    env = summary.get("env", {})
    return {
        "input_data_types": env.get("CM_ML_MODEL_INPUT_DATA_TYPES") or "fp32",
        "retraining": "no",
        "starting_weights_filename": env.get("CM_ML_MODEL_STARTING_WEIGHTS_FILENAME") or summary["model"],
        "weight_data_types": env.get("CM_ML_MODEL_WEIGHT_DATA_TYPES") or "fp32",
        "weight_transformations": env.get("CM_ML_MODEL_WEIGHT_TRANSFORMATIONS") or "none",
    }


def _readme(r: Result, impl: str) -> str:
    perf = r.summary.get("performance", {})
    ds, size = r.summary.get("dataset", ""), r.summary.get("dataset_size")
    qsl = perf.get("qsl_size")
    lines = [
        f"# {r.model} / {r.scenario} on {r.system} ({r.summary['backend']})", "",
        "Produced with mlperf-tvm-cm (a CM script collection; LoadGen harness of our own). To reproduce:", "",
        "```", "pip install -e . && cm-register-repo", reproduce_command(r.summary),
        f"cm run script --tags=generate,mlperf,inference,submission --round={r.summary['round']} "
        f"--division={r.summary['division']} --submitter=<you>", "```", "",
        f"- implementation: {impl} (model `{r.summary['model']}`, MLPerf task `{rules.TASK}`)",
        f"- dataset: {ds} ({size} images); the accuracy run covers all of them",
        f"- performance run: {perf.get('result')} {perf.get('result_unit', '')}, {perf.get('validity')}, "
        f"QSL of {qsl} samples, performance sample count {perf.get('performance_sample_count')}",
        f"- LoadGen {perf.get('loadgen_version')}, round {r.summary['round']} seeds",
    ]
    if qsl and size and qsl > size:
        lines.append(f"- the performance QSL repeats the {size} images of the dataset to hold {qsl} samples "
                     "(each one loaded separately): the round's performance sample count")
    lines += [f"- {n}" for n in r.notes]
    return "\n".join(lines) + "\n"


def _code_readme(backend: str) -> str:
    return (f"# mlperf-tvm-cm, {backend} backend\n\n"
            "The code is the CM script collection mlperf-tvm-cm: `script/run-mlperf-inference-app` (entry point),\n"
            "`script/app-mlperf-inference-python` (LoadGen harness), `script/process-mlperf-accuracy` (top-1),\n"
            "`script/generate-mlperf-inference-submission` (this tree). Each result's README has the exact command.\n")


def write_result(root: Path, r: Result, round_rules: rules.RoundRules, submitter: str, division: str,
                 overrides: dict[str, Any]) -> None:
    impl = f"mlperf-tvm-cm-{r.summary['backend']}"
    paths = layout.ResultPaths(root, round_rules, r.system, r.model, r.scenario, impl)
    for folder in (paths.results, paths.compliance if round_rules.layout == "v3.1" else None,
                   paths.measurements if round_rules.layout == "v3.1" else None):
        if folder is not None and folder.exists():
            shutil.rmtree(folder)  # a newer run replaces this result
    perf_src, acc_src = Path(r.summary["performance_dir"]), Path(r.accuracy_summary["accuracy_dir"])
    paths.performance.mkdir(parents=True)
    for name in LOG_FILES:
        shutil.copyfile(perf_src / name, paths.performance / name)
    paths.accuracy.mkdir(parents=True)
    for name in LOG_FILES:
        shutil.copyfile(acc_src / name, paths.accuracy / name)
    digest = truncate_accuracy_log(acc_src / "mlperf_log_accuracy.json", paths.accuracy / "mlperf_log_accuracy.json")
    (paths.accuracy / "accuracy.txt").write_text(_accuracy_txt(acc_src, digest), encoding="utf-8")

    paths.measurements.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(perf_src / "user.conf", paths.measurements / "user.conf")
    shutil.copyfile(perf_src / "mlperf.conf", paths.measurements / "mlperf.conf")
    paths.measurements_json.write_text(json.dumps(_measurements(r.summary), indent=2) + "\n", encoding="utf-8")
    (paths.measurements / "README.md").write_text(_readme(r, impl), encoding="utf-8")

    compliance_src = perf_src.parent.parent / COMPLIANCE_DIR
    if compliance_src.is_dir():
        for test_dir in sorted(p for p in compliance_src.iterdir() if p.name in round_rules.compliance_tests):
            dst = paths.compliance / test_dir.name
            shutil.copytree(test_dir, dst)
            log = dst / "accuracy" / "mlperf_log_accuracy.json"
            if log.is_file():  # TEST01: truncated like the result's log, with the hash of the full one
                full = test_dir / "accuracy" / "mlperf_log_accuracy.json"
                digest = truncate_accuracy_log(full, log)
                (dst / "accuracy" / "accuracy.txt").write_text(f"hash={digest}\n", encoding="utf-8")

    paths.code.mkdir(parents=True, exist_ok=True)
    (paths.code / "README.md").write_text(_code_readme(r.summary["backend"]), encoding="utf-8")
    perf = r.summary.get("performance", {})
    desc = sut_description.describe(r.env, division=division, submitter=submitter, system_name=r.system,
                                    backend=r.summary["backend"], backend_version=str(perf.get("backend_version", "")),
                                    overrides=overrides)
    paths.system_json.parent.mkdir(parents=True, exist_ok=True)
    paths.system_json.write_text(json.dumps(desc, indent=2) + "\n", encoding="utf-8")


def generate(results_dirs: list[str | Path], submission_dir: str | Path, submitter: str, division: str = "open",
             round_name: str = "v3.1", overrides: dict[str, Any] | None = None,
             allow_test_runs: bool = False) -> list[Result]:
    """Build (or update) the submission tree; returns the results written."""
    round_rules = rules.get_round(round_name)
    if division not in rules.DIVISIONS:
        raise SubmissionError(f"--division={division}: use open or closed")
    if not submitter or any(c in submitter for c in "/\\ ") or submitter.startswith("."):
        raise SubmissionError(f"--submitter={submitter!r}: give your organisation's name without spaces or slashes")
    results = collect(find_runs(results_dirs), round_rules, division, allow_test_runs)
    target = Path(submission_dir).resolve()
    if target.exists() and not target.is_dir():
        raise SubmissionError(f"--submission_dir={submission_dir}: is a file; give a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{target.name}-", suffix=".part", dir=target.parent))
    try:
        staged = work / "tree"
        if target.exists():
            shutil.copytree(target, staged, symlinks=True)
        else:
            staged.mkdir()
        root = layout.division_root(staged, division, submitter)
        for r in results:
            write_result(root, r, round_rules, submitter, division, overrides or {})
        custom = {r.model: rules.TASK for r in results if r.model != rules.TASK}
        if division == "open" and custom:
            mapping_path = root / "model_mapping.json"
            mapping = json.loads(mapping_path.read_text()) if mapping_path.is_file() else {}
            mapping.update(custom)
            mapping_path.write_text(json.dumps(mapping, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        old = None
        if target.exists():
            old = work / "previous"
            os.replace(target, old)
        os.replace(staged, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results
