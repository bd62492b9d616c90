"""params.yaml loading: each section becomes a frozen dataclass, checked before any work.

A section class is a frozen dataclass whose fields carry the paper's defaults. `parse_section`
rejects unknown keys, wrong types and values outside a field's `choices` metadata with a message
that names the key and what is allowed, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from collections.abc import Mapping
from typing import Any, TypeVar

import yaml

from tracemill.errors import ParamsError

T = TypeVar("T")

DEFAULT_PARAMS = Path("params.yaml")


def load(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"params file '{path}' not found — run from the repository root or pass --params")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"params file '{path}' is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ParamsError(f"params file '{path}' must be a mapping of sections")
    return data


def choices(*allowed: Any, **kwargs: Any) -> Any:
    """A dataclass field restricted to `allowed` values: `backend: str = choices("a", "b", default="a")`."""
    return dataclasses.field(metadata={"choices": allowed}, **kwargs)


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
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, dict)
    return isinstance(value, hint)


def _convert(value: Any, hint: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return parse_section(hint, value, where)
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        args = typing.get_args(hint)
        inner = args[0] if args else Any
        items = [_convert(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if hint is float and isinstance(value, int):
        return float(value)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return parse_section(arg, value, where)
    return value


def parse_section(cls: type[T], raw: dict[str, Any] | None, section: str) -> T:
    """Build the frozen dataclass `cls` from the mapping at `section` in params.yaml."""
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ParamsError(f"params '{section}' must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ParamsError(
            f"params '{section}.{unknown[0]}' is not a known key; allowed: {', '.join(sorted(fields))}"
        )
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        key = f"{section}.{name}"
        if name not in raw:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise ParamsError(f"params '{key}' is required")
            continue
        value = raw[name]
        hint = hints[name]
        if not _type_ok(value, hint):
            raise ParamsError(f"params '{key}' = {value!r} must be of type {_hint_name(hint)}")
        allowed = field.metadata.get("choices")
        if allowed and value not in allowed:
            raise ParamsError(f"params '{key}' = {value!r} is not allowed; choose one of: {', '.join(map(str, allowed))}")
        if isinstance(value, dict) and dataclasses.is_dataclass(hint) and field.default_factory is not dataclasses.MISSING:
            # a partial override of a nested section keeps the section's own defaults for the rest
            value = {**_shallow(field.default_factory()), **value}
        kwargs[name] = _convert(value, hint, key)
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if callable(check):
        check()
    return obj


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


def positive(value: float, key: str) -> None:
    if value <= 0:
        raise ParamsError(f"params '{key}' = {value!r} must be > 0")


def in_range(value: float, lo: float, hi: float, key: str) -> None:
    if not lo <= value <= hi:
        raise ParamsError(f"params '{key}' = {value!r} must be between {lo} and {hi}")


# Every section of params.yaml and the dataclass that reads it ("module:Class", imported on use so
# that checking a file stays cheap). `seed` is a plain integer.
SECTIONS: dict[str, str] = {
    "problems": "tracemill.problems:ProblemsParams",
    "format": "tracemill.formats:FormatParams",
    "synthetic": "tracemill.synthetic:SyntheticParams",
    "bootstrap": "tracemill.bootstrap:BootstrapParams",
    "start": "tracemill.start:StartParams",
    "run": "tracemill.runner:RunParams",
    "policy": "tracemill.policy:PolicyParams",
    "llm": "tracemill.llm:LLMParams",
    "sandbox": "tracemill.sandbox:SandboxParams",
    "grading": "tracemill.grading:GradingParams",
    "train": "tracemill.train:TrainParams",
    "evaluate": "tracemill.evaluate:EvalParams",
    "publish": "tracemill.publish:PublishParams",
    "mcts": "tracemill.search:MCTSParams",
    "satori": "tracemill.satori:SatoriParams",
}


def section_class(name: str) -> type:
    import importlib

    module, cls = SECTIONS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def validate(params: dict[str, Any]) -> list[str]:
    """Parse every section of a params mapping; returns the sections checked. An unknown section, a
    non-integer seed or any bad value raises ParamsError naming the full key (and the allowed values)."""
    unknown = sorted(set(params) - set(SECTIONS) - {"seed"})
    if unknown:
        raise ParamsError(f"params '{unknown[0]}' is not a known section; allowed: seed, {', '.join(SECTIONS)}")
    seed = params.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ParamsError(f"params 'seed' = {seed!r} must be of type int")
    for name in SECTIONS:
        section(section_class(name), params, name)
    return list(SECTIONS)


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
    validate(yaml.safe_load(buf.getvalue()))
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
            leafy = isinstance(value, CommentedMap) and all(not isinstance(v, (CommentedMap, CommentedSeq)) for v in value.values())
            if isinstance(value, CommentedMap) and not (leafy and str(key).isdigit()):
                if comment(mapping, key):
                    rows.append(f"| {code(name)} | | {comment(mapping, key)} |")
                walk(value, name + ".")
            else:
                rows.append(f"| {code(name)} | {cell(value)} | {comment(mapping, key).replace('|', '/')} |")

    walk(doc, "")
    head = ["<!-- generated by `tracemill params-doc > docs/params.md`; tests/test_params.py keeps it current -->",
            "# params.yaml", "", "Every knob of the pipeline with its embedded-run value; the comment names the paper's value",
            "where the embedded run differs. `params.gpu.yaml` holds the GPU overrides.", "",
            "| key | value | note |", "| --- | --- | --- |"]
    return "\n".join(head + rows) + "\n"
