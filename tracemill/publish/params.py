"""The `publish` params section: which datasets to build, their configs, and how rows are split."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tracemill import params as P
from tracemill import records
from tracemill.errors import ParamsError

# Hub config and folder names: no slashes or spaces, so they are safe as paths and in URLs.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Published split names (`datasets` wants \w+). A problem whose split is not TRAIN (eval, test) is held out.
TRAIN, TEST = "train", "test"
BY_PROBLEM = "by_problem"  # a config split by its rows' problems: train problems -> TRAIN, held-out ones -> TEST


@dataclass(frozen=True)
class ConfigParams:
    config: str  # config name on the Hub: load_dataset(repo, config)
    table: str  # one of records.TABLES
    data: list[str]  # stage directories, or globs of them (data/rstar_search/*), holding the table
    # train: every row in split train, after the leak check; test: every row in split test (evaluation
    # output, published only when publish.evaluation is config); by_problem: rows of train problems in
    # train (after the leak check), rows of held-out problems in test
    split: str = P.choices(TRAIN, TEST, BY_PROBLEM, default=TRAIN)
    required: bool = False  # an empty or missing table fails the stage instead of being skipped

    def check(self) -> None:
        if not NAME_RE.match(self.config):
            raise ParamsError(f"params 'publish' config name '{self.config}' must match {NAME_RE.pattern}")
        if self.table not in records.TABLES:
            known = ", ".join(records.TABLES)
            raise ParamsError(f"params 'publish' config '{self.config}': table '{self.table}' is not one of {known}")
        if not self.data:
            raise ParamsError(
                f"params 'publish' config '{self.config}' lists no 'data' directories — name the stage outputs it reads"
            )


@dataclass(frozen=True)
class DatasetParams:
    name: str  # folder publish/<name> and the default repo name
    pretty_name: str
    configs: list[ConfigParams] = field(default_factory=list)  # the first is the Hub's default config
    license: str | None = None  # null: carried from the seed rows' licenses; a Hub license id overrides
    tags: list[str] = field(default_factory=list)
    task_categories: list[str] = field(default_factory=list)
    language: list[str] = field(default_factory=list)

    def check(self) -> None:
        if not NAME_RE.match(self.name):
            raise ParamsError(f"params 'publish' dataset name '{self.name}' must match {NAME_RE.pattern}")
        if not self.configs:
            raise ParamsError(
                f"params 'publish' dataset '{self.name}' lists no configs — add at least one under 'configs'"
            )
        names = [c.config for c in self.configs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ParamsError(f"params 'publish' dataset '{self.name}' names config '{dupes[0]}' twice")


@dataclass(frozen=True)
class PublishParams:
    out_dir: str = "publish"
    problems: str = (
        "data/problems"  # the problems whose splits, questions, licenses and sources decide and describe the rows
    )
    shard_rows: int = P.at_least(1, default=100_000)  # rows per Parquet shard
    decontam_ngram: int = P.at_least(
        1, default=8
    )  # a train row sharing a word n-gram with a held-out question is held back
    evaluation: str = P.choices("config", "none", default="config")  # configs with split test: published, or left out
    datasets: list[DatasetParams] = field(default_factory=list)

    def check(self) -> None:
        names = [d.name for d in self.datasets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ParamsError(f"params 'publish.datasets' names dataset '{dupes[0]}' twice")

    def publishes(self, c: ConfigParams) -> bool:
        return c.split != TEST or self.evaluation == "config"

    def reads(self) -> list[str]:
        """Every stage directory or glob a build reads; the publish stage's deps in dvc.yaml must cover them."""
        data = [pattern for ds in self.datasets for c in ds.configs if self.publishes(c) for pattern in c.data]
        return list(dict.fromkeys([self.problems, *data]))

    def dataset(self, name: str | None) -> DatasetParams:
        """The dataset called `name`, or the only one when `name` is None."""
        if name is None:
            if len(self.datasets) != 1:
                listed = ", ".join(d.name for d in self.datasets) or "none"
                raise ParamsError(
                    f"params 'publish.datasets' lists {len(self.datasets)} datasets ({listed}) — pass --dataset NAME"
                )
            return self.datasets[0]
        for ds in self.datasets:
            if ds.name == name:
                return ds
        known = ", ".join(d.name for d in self.datasets)
        raise ParamsError(
            f"dataset '{name}' is not in params 'publish.datasets' — add it there or pick one of: {known}"
        )
