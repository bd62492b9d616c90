"""python -m stages.sft NAME — START's supervised fine-tuning: loss on the model's text, its code and
the hints (`start.hint_loss`), none on the prompt and the tool output.

NAME picks the params set `train.NAME` and the data:
  sft_start0: data/d_seed/d_seed  -> models/start0  (START-0, from the base policy)
  sft_start:  data/d_start/d_start -> models/start  (START, from the base policy)
Params: `train.NAME`, `start.hint_loss`, `format`, `policy`.
Outputs: the model folder, data/NAME/sft (the examples with their loss flags and `hint_loss`, queryable),
metrics/NAME.json.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from tracemill import params as P
from tracemill import records, stage, store
from tracemill.errors import TracemillError
from tracemill.formats import FormatParams
from tracemill.policy import resolve_policy
from tracemill.start_params import StartParams

JOBS = {
    "sft_start0": ("data/d_seed", "d_seed", Path("models/start0")),
    "sft_start": ("data/d_start", "d_start", Path("models/start")),
}


def sft_rows(traces: list[dict], problems: dict[str, dict], source: str, hint_loss: bool | None = None) -> list[dict]:
    """`sft` rows from selected traces: the question as prompt, the generated segments with their loss
    flags, the hints' loss set by `hint_loss` (a trace marks them as inserted text, without loss;
    None: a source without hints keeps the trace's flags)."""
    rows = []
    for t in traces:
        segments = [{**s, "loss": hint_loss} if s["kind"] == "hint" and hint_loss is not None else s
                    for s in t["segments"] if s["kind"] != "prompt"]
        meta = json.loads(t["metadata"]) if t.get("metadata") else {}
        rows.append({"example_id": records.content_id("sft", source, t["trace_id"]), "source": source,
                     "problem_id": t["problem_id"], "prompt": problems[t["problem_id"]]["question"], "segments": segments,
                     "hint_loss": hint_loss,
                     "metadata": records.to_json({"trace_id": t["trace_id"], "reason_kept": t.get("reason_kept"),
                                                  "modify": meta.get("modify")})})
    return rows


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in JOBS:
        raise TracemillError(f"usage: python -m stages.sft NAME with NAME one of {', '.join(JOBS)}")
    name = sys.argv[1]
    data_dir, table, out_dir = JOBS[name]
    params = P.load(stage.params_path())
    from tracemill.train import TrainParams, train_sft

    sft_params = getattr(P.section(TrainParams, params, "train"), name)
    hint_loss = P.section(StartParams, params, "start").hint_loss
    base, _ = resolve_policy(params)
    problems = {p["problem_id"]: p for p in store.read_rows("data/problems", "problems")}
    rows = sft_rows(store.read_rows(data_dir, table), problems, table, hint_loss)
    out = store.StageOutput(f"data/{name}", ["sft"], stage.fingerprint([sft_params, hint_loss], [data_dir]))
    out.write_shard(0, {"sft": rows})
    out.finalize([0])

    def build(partial: Path) -> dict:
        if rows:
            return train_sft(base, rows, partial, sft_params, resume=True, fmt=P.section(FormatParams, params, "format"))
        # Nothing selected (e.g. no hint fixed a wrong greedy answer in a small run): the next stages
        # still need a model, so this one is the base policy unchanged, and the metrics say so.
        print(f"{name}: no examples in {data_dir} — {out_dir} is the base policy, untrained", file=sys.stderr)
        shutil.copytree(base, partial)
        return {}

    metrics = stage.build_folder(out_dir, build, fresh=not rows)
    store.write_json(f"metrics/{name}.json", {**metrics, "examples": len(rows), "trained": bool(rows), "hint_loss": hint_loss})
    print(f"{name}: {len(rows)} examples -> {out_dir}")


if __name__ == "__main__":
    stage.run(main)
