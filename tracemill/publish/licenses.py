"""Licenses and sources of the published rows: each row keeps the license of the seed problem it comes from."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

UNKNOWN_LICENSE = "unknown"  # the Hub's own id for a license nobody stated
MIXED_LICENSE = "other"  # the Hub's id when one value cannot describe the rows


@dataclass(frozen=True, order=True)
class Origin:
    source: str
    license: str  # a Hub license id


def hub_license(value: str | None) -> str:
    """Hub license ids are the SPDX ids in lower case (MIT -> mit, CC-BY-4.0 -> cc-by-4.0)."""
    return value.strip().lower() if value and value.strip() else UNKNOWN_LICENSE


def origins(data: pa.Table, problems: pa.Table) -> set[Origin]:
    """The (source, license) of every seed problem the rows of `data` come from."""
    if "problem_id" not in data.column_names:
        return set()
    ids = pc.unique(data.column("problem_id").drop_null())
    used = problems.filter(pc.is_in(problems.column("problem_id"), value_set=ids))
    found = {
        Origin(s, hub_license(lic))
        for s, lic in zip(used.column("source").to_pylist(), used.column("license").to_pylist())
    }
    if len(used) < len(ids):  # rows whose problem is not in the problems table: their license is not known
        found.add(Origin("unknown", UNKNOWN_LICENSE))
    return found


def card_license(override: str | None, found: set[Origin]) -> str:
    if override:
        return override
    licenses = {o.license for o in found}
    return licenses.pop() if len(licenses) == 1 else MIXED_LICENSE
