"""Building `publish/<dataset>/`: read each config's rows, split them, write the shards and the card, check
the folder loads with `datasets`, and only then swap it in."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from tracemill.publish.card import CARD, card_body, card_yaml, counts
from tracemill.publish.errors import PublishError
from tracemill.publish.licenses import card_license, origins
from tracemill.publish.lineage import git_state, load_lock, lock_entry, provenance
from tracemill.publish.methods import methods, source_kinds
from tracemill.publish.params import TEST, TRAIN, ConfigParams, DatasetParams, PublishParams
from tracemill.publish.splits import Guard, split_rows
from tracemill.publish.tables import DATA_DIR, ConfigData, Published, features, read_config, read_problems, write_shards


@dataclass(frozen=True)
class BuildReport:
    name: str
    folder: Path
    rows: dict[str, dict[str, int]]  # config -> split -> rows
    held_back: dict[str, dict[str, int]]  # config -> reason -> rows kept out of its train split
    skipped: dict[str, str]  # config -> why it was left out
    license: str


def build(cfg: PublishParams, ds: DatasetParams, root: Path, raw: dict[str, Any]) -> BuildReport:
    """Write `<out_dir>/<name>/` under `root`, check every config loads with `datasets`, then swap it in."""
    lock = load_lock(root)
    checks_train = any(c.split != TEST for c in ds.configs if cfg.publishes(c))
    problems = read_problems(root, cfg.problems, required=checks_train)
    guard = Guard.of(problems, cfg.decontam_ngram)
    published: list[Published] = []
    skipped: dict[str, str] = {}
    held_back: dict[str, dict[str, int]] = {}
    for c in ds.configs:
        if not cfg.publishes(c):
            skipped[c.config] = f"split {TEST} and publish.evaluation is none"
            continue
        data = read_config(root, c)
        splits, back = split_rows(data.table, c.split, guard)
        if back:
            held_back[c.config] = back
        if not splits:
            _skip(ds, c, data, back, skipped)
            continue
        rows = pa.concat_tables(splits.values())
        inputs = tuple(lock_entry(lock, d) for d in data.dirs)
        published.append(
            Published(data, splits, back, frozenset(origins(rows, problems)), inputs, methods(rows, c.table))
        )
    if not published:
        why = "; ".join(skipped.values())
        raise PublishError(f"dataset '{ds.name}' has no rows in any config ({why}) — run the stages that write them")
    license_id = card_license(ds.license, {o for p in published for o in p.origins})
    prov = provenance(git_state(root), ds, raw.get("publish") or {}, published)
    final = root / cfg.out_dir / ds.name
    final.parent.mkdir(parents=True, exist_ok=True)
    for stray in final.parent.glob(f".{ds.name}.tmp-*"):
        shutil.rmtree(stray, ignore_errors=True)  # left by a killed build; never a published folder
    staging = final.with_name(f".{ds.name}.tmp-{os.getpid()}")
    staging.mkdir()
    try:
        for p in published:
            for split, rows in p.splits.items():
                write_shards(rows, staging / DATA_DIR / p.config, split, cfg.shard_rows)
        body = card_body(ds, published, skipped, prov, source_kinds(lock_entry(lock, cfg.problems)["params"]), guard)
        (staging / CARD).write_text(f"---\n{card_yaml(ds, published, license_id)}\n---\n\n{body}", encoding="utf-8")
        validate_folder(staging, {p.config: (p.table, p.rows) for p in published})
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    rows = {p.config: p.rows for p in published}
    return BuildReport(ds.name, final, rows, held_back, skipped, license_id)


def _skip(ds: DatasetParams, c: ConfigParams, data: ConfigData, back: dict[str, int], skipped: dict[str, str]) -> None:
    """Record why config `c` has nothing to publish; a required config fails instead."""
    if data.table.num_rows == 0:
        why = f"table '{c.table}' has no rows under {', '.join(repr(d) for d in c.data)}"
        fix = "run the stage that writes it (dvc repro) or set required: false"
    else:
        why = f"all {data.table.num_rows} rows held back from split {TRAIN} ({counts(Counter(back).elements())})"
        fix = (
            "its rows come from held-out problems or share n-grams with held-out questions; "
            f"publish it with split: {TEST} if it is evaluation output"
        )
    if c.required:
        raise PublishError(f"config '{c.config}' of dataset '{ds.name}': {why} — {fix}")
    skipped[c.config] = why


def validate_folder(folder: Path, expected: dict[str, tuple[str, dict[str, int]]]) -> None:
    """Load every config with `datasets.load_dataset`; compare its splits, features and row counts with the tables."""
    import datasets

    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory(prefix="tracemill-publish-cache-") as cache:  # never reuse a stale cache
        for config, (table, splits) in expected.items():
            try:
                loaded = datasets.load_dataset(str(folder), config, cache_dir=cache)
            except Exception as exc:  # any loader failure means the folder is not publishable; say which config
                raise PublishError(
                    f"config '{config}' in '{folder}' does not load with datasets.load_dataset: "
                    f"{type(exc).__name__}: {exc} — check the config's data files and features in {CARD}"
                ) from exc
            if sorted(loaded) != sorted(splits):
                raise PublishError(
                    f"config '{config}' loads splits {sorted(loaded)}, table '{table}' has {sorted(splits)}"
                    " — rebuild the folder"
                )
            want = features(table)
            for split, rows in splits.items():
                got = loaded[split]
                if got.features != want:
                    diff = sorted(k for k in set(want) | set(got.features) if want.get(k) != got.features.get(k))
                    raise PublishError(
                        f"config '{config}' loads with features that differ from table '{table}' in column(s) "
                        f"{', '.join(diff)} — the card's features must be built from records.schema('{table}')"
                    )
                if got.num_rows != rows:
                    raise PublishError(
                        f"config '{config}' split '{split}' loads {got.num_rows} rows, table '{table}' has {rows}"
                        " — rebuild the folder"
                    )
