"""Our own check of a submission tree: what MLPerf reviewers reject, each with a message that says what to do.

Errors: missing files, INVALID or erroring LoadGen runs, another round's seeds, performance runs shorter than
600 s, fewer performance samples than the round's count, too few Offline samples where the round wants them,
untruncated accuracy logs or a missing hash, missing or empty system or measurements fields, a wrong scenario set
or missing compliance tests (closed), accuracy below target (closed; a warning in open), the accuracy run not
covering the whole dataset where the round wants it.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cm_mlperf.loadgen.logs import read_detail
from cm_mlperf.submission import layout, rules, sut_description

PERF_FILES = {"mlperf_log_summary.txt", "mlperf_log_detail.txt"}
PERF_OPTIONAL = {"mlperf_log_accuracy.json", "mlperf_log_trace.json"}
ACC_FILES = {"mlperf_log_summary.txt", "mlperf_log_detail.txt", "accuracy.txt", "mlperf_log_accuracy.json"}
MEASURE_FILES = ("user.conf", "README.md")
_ACCURACY = re.compile(r"^accuracy=([\d.]+)%?(?:.*total=(\d+))?")


@dataclass
class Problem:
    level: str  # "error" | "warning"
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.level.upper()}: {self.where}: {self.message}"


@dataclass
class ResultRow:
    division: str
    submitter: str
    system: str
    model: str
    scenario: str
    backend: str = ""
    result: str = ""
    unit: str = ""
    accuracy: str = ""
    valid: bool = False
    framework: str = ""


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    rows: list[ResultRow] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]

    def add(self, level: str, where: Path | str, message: str) -> None:
        self.problems.append(Problem(level, str(where), message))


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_file()} if folder.is_dir() else set()


def check_performance(report: Report, perf: Path, rr: rules.RoundRules, division: str, scenario: str,
                      test: str = "") -> tuple[bool, Any]:
    """One performance/run_1 folder; returns (valid, metric)."""
    if not perf.is_dir():
        report.add("error", perf, "missing: the performance run's logs go here")
        return False, None
    missing, extra = PERF_FILES - _files(perf), _files(perf) - PERF_FILES - PERF_OPTIONAL
    for name in sorted(missing):
        report.add("error", perf / name, "missing: copy it from the LoadGen run")
    for name in sorted(extra):
        report.add("error", perf / name, "not allowed here: reviewers accept only LoadGen's logs")
    if missing:
        return False, None
    log = read_detail(perf / "mlperf_log_detail.txt")
    ok = True
    where = perf / "mlperf_log_detail.txt"
    if not log.valid:
        report.add("error", where, f"the run is {log.get('result_validity', 'INVALID')}: re-run it at the round's "
                                   "settings with target_qps from a warm-up (_submission does)")
        ok = False
    for err in log.errors:
        report.add("error", where, f"LoadGen logged an error: {err}")
        ok = False
    seeds = log.seeds()
    want = rr.seeds_for(test)
    if seeds != want:
        other = rules.round_of_seeds(seeds)
        report.add("error", where, f"RNG seeds of {other or 'no known round'}, not of {rr.name}"
                                   f"{' (TEST05 seeds)' if test == 'TEST05' else ''}: re-run with --round={rr.name}")
        ok = False
    psc = int(log.get("effective_performance_sample_count", 0) or 0)
    if psc < rr.performance_sample_count:
        report.add("error", where, f"performance sample count {psc} < {rr.performance_sample_count}: the QSL must hold "
                                   "the round's count (_submission repeats a small dataset to reach it)")
        ok = False
    duration = int(log.get("effective_min_duration_ms", 0) or 0)
    if duration < rules.MIN_DURATION_MS:
        report.add("error", where, f"min_duration {duration} ms < {rules.MIN_DURATION_MS} ms: a test run, not a "
                                   "result; use _submission (or _full)")
        ok = False
    if log.scenario != scenario:
        report.add("error", where, f"the log is a {log.scenario} run but sits in {scenario}/")
        ok = False
    if scenario == "Offline" and division in rr.offline_minimum_divisions:
        spq = int(log.get("effective_samples_per_query", 0) or 0)
        if spq < rules.OFFLINE_MIN_SAMPLES_PER_QUERY:
            report.add("error", where, f"Offline query of {spq} samples < {rules.OFFLINE_MIN_SAMPLES_PER_QUERY}: "
                                       "the round wants at least that many")
            ok = False
    metric = log.get(rr.result_keys.get(scenario, ""), None)
    return ok, metric


def check_accuracy(report: Report, acc: Path, rr: rules.RoundRules, division: str) -> tuple[bool, str]:
    if not acc.is_dir():
        report.add("error", acc, "missing: the accuracy run's logs and accuracy.txt go here")
        return False, ""
    ok = True
    for name in sorted(ACC_FILES - _files(acc)):
        report.add("error", acc / name, "missing")
        ok = False
    for name in sorted(_files(acc) - ACC_FILES):
        report.add("warning", acc / name, "not expected in accuracy/ (reviewers' file list)")
    if not ok:
        return False, ""
    text = (acc / "accuracy.txt").read_text(encoding="utf-8")
    m = next((m for line in text.splitlines() if (m := _ACCURACY.match(line.strip()))), None)
    if not re.search(r"^hash=[0-9a-f]{64}$", text, re.M):
        report.add("error", acc / "accuracy.txt", "no hash= line: add the sha256 of the full mlperf_log_accuracy.json")
        ok = False
    if (acc / "mlperf_log_accuracy.json").stat().st_size > rules.MAX_ACCURACY_LOG_BYTES:
        report.add("error", acc / "mlperf_log_accuracy.json", "not truncated (over 10 KiB): keep its first and last "
                                                               "4 KiB and the hash of the full log in accuracy.txt")
        ok = False
    log = read_detail(acc / "mlperf_log_detail.txt")
    for err in log.errors:
        report.add("error", acc / "mlperf_log_detail.txt", f"LoadGen logged an error: {err}")
        ok = False
    if not m:
        report.add("error", acc / "accuracy.txt", "no 'accuracy=...%' line: score the run with process-mlperf-accuracy")
        return False, ""
    top1 = float(m.group(1))
    if top1 < rr.accuracy_target():
        level = "error" if division == "closed" else "warning"
        report.add(level, acc / "accuracy.txt", f"top-1 {top1:.3f}% is below the closed target "
                                                f"{rr.accuracy_target():.3f}%" + ("" if level == "error"
                                                                                  else " (accepted in open)"))
        ok = ok and level != "error"
    total = int(m.group(2)) if m.group(2) else 0
    if rr.accuracy_sample_count and total < rr.accuracy_sample_count:
        report.add("error", acc / "accuracy.txt", f"accuracy over {total} images; round {rr.name} wants all "
                                                  f"{rr.accuracy_sample_count:,}: run with --imagenet_path")
        ok = False
    return ok, f"{top1:.3f}"


def check_measurements(report: Report, paths: layout.ResultPaths) -> bool:
    ok = True
    for name in MEASURE_FILES + (("mlperf.conf",) if paths.rules.layout == "v3.1" else ()):
        f = paths.measurements / name
        if not f.is_file() or f.stat().st_size == 0:
            report.add("error", f, "missing or empty")
            ok = False
    if paths.rules.layout == "v3.1":
        found = sorted(paths.measurements.glob(f"{paths.system}_*_{paths.scenario}.json")) \
            if paths.measurements.is_dir() else []
        if not found:
            report.add("error", paths.measurements, f"no {paths.system}_<implementation>_{paths.scenario}.json")
            return False
        mfile = found[0]
        impl = mfile.name[len(paths.system) + 1:-len(f"_{paths.scenario}.json")]
        code = paths.root / "code" / paths.model
        if not (code / impl).is_dir() and not code.is_dir():
            report.add("error", code, "missing: the code folder of this model and implementation")
            ok = False
    else:
        mfile = paths.results / "measurements.json"
        if not mfile.is_file():
            report.add("error", mfile, "missing")
            return False
        if not (paths.root / "src").is_dir():
            report.add("error", paths.root / "src", "missing: the code of the submission goes here")
            ok = False
    try:
        data = json.loads(mfile.read_text(encoding="utf-8"))
    except ValueError as exc:
        report.add("error", mfile, f"not JSON ({exc})")
        return False
    for key in rules.MEASUREMENT_FIELDS:
        if not str(data.get(key, "")).strip():
            report.add("error", mfile, f"field {key} is missing or empty")
            ok = False
    return ok


def check_compliance(report: Report, folder: Path, rr: rules.RoundRules, division: str, scenario: str) -> bool:
    ok = True
    for test in rr.compliance_tests:
        tdir = folder / test
        if not tdir.is_dir():
            report.add("error", tdir, "missing: run the compliance tests (run-mlperf-inference-compliance)")
            ok = False
            continue
        vp = tdir / "verify_performance.txt"
        if not vp.is_file() or "TEST PASS" not in vp.read_text(encoding="utf-8"):
            report.add("error", vp, "missing or not 'TEST PASS'")
            ok = False
        valid, _ = check_performance(report, tdir / "performance" / "run_1", rr, division, scenario, test)
        ok = ok and valid
        if test == "TEST01":
            va = tdir / "verify_accuracy.txt"
            if not va.is_file() or "TEST PASS" not in va.read_text(encoding="utf-8"):
                report.add("error", va, "missing or not 'TEST PASS': the logged responses differ from the accuracy "
                                        "run (add baseline_accuracy.txt and compliance_accuracy.txt if that is "
                                        "expected)")
                ok = False
    return ok


def _tree_hygiene(report: Report, root: Path) -> None:
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if p.name.startswith("."):
            report.add("error", rel, "hidden names are not allowed in a submission")
        elif " " in p.name:
            report.add("error", rel, "spaces are not allowed in names")
        elif p.is_dir() and p.name == "__pycache__":
            report.add("error", rel, "remove __pycache__ folders")
        elif p.is_dir() and not any(p.iterdir()):
            report.add("error", rel, "empty folder")
        elif p.is_symlink() and not p.exists():
            report.add("error", rel, "broken symbolic link")
        elif p.is_file() and p.stat().st_size > rules.MAX_FILE_BYTES:
            report.add("error", rel, "over 50 MB")


def check_tree(submission_dir: str | Path, round_name: str) -> Report:
    rr = rules.get_round(round_name)
    top = Path(submission_dir)
    report = Report()
    if not top.is_dir():
        report.add("error", top, "no such folder: give --submission_dir the tree the generator wrote")
        return report
    for f in top.iterdir():
        if f.is_file() and f.suffix not in (".md", ".pdf"):
            report.add("error", f.name, "only .md/.pdf files may sit next to the division folders")
    divisions = [d for d in top.iterdir() if d.is_dir() and d.name in rules.DIVISIONS]
    if not divisions:
        report.add("error", top, "no open/ or closed/ folder")
    for div in divisions:
        for f in div.iterdir():
            if f.is_file():
                report.add("error", f.relative_to(top), "files are not allowed next to the submitter folders")
        for sub in (s for s in div.iterdir() if s.is_dir()):
            _check_submitter(report, top, div.name, sub, rr)
    _tree_hygiene(report, top)
    for p in report.problems:  # paths relative to the tree, as reviewers quote them
        if Path(p.where).is_absolute() and Path(p.where).is_relative_to(top):
            p.where = str(Path(p.where).relative_to(top))
    return report


def _check_submitter(report: Report, top: Path, division: str, sub: Path, rr: rules.RoundRules) -> None:
    results = sub / "results"
    if not results.is_dir():
        report.add("error", results.relative_to(top), "missing")
        return
    mapping = {}
    if (sub / "model_mapping.json").is_file():
        mapping = json.loads((sub / "model_mapping.json").read_text(encoding="utf-8"))
    for system in sorted(p for p in results.iterdir() if p.is_dir()):
        sys_json = sub / "systems" / f"{system.name}.json"
        if not sys_json.is_file():
            report.add("error", sys_json.relative_to(top),
                       "missing: write it with get-mlperf-inference-sut-description")
            continue
        desc = json.loads(sys_json.read_text(encoding="utf-8"))
        for msg in sut_description.problems(desc, division, sub.name):
            report.add("error", sys_json.relative_to(top), msg)
        for model in sorted(p for p in system.iterdir() if p.is_dir()):
            task = rules.TASK if model.name in rules.CLOSED_MODEL_NAMES or "efficientnet" in model.name \
                else mapping.get(model.name)
            if division == "closed" and model.name not in rules.CLOSED_MODEL_NAMES:
                report.add("error", model.relative_to(top), "not a closed-division model name (resnet)")
                continue
            if task != rules.TASK:
                report.add("error", model.relative_to(top), "unknown model: map it to 'resnet' in model_mapping.json")
                continue
            scenarios = sorted(p.name for p in model.iterdir() if p.is_dir())
            required = rr.scenarios_required(desc.get("system_type", ""))
            if division == "closed":
                for s in sorted(set(required) - set(scenarios)):
                    report.add("error", model.relative_to(top), f"closed needs scenario {s} for a "
                                                                f"{desc.get('system_type')} system")
                for s in sorted(set(scenarios) - set(rules.SCENARIOS)):
                    report.add("error", (model / s).relative_to(top), "not a scenario")
            for scenario in scenarios:
                _check_result(report, top, sub, division, system.name, model.name, scenario, rr, desc)


def _check_result(report: Report, top: Path, sub: Path, division: str, system: str, model: str, scenario: str,
                  rr: rules.RoundRules, desc: dict[str, Any]) -> None:
    paths = layout.ResultPaths(sub, rr, system, model, scenario, "")
    perf_ok, metric = check_performance(report, paths.performance, rr, division, scenario)
    acc_ok, top1 = check_accuracy(report, paths.accuracy, rr, division)
    meas_ok = check_measurements(report, paths)
    comp_ok = True
    if division == "closed":
        comp_ok = check_compliance(report, paths.compliance, rr, division, scenario)
    unit = "ms" if scenario in ("SingleStream", "MultiStream") else "samples/s"
    value = "" if metric is None else (f"{float(metric) / 1e6:.3f}" if unit == "ms" else f"{float(metric):.3f}")
    fw = str(desc.get("framework", ""))
    report.rows.append(ResultRow(division, sub.name, system, model, scenario, fw.split(" (")[0], value, unit, top1,
                                 perf_ok and acc_ok and meas_ok and comp_ok, fw))


def run_official_checker(inference_src: str | Path, submission_dir: str | Path, round_name: str,
                         csv_path: str | Path) -> tuple[int, str]:
    """Run MLCommons' submission checker of a local mlcommons/inference clone; (exit code, its summary lines)."""
    src = Path(inference_src) / "tools" / "submission"
    sub = str(Path(submission_dir).resolve())
    if (src / "submission_checker" / "main.py").is_file():  # today's package layout
        cmd = [sys.executable, "-m", "submission_checker.main", "--input", sub, "--version", round_name,
               "--csv", str(Path(csv_path).resolve())]
    elif (src / "submission_checker.py").is_file():
        cmd = [sys.executable, "submission_checker.py", "--input", sub, "--version", round_name,
               "--csv", str(Path(csv_path).resolve())]
    else:
        raise FileNotFoundError(f"--inference_src={inference_src}: no tools/submission/submission_checker(.py) "
                                "there; give a clone of github.com/mlcommons/inference (checked out at the round)")
    proc = subprocess.run(cmd, cwd=src, capture_output=True, text=True, check=False)
    lines = (proc.stdout + proc.stderr).splitlines()
    keep = [ln for ln in lines if "ERROR" in ln or "SUMMARY" in ln or "Results=" in ln or "Systems=" in ln
            or "looks OK" in ln]
    return proc.returncode, "\n".join(keep)
