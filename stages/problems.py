"""python -m stages.problems out=DIR metrics=FILE — normalise every source in params.yaml `problems.sources`.

Inputs: the files named by the sources (the seed files by default).
Outputs: `out`/{problems,rejected}/part-00000.parquet, `metrics`.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from tracemill import params as P
from tracemill import stage, store
from tracemill.problems import ProblemsParams, build_problems


def main() -> None:
    a = stage.args(["out", "metrics"])
    params = P.load(stage.params_path())
    cfg = P.section(ProblemsParams, params, "problems")
    quarantine = store.Quarantine("problems")
    rows, reports = build_problems(cfg, quarantine, params.get("synthetic"))
    inputs = [s.path for s in cfg.sources if s.path]
    out = store.StageOutput(
        a["out"], ["problems", "rejected"], stage.fingerprint([cfg, params.get("synthetic")], inputs)
    )
    out.write_shard(0, {"problems": rows, "rejected": quarantine.take()})
    counts = out.finalize([0])
    rejected_by_reason: dict[str, int] = {}
    for rep in reports.values():
        for reason, n in rep.rejected.items():
            rejected_by_reason[reason] = rejected_by_reason.get(reason, 0) + n
    store.write_json(
        a["metrics"],
        {
            "problems": counts["problems"],
            "rejected": counts["rejected"],
            "rejected_by_reason": rejected_by_reason,
            "sources": {name: {"kept": r.kept, "rejected": sum(r.rejected.values())} for name, r in reports.items()},
            "splits": _count(rows, "split"),
            "domains": _count(rows, "domain"),
        },
    )
    _summary(reports)


def _count(rows: list[dict], key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in rows:
        out[row[key]] = out.get(row[key], 0) + 1
    return out


def _summary(reports) -> None:
    table = Table("source", "kept", "rejected (by reason)", title="problems")
    for name, rep in reports.items():
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(rep.rejected.items())) or "-"
        table.add_row(name, str(rep.kept), reasons)
    Console().print(table)


if __name__ == "__main__":
    stage.run(main)
