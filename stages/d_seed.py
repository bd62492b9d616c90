"""python -m stages.d_seed — D_seed: START's Hint-RFT rule, then repetition, length, format,
exact/near-duplicate and decontamination filters; every drop keeps its reason; then START's modify
step on the answers boxed before a hint (`start.modify`).

Inputs: data/hint_infer/traces, data/problems (eval splits for decontamination), params `start`, `format`.
Outputs: data/d_seed/{d_seed,rejected}, metrics/d_seed.json (with the yield per hinted problem and
where the kept hints landed), plots/d_seed_drops.csv.
"""

from __future__ import annotations

from tracemill import params as P
from tracemill import stage, store
from tracemill.formats import FormatParams
from tracemill.start import StartParams, eval_ngrams, seed_yield, select_seed

OUT = "data/d_seed"


def main() -> None:
    params = P.load(stage.params_path())
    sp = P.section(StartParams, params, "start")
    traces = store.read_rows("data/hint_infer", "traces")
    problems = store.read_rows("data/problems", "problems")
    fmt = P.section(FormatParams, params, "format")
    quarantine = store.Quarantine("d_seed")
    domains = {p["problem_id"]: p["domain"] for p in problems}
    kept = select_seed(traces, sp.select, sp.filters, eval_ngrams(problems, sp), quarantine, sp.modify, fmt, domains)
    extra = {**seed_yield(traces, kept, domains), "modify": sp.modify}
    write_selection(OUT, "d_seed", kept, quarantine, stage.fingerprint([sp, fmt], ["data/hint_infer", "data/problems"]), len(traces), extra)


def write_selection(out_dir: str, table: str, kept: list[dict], quarantine: store.Quarantine, fingerprint: str, candidates: int,
                    extra: dict | None = None) -> None:
    """Shared by d_seed and d_start: one shard, metrics with drop reasons (and `extra`), a drop-reason plot."""
    drops = dict(quarantine.counts)
    out = store.StageOutput(out_dir, [table, "rejected"], fingerprint)
    out.write_shard(0, {table: kept, "rejected": quarantine.take()})
    counts = out.finalize([0])
    store.write_json(f"metrics/{table}.json", {"size": counts[table], "problems": len({r["problem_id"] for r in kept}),
                                              "candidate_traces": candidates, "dropped": drops, **(extra or {})})
    store.write_csv(f"plots/{table}_drops.csv", [{"reason": k, "count": v} for k, v in sorted(drops.items())] or [{"reason": "none", "count": 0}])
    print(f"{table}: kept {counts[table]} traces; dropped {sum(drops.values())} ({', '.join(f'{k}={v}' for k, v in sorted(drops.items())) or 'none'})")


if __name__ == "__main__":
    stage.run(main)
