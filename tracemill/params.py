"""params.yaml loading: each section becomes a frozen dataclass, checked before any work.

A section class is a frozen dataclass whose fields carry the paper's defaults. `parse_section`
rejects unknown keys, wrong types, values outside a field's `choices` and numbers outside its
`range` (`bounded`, `at_least`, `above`, `fraction`) with a message that names the key, the value
and what is allowed, so a typo never silently falls back to a default. It reports every bad value
of a section at once; a section's `check()` then applies the rules that tie its fields together.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import yaml

from tracemill.errors import ParamsError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

DEFAULT_PARAMS = Path("params.yaml")


def load(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"params file '{path}' not found — run from the repository root or pass --params")
    try:
        data = _read_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"params file '{path}' is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ParamsError(f"params file '{path}' must be a mapping of sections")
    return data


class _Loader(yaml.SafeLoader):
    """YAML 1.2's core schema, as DVC (ruamel) reads params.yaml: only true/false are booleans, so
    `yes` or `on` stays a string that a bool knob rejects, and `1e-3` is a float, not a string."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
# YAML 1.1 wants a dot and a signed exponent (`1.0e+3`); 1.2 also reads `1e3`, `1.5e3` and `.5e-3` as floats.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)


def _read_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 — a SafeLoader subclass


def choices(*allowed: Any, **kwargs: Any) -> Any:
    """A dataclass field restricted to `allowed` values: `backend: str = choices("a", "b", default="a")`.
    On a list field each item must be one of them."""
    return dataclasses.field(metadata={"choices": allowed}, **kwargs)


@dataclasses.dataclass(frozen=True)
class Range:
    """The finite numbers a knob may take: lo and hi (None: unbounded), each included unless open."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, value: float) -> bool:
        # An int is exact at any size (math.isfinite would overflow converting it to a float).
        if not isinstance(value, int) and not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)

    def __str__(self) -> str:
        if self.lo is not None and self.hi is not None and not (self.lo_open or self.hi_open):
            return f"between {self.lo} and {self.hi}"
        parts = ([f"{'>' if self.lo_open else '>='} {self.lo}"] if self.lo is not None else []) + (
            [f"{'<' if self.hi_open else '<='} {self.hi}"] if self.hi is not None else []
        )
        return " and ".join(parts) or "a finite number"


def bounded(
    lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False, **kwargs: Any
) -> Any:
    """A numeric field (or a list or dict of numbers) kept within [lo, hi]: `top_p: float =
    bounded(0, 1, lo_open=True, default=0.95)`. With no bounds: any finite number."""
    return dataclasses.field(metadata={"range": Range(lo, hi, lo_open, hi_open)}, **kwargs)


def at_least(lo: float, **kwargs: Any) -> Any:
    """Counts and sizes: `max_problems: int = at_least(0, default=64)`."""
    return bounded(lo, **kwargs)


def above(lo: float, **kwargs: Any) -> Any:
    """Strictly greater than lo: learning rates and timeouts, `above(0, default=5.0)`."""
    return bounded(lo, lo_open=True, **kwargs)


def fraction(**kwargs: Any) -> Any:
    """Probabilities, shares and thresholds: between 0 and 1."""
    return bounded(0, 1, **kwargs)


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin in (list, tuple):
        args = typing.get_args(hint)
        inner = args[0] if args else Any
        return isinstance(value, (list, tuple)) and all(_type_ok(v, inner) for v in value)
    if origin is dict:
        key, val = typing.get_args(hint) or (Any, Any)
        return isinstance(value, dict) and all(_type_ok(k, key) and _type_ok(v, val) for k, v in value.items())
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, dict)
    return isinstance(value, hint)


def _convert(value: Any, hint: Any, where: str, problems: list[str]) -> Any:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return _parse(hint, value, where, problems)
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        args = typing.get_args(hint)
        inner = args[0] if args else Any
        items = [_convert(v, inner, f"{where}[{i}]", problems) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict and typing.get_args(hint):
        inner = typing.get_args(hint)[1]
        return {k: _convert(v, inner, f"{where}.{k}", problems) for k, v in value.items()}
    if hint is float and isinstance(value, int):
        return float(value)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if isinstance(arg, type) and dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return _parse(arg, value, where, problems)
    return value


def parse_section(cls: type[T], raw: dict[str, Any] | None, section: str) -> T:
    """Build the frozen dataclass `cls` from the mapping at `section` in params.yaml; ParamsError
    lists every bad key of it (`.problems`), not only the first."""
    problems: list[str] = []
    obj = _parse(cls, raw, section, problems)
    if problems:
        raise ParamsError(*problems)
    return cast(T, obj)  # _parse returns None only with a problem appended


def _parse(cls: type[T], raw: Any, section: str, problems: list[str]) -> T | None:
    """`cls` from `raw`, or None with what is wrong appended to `problems`."""
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        problems.append(f"params '{section}' must be a mapping, got {type(raw).__name__}")
        return None
    before = len(problems)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in sorted(set(raw) - set(fields), key=str):
        problems.append(f"params '{section}.{name}' is not a known key; allowed: {', '.join(sorted(fields))}")
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        key = f"{section}.{name}"
        if name not in raw:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                problems.append(f"params '{key}' is required")
            continue
        value = raw[name]
        hint = hints[name]
        bad = _value_problems(value, hint, field, key)
        if bad:
            problems.extend(bad)
            continue
        if (
            isinstance(value, dict)
            and dataclasses.is_dataclass(hint)
            and field.default_factory is not dataclasses.MISSING
        ):
            # a partial override of a nested section keeps the section's own defaults for the rest
            value = {**_shallow(field.default_factory()), **value}
        kwargs[name] = _convert(value, hint, key, problems)
    if len(problems) > before:
        return None
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if callable(check):
        try:
            check()
        except ParamsError as exc:
            problems.extend(exc.problems)
            return None
    return obj


def _value_problems(value: Any, hint: Any, field: dataclasses.Field, key: str) -> list[str]:
    """What is wrong with one key's value: its type, else its items outside `choices` or `range`."""
    if not _type_ok(value, hint):
        return [f"params '{key}' = {value!r} must be of type {_hint_name(hint)}"]
    allowed = field.metadata.get("choices")
    if allowed:
        listed = ", ".join(map(str, allowed))
        return [
            f"params '{k}' = {v!r} is not allowed; choose one of: {listed}"
            for k, v in _items(value, key)
            if v not in allowed
        ]
    span = field.metadata.get("range")
    if span:
        return [f"params '{k}' = {v!r} must be {span}" for k, v in _items(value, key) if v not in span]
    return []


def _items(value: Any, key: str) -> list[tuple[str, Any]]:
    """The scalars a field's metadata applies to, with their keys: the value, a list's items or a
    dict's values (None, an unset optional, has none)."""
    if isinstance(value, (list, tuple)):
        return [(f"{key}[{i}]", v) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return [(f"{key}.{k}", v) for k, v in value.items()]
    return [] if value is None else [(key, value)]


def _shallow(obj: Any) -> dict[str, Any]:
    return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return _shallow(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def section(cls: type[T], params: dict[str, Any], name: str) -> T:
    return parse_section(cls, params.get(name), name)


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


# Every section of params.yaml and the dataclass that reads it ("module:Class", imported on use so
# that checking a file stays cheap). `seed` is a plain integer.
SECTIONS: dict[str, str] = {
    "problems": "tracemill.problems:ProblemsParams",
    "format": "tracemill.formats:FormatParams",
    "synthetic": "tracemill.synthetic:SyntheticParams",
    "bootstrap": "tracemill.bootstrap:BootstrapParams",
    "start": "tracemill.start_params:StartParams",
    "run": "tracemill.runner:RunParams",
    "policy": "tracemill.policy:PolicyParams",
    "llm": "tracemill.llm:LLMParams",
    "sandbox": "tracemill.sandbox:SandboxParams",
    "grading": "tracemill.grading:GradingParams",
    "train": "tracemill.train:TrainParams",
    "evaluate": "tracemill.evaluate:EvalParams",
    "publish": "tracemill.publish:PublishParams",
    "rstar": "tracemill.rstar:RStarParams",
    "rstar_bestofn": "tracemill.rstar.bestofn:BestOfNParams",
    "satori": "tracemill.satori:SatoriParams",
}


def section_class(name: str) -> type:
    import importlib

    module, cls = SECTIONS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def validate(params: dict[str, Any]) -> list[str]:
    """Parse every section of a params mapping; returns the sections checked. ParamsError lists every
    problem: an unknown section, a bad seed, each bad value by its full key with what is allowed, and a
    stage's `sources` naming a source whose rows problems.sources does not make."""
    problems = [
        f"params '{name}' is not a known section; allowed: seed, {', '.join(SECTIONS)}"
        for name in sorted(set(params) - set(SECTIONS) - {"seed"}, key=str)
    ]
    seed = params.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        problems.append(f"params 'seed' = {seed!r} must be of type int")
    elif seed < 0:
        problems.append(f"params 'seed' = {seed!r} must be >= 0")
    parsed = {name: _parse(section_class(name), params.get(name), name, problems) for name in SECTIONS}
    problems.extend(_unknown_sources(parsed, _sources(params)))
    if problems:
        raise ParamsError(*problems)
    return list(SECTIONS)


def _sources(params: dict[str, Any]) -> list[Any]:
    """Each entry of problems.sources that parses on its own (validate reports the others)."""
    from tracemill.problems import SourceParams

    problems = params.get("problems")
    raw = problems.get("sources") if isinstance(problems, dict) else None
    parsed = [
        _parse(SourceParams, s, f"problems.sources[{i}]", [])
        for i, s in enumerate(raw if isinstance(raw, list) else [])
    ]
    return [s for s in parsed if s is not None]


def _unknown_sources(parsed: dict[str, Any], sources: list[Any]) -> list[str]:
    """A stage's `sources` entry that no problems source makes rows for would silently select nothing."""
    known = {s.row_source for s in sources}
    if not known:
        return []
    return [
        f"params '{key}.sources' names source '{name}', which problems.sources does not make "
        f"(it makes: {', '.join(sorted(known))}) — fix the name or add the source to problems.sources"
        for section_name, obj in parsed.items()
        if obj is not None and section_name != "problems"
        for key, node in _nested(obj, section_name)
        for name in getattr(node, "sources", ())
        if name not in known
    ]


def _nested(obj: Any, key: str) -> Iterator[tuple[str, Any]]:
    """Every dataclass in a parsed section, with its dotted key."""
    if dataclasses.is_dataclass(obj):
        yield key, obj
        for f in dataclasses.fields(obj):
            yield from _nested(getattr(obj, f.name), f"{key}.{f.name}")
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            yield from _nested(item, f"{key}[{i}]")


# Model folders a person sets by hand; they often exist only on the machine that runs the stages.
MODEL_KEYS = ("policy.model", "satori.distill.student")


def missing_files(params: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The files a params mapping names that are not here (paths are relative to the working
    directory, where the stages run): (problems, warnings). Problems: a problems source's file or
    folder, a DeepSpeed config — the stage that reads it would stop. Warnings: a model folder in
    MODEL_KEYS without config.json; each stage that loads it checks it again."""
    from tracemill.errors import TracemillError
    from tracemill.policy import check_model_folder

    problems = [
        f"params 'problems.sources[{src.name}].path' = '{src.path}' does not exist (kind '{src.kind}') — put the "
        f"{'folder' if src.kind == 'hf_disk' else 'file'} there or fix the path (relative to {Path.cwd()})"
        for src in _sources(params)
        if src.path and not Path(src.path).exists()
    ]
    leaves = dict(_leaves(params, ""))
    problems += [
        f"params '{key}' = '{value}' is not a file — point it at a DeepSpeed config (configs/deepspeed/) "
        "or set it to null"
        for key, value in leaves.items()
        if key.endswith(".deepspeed") and isinstance(value, str) and not Path(value).is_file()
    ]
    warnings = []
    for key in MODEL_KEYS:
        if isinstance(leaves.get(key), str):
            try:
                check_model_folder(Path(leaves[key]), key)
            except TracemillError as exc:
                warnings.append(f"{exc} (the stages that load it will stop)")
    return problems, warnings


def _leaves(mapping: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def merged(params_path: str | Path, overrides_path: str | Path) -> dict[str, Any]:
    """The params mapping `overlay` would write from these two files, without writing anything."""
    params = load(params_path)
    _merge(params, load(overrides_path), "", [])
    return params


def _merge(base: Any, over: Mapping[str, Any], prefix: str, changed: list[str]) -> None:
    for key, value in over.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(base.get(key), Mapping):
            _merge(base[key], value, f"{name}.", changed)
        elif base.get(key) != value:
            base[key] = value
            changed.append(name)


def overlay(params_path: str | Path, overrides_path: str | Path) -> list[str]:
    """Merge the overrides file into the params file in place (comments kept: ruamel round trip);
    returns the keys whose value changed. Nothing is written unless the merged params validate."""
    import io

    from ruamel.yaml import YAML

    rt = YAML()  # round trip: comments, quotes and the number formats of both files survive
    rt.preserve_quotes = True
    rt.width = 4096
    rt.indent(mapping=2, sequence=4, offset=2)
    rt.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    try:
        over = rt.load(Path(overrides_path).read_text())
    except Exception as exc:  # noqa: BLE001 — ruamel raises many types; one clear line for all
        raise ParamsError(f"cannot read overrides '{overrides_path}': {exc}") from None
    if not isinstance(over, Mapping):
        raise ParamsError(f"overrides '{overrides_path}' must be a mapping of params sections")
    doc = rt.load(Path(params_path).read_text())
    changed: list[str] = []
    _merge(doc, over, "", changed)
    buf = io.StringIO()
    rt.dump(doc, buf)
    validate(_read_yaml(buf.getvalue()))
    Path(params_path).write_text(buf.getvalue())
    return changed


def doc_table(params_path: str | Path) -> str:
    """A Markdown table of every key in a params file: its dotted name, its value and the comment
    written beside it (docs/params.md is this table for params.yaml; a test keeps it current)."""
    import json

    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    doc = YAML().load(Path(params_path).read_text())

    def comment(parent: Any, key: Any) -> str:
        tokens = parent.ca.items.get(key) if hasattr(parent, "ca") else None
        token = tokens[2] if tokens and len(tokens) > 2 else None
        return token.value.split("\n")[0].strip().lstrip("#").strip() if token is not None else ""

    def cell(value: Any) -> str:
        if isinstance(value, CommentedSeq) and value and isinstance(value[0], CommentedMap):
            text = f"{len(value)} entries, see params.yaml"
        elif isinstance(value, (CommentedMap, CommentedSeq)):
            text = json.dumps(value, default=str)
        else:
            text = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        return code(text) if text else ""

    def code(text: str) -> str:  # a Markdown code span inside a table cell
        text = text.replace("|", "\\|")
        return f"`` {text} ``" if "`" in text else f"`{text}`"

    rows: list[str] = []

    def walk(mapping: Any, prefix: str) -> None:
        for key, value in mapping.items():
            name = f"{prefix}{key}"
            leafy = isinstance(value, CommentedMap) and all(
                not isinstance(v, (CommentedMap, CommentedSeq)) for v in value.values()
            )
            if isinstance(value, CommentedMap) and not (leafy and str(key).isdigit()):
                if comment(mapping, key):
                    rows.append(f"| {code(name)} | | {comment(mapping, key)} |")
                walk(value, name + ".")
            else:
                rows.append(f"| {code(name)} | {cell(value)} | {comment(mapping, key).replace('|', '/')} |")

    walk(doc, "")
    head = [
        "<!-- generated by `tracemill params-doc > docs/params.md`; tests/test_params.py keeps it current -->",
        "# params.yaml",
        "",
        "Every knob of the pipeline with its embedded-run value; the comment names the paper's value",
        "where the embedded run differs. `params.gpu.yaml` holds the GPU overrides.",
        "",
        "| key | value | note |",
        "| --- | --- | --- |",
    ]
    return "\n".join(head + rows) + "\n"
