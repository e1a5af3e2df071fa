"""Per-round MLPerf Inference data: the round's mlperf.conf, its RNG seeds, and what a result is.

The one home of this knowledge: both harnesses (app-mlperf-inference-python, the native Mojo one) and the
submission rules read it. The confs ship with the package (conf/<round>/mlperf.conf, package data).

A run is made for one round. LoadGen 6.0.17 carries today's (v6.1) mlperf.conf built in; older rounds
are reproduced by loading the built-in conf and then setting that round's seeds on TestSettings
(for image classification the other resnet50 keys are identical across v3.1 and v6.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent / "conf"

SEED_KEYS = ("qsl_rng_seed", "sample_index_rng_seed", "schedule_rng_seed")
# TEST05 (compliance) runs with these instead; LoadGen takes them from TestSettings, not from audit.config
TEST05_SEED_KEYS = ("test05_qsl_rng_seed", "test05_sample_index_rng_seed", "test05_schedule_rng_seed")
SCENARIOS = ("SingleStream", "MultiStream", "Server", "Offline")


@dataclass(frozen=True)
class Round:
    name: str
    # True where LoadGen's built-in conf is this round's conf (nothing to override).
    builtin: bool
    # Detail-log key holding the Server metric (v3.1 scored the scheduled rate, later rounds the completed one).
    server_result_key: str

    @property
    def conf_path(self) -> Path:
        return CONF_DIR / self.name / "mlperf.conf"

    def conf_text(self) -> str:
        return self.conf_path.read_text()

    def conf(self) -> dict[str, str]:
        return parse_conf(self.conf_text())

    def value(self, model: str, scenario: str, key: str) -> str | None:
        return lookup(self.conf(), model, scenario, key)

    def seeds(self, keys: tuple[str, ...] = SEED_KEYS + TEST05_SEED_KEYS) -> dict[str, int]:
        """The round's RNG seeds (the main three and TEST05's) from its mlperf.conf."""
        kv = self.conf()
        out = {}
        for key in keys:
            val = lookup(kv, "*", "*", key)
            if val is None:
                raise ValueError(f"{self.conf_path} has no {key}")
            out[key] = int(val, 0)
        return out

    @property
    def result_keys(self) -> dict[str, str]:
        """The detail-log key of each scenario's metric (the figure reviewers score)."""
        return {"Offline": "result_samples_per_second", "SingleStream": "early_stopping_latency_ss",
                "MultiStream": "early_stopping_latency_ms", "Server": self.server_result_key}

    def test05_seeds(self) -> dict[str, int]:
        """TEST05's seeds under the main keys' names, as a TEST05 run's detail log reports them."""
        return {k.removeprefix("test05_"): v for k, v in self.seeds(TEST05_SEED_KEYS).items()}

    def performance_sample_count(self, model: str, scenario: str = "Offline") -> int:
        val = self.value(model, scenario, "performance_sample_count_override")
        return int(val, 0) if val is not None else 0


ROUNDS: dict[str, Round] = {
    "v3.1": Round("v3.1", builtin=False, server_result_key="result_scheduled_samples_per_sec"),
    "v6.1": Round("v6.1", builtin=True, server_result_key="result_completed_samples_per_sec"),
}
DEFAULT_ROUND = "v6.1"

# The seeds as published for each round; a test checks they agree with the conf files kept here.
PUBLISHED_SEEDS: dict[str, dict[str, int]] = {
    "v3.1": {
        "qsl_rng_seed": 148687905518835231,
        "sample_index_rng_seed": 520418551913322573,
        "schedule_rng_seed": 811580660758947900,
    },
    "v6.1": {
        "qsl_rng_seed": 2085463073848966840,
        "sample_index_rng_seed": 2747215439041700203,
        "schedule_rng_seed": 16159082839903944936,
    },
}


def get_round(name: str | None) -> Round:
    """Return the Round for 'v3.1' / '3.1' / 'r3.1' (default: today's round)."""
    key = (name or DEFAULT_ROUND).strip().lower()
    if key.startswith("r"):
        key = key[1:]
    if not key.startswith("v"):
        key = "v" + key
    if key not in ROUNDS:
        raise ValueError(f"unknown MLPerf round '{name}': use --round={' or --round='.join(sorted(ROUNDS))}")
    return ROUNDS[key]


def parse_conf(text: str) -> dict[str, str]:
    """Parse LoadGen's 'model.scenario.key = value' format (later lines win, '#' starts a comment)."""
    kv: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.split("#", 1)[0].strip()
        if key.strip() and value:
            kv[key.strip()] = value
    return kv


def lookup(kv: dict[str, str], model: str, scenario: str, key: str) -> str | None:
    """Same precedence as LoadGen: model.scenario, *.scenario, model.*, *.*."""
    for m, s in ((model, scenario), ("*", scenario), (model, "*"), ("*", "*")):
        val = kv.get(f"{m}.{s}.{key}")
        if val is not None:
            return val
    return None
