"""python -m stages.publish — build a Hub-ready folder for every dataset in params.yaml `publish.datasets`.

Inputs: the stage directories each config names (data/problems, ...), data/problems for licenses,
dvc.lock (hashes and params of the stages that wrote them) and the git HEAD.
Outputs: publish/<dataset>/{README.md, data/<config>/<split>-*.parquet}, metrics/publish.json.
Pushing to the Hub is `tracemill publish --repo-id ORG/NAME`, never part of `dvc repro`.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from tracemill import params as P
from tracemill import stage, store
from tracemill.publish import BuildReport, PublishParams, build

METRICS = "metrics/publish.json"


def main() -> None:
    raw = P.load(stage.params_path())
    cfg = P.section(PublishParams, raw, "publish")
    reports = [build(cfg, ds, Path("."), raw) for ds in cfg.datasets]
    store.write_json(
        METRICS,
        {r.name: {"rows": r.rows, "total_rows": sum(r.rows.values()), "skipped": sorted(r.skipped), "license": r.license} for r in reports},
    )
    for report in reports:
        _summary(report)


def _summary(report: BuildReport) -> None:
    table = Table("config", "rows", title=f"{report.folder} (license: {report.license})")
    for config, rows in report.rows.items():
        table.add_row(config, str(rows))
    for config, why in report.skipped.items():
        table.add_row(config, f"skipped: {why}")
    Console().print(table)


if __name__ == "__main__":
    stage.run(main)
