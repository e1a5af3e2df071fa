"""Where each file of a submission goes, per round.

v3.1:  <division>/<submitter>/systems/<sys>.json
       <division>/<submitter>/code/<model>/<impl>/README.md
       <division>/<submitter>/measurements/<sys>/<model>/<scenario>/{README.md, mlperf.conf, user.conf,
                                                                     <sys>_<impl>_<scenario>.json}
       <division>/<submitter>/results/<sys>/<model>/<scenario>/{performance/run_1/, accuracy/}
       <division>/<submitter>/compliance/<sys>/<model>/<scenario>/TEST0x/
today: <division>/<submitter>/src/<model>/<impl>/README.md, and measurements.json, README.md, user.conf,
       mlperf.conf and TEST0x/ all in results/<sys>/<model>/<scenario>/
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cm_mlperf.submission.rules import RoundRules


@dataclass(frozen=True)
class ResultPaths:
    root: Path  # <division>/<submitter>
    rules: RoundRules
    system: str
    model: str
    scenario: str
    impl: str

    @property
    def results(self) -> Path:
        return self.root / "results" / self.system / self.model / self.scenario

    @property
    def performance(self) -> Path:
        return self.results / "performance" / "run_1"

    @property
    def accuracy(self) -> Path:
        return self.results / "accuracy"

    @property
    def measurements(self) -> Path:
        if self.rules.layout == "v3.1":
            return self.root / "measurements" / self.system / self.model / self.scenario
        return self.results

    @property
    def measurements_json(self) -> Path:
        if self.rules.layout == "v3.1":
            return self.measurements / f"{self.system}_{self.impl}_{self.scenario}.json"
        return self.results / "measurements.json"

    @property
    def compliance(self) -> Path:
        if self.rules.layout == "v3.1":
            return self.root / "compliance" / self.system / self.model / self.scenario
        return self.results

    @property
    def code(self) -> Path:
        return self.root / self.rules.code_dir / self.model / self.impl

    @property
    def system_json(self) -> Path:
        return self.root / "systems" / f"{self.system}.json"


def division_root(submission_dir: str | Path, division: str, submitter: str) -> Path:
    return Path(submission_dir) / division / submitter
