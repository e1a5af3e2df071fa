"""What MLPerf Inference reviewers enforce for an image-classification result, per round (v3.1, v6.1).

The figures are those of the round's published rules and of MLCommons' submission checker for that round;
our generator builds to them and our validator checks them. Only the image-classification task ("resnet")
is described: it is the only task this collection runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from cm_mlperf.loadgen import rounds

TASK = "resnet"  # MLPerf's benchmark name for image classification (ResNet-50 and open-division models)
SCENARIOS = rounds.SCENARIOS
SEED_KEYS = rounds.SEED_KEYS

# Every system description field the rounds know (v3.1 and v6.1 list the same 35).
SYSTEM_FIELDS = (
    "division", "submitter", "status", "system_name", "number_of_nodes", "host_processor_model_name",
    "host_processors_per_node", "host_processor_core_count", "host_memory_capacity", "host_storage_capacity",
    "host_storage_type", "accelerators_per_node", "accelerator_model_name", "accelerator_memory_capacity",
    "framework", "operating_system", "system_type", "other_software_stack", "host_processor_frequency",
    "host_processor_caches", "host_memory_configuration", "host_processor_interconnect", "host_networking",
    "host_networking_topology", "accelerator_frequency", "accelerator_host_interconnect", "accelerator_interconnect",
    "accelerator_interconnect_topology", "accelerator_memory_configuration", "accelerator_on-chip_memories",
    "cooling", "hw_notes", "sw_notes", "host_network_card_count", "system_type_detail",
)
# ... of which these must hold a meaningful (non-empty) answer.
SYSTEM_FIELDS_NON_EMPTY = (
    "division", "submitter", "system_type", "status", "system_name", "number_of_nodes", "host_processor_model_name",
    "host_processors_per_node", "host_processor_core_count", "host_memory_capacity", "host_memory_configuration",
    "host_storage_capacity", "host_storage_type", "host_networking", "host_network_card_count",
    "host_networking_topology", "accelerators_per_node", "accelerator_model_name", "accelerator_memory_capacity",
    "accelerator_host_interconnect", "accelerator_memory_configuration", "accelerator_interconnect", "cooling",
    "framework", "operating_system", "other_software_stack",
)
MEASUREMENT_FIELDS = ("input_data_types", "retraining", "starting_weights_filename", "weight_data_types",
                      "weight_transformations")
STATUSES = ("available", "preview", "rdi")
SYSTEM_TYPES = ("datacenter", "edge", "datacenter,edge", "edge,datacenter")
DIVISIONS = ("open", "closed")

MIN_DURATION_MS = 600_000
OFFLINE_MIN_SAMPLES_PER_QUERY = 24_576
MAX_ACCURACY_LOG_BYTES = 10 * 1024  # accuracy logs in the tree are truncated below this
TRUNCATED_EDGE_BYTES = 4 * 1024  # ... keeping this much of their start and end, as MLPerf's tool does
MAX_FILE_BYTES = 50 * 1024 * 1024
# ImageNet top-1 of the reference ResNet-50 v1.5; closed needs 99 % of it (open: a warning).
REFERENCE_TOP1 = 76.46
CLOSED_ACCURACY_FRACTION = 0.99
# Names a closed-division image-classification model may have in the tree (mapped to the task by the checker).
CLOSED_MODEL_NAMES = ("resnet", "resnet50")


@dataclass(frozen=True)
class RoundRules:
    name: str
    seeds: dict[str, int]
    compliance_tests: tuple[str, ...]
    # where the measurements files and compliance tests sit: "v3.1" (measurements/, compliance/, code/)
    # or "results" (today's: all in results/<sys>/<model>/<scenario>/, src/)
    layout: str
    # Offline's 24,576 samples per query: in which divisions
    offline_minimum_divisions: tuple[str, ...]
    performance_sample_count: int = 1024
    # accuracy run over the whole dataset (ImageNet validation: 50,000); 0 = no rule
    accuracy_sample_count: int = 0
    test05_seeds: dict[str, int] = field(default_factory=dict)
    # the detail-log key of each scenario's metric
    result_keys: dict[str, str] = field(default_factory=dict)
    required_scenarios: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def code_dir(self) -> str:
        return "code" if self.layout == "v3.1" else "src"

    def accuracy_target(self) -> float:
        return REFERENCE_TOP1 * CLOSED_ACCURACY_FRACTION

    def seeds_for(self, test: str = "") -> dict[str, int]:
        return self.test05_seeds if test == "TEST05" and self.test05_seeds else self.seeds

    def scenarios_required(self, system_type: str) -> tuple[str, ...]:
        return self.required_scenarios.get(system_type, ())


_REQUIRED = {
    "datacenter": ("Server", "Offline"),
    "edge": ("SingleStream", "MultiStream", "Offline"),
    "datacenter,edge": ("SingleStream", "MultiStream", "Offline", "Server"),
    "edge,datacenter": ("SingleStream", "MultiStream", "Offline", "Server"),
}

ROUNDS: dict[str, RoundRules] = {
    "v3.1": RoundRules(
        name="v3.1",
        seeds=dict(rounds.PUBLISHED_SEEDS["v3.1"]),
        # compliance tests' detail logs show these seeds in TEST05 (a compliance test of v3.1 only)
        test05_seeds=rounds.ROUNDS["v3.1"].test05_seeds(),
        compliance_tests=("TEST01", "TEST04", "TEST05"),
        layout="v3.1",
        offline_minimum_divisions=("open", "closed"),
        result_keys=rounds.ROUNDS["v3.1"].result_keys,
        required_scenarios=_REQUIRED,
    ),
    "v6.1": RoundRules(
        name="v6.1",
        seeds=dict(rounds.PUBLISHED_SEEDS["v6.1"]),
        compliance_tests=("TEST01", "TEST04"),
        layout="results",
        offline_minimum_divisions=("closed",),
        accuracy_sample_count=50_000,
        result_keys=rounds.ROUNDS["v6.1"].result_keys,
        required_scenarios=_REQUIRED,
    ),
}


def get_round(name: str | None) -> RoundRules:
    """The rules of 'v3.1' / 'v6.1' (a leading 'r' or no 'v' is accepted; None: today's round)."""
    return ROUNDS[rounds.get_round(name).name]


def round_of_seeds(seeds: dict[str, int]) -> str | None:
    """Which round's seeds these are (None: no round we know)."""
    for rules in ROUNDS.values():
        if all(int(seeds.get(k, -1)) == rules.seeds[k] for k in SEED_KEYS):
            return rules.name
    return None


def mlperf_model_name(model: str, division: str) -> str:
    """The benchmark folder name in the tree: `resnet` for ResNet-50, else the model's own (open) name."""
    if model in ("resnet50", "resnet50-v1.5", "resnet"):
        return "resnet"
    if division == "closed":
        raise ValueError(f"{model} is not the closed-division model of image classification (ResNet-50 v1.5): "
                         "use --division=open")
    return model
