"""What SFT and the PPM share before any Trainer exists: the model folder check and the held-out split."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from tracemill.errors import TracemillError
from tracemill.records import content_id

T = TypeVar("T")


class TrainError(TracemillError):
    """A training run cannot start or go on: a missing model folder, no usable examples, a bad launch."""


def model_dir(path: str | Path, what: str = "model") -> Path:
    """`path` as a Path when it holds a Hugging Face model folder, else a TrainError that names the fix."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise TrainError(
            f"{what} path '{path}' has no config.json — run 'dvc repro bootstrap' or set policy.model in params.yaml"
        )
    return path


def split_heldout(rows: Sequence[T], ids: Sequence[str], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """(train, heldout): the held-out rows are those whose seeded id hash is smallest, so the split
    depends on the ids and the seed, never on row order; at least one row is held out when fraction > 0."""
    order = sorted(range(len(rows)), key=lambda i: content_id(seed, ids[i]))
    n_heldout = min(len(rows) - 1, max(1, round(fraction * len(rows)))) if fraction > 0 else 0
    heldout = set(order[:n_heldout])
    train = [rows[i] for i in sorted(range(len(rows)), key=lambda i: ids[i]) if i not in heldout]
    return train, [rows[i] for i in sorted(heldout, key=lambda i: ids[i])]


def require_rows(rows: Sequence[Any], table: str, dropped: int, max_length: int) -> None:
    if not rows:
        raise TrainError(
            f"no usable rows in '{table}' ({dropped} longer than max_length={max_length}) — "
            f"check the input table or raise max_length in params.yaml"
        )
