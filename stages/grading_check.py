"""python -m stages.grading_check pairs=FILE metrics=FILE — grade the labelled set with our grader and with math-verify.

Inputs: `pairs` (the labelled grading set), the `grading` section of params.yaml.
Outputs: `metrics` — per kind and overall, pairs, right and false positives of each
grader, and the grader versions; no timings (they do not reproduce; benchmarks/grading.py times).
"""

from __future__ import annotations

from pathlib import Path

from tracemill import params as P
from tracemill import stage, store
from tracemill.grading import GradingParams
from tracemill.grading.labelled import check, load_pairs


def main() -> None:
    a = stage.args(["pairs", "metrics"])
    cfg = P.section(GradingParams, P.load(stage.params_path()), "grading")
    store.write_json(a["metrics"], check(cfg, load_pairs(Path(a["pairs"]))))


if __name__ == "__main__":
    stage.run(main)
