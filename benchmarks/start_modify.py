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
import statistics
import subprocess
import sys
from pathlib import Path

import duckdb
import yaml

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


def spread(values: list[float]) -> dict:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": sd, "min": min(values), "max": max(values), "values": values}


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
    evaluate = copy.deepcopy(base)
    evaluate["evaluate"].update(k=0, hint_rounds=0, models=[{"name": "base", "path": None}])
    run(
        [
            "stages.evaluate",
            f"problems={problems}",
            f"out={work}/eval-base",
            f"metrics={work}/eval-base.json",
            f"pass_at_1={work}/p1.csv",
            f"pass_at_k={work}/pk.csv",
            f"hint_rounds={work}/hr.csv",
        ],
        evaluate,
        work,
        "eval-base",
    )
    base_score = json.loads((work / "eval-base.json").read_text())["models"]["base"]
    openers = ["Wait,", "Alternatively,"]  # how every hint of the library starts
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    table: dict = {
        "commit": commit,
        "hint_problems": base["start"]["hint_infer"]["max_problems"],
        "seeds": args.seeds,
        "base": {
            "pass@1": base_score["pass@1"],
            "tool_calls_per_problem": base_score["tool_calls_per_problem"],
            "said_hint": spoke_hint(work / "eval-base", openers),
        },
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
            p.update(evaluate=copy.deepcopy(evaluate["evaluate"]))
            p["evaluate"]["models"] = [{"name": "start0", "path": f"{work}/start0-{name}"}]
            run(
                [
                    "stages.evaluate",
                    f"problems={problems}",
                    f"out={work}/eval-{name}",
                    f"metrics={work}/eval-{name}.json",
                    f"pass_at_1={work}/p1.csv",
                    f"pass_at_k={work}/pk.csv",
                    f"hint_rounds={work}/hr.csv",
                ],
                p,
                work,
                f"eval-{name}",
            )
            s = json.loads((work / f"eval-{name}.json").read_text())["models"]["start0"]
            scores.append((s["pass@1"], s["tool_calls_per_problem"], spoke_hint(work / f"eval-{name}", openers)))
            print(
                f"  {name}: D_seed {rows} rows, pass@1 {scores[-1][0]:.3f}, tool calls {scores[-1][1]:.2f}, "
                f"said a hint {scores[-1][2]:.2f}",
                flush=True,
            )
        table["modes"][mode] = {
            "d_seed_rows": rows,
            "pass@1": spread([s[0] for s in scores]),
            "tool_calls_per_problem": spread([s[1] for s in scores]),
            "said_hint": spread([s[2] for s in scores]),
        }
    b = table["base"]
    print(
        f"\nbase: pass@1 {b['pass@1']:.3f}, tool calls {b['tool_calls_per_problem']:.2f}, "
        f"said a hint {b['said_hint']:.2f}"
    )
    print("| modify | D_seed rows | START-0 pass@1 | tool calls/problem | said a hint |")
    print("| --- | --- | --- | --- | --- |")
    for mode, m in table["modes"].items():
        cells = [
            f"{m[k]['mean']:.3f} ± {m[k]['std']:.3f} ({m[k]['min']:.3f}–{m[k]['max']:.3f})"
            for k in ("pass@1", "tool_calls_per_problem", "said_hint")
        ]
        print(f"| {mode} | {m['d_seed_rows']} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
