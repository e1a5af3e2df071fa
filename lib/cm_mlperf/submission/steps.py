"""The run steps (run.py) of the submission scripts: generate-mlperf-inference-submission,
check-mlperf-inference-submission and get-mlperf-inference-sut-description. Each reads its settings from env."""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cm_mlperf.files import atomic_write
from cm_mlperf.run_step import StepError
from cm_mlperf.submission import check, generate, rules, summary, sut_description

SUT_INPUTS = {"CM_MLPERF_SUT_STATUS": "status", "CM_MLPERF_SUT_SYSTEM_TYPE": "system_type",
              "CM_MLPERF_SUT_FRAMEWORK": "framework", "CM_MLPERF_SUT_COOLING": "cooling",
              "CM_MLPERF_SUT_HW_NOTES": "hw_notes", "CM_MLPERF_SUT_SW_NOTES": "sw_notes"}


def _yes(value: str | None) -> bool:
    return str(value or "").strip().lower() in ("yes", "true", "1", "on")


def overrides_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """The user's system-description overrides: a JSON file (--sut_json), then single inputs (--system_type ...)."""
    out: dict[str, Any] = {}
    path = env.get("CM_MLPERF_SUT_JSON", "")
    if path:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StepError(f"--sut_json={path}: cannot be read as JSON ({exc})") from None
        if not isinstance(data, dict):
            raise StepError(f"--sut_json={path}: must hold a JSON object of system description fields")
        unknown = sorted(set(data) - set(rules.SYSTEM_FIELDS))
        if unknown:
            raise StepError(f"--sut_json={path}: unknown field(s) {', '.join(unknown)}; the round's fields are "
                            f"{', '.join(rules.SYSTEM_FIELDS)}")
        out.update(data)
    out.update({field: env[key] for key, field in SUT_INPUTS.items() if env.get(key)})
    return out


def _write_summary(report: check.Report, summary_dir: Path, title: str) -> tuple[Path, Path]:
    summary_dir.mkdir(parents=True, exist_ok=True)
    md, csv_path = summary_dir / "summary.md", summary_dir / "summary.csv"
    with atomic_write(md) as f:
        f.write(summary.to_markdown(report.rows, title))
    with atomic_write(csv_path) as f:
        f.write(summary.to_csv(report.rows))
    return md, csv_path


def _print_report(report: check.Report) -> None:
    for p in report.problems:
        print(p)
    print(summary.to_markdown(report.rows, "results").split("\n", 2)[2])


def generate_from_env(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, Any]]:
    results_dirs = [d for d in (env.get("CM_MLPERF_RESULTS_DIR") or "").split(",") if d.strip()]
    if not results_dirs:
        raise StepError("give the results: --results_dir=<folder of run-mlperf-inference-app runs>")
    submission_dir = env.get("CM_MLPERF_SUBMISSION_DIR") or ""
    if not submission_dir:
        raise StepError("give where to write the tree: --submission_dir=<folder>")
    round_name = env.get("CM_MLPERF_ROUND") or "v3.1"
    try:
        written = generate.generate(results_dirs, submission_dir, env.get("CM_MLPERF_SUBMITTER") or "",
                                    env.get("CM_MLPERF_DIVISION") or "open", round_name, overrides_from_env(env),
                                    _yes(env.get("CM_MLPERF_ALLOW_TEST_RUNS")))
    except (generate.SubmissionError, ValueError) as exc:
        raise StepError(str(exc)) from None
    report = check.check_tree(submission_dir, round_name)
    summary_dir = Path(env.get("CM_MLPERF_SUMMARY_DIR") or f"{Path(submission_dir).resolve()}-summary")
    md, csv_path = _write_summary(report, summary_dir, f"MLPerf Inference {round_name} submission")
    _print_report(report)
    print(f"{len(written)} result(s) written to {Path(submission_dir).resolve()}; summary: {md}, {csv_path}")
    if report.errors:
        print(f"our check found {len(report.errors)} error(s) above: reviewers would reject those results")
    return ({"CM_MLPERF_SUBMISSION_DIR": str(Path(submission_dir).resolve()),
             "CM_MLPERF_SUBMISSION_SUMMARY": str(md), "CM_MLPERF_SUBMISSION_ERRORS": str(len(report.errors))},
            {"mlperf_submission": [r.__dict__ for r in report.rows]})


def check_from_env(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, Any]]:
    submission_dir = env.get("CM_MLPERF_SUBMISSION_DIR") or ""
    if not submission_dir:
        raise StepError("give the tree to check: --submission_dir=<folder>")
    round_name = env.get("CM_MLPERF_ROUND") or "v3.1"
    try:
        report = check.check_tree(submission_dir, round_name)
    except ValueError as exc:
        raise StepError(str(exc)) from None
    summary_dir = Path(env.get("CM_MLPERF_SUMMARY_DIR") or f"{Path(submission_dir).resolve()}-summary")
    md, _ = _write_summary(report, summary_dir, f"MLPerf Inference {round_name} submission")
    _print_report(report)
    official_rc = None
    if env.get("CM_MLPERF_INFERENCE_SOURCE"):
        try:
            official_rc, text = check.run_official_checker(env["CM_MLPERF_INFERENCE_SOURCE"], submission_dir,
                                                           round_name, summary_dir / "official-summary.csv")
        except FileNotFoundError as exc:
            raise StepError(str(exc)) from None
        print(f"--- MLCommons submission checker ({env['CM_MLPERF_INFERENCE_SOURCE']}, --version {round_name}) ---")
        print(text)
    errors = len(report.errors)
    verdict = "no errors" if not errors else f"{errors} error(s)"
    print(f"our check: {verdict}, {len(report.rows)} result(s); summary: {md}")
    if errors or (official_rc not in (None, 0)):
        who = "our check" if errors else "the official checker"
        raise StepError(f"the submission in {submission_dir} has errors ({who}): see the lines above")
    return {"CM_MLPERF_SUBMISSION_CHECKED": "yes"}, {"mlperf_submission": [r.__dict__ for r in report.rows]}


PACKAGES = {"onnxruntime": "onnxruntime", "tvm": "apache-tvm", "mojo": "mojo", "mojo-native": "mojo"}


def _installed_version(backend: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(PACKAGES.get(backend, backend))
    except metadata.PackageNotFoundError:
        return ""


def describe_from_env(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, Any]]:
    system = env.get("CM_MLPERF_SYSTEM_NAME") or ""
    backend = env.get("CM_MLPERF_BACKEND") or "onnxruntime"
    if not system:
        cpu = (env.get("CM_HOST_CPU_MODEL_NAME") or "cpu").lower()
        system = "-".join("".join(c if c.isalnum() else " " for c in cpu).split() + [backend])
    desc = sut_description.describe(env, division=env.get("CM_MLPERF_DIVISION") or "open",
                                    submitter=env.get("CM_MLPERF_SUBMITTER") or "", system_name=system,
                                    backend=backend,
                                    backend_version=env.get("CM_MLPERF_BACKEND_VERSION") or _installed_version(backend),
                                    overrides=overrides_from_env(env))
    problems = sut_description.problems(desc)
    if problems:
        raise StepError(f"the system description is incomplete: {problems[0]} (give it with --sut_json or the "
                        "matching input)")
    out = Path(env.get("CM_MLPERF_SUT_OUTPUT") or f"{system}.json").resolve()
    with atomic_write(out) as f:
        json.dump(desc, f, indent=2)
        f.write("\n")
    print(f"system description ({len(desc)} fields): {out}")
    return {"CM_MLPERF_SUT_DESCRIPTION": str(out), "CM_MLPERF_SYSTEM_NAME": system}, {"mlperf_sut": desc}
