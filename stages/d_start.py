"""python -m stages.d_start — D_start: at most one correct RFT sample per problem after the same
filters as D_seed, merged with D_seed when `start.select.merge_seed` is true (as START trains on both).

Inputs: data/rft/traces, data/d_seed/d_seed, data/problems, params `start`.
Outputs: data/d_start/{d_start,rejected}, metrics/d_start.json, plots/d_start_drops.csv.
"""

from __future__ import annotations

from stages.d_seed import write_selection
from tracemill import params as P
from tracemill import stage, store
from tracemill.start import StartParams, eval_ngrams, select_rft


def main() -> None:
    params = P.load(stage.params_path())
    sp = P.section(StartParams, params, "start")
    samples = store.read_rows("data/rft", "traces")
    problems = store.read_rows("data/problems", "problems")
    quarantine = store.Quarantine("d_start")
    kept = select_rft(samples, sp.select, sp.filters, eval_ngrams(problems, sp), quarantine,
                      {p["problem_id"]: p["domain"] for p in problems})
    if sp.select.merge_seed:
        have = {r["problem_id"] for r in kept}
        kept += [{**r, "reason_kept": "d_seed"} for r in store.read_rows("data/d_seed", "d_seed") if r["problem_id"] not in have]
    write_selection("data/d_start", "d_start", kept, quarantine, stage.fingerprint(sp, ["data/rft", "data/d_seed"]), len(samples))


if __name__ == "__main__":
    stage.run(main)
