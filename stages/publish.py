"""python -m stages.publish metrics=FILE — build a Hub-ready folder for every dataset in params.yaml `publish.datasets`.

Inputs: the stage directories each config names (publish.datasets[].configs[].data: the problems,
hint_infer, evaluate, ... outputs; `PublishParams.reads()` lists them, and the stage's deps in
dvc.yaml must cover them), publish.problems for splits, questions and licenses, dvc.lock (hashes and
params of the stages that wrote them) and the git HEAD.
Outputs: <publish.out_dir>/<dataset>/{README.md, data/<config>/<split>-*.parquet}, `metrics` (rows
per config and split, rows held back from train splits and why, skipped configs, license).
Pushing to the Hub is `tracemill publish --repo-id ORG/NAME`, never part of `dvc repro`.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from tracemill import params as P
from tracemill import stage, store
from tracemill.publish import BuildReport, PublishParams, build


def main() -> None:
    a = stage.args(["metrics"])
    raw = P.load(stage.params_path())
    cfg = P.section(PublishParams, raw, "publish")
    reports = [build(cfg, ds, Path("."), raw) for ds in cfg.datasets]
    store.write_json(a["metrics"], {r.name: _metrics(r) for r in reports})
    for report in reports:
        _summary(report)


def _metrics(r: BuildReport) -> dict:
    return {
        "rows": r.rows,
        "total_rows": sum(n for splits in r.rows.values() for n in splits.values()),
        "held_back": r.held_back,
        "held_back_rows": sum(n for reasons in r.held_back.values() for n in reasons.values()),
        "skipped": sorted(r.skipped),
        "license": r.license,
    }


def _summary(report: BuildReport) -> None:
    table = Table("config", "rows", "held back from train", title=f"{report.folder} (license: {report.license})")
    for config, splits in report.rows.items():
        back = report.held_back.get(config, {})
        table.add_row(config, _pairs(splits), _pairs(back))
    for config, why in report.skipped.items():
        table.add_row(config, f"skipped: {why}", _pairs(report.held_back.get(config, {})))
    Console().print(table)


def _pairs(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {n}" for k, n in counts.items()) or "-"


if __name__ == "__main__":
    stage.run(main)
