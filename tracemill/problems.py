"""Normalise seed problems from every configured source into the `problems` table.

Sources are registry entries chosen by `kind` in params.yaml. Each reader yields raw rows (or a
`RowError` for bytes that are not a row at all); each row is normalised or quarantined with its
reason, and the stage goes on.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracemill import records
from tracemill.errors import ParamsError, TracemillError
from tracemill.params import at_least, choices, parse_section
from tracemill.store import Quarantine

KINDS = ("gsm8k", "math500", "humaneval", "mbpp", "jsonl", "parquet", "hf_disk", "synthetic")
SPLITS = ("train", "eval", "test", "auto")


@dataclass(frozen=True)
class SourceParams:
    name: str
    kind: str = choices(*KINDS, default="jsonl")
    path: str | None = None
    split: str = choices(*SPLITS, default="test")  # auto: the source's own split rule (MBPP task ids)
    domain: str = choices("math", "code", default="math")
    license: str | None = None
    limit: int | None = at_least(0, default=None)  # keep the first N rows (after quarantine), None for all
    columns: dict[str, str] = field(default_factory=dict)  # jsonl/parquet/hf_disk: our column -> theirs
    hf_split: str | None = None  # hf_disk: which split of a DatasetDict
    options: dict[str, Any] = field(default_factory=dict)  # synthetic: the generator's params (keys of `synthetic`)

    def check(self) -> None:
        if self.kind != "synthetic" and not self.path:
            raise ParamsError(f"params 'problems.sources[{self.name}].path' is required for kind '{self.kind}'")
        if self.options:
            if self.kind != "synthetic":
                raise ParamsError(f"params 'problems.sources[{self.name}].options' is for kind 'synthetic' only")
            from tracemill import synthetic

            parse_section(synthetic.SyntheticParams, self.options, f"problems.sources[{self.name}].options")
        unknown = set(self.columns) - set(MAPPABLE)
        if unknown:
            raise ParamsError(
                f"params 'problems.sources[{self.name}].columns.{sorted(unknown)[0]}' is not a problems column; "
                f"allowed: {', '.join(MAPPABLE)}"
            )

    @property
    def row_source(self) -> str:
        """The `source` of the rows it makes, which a stage's `sources` picks from (the synthetic
        generator labels its rows 'synthetic', whatever the entry is called)."""
        return "synthetic" if self.kind == "synthetic" else self.name


MAPPABLE = ("question", "answer", "source_id", "tests", "entry_point", "test_setup", "difficulty", "test_format")


@dataclass(frozen=True)
class ProblemsParams:
    sources: list[SourceParams] = field(default_factory=list)
    max_question_chars: int = at_least(1, default=20_000)
    max_answer_chars: int = at_least(1, default=2_000)

    def check(self) -> None:
        names = [s.name for s in self.sources]
        dup = [n for n, c in Counter(names).items() if c > 1]
        if dup:
            raise ParamsError(f"params 'problems.sources': name '{dup[0]}' is used twice")
        if not self.sources:
            raise ParamsError("params 'problems.sources' is empty — list at least one source")


class RowError(Exception):
    def __init__(self, reason: str, detail: str, raw: Any = None) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.raw = reason, detail, raw


# ---- readers: path -> raw rows -------------------------------------------------------------------


def _require(path: str | None, source: SourceParams) -> Path:
    p = Path(path or "")
    if not p.exists():
        raise TracemillError(
            f"source '{source.name}': '{p}' not found — fix problems.sources[{source.name}].path in params.yaml"
        )
    return p


def read_jsonl(source: SourceParams) -> Iterator[dict[str, Any] | RowError]:
    path = _require(source.path, source)
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield RowError("bad_utf8", f"line {lineno}: {exc}", raw.decode("utf-8", "backslashreplace"))
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                yield RowError("bad_json", f"line {lineno}: {exc.msg}", text)
                continue
            if not isinstance(row, dict):
                yield RowError("bad_json", f"line {lineno}: not an object", text)
                continue
            yield row


def read_parquet(source: SourceParams) -> Iterator[dict[str, Any] | RowError]:
    import pyarrow.parquet as pq

    path = _require(source.path, source)
    files = sorted(path.glob("**/*.parquet")) if path.is_dir() else [path]
    for f in files:
        yield from pq.read_table(f).to_pylist()


def read_hf_disk(source: SourceParams) -> Iterator[dict[str, Any] | RowError]:
    import datasets

    path = _require(source.path, source)
    try:
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            ds = datasets.load_from_disk(str(path))
        else:
            ds = datasets.load_dataset(str(path))
    except Exception as exc:  # datasets raises many types for an unreadable folder
        raise TracemillError(f"source '{source.name}': cannot load datasets folder '{path}': {exc}") from exc
    if isinstance(ds, datasets.DatasetDict):
        split = source.hf_split or next(iter(ds))
        if split not in ds:
            raise TracemillError(f"source '{source.name}': split '{split}' not in {sorted(ds)} — set hf_split")
        ds = ds[split]
    yield from ds


def read_synthetic(source: SourceParams) -> Iterator[dict[str, Any] | RowError]:
    """The synthetic generator with the top-level `synthetic` params (as the bootstrap stage uses
    them, so both see the same eval split); the source's `options` override single keys."""
    from tracemill import synthetic

    options = {**SYNTHETIC_DEFAULTS.get("params", {}), **source.options}
    cfg = parse_section(synthetic.SyntheticParams, options, f"problems.sources[{source.name}].options")
    yield from synthetic.synthetic_problems(cfg)


SYNTHETIC_DEFAULTS: dict[str, dict[str, Any]] = {}


READERS: dict[str, Callable[[SourceParams], Iterator[dict[str, Any] | RowError]]] = {
    "gsm8k": read_jsonl,
    "math500": read_jsonl,
    "humaneval": read_jsonl,
    "mbpp": read_jsonl,
    "jsonl": read_jsonl,
    "parquet": read_parquet,
    "hf_disk": read_hf_disk,
    "synthetic": read_synthetic,
}

# ---- normalisers: raw row -> problems fields ------------------------------------------------------

_GSM8K_ANSWER = re.compile(r"####\s*(.+?)\s*$", re.S)


def _text(row: dict[str, Any], key: str) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        value = str(value)
    value = value.strip()
    return value or None


def norm_gsm8k(row: dict[str, Any], source: SourceParams) -> dict[str, Any]:
    solution = _text(row, "answer")
    match = _GSM8K_ANSWER.search(solution or "")
    if not match:
        raise RowError("no_answer", "no '#### <answer>' in the solution")
    answer = match.group(1).replace(",", "").strip()
    return {"question": _text(row, "question"), "answer": answer, "metadata": {"solution": solution}}


def norm_math500(row: dict[str, Any], source: SourceParams) -> dict[str, Any]:
    level = row.get("level")
    return {
        "question": _text(row, "problem"),
        "answer": _text(row, "answer"),
        "source_id": _text(row, "unique_id"),
        "difficulty": int(level) if isinstance(level, int) else None,
        "metadata": {"subject": row.get("subject"), "solution": row.get("solution")},
    }


def norm_humaneval(row: dict[str, Any], source: SourceParams) -> dict[str, Any]:
    prompt = row.get("prompt") or ""
    test = _text(row, "test")
    return {
        "question": _text(row, "prompt"),
        "answer": prompt + (row.get("canonical_solution") or "") if row.get("canonical_solution") else None,
        "source_id": _text(row, "task_id"),
        "tests": [test] if test else [],
        "test_format": "humaneval",
        "entry_point": _text(row, "entry_point"),
        "domain": "code",
    }


_CALLED = re.compile(r"assert\s+(?:not\s+)?\(?\s*(?:math\.isclose\(|set\()?\s*([A-Za-z_]\w*)\s*\(")


def norm_mbpp(row: dict[str, Any], source: SourceParams) -> dict[str, Any]:
    tests = [t for t in (row.get("test_list") or []) if isinstance(t, str) and t.strip()]
    text = _text(row, "text")
    entry = next((m.group(1) for t in tests if (m := _CALLED.search(t))), None)
    task_id = row.get("task_id")
    split = None
    if source.split == "auto" and isinstance(task_id, int):
        split = "test" if 11 <= task_id <= 510 else "train"
    question = f"{text}\nYour code should pass these tests:\n" + "\n".join(tests) if text else None
    return {
        "question": question,
        "answer": _text(row, "code"),
        "source_id": str(task_id) if task_id is not None else None,
        "tests": tests,
        "test_format": "mbpp",
        "entry_point": entry,
        "test_setup": _text(row, "test_setup_code"),
        "domain": "code",
        "split": split,
    }


def norm_mapped(row: dict[str, Any], source: SourceParams) -> dict[str, Any]:
    cols = {"question": "question", "answer": "answer", **source.columns}
    out: dict[str, Any] = {}
    for ours, theirs in cols.items():
        if theirs not in row:
            if ours == "question":
                raise RowError("no_question", f"column '{theirs}' missing")
            continue
        value = row[theirs]
        if ours == "tests":
            out[ours] = [str(t) for t in value] if isinstance(value, (list, tuple)) else [str(value)]
        elif ours == "difficulty":
            out[ours] = int(value) if value is not None else None
        else:
            out[ours] = _text(row, theirs)
    extra = {k: v for k, v in row.items() if k not in cols.values()}
    if extra:
        out["metadata"] = extra
    return out


def norm_synthetic(row: dict[str, Any], source: SourceParams) -> dict[str, Any]:
    return dict(row)


NORMALISERS: dict[str, Callable[[dict[str, Any], SourceParams], dict[str, Any]]] = {
    "gsm8k": norm_gsm8k,
    "math500": norm_math500,
    "humaneval": norm_humaneval,
    "mbpp": norm_mbpp,
    "jsonl": norm_mapped,
    "parquet": norm_mapped,
    "hf_disk": norm_mapped,
    "synthetic": norm_synthetic,
}


def _finish(fields: dict[str, Any], source: SourceParams, cfg: ProblemsParams) -> dict[str, Any]:
    domain = fields.get("domain") or source.domain
    question = fields.get("question")
    answer = fields.get("answer")
    tests = fields.get("tests") or None
    if not question:
        raise RowError("no_question", "empty or missing question")
    if len(question) > cfg.max_question_chars:
        raise RowError("too_long", f"question has {len(question)} chars > max_question_chars={cfg.max_question_chars}")
    if domain == "math":
        if not answer:
            raise RowError("no_answer", "empty or missing answer")
        if len(answer) > cfg.max_answer_chars:
            raise RowError("too_long", f"answer has {len(answer)} chars > max_answer_chars={cfg.max_answer_chars}")
    elif not tests:
        raise RowError("no_tests", "code problem without tests")
    split = fields.get("split") or (source.split if source.split != "auto" else "test")
    metadata = fields.get("metadata")
    return {
        "problem_id": fields.get("problem_id") or records.content_id("problem", source.name, domain, question),
        "source": fields.get("source") or source.name,
        "source_id": fields.get("source_id"),
        "split": split,
        "domain": domain,
        "difficulty": fields.get("difficulty"),
        "question": question,
        "answer": answer,
        "tests": tests,
        "test_format": fields.get("test_format"),
        "entry_point": fields.get("entry_point"),
        "test_setup": fields.get("test_setup"),
        "license": fields.get("license") or source.license,
        "metadata": metadata if isinstance(metadata, str) or metadata is None else records.to_json(metadata),
    }


@dataclass
class SourceReport:
    kept: int = 0
    rejected: Counter = field(default_factory=Counter)


def build_problems(
    cfg: ProblemsParams, quarantine: Quarantine, synthetic: dict[str, Any] | None = None
) -> tuple[list[dict[str, Any]], dict[str, SourceReport]]:
    """Every configured source, normalised and deduplicated; malformed rows go to `quarantine`.
    `synthetic` is the top-level `synthetic` params section used by sources of kind synthetic."""
    SYNTHETIC_DEFAULTS["params"] = dict(synthetic or {})
    rows: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    reports: dict[str, SourceReport] = {}
    for source in cfg.sources:
        report = reports[source.name] = SourceReport()
        normalise = NORMALISERS[source.kind]
        for raw in READERS[source.kind](source):
            if source.limit is not None and report.kept >= source.limit:
                break
            try:
                if isinstance(raw, RowError):
                    raise raw
                row = _finish(normalise(raw, source), source, cfg)
                key = row["problem_id"]
                if key in seen or (row["source_id"] and (f"{row['source']}:{row['source_id']}") in seen):
                    raise RowError("duplicate_id", f"problem {key} ({row['source_id'] or 'no source id'}) seen before")
                seen[key] = source.name
                if row["source_id"]:
                    seen[f"{row['source']}:{row['source_id']}"] = source.name
            except RowError as err:
                quarantine.reject(
                    err.reason,
                    err.raw if err.raw is not None else raw,
                    table="problems",
                    detail=err.detail,
                    source=source.name,
                )
                report.rejected[err.reason] += 1
                continue
            except (TypeError, ValueError, AttributeError) as exc:
                quarantine.reject(
                    "malformed", raw, table="problems", detail=f"{type(exc).__name__}: {exc}", source=source.name
                )
                report.rejected["malformed"] += 1
                continue
            rows.append(row)
            report.kept += 1
    return rows, reports
