"""python -m stages.sft NAME selected=DIR problems=DIR out=DIR model=DIR metrics=FILE — START's supervised
fine-tuning: loss on the model's text, its code and the hints (`start.hint_loss`), none on the prompt and
the tool output.

NAME picks the params set `train.NAME` and the table of `selected` it trains on:
  sft_start0: d_seed   -> START-0, from the base policy
  sft_start:  d_start  -> START, from the base policy
Params: `train.NAME`, `start.hint_loss`, `format`, `policy`.
Outputs: `model`, `out`/sft (the examples with their loss flags and `hint_loss`, queryable), `metrics`.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from tracemill import params as P
from tracemill import stage, store
from tracemill.formats import FormatParams
from tracemill.policy import resolve_policy
from tracemill.start_params import StartParams
from tracemill.train.examples import trace_sft_rows

JOBS = {"sft_start0": "d_seed", "sft_start": "d_start"}  # the table of `selected` each trains on


def main() -> None:
    name = stage.job(JOBS)
    a = stage.args(["selected", "problems", "out", "model", "metrics"], argv=sys.argv[2:])
    data_dir, table, out_dir = a["selected"], JOBS[name], Path(a["model"])
    params = P.load(stage.params_path())
    from tracemill.train import TrainParams, train_sft

    sft_params = getattr(P.section(TrainParams, params, "train"), name)
    hint_loss = P.section(StartParams, params, "start").hint_loss
    base, _ = resolve_policy(params)
    problems = {p["problem_id"]: p for p in store.read_rows(a["problems"], "problems")}
    rows = trace_sft_rows(store.read_rows(data_dir, table), problems, table, hint_loss)
    out = store.StageOutput(a["out"], ["sft"], stage.fingerprint([sft_params, hint_loss], [data_dir]))
    out.write_shard(0, {"sft": rows})
    out.finalize([0])

    def build(partial: Path) -> dict:
        if rows:
            return train_sft(
                base, rows, partial, sft_params, resume=True, fmt=P.section(FormatParams, params, "format")
            )
        # Nothing selected (e.g. no hint fixed a wrong greedy answer in a small run): the next stages
        # still need a model, so this one is the base policy unchanged, and the metrics say so.
        print(f"{name}: no examples in {data_dir} — {out_dir} is the base policy, untrained", file=sys.stderr)
        shutil.copytree(base, partial)
        return {}

    metrics = stage.build_folder(out_dir, build, fresh=not rows)
    store.write_json(a["metrics"], {**metrics, "examples": len(rows), "trained": bool(rows), "hint_loss": hint_loss})
    print(f"{name}: {len(rows)} examples -> {out_dir}")


if __name__ == "__main__":
    stage.run(main)
