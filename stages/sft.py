"""python -m stages.sft NAME — supervised fine-tuning with hint and tool-output tokens masked.

NAME picks the params set `train.NAME` and the data:
  sft_start0: data/d_seed/d_seed  -> models/start0  (START-0, from the base policy)
  sft_start:  data/d_start/d_start -> models/start  (START, from the base policy)
Outputs: the model folder, data/NAME/sft (the examples, queryable), metrics/NAME.json.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from tracemill import params as P
from tracemill import records, stage, store
from tracemill.errors import TracemillError
from tracemill.formats import FormatParams
from tracemill.policy import resolve_policy

JOBS = {
    "sft_start0": ("data/d_seed", "d_seed", Path("models/start0")),
    "sft_start": ("data/d_start", "d_start", Path("models/start")),
}


def sft_rows(traces: list[dict], problems: dict[str, dict], source: str) -> list[dict]:
    """`sft` rows from selected traces: the question as prompt, the generated segments with their loss flags."""
    rows = []
    for t in traces:
        segments = [s for s in t["segments"] if s["kind"] != "prompt"]
        rows.append({"example_id": records.content_id("sft", source, t["trace_id"]), "source": source, "problem_id": t["problem_id"],
                     "prompt": problems[t["problem_id"]]["question"], "segments": segments, "metadata": None})
    return rows


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in JOBS:
        raise TracemillError(f"usage: python -m stages.sft NAME with NAME one of {', '.join(JOBS)}")
    name = sys.argv[1]
    data_dir, table, out_dir = JOBS[name]
    params = P.load(stage.params_path())
    from tracemill.train import TrainParams, train_sft

    sft_params = getattr(P.section(TrainParams, params, "train"), name)
    base, _ = resolve_policy(params)
    problems = {p["problem_id"]: p for p in store.read_rows("data/problems", "problems")}
    rows = sft_rows(store.read_rows(data_dir, table), problems, table)
    out = store.StageOutput(f"data/{name}", ["sft"], stage.fingerprint(sft_params, [data_dir]))
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
    store.write_json(f"metrics/{name}.json", {**metrics, "examples": len(rows), "trained": bool(rows)})
    print(f"{name}: {len(rows)} examples -> {out_dir}")


if __name__ == "__main__":
    stage.run(main)
