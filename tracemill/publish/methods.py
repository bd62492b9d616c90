"""Which method made a table's rows, what the card summarises of them, and the papers it cites.

The prose lives beside this module: `rows.md` says what one row of each table is, `references.bib`
holds the BibTeX entries cited by key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from tracemill.publish.errors import PublishError
from tracemill.publish.tables import Published

ROWS = Path(__file__).with_name("rows.md")  # one `## <table>` section per table: what one of its rows is
REFERENCES = Path(__file__).with_name("references.bib")
_ROW_SECTION = re.compile(r"^## (\w+)\n(.*?)(?=^## |\Z)", re.M | re.S)
_BIB_ENTRY = re.compile(r"^@\w+\{([^,\s]+),", re.M)


@dataclass(frozen=True)
class TableDoc:
    """Which columns of a table the card summarises; the counts and ranges themselves are computed from
    the published rows."""

    method: str  # a METHODS key; for a table with an `origin` column, the method of values ORIGIN_METHODS lacks
    tally: tuple[str, ...] = ()  # categorical columns: rows per value
    ranges: tuple[str, ...] = ()  # numeric columns: smallest and largest value
    origin: str | None = None  # the column naming the stage or table each row came from


TABLE_DOCS: dict[str, TableDoc] = {
    "problems": TableDoc("seed", ("source", "split", "domain")),
    "traces": TableDoc("generation", ("stage", "hint_kind", "correct", "finish_reason"), origin="stage"),
    "d_seed": TableDoc("start", ("reason_kept", "hint_kind", "correct")),
    "d_start": TableDoc("start", ("reason_kept", "correct")),
    "nodes": TableDoc("rstar", ("round", "exec_ok", "terminal", "correct"), ("q",)),
    "trajectories": TableDoc("rstar", ("round", "correct", "selected"), ("avg_q",)),
    "pairs": TableDoc("rstar", ("round", "final_step"), ("chosen_q", "rejected_q")),
    "coat": TableDoc("satori", ("kind", "correct")),
    "rae_states": TableDoc("satori", ("outcome", "ends_with_reflect"), ("q",)),
    "sft": TableDoc("training", ("source",), origin="source"),
    "rejected": TableDoc("quarantine", ("stage", "table", "reason")),
}


@dataclass(frozen=True)
class Method:
    name: str  # in the card's tables
    paper: str | None = None  # the paper it follows, as the card's table sections name it
    cite: str | None = None  # the paper's key in references.bib


METHODS: dict[str, Method] = {
    "seed": Method("seed problems"),
    "generation": Method("generation"),
    "training": Method("training examples"),
    "evaluation": Method("evaluation"),
    "quarantine": Method("quarantine"),
    "start": Method("START", "START (arXiv 2503.04625)", "li2025start"),
    "rstar": Method("rStar-Math", "rStar-Math (arXiv 2501.04519)", "guan2025rstarmath"),
    "satori": Method("Satori", "Satori (arXiv 2502.02508)", "shen2025satori"),
}
# The method of each value the pipeline writes in traces.stage and sft.source.
ORIGIN_METHODS: dict[str, str] = {
    "hint_infer": "start",
    "rft": "start",
    "d_seed": "start",
    "d_start": "start",
    "trajectories": "rstar",
    "coat": "satori",
    "distill": "satori",
    "evaluate": "evaluation",
}
# The problems stage's source kinds and the references.bib keys of the papers of their data.
SEED_PAPERS: dict[str, tuple[str, ...]] = {
    "gsm8k": ("cobbe2021gsm8k",),
    "math500": ("hendrycks2021math", "lightman2023verify"),
    "mbpp": ("austin2021program",),
    "humaneval": ("chen2021codex",),
}


def methods(data: pa.Table, table: str) -> tuple[str, ...]:
    """The methods the rows were made by: the table's own, or one per stage/source value it names."""
    doc = TABLE_DOCS[table]
    if doc.origin is None:
        return (doc.method,)
    values = sorted(set(data.column(doc.origin).drop_null().to_pylist()))
    return tuple(dict.fromkeys(ORIGIN_METHODS.get(v, doc.method) for v in values)) or (doc.method,)


def row_definitions(path: Path = ROWS) -> dict[str, str]:
    """Table -> what one of its rows is, one line, from the markdown sections of `path`."""
    text = path.read_text(encoding="utf-8")
    return {m.group(1): " ".join(m.group(2).split()) for m in _ROW_SECTION.finditer(text)}


def references(path: Path = REFERENCES) -> dict[str, str]:
    """BibTeX key -> its entry, verbatim from `path`."""
    text = path.read_text(encoding="utf-8")
    return {m.group(1): text[m.start() : _closing_brace(text, m.end(), path)] for m in _BIB_ENTRY.finditer(text)}


def _closing_brace(text: str, start: int, path: Path) -> int:
    """The end of the entry whose body starts at `start`, one brace deep (titles nest braces: {{START}})."""
    depth = 1
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return i + 1
    raise PublishError(f"'{path}' has an entry with no closing brace after character {start} — close it")


def citations(published: list[Published], kinds: dict[str, str]) -> list[str]:
    """BibTeX keys of the methods of the published rows and of the seed sets their rows come from."""
    keys: list[str] = []
    for p in published:
        keys += [cite for k in p.methods if (cite := METHODS[k].cite)]
        for o in sorted(p.origins):  # sorted: set order changes with the hash seed, the card must not
            keys += SEED_PAPERS.get(kinds.get(o.source, ""), ())
    return list(dict.fromkeys(keys))


def source_kinds(params: dict[str, Any]) -> dict[str, str]:
    """Source name -> kind, from the `problems.sources` params the problems stage ran with (its dvc.lock entry,
    so the stage reads no params but its own): the kind says which paper to cite."""
    sources = (params.get("problems") or {}).get("sources") or []
    return {s["name"]: s["kind"] for s in sources if isinstance(s, dict) and "name" in s and "kind" in s}
