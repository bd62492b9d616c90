"""python -m stages.grading_check PAIRS — grade the labelled set with our grader and with math-verify.

Inputs: PAIRS (tests/data/grading/pairs.jsonl), the `grading` section of params.yaml.
Outputs: metrics/grading.json — per kind and overall, pairs, right and false positives of each
grader, and the grader versions; no timings (they do not reproduce; benchmarks/grading.py times).
"""

from __future__ import annotations

import sys
from pathlib import Path

from tracemill import params as P
from tracemill import stage, store
from tracemill.grading import GradingParams
from tracemill.grading.labelled import check, load_pairs

METRICS = "metrics/grading.json"


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m stages.grading_check PAIRS (the labelled set, tests/data/grading/pairs.jsonl)")
    cfg = P.section(GradingParams, P.load(stage.params_path()), "grading")
    store.write_json(METRICS, check(cfg, load_pairs(Path(sys.argv[1]))))


if __name__ == "__main__":
    stage.run(main)
