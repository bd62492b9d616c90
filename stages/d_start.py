"""python -m stages.d_start samples=DIR seed=DIR problems=DIR out=DIR metrics=FILE drops=FILE — D_start:
at most one correct RFT sample per problem after the same filters as D_seed, merged with D_seed when
`start.select.merge_seed` is true (as START trains on both).

Inputs: `samples` (rft's traces), `seed` (D_seed), `problems`, params `start`.
Outputs: `out`/{d_start,rejected}, `metrics`, `drops` (a bar per drop reason).
"""

from __future__ import annotations

from tracemill import params as P
from tracemill import stage, store
from tracemill.start import eval_ngrams, select_rft, write_selection
from tracemill.start_params import StartParams


def main() -> None:
    a = stage.args(["samples", "seed", "problems", "out", "metrics", "drops"])
    params = P.load(stage.params_path())
    sp = P.section(StartParams, params, "start")
    samples = store.read_rows(a["samples"], "traces")
    problems = store.read_rows(a["problems"], "problems")
    quarantine = store.Quarantine("d_start")
    kept = select_rft(
        samples,
        sp.select,
        sp.filters,
        eval_ngrams(problems, sp),
        quarantine,
        {p["problem_id"]: p["domain"] for p in problems},
    )
    if sp.select.merge_seed:
        have = {r["problem_id"] for r in kept}
        kept += [
            {**r, "reason_kept": "d_seed"} for r in store.read_rows(a["seed"], "d_seed") if r["problem_id"] not in have
        ]
    write_selection(a, "d_start", kept, quarantine, stage.fingerprint(sp, [a["samples"], a["seed"]]), len(samples))


if __name__ == "__main__":
    stage.run(main)
