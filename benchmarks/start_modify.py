"""START's modify step, decided by measurement: START-0 trained on D_seed built with each `start.modify`
(keep the premature boxed answer / drop its sentence / unbox it into a plain claim / mask the attempt
from the loss), over seeds.

    python benchmarks/start_modify.py [--seeds 0 1 2] [--modes keep drop unbox mask] [--hint-problems N]
                                      [--work DIR] [--json FILE]

Runs the graph's own stages (`stages.hint_infer`, `stages.d_seed`, `stages.sft sft_start0`,
`stages.evaluate`) in a scratch folder with params.yaml plus the overrides below, reading the committed
`data/problems` and `models/bootstrap` (run `make repro` first). hint_infer runs once (greedy and the
seeded hint draws do not depend on the mode); per mode one D_seed; per mode and seed one START-0
(`train.sft_start0.seed`), scored greedy on the held-out problems with no hint (`evaluate.hint_rounds` 0,
`k` 0) against the base. Prints, per mode: D_seed rows, greedy pass@1 and tool calls per problem without
hints (mean, sample sd, min-max over seeds), and how often START-0 said a hint on its own.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import yaml

from tracemill.report import seed_stats, start_modify_table
from tracemill.start_params import MODIFY

ROOT = Path(__file__).resolve().parent.parent


def run(stage: list[str], params: dict, work: Path, name: str) -> None:
    path = work / f"params-{name}.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "TRACEMILL_PARAMS": str(path), "TRACEMILL_HASH_CACHE": str(work / "hash-cache.json")}
    log = work / f"{name}.log"
    with open(log, "w") as fh:
        done = subprocess.run([sys.executable, "-m", *stage], cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"{' '.join(stage[:2])} failed ({name}); see {log}")


def spoke_hint(traces: Path, hints: list[str]) -> float:
    """Share of greedy answers whose own text (no hint inserted) opens a hint ("Wait,", "Alternatively,")."""
    rows = duckdb.sql(
        f"SELECT [s.text FOR s IN segments IF s.kind = 'model'] AS texts FROM read_parquet('{traces}/traces/*.parquet')"
    ).fetchall()
    said = sum(any(h in t for t in texts for h in hints) for (texts,) in rows)
    return said / max(1, len(rows))


OPENERS = ["Wait,", "Alternatively,"]  # how every hint of the library starts


def score(params: dict, name: str, path: str | None, work: Path, problems: Path) -> dict:
    """One model greedy on the held-out problems with no hint (stages.evaluate, k 0, 0 hint rounds): its
    pass@1, tool calls per problem, and the share of answers that said a hint on their own."""
    p = copy.deepcopy(params)
    p["evaluate"].update(k=0, hint_rounds=0, models=[{"name": name, "path": path}])
    out = work / f"eval-{name}" if path is None else work / f"eval-{Path(path).name}"
    run(
        [
            "stages.evaluate",
            f"problems={problems}",
            f"out={out}",
            f"metrics={out}.json",
            f"pass_at_1={work}/p1.csv",
            f"pass_at_k={work}/pk.csv",
            f"hint_rounds={work}/hr.csv",
        ],
        p,
        work,
        out.name,
    )
    s = json.loads(Path(f"{out}.json").read_text())["models"][name]
    return {
        "pass@1": s["pass@1"],
        "tool_calls_per_problem": s["tool_calls_per_problem"],
        "said_hint": spoke_hint(out, OPENERS),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--modes", nargs="+", default=list(MODIFY))
    ap.add_argument("--hint-problems", type=int, default=None, help="start.hint_infer.max_problems (default: params)")
    ap.add_argument("--work", type=Path, default=ROOT / ".tracemill" / "start_modify")
    ap.add_argument("--json", type=Path, default=None, help="also write the table here")
    args = ap.parse_args()
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    if args.hint_problems:
        base["start"]["hint_infer"]["max_problems"] = args.hint_problems
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    problems, bootstrap = ROOT / "data/problems", ROOT / "models/bootstrap"
    if not bootstrap.exists():
        raise SystemExit("models/bootstrap is missing: run `make repro` first")

    traces = work / "hint_infer"
    print(f"hint_infer on {base['start']['hint_infer']['max_problems']} problems ...", flush=True)
    run(
        [
            "stages.hint_infer",
            f"problems={problems}",
            f"out={traces}",
            f"metrics={work}/hint_infer.json",
            f"hint_plot={work}/hint_success.csv",
        ],
        base,
        work,
        "hint_infer",
    )
    base_score = score(base, "base", None, work, problems)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    table: dict = {
        "commit": commit,
        "hint_problems": base["start"]["hint_infer"]["max_problems"],
        "seeds": args.seeds,
        "base": base_score,
        "modes": {},
    }
    for mode in args.modes:
        params = copy.deepcopy(base)
        params["start"]["modify"] = mode
        d_seed = work / f"d_seed-{mode}"
        run(
            [
                "stages.d_seed",
                f"traces={traces}",
                f"problems={problems}",
                f"out={d_seed}",
                f"metrics={d_seed}.json",
                f"drops={d_seed}-drops.csv",
            ],
            params,
            work,
            f"d_seed-{mode}",
        )
        rows = json.loads(Path(f"{d_seed}.json").read_text())["size"]
        scores = []
        for seed in args.seeds:
            name = f"{mode}-s{seed}"
            p = copy.deepcopy(params)
            p["train"]["sft_start0"]["seed"] = seed
            p["seed"] = seed
            run(
                [
                    "stages.sft",
                    "sft_start0",
                    f"selected={d_seed}",
                    f"problems={problems}",
                    f"out={work}/sft-{name}",
                    f"model={work}/start0-{name}",
                    f"metrics={work}/sft-{name}.json",
                ],
                p,
                work,
                f"sft-{name}",
            )
            scores.append(score(p, "start0", f"{work}/start0-{name}", work, problems))
            print(
                f"  {name}: D_seed {rows} rows, pass@1 {scores[-1]['pass@1']:.3f}, "
                f"tool calls {scores[-1]['tool_calls_per_problem']:.2f}, said a hint {scores[-1]['said_hint']:.2f}",
                flush=True,
            )
        table["modes"][mode] = {
            "d_seed_rows": rows,
            **{
                key: seed_stats([sc[key] for sc in scores]) for key in ("pass@1", "tool_calls_per_problem", "said_hint")
            },
        }
    print("\n" + start_modify_table(table, base["start"]["modify"]))
    if args.json:
        args.json.write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
