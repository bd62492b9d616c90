"""Reading a config's table from its stage directories and writing it as Hub-named Parquet shards."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tracemill import records, store
from tracemill.publish.errors import PublishError
from tracemill.publish.licenses import Origin
from tracemill.publish.params import ConfigParams

DATA_DIR = "data"  # the folder's data files: data/<config>/<split>-XXXXX-of-YYYYY.parquet
# What the splits, the leak check, the licenses and the citations need of the problems table.
PROBLEM_COLUMNS = ["problem_id", "split", "question", "source", "license"]


@dataclass(frozen=True)
class ConfigData:
    params: ConfigParams
    dirs: tuple[str, ...]  # stage directories read, relative to the repository root
    table: pa.Table


@dataclass(frozen=True)
class Published:
    """One config as it goes into the folder and the card."""

    data: ConfigData
    splits: dict[str, pa.Table]  # published split -> its rows
    held_back: dict[str, int]  # reason -> rows kept out of the train split
    origins: frozenset[Origin]
    inputs: tuple[dict[str, Any], ...]  # dvc.lock entries of its stage directories
    methods: tuple[str, ...]  # methods.METHODS keys

    @property
    def config(self) -> str:
        return self.data.params.config

    @property
    def table(self) -> str:
        return self.data.params.table

    @property
    def rows(self) -> dict[str, int]:
        return {split: t.num_rows for split, t in self.splits.items()}

    @property
    def published_rows(self) -> pa.Table:
        return pa.concat_tables(self.splits.values())


def stage_dirs(root: Path, pattern: str, table: str) -> list[Path]:
    """Stage directories matching `pattern` that hold `table` (`data/rstar_search/*` finds every round's output)."""
    return sorted(p for p in root.glob(pattern) if (p / table).is_dir())


def read_config(root: Path, cfg: ConfigParams) -> ConfigData:
    """Every row of the config's table across its stage directories, checked against the schema and sorted by key."""
    dirs = sorted({d for pattern in cfg.data for d in stage_dirs(root, pattern, cfg.table)})
    parts = [store.read(d, cfg.table) for d in dirs]
    data = pa.concat_tables(parts) if parts else records.schema(cfg.table).empty_table()
    checked = store.sort_by_key(cfg.table, records.validate(cfg.table, data))
    return ConfigData(cfg, tuple(str(d.relative_to(root)) for d in dirs), checked)


def read_problems(root: Path, stage_dir: str, required: bool) -> pa.Table:
    """The problems the rows are checked against; `required` when a train split needs their splits."""
    if not (root / stage_dir).exists():
        if required:
            raise PublishError(
                f"no problems table under '{stage_dir}' to check the train splits against"
                " — run `dvc repro problems` or set publish.problems"
            )
        return (
            records.schema("problems").empty_table().select(PROBLEM_COLUMNS)
        )  # test splits only: licenses show as unknown
    return store.read(root / stage_dir, "problems", columns=PROBLEM_COLUMNS)


def features(table: str):  # -> datasets.Features
    """The `datasets` features of a table, mapped one-to-one from its pyarrow schema."""
    import datasets

    return datasets.Features.from_arrow_schema(records.schema(table))


def write_shards(data: pa.Table, dest: Path, split: str, shard_rows: int) -> None:
    """Write `data` as `<split>-XXXXX-of-YYYYY.parquet` shards, the names the Hub's Parquet tools expect."""
    dest.mkdir(parents=True, exist_ok=True)
    count = max(1, math.ceil(data.num_rows / shard_rows))
    for i in range(count):
        shard = data.slice(i * shard_rows, shard_rows)
        pq.write_table(
            shard,
            dest / f"{split}-{i:05d}-of-{count:05d}.parquet",
            compression="zstd",
            row_group_size=store.ROW_GROUP_SIZE,
        )
