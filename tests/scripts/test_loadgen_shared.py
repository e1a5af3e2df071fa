"""cm_mlperf.loadgen: the one home of round data, user.conf writing and LoadGen log reading."""
from __future__ import annotations

import json

import pytest
from cm_mlperf.loadgen import logs, rounds, user_conf
from cm_mlperf.mojo import native
from cm_mlperf.submission import rules
from conftest import REPO_ROOT, SCRIPTS_DIR

HARNESS = "app-mlperf-inference-python"


def _line(key, value, **meta):
    return ":::MLLOG " + json.dumps({"key": key, "value": value, "metadata": meta})


def test_detail_log_first_and_last_values_and_flags(tmp_path):
    path = tmp_path / logs.DETAIL_LOG
    path.write_text("\n".join([
        "not a log line", _line("result_validity", "INVALID"), _line("result_validity", "VALID"),
        _line("error_invalid_config", "Multiple conf files are used", is_error=True),
        _line("warning_generic_message", "slow", is_warning=True),
    ]) + "\n")
    log = logs.read_detail(path)
    assert log.get("result_validity") == "INVALID" and not log.valid  # reviewers read the first value
    assert log.latest["result_validity"] == "VALID"
    assert log.errors == ["Multiple conf files are used"]
    assert log.error_records == [("error_invalid_config", "Multiple conf files are used")]
    assert log.warning_records == [("warning_generic_message", "slow")]


def test_detail_log_bad_line_strict_or_skipped(tmp_path):
    path = tmp_path / logs.DETAIL_LOG
    path.write_text(_line("loadgen_version", "6.0.17") + "\n:::MLLOG {broken\n")
    with pytest.raises(ValueError, match=r"mlperf_log_detail.txt:2: not a LoadGen log line"):
        logs.read_detail(path)
    assert logs.read_detail(path, strict=False).latest == {"loadgen_version": "6.0.17"}


def test_submission_rules_take_the_rounds_seeds():
    for name, rnd in rounds.ROUNDS.items():
        assert rules.get_round(name).seeds == rnd.seeds(rounds.SEED_KEYS) == rounds.PUBLISHED_SEEDS[name]
        assert rules.get_round(name).result_keys["Server"] == rnd.server_result_key
    assert rules.get_round("v3.1").seeds_for("TEST05") == {
        "qsl_rng_seed": 793197339507417767, "sample_index_rng_seed": 255610748586851044,
        "schedule_rng_seed": 352213341366340113}
    with pytest.raises(ValueError, match=r"unknown MLPerf round 'v2.0': use --round=v3.1 or --round=v6.1"):
        rules.get_round("v2.0")


def test_both_harnesses_write_the_same_user_conf(script_module, tmp_path):
    settings = script_module(HARNESS, "mlperf_settings")
    base = tmp_path / "base.conf"
    base.write_text("*.*.min_duration = 1000\n")
    ours = settings.build_user_conf(settings.HarnessSettings(
        scenario="Server", target_qps=12.5, target_latency_ms=99.6, min_query_count=5), 64, base.read_text())
    mojo = native.user_conf_text(native.NativeSettings(
        scenario="Server", mode="performance", onnx_path="", dataset_path="", output_dir="", target_qps=12.5,
        target_latency_ms=99.6, min_query_count=5, user_conf=str(base)), 64)
    assert ours.replace("the harness", "X") == mojo.replace("the native Mojo harness", "X")
    assert ours == user_conf.build_user_conf("Server", 64, target_qps=12.5, target_latency_ms=99.6,
                                             min_query_count=5, base_text=base.read_text())
    assert "resnet50.Server.target_latency = 100\n" in ours and ours.endswith("override = 64\n")


def test_round_confs_ship_as_package_data():
    """A non-editable install must carry the .conf files: pyproject's package-data names them."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "cm_mlperf.loadgen" in project["packages"]
    patterns = project["package-data"]["cm_mlperf.loadgen"]
    for rnd in rounds.ROUNDS.values():
        rel = rnd.conf_path.relative_to(rounds.CONF_DIR.parent)
        assert any(rel.match(p) for p in patterns), rel
    assert not list(SCRIPTS_DIR.glob("*/mlperf_conf"))  # no script carries its own copy
