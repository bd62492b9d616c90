"""The dataset card: YAML front matter the Hub and `datasets` read, and a body filled into the template
`card.md` with sections computed from the published rows, the params and dvc.lock."""

from __future__ import annotations

import math
import string
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import yaml

from tracemill.publish.licenses import MIXED_LICENSE
from tracemill.publish.methods import METHODS, TABLE_DOCS, citations, references, row_definitions
from tracemill.publish.params import TEST, TRAIN, DatasetParams
from tracemill.publish.splits import Guard
from tracemill.publish.tables import DATA_DIR, Published, features

CARD = "README.md"
CARD_TEMPLATE = Path(__file__).with_name("card.md")  # the card's layout; every fact in it is computed
# The Hub's size_categories vocabulary: (upper bound, label), the last one open-ended.
SIZE_CATEGORIES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
    (math.inf, "n>1B"),
)


def size_category(rows: int) -> str:
    return next(label for bound, label in SIZE_CATEGORIES if rows < bound)


def card_yaml(ds: DatasetParams, published: list[Published], license_id: str) -> str:
    """The card's front matter, written by the same `datasets` helpers that `push_to_hub` uses."""
    import datasets
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCardData

    extra: dict[str, Any] = {"license_name": "mixed"} if license_id == MIXED_LICENSE else {}
    card = DatasetCardData(
        pretty_name=ds.pretty_name,
        license=license_id,
        language=ds.language or None,
        tags=ds.tags or None,
        task_categories=ds.task_categories or None,
        size_categories=[size_category(sum(sum(p.rows.values()) for p in published))],
        **extra,
    )
    configs = MetadataConfigs()
    infos = DatasetInfosDict()
    for p in published:
        configs[p.config] = {"data_files": [{"split": s, "path": f"{DATA_DIR}/{p.config}/{s}-*"} for s in p.splits]}
        splits = datasets.SplitDict()
        for s, t in p.splits.items():
            splits.add(datasets.SplitInfo(name=s, num_bytes=t.nbytes, num_examples=t.num_rows))
        infos[p.config] = datasets.DatasetInfo(features=features(p.table), splits=splits)
    configs[published[0].config]["default"] = True  # load_dataset(repo) with no config name gets the first one
    configs.to_dataset_card_data(card)
    infos.to_dataset_card_data(card)
    return card.to_yaml()


def card_body(
    ds: DatasetParams,
    published: list[Published],
    skipped: dict[str, str],
    prov: dict[str, Any],
    kinds: dict[str, str],
    guard: Guard,
) -> str:
    """The card's body: CARD_TEMPLATE filled with sections computed from the rows, params and dvc.lock."""
    first = published[0]
    definitions = row_definitions()
    bib = references()
    fields = {
        "pretty_name": ds.pretty_name,
        "example": f'ds = load_dataset("ORG/NAME", "{first.config}", split="{next(iter(first.splits))}")',
        "configs": "\n".join(_configs_section(published, skipped)),
        "splits": "\n".join(_splits_section(published, guard)),
        "tables": "\n".join(line for p in published for line in _table_section(p, definitions[p.table])),
        "licenses": "\n".join(_licenses_section(published)),
        "provenance": yaml.safe_dump(prov, sort_keys=False, allow_unicode=True).rstrip(),
        "citations": "\n\n".join(bib[k] for k in citations(published, kinds)),
    }
    return string.Template(CARD_TEMPLATE.read_text(encoding="utf-8")).substitute(fields)


def _method_names(p: Published) -> str:
    return ", ".join(METHODS[k].name for k in p.methods)


def _configs_section(published: list[Published], skipped: dict[str, str]) -> list[str]:
    lines = [f"| config | table | {TRAIN} | {TEST} | method |", "| --- | --- | --- | --- | --- |"]
    lines += [
        f"| `{p.config}` | `{p.table}` | {p.rows.get(TRAIN, 0)} | {p.rows.get(TEST, 0)} | {_method_names(p)} |"
        for p in published
    ]
    if skipped:
        lines += ["", "Not included:", ""] + [f"- `{c}`: {why}" for c, why in skipped.items()]
    return lines


def counts(values: Any) -> str:
    """`value n, ...` for each distinct value, in the order of their text."""
    return ", ".join(f"{_value(v)} {n}" for v, n in sorted(Counter(values).items(), key=lambda kv: _value(kv[0])))


def _value(v: Any) -> str:
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def _splits_section(published: list[Published], guard: Guard) -> list[str]:
    held = sorted(set(guard.split_of.values()) - {TRAIN})
    lines = [
        f"- `{TRAIN}` holds only rows of problems whose split is `{TRAIN}`. A row is held back from it when its "
        f"problem is held out (problem splits here: {', '.join(held) or 'none'}), is not in the problems table, or "
        f"it or its problem's question shares a word {guard.n}-gram with a held-out question "
        "(`publish.decontam_ngram`).",
    ]
    for p in published:
        if TEST in p.splits:
            ids = p.splits[TEST].column("problem_id").to_pylist() if "problem_id" in p.splits[TEST].column_names else []
            lines.append(
                f"- `{TEST}` of `{p.config}`: rows {p.rows[TEST]}; their problems' splits: "
                f"{counts(guard.split_of.get(i) for i in ids) or 'none'}."
            )
    back = [p for p in published if p.held_back]
    lines += ["", f"Rows held back from `{TRAIN}`: {sum(sum(p.held_back.values()) for p in published)}."]
    if back:
        lines += ["", f"| config | held back from `{TRAIN}` | why |", "| --- | --- | --- |"]
        lines += [
            f"| `{p.config}` | {sum(p.held_back.values())} | {counts(Counter(p.held_back).elements())} |" for p in back
        ]
    return lines


def _table_section(p: Published, row: str) -> list[str]:
    """The section on config `p`, whose table's rows are each `row`."""
    papers = [paper for k in p.methods if (paper := METHODS[k].paper)]
    lines = [
        f"### `{p.config}`",
        "",
        f"One row of `{p.table}` is {row}." + (f" Method: {', '.join(papers)}." if papers else ""),
        "",
    ]
    lines += [f"- rows: {', '.join(f'{s} {n}' for s, n in p.rows.items())}"]
    lines += [f"- {fact}" for fact in facts(p.published_rows, p.table)]
    lines += ["", "Made by:", ""]
    for i in p.inputs:
        made = f"stage `{i['stage']}`" if i["stage"] else "no dvc.lock stage (built outside `dvc repro`)"
        lines.append(f"- `{i['path']}`: {made}")
        if i["params"]:
            lines += ["", "```yaml", yaml.safe_dump(i["params"], sort_keys=False, allow_unicode=True).rstrip(), "```"]
    return lines + [""]


def facts(data: pa.Table, table: str) -> list[str]:
    """What the card says about a config's rows, each computed from them."""
    doc = TABLE_DOCS[table]
    out = [f"`{c}`: {counts(data.column(c).to_pylist())}" for c in doc.tally]
    for c in doc.ranges:
        low, high = pc.min_max(data.column(c)).values()
        out.append(f"`{c}`: {_value(low.as_py())} to {_value(high.as_py())}")
    if "problem_id" in data.column_names and table != "problems":
        per_problem = Counter(data.column("problem_id").to_pylist())
        out.append(f"problems: {len(per_problem)}, at most {max(per_problem.values())} rows each")
    if "segments" in data.column_names:
        segments = pc.list_flatten(data.column("segments"))
        pairs = set(zip(pc.struct_field(segments, "kind").to_pylist(), pc.struct_field(segments, "loss").to_pylist()))
        on, off = (sorted({k for k, loss in pairs if loss is flag}) for flag in (True, False))
        out.append(f"loss on segment kinds: {', '.join(on) or 'none'}; no loss on: {', '.join(off) or 'none'}")
    return out


def _licenses_section(published: list[Published]) -> list[str]:
    found = sorted({o for p in published for o in p.origins})
    if not found:
        return ["No published row refers to a seed problem.", ""]
    lines = ["Each row keeps the license of the seed problem it comes from:", ""]
    lines += ["| source | license | configs |", "| --- | --- | --- |"]
    for o in found:
        used = ", ".join(f"`{p.config}`" for p in published if o in p.origins)
        lines.append(f"| {o.source} | {o.license} | {used} |")
    return lines + [""]
