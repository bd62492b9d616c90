"""The code and files each DVC stage reads, computed from the code, so dvc.yaml's `deps` stay truthful.

A stage's command is `python -m stages.X ...`. Its code is the transitive closure of what stages/X.py
imports: module-level and function-local `import`s, string literals that name a module of the
repository (`import_module("tracemill.train.sft")`, `[sys.executable, "-m", "tracemill.sandbox.zygote"]`)
and, where a module calls `tracemill.params.section_class` or `validate`, every "module:Class" of the
params registry. Granularity: a module of stages/ or a top-level module of tracemill/ is its file; a
subpackage (tracemill/grading, tracemill/sandbox, ...) is its directory, and once reached all its
modules count, which covers lazy `__getattr__` imports and the package's data files. Files a module
names by a literal relative to its own directory (a template beside a top-level module), or under
configs/, are dependencies too.

Params that name an input (PATH_PARAMS: seed files, model folders, DeepSpeed configs) become
dependencies of each stage whose `params:` list in dvc.yaml covers the key, unless a dependency the
stage already lists holds the path (data/seeds holds data/seeds/gsm8k_test.jsonl). They are written
with a `# params KEY` comment, which marks them as generated.

A stage's command passes every path it reads or writes as a NAME=PATH argument (stage.args), so
dvc.yaml is the one file that spells a pipeline path; each such path must be a dep or an output of the
stage, or DVC would not know the stage reads or writes it.

`tracemill deps` prints what dvc.yaml misses or lists in excess; `tracemill deps --write` rewrites the
generated entries in place (ruamel round trip: comments, order and data deps kept); an argument path
no dep or output declares is for the author to fix.
"""

from __future__ import annotations

import ast
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from tracemill import params as P
from tracemill.errors import TracemillError

CODE_ROOTS = ("stages", "tracemill")
CONFIG_DIR = "configs"
# Params whose value is a path a stage reads; `[]` walks a list, `*` every key of a mapping.
PATH_PARAMS = (
    "problems.sources[].path",
    "policy.model",
    "satori.distill.student",
    "satori.rl.deepspeed",
    "train.*.deepspeed",
)
PARAMS_MARK = "params "  # the comment of a dependency generated from a params path
REGISTRY_USERS = {"section_class", "validate"}  # tracemill.params functions that import the SECTIONS classes
_CMD = re.compile(r"python3?\s+-m\s+([\w.]+)")
_ARG = re.compile(r"(?<!\S)(\w+)=(\S+)")  # a NAME=VALUE argument of a stage's command
_OUTPUT_KINDS = ("outs", "metrics", "plots")


@dataclass(frozen=True)
class Module:
    name: str
    path: Path  # relative to the repository root
    refs: frozenset[str]  # modules of the repository it imports or names
    specs: frozenset[str]  # modules named by "module:Class" strings (the params registry)
    uses_registry: bool  # calls tracemill.params.section_class or validate
    resources: frozenset[str]  # non-Python files it names, relative to the repository root


@dataclass
class StageDeps:
    stage: str
    module: str
    code: list[str]
    params_paths: list[tuple[str, str]]  # (params key, path)

    @property
    def paths(self) -> list[str]:
        return self.code + [p for _, p in self.params_paths]


@dataclass(frozen=True)
class Drift:
    stage: str
    missing: tuple[str, ...]  # computed, not covered by any dep of the stage
    extra: tuple[str, ...]  # generated entries (code or params) the code no longer reads
    undeclared: tuple[str, ...] = ()  # NAME=PATH arguments of the command no dep or output of the stage declares

    def lines(self) -> Iterator[str]:
        yield from (f"{self.stage}: + {p}" for p in self.missing)
        yield from (f"{self.stage}: - {p}" for p in self.extra)
        yield from (
            f"{self.stage}: argument {a} is neither a dep nor an output of the stage — declare it in dvc.yaml"
            for a in self.undeclared
        )


# --- modules and their references -----------------------------------------------------------------


def module_index(root: Path) -> dict[str, Path]:
    """Dotted name -> path (relative to root) of every Python module under the code roots."""
    index: dict[str, Path] = {}
    for top in CODE_ROOTS:
        for path in sorted((root / top).rglob("*.py")):
            rel = path.relative_to(root)
            parts = rel.with_suffix("").parts
            index[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = rel
    return index


def _is_package(name: str, index: dict[str, Path]) -> bool:
    return index[name].name == "__init__.py"


def _absolute(node: ast.ImportFrom, name: str, index: dict[str, Path]) -> str:
    if not node.level:
        return node.module or ""
    base = name.split(".") if _is_package(name, index) else name.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _resource(root: Path, module_dir: Path, text: str) -> str | None:
    """The repository path a string literal names, when it is an existing non-Python file or folder
    beside the module (package data) or under configs/."""
    if (
        not text
        or len(text) > 200
        or "\n" in text
        or text.startswith("/")
        or not re.search(r"\w", text)
        or ".." in text
    ):
        return None
    for base in (module_dir, root) if text.startswith(CONFIG_DIR + "/") else (module_dir,):
        candidate = base / text
        code = (
            candidate.suffix == ".py"
            or candidate.name == "__pycache__"
            or (candidate.is_dir() and any(candidate.rglob("*.py")))
        )
        if candidate.exists() and not code:
            return candidate.relative_to(root).as_posix()
    return None


def parse_module(root: Path, name: str, index: dict[str, Path]) -> Module:
    path = index[name]
    try:
        tree = ast.parse((root / path).read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as exc:
        raise TracemillError(f"cannot parse '{path}' to find its imports: {exc}") from None
    refs: set[str] = set()
    specs: set[str] = set()
    params_aliases = {"tracemill.params"}
    uses_registry = False
    resources: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                refs.add(alias.name)
                if alias.name == "tracemill.params":
                    params_aliases.add(alias.asname or alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, name, index)
            refs.add(base)
            for alias in node.names:
                refs.add(f"{base}.{alias.name}")  # a submodule, when it is one
                if f"{base}.{alias.name}" == "tracemill.params":
                    params_aliases.add(alias.asname or alias.name)
                if base == "tracemill.params" and alias.name in REGISTRY_USERS:
                    uses_registry = True
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in index:
                refs.add(node.value)
            elif node.value.partition(":")[0] in index and node.value.partition(":")[2].isidentifier():
                specs.add(node.value.partition(":")[0])
            elif res := _resource(root, (root / path).parent, node.value):
                resources.add(res)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in REGISTRY_USERS and isinstance(node.value, ast.Name):
            uses_registry |= node.value.id in params_aliases and name != "tracemill.params"
    return Module(
        name,
        path,
        frozenset(r for r in refs if r in index and r != name),
        frozenset(specs),
        uses_registry and name != "tracemill.params",
        frozenset(resources),
    )


def _package_of(name: str, index: dict[str, Path]) -> str | None:
    """The subpackage (depth 2, e.g. tracemill.grading) a module belongs to: its unit of dependency."""
    parts = name.split(".")
    if len(parts) >= 2 and ".".join(parts[:2]) in index and _is_package(".".join(parts[:2]), index):
        return ".".join(parts[:2])
    return None


class Graph:
    """The repository's modules, parsed once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.index = module_index(root)
        self._modules: dict[str, Module] = {}

    def module(self, name: str) -> Module:
        if name not in self._modules:
            self._modules[name] = parse_module(self.root, name, self.index)
        return self._modules[name]

    def closure(self, start: str) -> set[str]:
        """Every module that running `python -m start` may execute."""
        if start not in self.index:
            raise TracemillError(
                f"stage module '{start}' not found under {' or '.join(r + '/' for r in CODE_ROOTS)} "
                "— fix the stage's cmd in dvc.yaml"
            )
        seen: set[str] = set()
        todo = [start]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            parts = name.split(".")
            todo.extend(
                p for p in (".".join(parts[:i]) for i in range(1, len(parts))) if p in self.index
            )  # parents run first
            if package := _package_of(name, self.index):
                todo.extend(m for m in self.index if m == package or m.startswith(package + "."))
            mod = self.module(name)
            todo.extend(mod.refs)
            if mod.uses_registry and "tracemill.params" in self.index:
                todo.extend(self.module("tracemill.params").specs)
        return seen

    def code_paths(self, start: str) -> list[str]:
        """The minimal dependency paths of a stage module: files, subpackage folders, data files."""
        modules = self.closure(start)
        paths = set()
        for m in modules:
            if package := _package_of(m, self.index):
                paths.add(self.index[package].parent.as_posix())
            elif (self.root / self.index[m]).stat().st_size:  # an empty __init__.py runs nothing; DVC warns on it
                paths.add(self.index[m].as_posix())
        for m in modules:
            paths.update(r for r in self.module(m).resources if not any(r == p or r.startswith(p + "/") for p in paths))
        return sorted(paths, key=lambda p: (not p.startswith("stages/"), p))


# --- params paths ---------------------------------------------------------------------------------


def _walk(value: Any, parts: list[str], key: str) -> Iterator[tuple[str, Any]]:
    if not parts:
        yield key, value
        return
    head, rest = parts[0], parts[1:]
    if head.endswith("[]"):
        items = value.get(head[:-2]) if isinstance(value, dict) else None
        for i, item in enumerate(items or []):
            yield from _walk(item, rest, f"{key}{head[:-2]}[{i}].")
    elif head == "*":
        for sub, item in (value or {}).items() if isinstance(value, dict) else ():
            yield from _walk(item, rest, f"{key}{sub}.")
    elif isinstance(value, dict) and head in value:
        yield from _walk(value[head], rest, f"{key}{head}.")


def params_paths(params: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, path) of every PATH_PARAMS value that is set, e.g. ("problems.sources[1].path",
    "data/seeds/gsm8k_test.jsonl")."""
    out = []
    for pattern in PATH_PARAMS:
        for key, value in _walk(params, pattern.split("."), ""):
            if isinstance(value, str) and value:
                out.append((key.rstrip("."), value))
    return out


def _covers(declared: str, key: str) -> bool:
    return key == declared or key.startswith(declared + ".") or key.startswith(declared + "[")


def _normal(root: Path, value: str) -> str:
    path = Path(value)
    if path.is_absolute():
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return path.as_posix()
    return Path(*[p for p in path.parts if p != "."]).as_posix() if path.parts else value


def _under(path: str, deps: Iterable[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


# --- dvc.yaml -------------------------------------------------------------------------------------


def _body(stage: dict[str, Any]) -> dict[str, Any]:
    return stage["do"] if "foreach" in stage or "matrix" in stage else stage


def _dep_path(dep: Any) -> str:
    return next(iter(dep)) if isinstance(dep, dict) else str(dep)


def undeclared_args(body: dict[str, Any]) -> tuple[str, ...]:
    """The NAME=PATH arguments of a stage's command whose path (a value with a '/', or a foreach
    `${item...}`) no dep or output of the stage covers; compared as written, before templating."""
    declared = [_dep_path(d) for d in body.get("deps") or []]
    declared += [_dep_path(o) for kind in _OUTPUT_KINDS for o in body.get(kind) or []]
    args = _ARG.findall(str(body.get("cmd", "")))
    return tuple(
        f"{name}={value}"
        for name, value in args
        if ("/" in value or value.startswith("${item")) and not _under(value, declared)
    )


def _declared_params(body: dict[str, Any]) -> list[str]:
    out = []
    for entry in body.get("params") or []:
        if isinstance(entry, str):
            out.append(entry)
        elif isinstance(entry, dict):  # {params.yaml: [keys]}
            for file, keys in entry.items():
                if Path(file).name == "params.yaml":
                    out.extend(keys or [])
    return out


def _generated(deps: Any, i: int) -> bool:
    """A dependency this module writes: code under the code roots or configs/, or a `# params KEY` entry."""
    path = _dep_path(deps[i])
    if path.split("/")[0] in (*CODE_ROOTS, CONFIG_DIR):
        return True
    tokens = getattr(deps, "ca", None) and deps.ca.items.get(i)
    comment = tokens[0].value if tokens and tokens[0] is not None else ""
    return comment.lstrip("# ").startswith(PARAMS_MARK)


def compute(root: Path, dvc_yaml: Any, params: dict[str, Any]) -> list[StageDeps]:
    """What every stage should list, from the code under root and the params; `dvc_yaml` is read by
    `read` (round trip), so the `# params KEY` comments that mark generated entries are seen."""
    graph = Graph(root)
    paths = params_paths(params)
    result = []
    for name, stage in (dvc_yaml.get("stages") or {}).items():
        body = _body(stage)
        match = _CMD.search(str(body.get("cmd", "")))
        if not match:
            continue  # not a `python -m` stage: nothing to compute
        module = match.group(1)
        code = graph.code_paths(module)
        declared = _declared_params(body)
        data_deps = [_dep_path(d) for i, d in enumerate(body.get("deps") or []) if not _generated(body["deps"], i)]
        chosen: list[tuple[str, str]] = []
        for key, value in paths:
            if any(_covers(d, key) for d in declared):
                path = _normal(root, value)
                if not _under(path, data_deps + code + [p for _, p in chosen]):
                    chosen.append((key, path))
        result.append(StageDeps(name, module, code, chosen))
    return result


def drift(dvc_yaml: Any, computed: list[StageDeps]) -> list[Drift]:
    """Per stage: computed paths that no dep covers, and generated deps nothing computes any more."""
    out = []
    for sd in computed:
        body = _body(dvc_yaml["stages"][sd.stage])
        deps = body.get("deps") or []
        listed = [_dep_path(d) for d in deps]
        generated = [_dep_path(d) for i, d in enumerate(deps) if _generated(deps, i)]
        missing = tuple(p for p in sd.paths if not _under(p, listed))
        extra = tuple(p for p in generated if p not in sd.paths)
        undeclared = undeclared_args(body)
        if missing or extra or undeclared:
            out.append(Drift(sd.stage, missing, extra, undeclared))
    return out


@cache
def _yaml() -> Any:
    from ruamel.yaml import YAML

    rt = YAML()  # round trip: dvc.yaml's comments and layout survive
    rt.preserve_quotes = True
    rt.width = 4096
    rt.indent(mapping=2, sequence=4, offset=2)
    return rt


def read(text: str) -> Any:
    """dvc.yaml parsed with its comments."""
    return _yaml().load(text)


def rewrite(text: str, computed: list[StageDeps]) -> str:
    """dvc.yaml text with each stage's generated deps replaced by the computed ones: code first, then
    params paths (each with its `# params KEY` comment), then the stage's other deps in their order."""
    from ruamel.yaml.comments import CommentedSeq

    doc = read(text)
    for sd in computed:
        body = _body(doc["stages"][sd.stage])
        old = body.get("deps") or CommentedSeq()
        new = CommentedSeq(sd.code + [p for _, p in sd.params_paths])
        indent = 8 if body is not doc["stages"][sd.stage] else 6  # a foreach stage's deps sit under `do:`
        for j, (key, path) in enumerate(sd.params_paths, start=len(sd.code)):
            new.yaml_add_eol_comment(f"# {PARAMS_MARK}{key}", j, column=indent + 2 + len(path) + 2)
        for i, dep in enumerate(old):
            if not _generated(old, i):
                new.append(dep)  # before its comment: append shifts the comments at and after its index
                if i in old.ca.items:
                    new.ca.items[len(new) - 1] = old.ca.items[i]
        body["deps"] = new
    buf = io.StringIO()
    _yaml().dump(doc, buf)
    return buf.getvalue()


def check(root: Path, dvc_path: Path, params_path: Path) -> tuple[str, list[StageDeps], list[Drift]]:
    """dvc.yaml's text, what its stages should list, and where it differs."""
    for p in (dvc_path, params_path):
        if not p.is_file():
            raise TracemillError(f"'{p}' not found — run from the repository root or pass --dvc-yaml / --params")
    text = dvc_path.read_text(encoding="utf-8")
    doc = read(text)
    computed = compute(root, doc, P.load(params_path))  # read as DVC reads it; a bad file is one clear error
    return text, computed, drift(doc, computed)
