"""Submission tree generation and our validator, on recorded logs of real runs (tests/fixtures/submission)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from cm_mlperf.submission import check, generate, rules, summary, sut_description

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "submission"
SYSTEM, MODEL, SCENARIO = "amd-epyc-onnxruntime", "efficientnet-lite0", "Offline"


def _runs(tmp_path: Path, *names: str) -> Path:
    results = tmp_path / "results"
    results.mkdir(exist_ok=True)
    for i, name in enumerate(names, 1):
        shutil.copytree(FIXTURES / name / "run-001", results / f"run-{i:03d}")
    return results


@pytest.fixture
def full_tree(tmp_path: Path) -> Path:
    results = _runs(tmp_path, "full-v31")
    generate.generate([results], tmp_path / "sub", "MyOrg", "open", "v3.1")
    return tmp_path / "sub"


def _root(tree: Path, division: str = "open") -> Path:
    return tree / division / "MyOrg"


def _scenario(tree: Path, division: str = "open") -> Path:
    return _root(tree, division) / "results" / SYSTEM / MODEL / SCENARIO


# ------------------------------------------------------------------------------------------------ generation


def test_v31_tree_has_the_rounds_layout_and_contents(full_tree: Path) -> None:
    root = _root(full_tree)
    res = _scenario(full_tree)
    assert sorted(p.name for p in (res / "performance" / "run_1").iterdir()) == \
        ["mlperf_log_detail.txt", "mlperf_log_summary.txt"]
    assert sorted(p.name for p in (res / "accuracy").iterdir()) == \
        ["accuracy.txt", "mlperf_log_accuracy.json", "mlperf_log_detail.txt", "mlperf_log_summary.txt"]
    meas = root / "measurements" / SYSTEM / MODEL / SCENARIO
    impl_json = meas / f"{SYSTEM}_mlperf-tvm-cm-onnxruntime_{SCENARIO}.json"
    assert sorted(p.name for p in meas.iterdir()) == sorted(["README.md", "mlperf.conf", "user.conf", impl_json.name])
    fields = json.loads(impl_json.read_text())
    assert set(fields) == set(rules.MEASUREMENT_FIELDS) and all(fields.values())
    assert fields["starting_weights_filename"] == "efficientnet-lite0-57934424.pth"
    readme = (meas / "README.md").read_text()
    assert "cm run script --tags=run-mlperf,inference,_onnxruntime,_submission,_efficientnet-lite0,_offline " \
           "--round=v3.1 --division=open" in readme
    assert "148687905518835231" in (meas / "mlperf.conf").read_text()  # v3.1's seeds
    assert (root / "code" / MODEL / "mlperf-tvm-cm-onnxruntime" / "README.md").is_file()
    assert json.loads((root / "model_mapping.json").read_text()) == {MODEL: "resnet"}
    desc = json.loads((root / "systems" / f"{SYSTEM}.json").read_text())
    assert list(desc)[:len(rules.SYSTEM_FIELDS)] == list(rules.SYSTEM_FIELDS)
    assert desc["accelerators_per_node"] == "0" and desc["division"] == "open" and desc["submitter"] == "MyOrg"
    assert desc["framework"] == "ONNX Runtime 1.32.0"
    assert sut_description.problems(desc, "open", "MyOrg") == []


def test_accuracy_txt_keeps_the_score_and_the_hash_of_the_full_log(full_tree: Path) -> None:
    full_log = FIXTURES / "full-v31" / "run-001" / SYSTEM / MODEL / SCENARIO / "accuracy" / "mlperf_log_accuracy.json"
    text = (_scenario(full_tree) / "accuracy" / "accuracy.txt").read_text().splitlines()
    assert text[0].startswith("accuracy=87.500%, good=7, total=8")
    assert text[-1] == "hash=" + hashlib.sha256(full_log.read_bytes()).hexdigest()


def test_large_accuracy_log_is_truncated_as_mlperf_does(tmp_path: Path) -> None:
    src = tmp_path / "log.json"
    src.write_text("[\n" + ",\n".join(f'{{"seq_id": {i}, "qsl_idx": {i}, "data": "00004842"}}'
                                      for i in range(2000)) + "\n]\n")
    digest = generate.truncate_accuracy_log(src, tmp_path / "out.json")
    out = (tmp_path / "out.json").read_bytes()
    assert digest == hashlib.sha256(src.read_bytes()).hexdigest()
    assert len(out) == 2 * rules.TRUNCATED_EDGE_BYTES + len(b"\n\n...\n\n") < rules.MAX_ACCURACY_LOG_BYTES
    assert out.startswith(src.read_bytes()[:100]) and out.endswith(src.read_bytes()[-100:])


def test_v61_layout_puts_measurements_in_results_and_code_in_src(tmp_path: Path) -> None:
    results = _runs(tmp_path, "quick-v61")
    generate.generate([results], tmp_path / "sub", "MyOrg", "open", "v6.1", allow_test_runs=True)
    root = _root(tmp_path / "sub")
    res = _scenario(tmp_path / "sub")
    assert sorted(p.name for p in res.iterdir()) == \
        ["README.md", "accuracy", "measurements.json", "mlperf.conf", "performance", "user.conf"]
    assert set(json.loads((res / "measurements.json").read_text())) == set(rules.MEASUREMENT_FIELDS)
    assert (root / "src" / MODEL / "mlperf-tvm-cm-onnxruntime" / "README.md").is_file()
    assert not (root / "measurements").exists() and not (root / "code").exists()
    assert "2085463073848966840" in (res / "mlperf.conf").read_text()  # v6.1's seeds
    # what the newest MLCommons checker also reports for this test run, and nothing else
    messages = sorted(p.message.split(":")[0] for p in check.check_tree(tmp_path / "sub", "v6.1").errors)
    assert messages == ["accuracy over 8 images; round v6.1 wants all 50,000", "min_duration 1000 ms < 600000 ms",
                        "performance sample count 8 < 1024"]


def test_refuses_v31_runs_relabelled_as_v61_by_their_seeds(tmp_path: Path) -> None:
    results = _runs(tmp_path, "full-v31")
    summary_path = results / "run-001" / generate.RUN_SUMMARY
    data = json.loads(summary_path.read_text())
    data["round"] = "v6.1"
    summary_path.write_text(json.dumps(data))
    with pytest.raises(generate.SubmissionError, match="seeds of v3.1, not of v6.1"):
        generate.generate([results], tmp_path / "sub", "MyOrg", "open", "v6.1")
    assert not (tmp_path / "sub").exists()  # nothing half-written


def test_merges_runs_and_a_newer_run_replaces_a_result(tmp_path: Path) -> None:
    results = _runs(tmp_path, "full-v31")
    sub = tmp_path / "sub"
    generate.generate([results], sub, "MyOrg", "open", "v3.1")
    # a second backend's result joins the tree
    other = tmp_path / "other"
    shutil.copytree(FIXTURES / "full-v31" / "run-001", other / "run-001")
    run = other / "run-001"
    (run / SYSTEM).rename(run / "amd-epyc-tvm")
    data = json.loads((run / generate.RUN_SUMMARY).read_text())
    data["system"], data["backend"] = "amd-epyc-tvm", "tvm"
    data["env"].update({"CM_TVM_VERSION": "0.27.0", "CM_TVM_LLVM_VERSION": "22.1.0", "CM_TVM_TUNED": "yes"})
    (run / generate.RUN_SUMMARY).write_text(json.dumps(data))
    generate.generate([other], sub, "MyOrg", "open", "v3.1")
    systems = sorted(p.name for p in (_root(sub) / "results").iterdir())
    assert systems == ["amd-epyc-onnxruntime", "amd-epyc-tvm"]
    desc = json.loads((_root(sub) / "systems" / "amd-epyc-tvm.json").read_text())
    assert desc["framework"] == "Apache TVM 0.27.0 (LLVM 22, tuned)"
    report = check.check_tree(sub, "v3.1")
    assert not report.errors and len(report.rows) == 2


def test_refuses_test_runs_unless_asked(tmp_path: Path) -> None:
    results = _runs(tmp_path, "quick-v31")
    with pytest.raises(generate.SubmissionError, match="test run at shortened settings"):
        generate.generate([results], tmp_path / "sub", "MyOrg", "open", "v3.1")
    generate.generate([results], tmp_path / "sub", "MyOrg", "open", "v3.1", allow_test_runs=True)
    report = check.check_tree(tmp_path / "sub", "v3.1")
    messages = " | ".join(p.message for p in report.errors)
    assert "performance sample count 8 < 1024" in messages and "min_duration 1000 ms < 600000 ms" in messages
    assert "Offline query of" in messages


def test_refuses_runs_of_another_round(tmp_path: Path) -> None:
    results = _runs(tmp_path, "full-v31")
    with pytest.raises(generate.SubmissionError, match="run of round v3.1, not v6.1"):
        generate.generate([results], tmp_path / "sub", "MyOrg", "open", "v6.1")


def test_refuses_invalid_runs(tmp_path: Path) -> None:
    results = _runs(tmp_path, "full-v31")
    path = results / "run-001" / generate.RUN_SUMMARY
    data = json.loads(path.read_text())
    data["valid"], data["invalid_reason"] = False, "min duration not met"
    path.write_text(json.dumps(data))
    with pytest.raises(generate.SubmissionError, match="INVALID"):
        generate.generate([results], tmp_path / "sub", "MyOrg", "open", "v3.1")


def test_refuses_a_non_resnet_model_in_closed(tmp_path: Path) -> None:
    results = _runs(tmp_path, "full-v31")
    with pytest.raises(generate.SubmissionError, match="not the closed-division model"):
        generate.generate([results], tmp_path / "sub", "MyOrg", "closed", "v3.1")


def test_bad_submitter_and_missing_results(tmp_path: Path) -> None:
    with pytest.raises(generate.SubmissionError, match="--submitter"):
        generate.generate([_runs(tmp_path, "full-v31")], tmp_path / "sub", "My Org", "open", "v3.1")
    with pytest.raises(generate.SubmissionError, match="--results_dir"):
        generate.generate([tmp_path / "nope"], tmp_path / "sub", "MyOrg", "open", "v3.1")


@pytest.mark.skipif(not os.environ.get("MLPERF_INFERENCE_SRC"),
                    reason="set MLPERF_INFERENCE_SRC to a clone of mlcommons/inference checked out at v3.1")
def test_official_v31_checker_accepts_the_tree(full_tree: Path, tmp_path: Path) -> None:
    rc, text = check.run_official_checker(os.environ["MLPERF_INFERENCE_SRC"], full_tree, "v3.1", tmp_path / "o.csv")
    assert rc == 0 and "SUMMARY: submission looks OK" in text and "Open Results=1" in text, text
    assert "ERROR" not in text


# ------------------------------------------------------------------------------------------------- validator


def test_generated_tree_passes_our_check_and_summary_lists_it(full_tree: Path) -> None:
    report = check.check_tree(full_tree, "v3.1")
    assert report.errors == []
    (row,) = report.rows
    assert (row.system, row.model, row.scenario, row.valid, row.accuracy) == (SYSTEM, MODEL, SCENARIO, True, "87.500")
    assert float(row.result) > 0 and row.unit == "samples/s"
    md, csv_text = summary.to_markdown(report.rows), summary.to_csv(report.rows)
    assert f"| {SYSTEM} | ONNX Runtime 1.32.0 | {MODEL} | Offline |" in md and md.rstrip().endswith("| yes |")
    assert csv_text.splitlines()[0].split(",") == list(summary.COLUMNS)
    # open division: accuracy below the closed target is a warning, not an error
    acc = _scenario(full_tree) / "accuracy" / "accuracy.txt"
    acc.write_text(acc.read_text().replace("accuracy=87.500%, good=7", "accuracy=62.500%, good=5"))
    report = check.check_tree(full_tree, "v3.1")
    assert report.errors == [] and "below the closed target" in report.problems[0].message
    assert report.problems[0].level == "warning"


def _errors(tree: Path, round_name: str = "v3.1") -> str:
    return " | ".join(str(p) for p in check.check_tree(tree, round_name).errors)


def test_check_rejects_a_missing_log(full_tree: Path) -> None:
    (_scenario(full_tree) / "performance" / "run_1" / "mlperf_log_detail.txt").unlink()
    assert "run_1/mlperf_log_detail.txt: missing" in _errors(full_tree)


def test_check_rejects_extra_files_in_a_run(full_tree: Path) -> None:
    (_scenario(full_tree) / "performance" / "run_1" / "harness_result.json").write_text("{}")
    assert "harness_result.json: not allowed here" in _errors(full_tree)


def test_check_rejects_an_invalid_run(full_tree: Path) -> None:
    log = _scenario(full_tree) / "performance" / "run_1" / "mlperf_log_detail.txt"
    log.write_text(log.read_text().replace('"key": "result_validity", "value": "VALID"',
                                           '"key": "result_validity", "value": "INVALID"'))
    assert "the run is INVALID" in _errors(full_tree)


def test_check_rejects_seeds_of_another_round(full_tree: Path) -> None:
    assert "RNG seeds of v3.1, not of v6.1" in _errors(full_tree, "v6.1")


def test_check_rejects_missing_and_empty_system_fields(full_tree: Path) -> None:
    path = _root(full_tree) / "systems" / f"{SYSTEM}.json"
    desc = json.loads(path.read_text())
    del desc["host_networking"]
    desc["cooling"] = ""
    path.write_text(json.dumps(desc))
    errors = _errors(full_tree)
    assert "field host_networking is missing" in errors and "field cooling is empty" in errors


def test_check_rejects_a_wrong_division_in_the_system_description(full_tree: Path) -> None:
    path = _root(full_tree) / "systems" / f"{SYSTEM}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "division": "closed"}))
    assert "division is 'closed' but the folder is 'open'" in _errors(full_tree)


def test_check_rejects_empty_measurement_fields(full_tree: Path) -> None:
    meas = next((_root(full_tree) / "measurements").rglob("*_Offline.json"))
    meas.write_text(json.dumps({**json.loads(meas.read_text()), "weight_transformations": ""}))
    assert "field weight_transformations is missing or empty" in _errors(full_tree)


def _as_closed(tree: Path) -> Path:
    """The open tree moved to closed/ with the model named resnet (as a ResNet-50 result would be)."""
    (tree / "open").rename(tree / "closed")
    root = _root(tree, "closed")
    (root / "model_mapping.json").unlink()
    for sub in ("results", "measurements"):
        (root / sub / SYSTEM / MODEL).rename(root / sub / SYSTEM / "resnet")
    (root / "code" / MODEL).rename(root / "code" / "resnet")
    path = root / "systems" / f"{SYSTEM}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "division": "closed"}))
    return tree


def test_check_rejects_in_closed_wrong_scenarios_low_accuracy_and_no_compliance(full_tree: Path) -> None:
    errors = _errors(_as_closed(full_tree))
    assert "closed needs scenario SingleStream for a edge system" in errors
    assert "closed needs scenario MultiStream" in errors
    assert "top-1 87.500% is below the closed target" not in errors  # 87.5 is above 75.7
    assert "compliance/amd-epyc-onnxruntime/resnet/Offline/TEST01: missing" in errors


def test_check_rejects_accuracy_below_target_in_closed(full_tree: Path) -> None:
    tree = _as_closed(full_tree)
    acc = _root(tree, "closed") / "results" / SYSTEM / "resnet" / SCENARIO / "accuracy" / "accuracy.txt"
    acc.write_text(acc.read_text().replace("accuracy=87.500%, good=7", "accuracy=62.500%, good=5"))
    assert "top-1 62.500% is below the closed target 75.695%" in _errors(tree)


def test_check_rejects_a_missing_hash_and_an_untruncated_log(full_tree: Path) -> None:
    acc = _scenario(full_tree) / "accuracy"
    (acc / "accuracy.txt").write_text((acc / "accuracy.txt").read_text().split("hash=")[0])
    (acc / "mlperf_log_accuracy.json").write_text("[" + " " * 20000 + "]")
    errors = _errors(full_tree)
    assert "no hash= line" in errors and "not truncated" in errors


def test_check_rejects_files_outside_the_division_and_empty_folders(full_tree: Path) -> None:
    (full_tree / "notes.txt").write_text("x")
    (_root(full_tree) / "results" / SYSTEM / "empty").mkdir()
    errors = _errors(full_tree)
    assert "notes.txt: only .md/.pdf files" in errors and "empty folder" in errors


def test_v61_wants_accuracy_over_the_whole_dataset(tmp_path: Path) -> None:
    rr = rules.get_round("v6.1")
    report = check.Report()
    acc = tmp_path / "accuracy"
    shutil.copytree(FIXTURES / "full-v31" / "run-001" / SYSTEM / MODEL / SCENARIO / "accuracy", acc)
    check.check_accuracy(report, acc, rr, "open")
    assert "wants all 50,000" in " ".join(p.message for p in report.errors)


def test_round_rules() -> None:
    assert rules.get_round("3.1").name == "v3.1" and rules.get_round("r6.1").name == "v6.1"
    with pytest.raises(ValueError, match="--round=v3.1 or --round=v6.1"):
        rules.get_round("v9.9")
    assert rules.round_of_seeds(rules.ROUNDS["v6.1"].seeds) == "v6.1"
    assert len(rules.SYSTEM_FIELDS) == 35 and len(rules.SYSTEM_FIELDS_NON_EMPTY) == 26
    assert rules.mlperf_model_name("resnet50", "closed") == "resnet"
    assert rules.mlperf_model_name("efficientnet-lite0", "open") == "efficientnet-lite0"


def test_framework_string_names_backend_version_and_tuning() -> None:
    env = {"CM_TVM_VERSION": "0.27.0", "CM_TVM_LLVM_VERSION": "22.1.8", "CM_TVM_TUNED": "no"}
    assert sut_description.framework_string("tvm", env) == "Apache TVM 0.27.0 (LLVM 22, untuned)"
    assert sut_description.framework_string("onnxruntime", {}, "1.32.0") == "ONNX Runtime 1.32.0"
    desc = sut_description.describe({}, division="open", submitter="X", system_name="s", backend="onnxruntime",
                                    overrides={"cooling": "liquid", "system_type": "datacenter"})
    assert desc["cooling"] == "liquid" and desc["system_type"] == "datacenter" and desc["accelerators_per_node"] == "0"


def test_framework_string_names_the_mojo_native_harness():
    from cm_mlperf.submission import sut_description

    assert sut_description.framework_string("mojo-native", {}, "1.2.0") == "Mojo (native harness) 1.2.0"
    assert sut_description.framework_string("mojo", {}, "1.2.0") == "Mojo 1.2.0"
