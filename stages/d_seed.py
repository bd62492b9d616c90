"""python -m stages.d_seed traces=DIR problems=DIR out=DIR metrics=FILE drops=FILE — D_seed: START's
Hint-RFT rule, then repetition, length, format, exact/near-duplicate and decontamination filters; every drop
keeps its reason; then START's modify step on the answers boxed before a hint (`start.modify`).

Inputs: `traces` (hint_infer's), `problems` (eval splits for decontamination), params `start`, `format`.
Outputs: `out`/{d_seed,rejected}, `metrics` (with the yield per hinted problem and where the kept hints
landed), `drops` (a bar per drop reason).
"""

from __future__ import annotations

from tracemill import params as P
from tracemill import stage, store
from tracemill.formats import FormatParams
from tracemill.start import eval_ngrams, seed_yield, select_seed, write_selection
from tracemill.start_params import StartParams


def main() -> None:
    a = stage.args(["traces", "problems", "out", "metrics", "drops"])
    params = P.load(stage.params_path())
    sp = P.section(StartParams, params, "start")
    traces = store.read_rows(a["traces"], "traces")
    problems = store.read_rows(a["problems"], "problems")
    fmt = P.section(FormatParams, params, "format")
    quarantine = store.Quarantine("d_seed")
    domains = {p["problem_id"]: p["domain"] for p in problems}
    kept = select_seed(traces, sp.select, sp.filters, eval_ngrams(problems, sp), quarantine, sp.modify, fmt, domains)
    extra = {**seed_yield(traces, kept, domains), "modify": sp.modify}
    write_selection(
        a, "d_seed", kept, quarantine, stage.fingerprint([sp, fmt], [a["traces"], a["problems"]]), len(traces), extra
    )


if __name__ == "__main__":
    stage.run(main)
