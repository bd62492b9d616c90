"""What every stage module shares: the error boundary, params loading and the resume fingerprint."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from tracemill import records, store
from tracemill.errors import ParamsError, TracemillError


def run(main: Callable[[], Any]) -> None:
    """Run a stage's main: a TracemillError becomes one clear line on stderr (one per bad params key)
    and exit code 2. The stage's module is kept: its import closure is the code `fingerprint` hashes."""
    global _stage_module
    _stage_module = _module_name(main)
    try:
        main()
    except TracemillError as exc:
        for problem in getattr(exc, "problems", [exc]):
            print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted — re-run the stage to resume from its last finished shard", file=sys.stderr)
        sys.exit(130)


def args(required: Iterable[str], optional: Iterable[str] = (), argv: Sequence[str] | None = None) -> dict[str, str]:
    """The `NAME=VALUE` arguments of a stage's command line. dvc.yaml's `cmd` passes every input and
    output path this way, so dvc.yaml is the one file that spells a pipeline path. A missing, unknown,
    repeated or malformed argument is a ParamsError naming each (stage.run: one line each, exit 2)."""
    required, allowed = list(required), {*required, *optional}
    given: dict[str, str] = {}
    problems = []
    for arg in sys.argv[1:] if argv is None else argv:
        name, sep, value = arg.partition("=")
        if not (sep and name and value):
            problems.append(f"argument '{arg}' is not NAME=VALUE")
        elif name not in allowed:
            problems.append(f"unknown argument '{name}'; allowed: {', '.join(sorted(allowed))}")
        elif name in given:
            problems.append(f"argument '{name}' given twice")
        else:
            given[name] = value
    problems += [
        f"missing argument '{name}=...' — the stage's cmd in dvc.yaml passes it"
        for name in required
        if name not in given
    ]
    if problems:
        raise ParamsError(*problems)
    return given


def job(jobs: Iterable[str]) -> str:
    """The job a multi-job stage module runs: its first command-line argument (`python -m stages.sft sft_start`)."""
    jobs = list(jobs)
    if len(sys.argv) < 2 or sys.argv[1] not in jobs:
        raise ParamsError(f"the first argument must be the job, one of {', '.join(jobs)}")
    return sys.argv[1]


def params_path() -> Path:
    return Path(os.environ.get("TRACEMILL_PARAMS", "params.yaml"))


def hash_cache_path() -> Path:
    return Path(os.environ.get("TRACEMILL_HASH_CACHE", ".tracemill/hash-cache.json"))


def fingerprint(params: Any, inputs: Iterable[str | Path] = ()) -> str:
    """Identity of a stage run: its params, the content of its inputs (each file's path under its input
    and its sha256; never times or absolute paths) and the code that runs it (`code_paths`: the stage's
    import closure, as DVC sees it). A resumed run with the same fingerprint keeps finished shards; any change starts
    the output afresh, so a persisted output never keeps rows that older code wrote (a grader change
    re-labels, as DVC re-runs the stage). Hashes are memoised in `hash_cache_path()`, so a multi-GB model
    folder is read once, not on every run."""
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        params = dataclasses.asdict(params)
    cache = HashCache(hash_cache_path())
    contents = [_hashed(Path(p), cache) for p in inputs]
    root = CODE_ROOTS[0].parent
    code = [
        (path.relative_to(root).as_posix(), _hashed(path, cache, "*.py" if path in CODE_ROOTS else "*"))
        for path in code_paths(_stage_module, root)
        if path.exists()
    ]
    cache.save()
    return records.content_id(params, contents, code)


# The code a stage runs: the package and, in a checkout, the stage modules beside it.
CODE_ROOTS = (Path(__file__).parent, Path(__file__).parents[1] / "stages")
_stage_module: str | None = None  # the running stage's module, set by `run`


def _module_name(main: Callable[[], Any]) -> str | None:
    name = getattr(main, "__module__", None)
    if name == "__main__":  # python -m stages.x: the module's own name is in its spec
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        name = spec.name if spec is not None else None
    return name


def code_paths(module: str | None, root: Path) -> list[Path]:
    """The code a stage's fingerprint hashes. In a checkout, with the running stage's module known: the
    paths `tracemill deps` declares as its DVC deps (its import closure: modules, subpackage folders, the
    files they read), so a change DVC does not re-run the stage for (the report, the CLI) leaves its
    fingerprint, and the manifest a fresh clone writes, alone. Otherwise every module of the package
    and the stages."""
    if module and (root / "stages").is_dir():
        closure = _import_closure(module, root)
        if closure is not None:
            return [root / p for p in closure]
    return list(CODE_ROOTS)


@functools.cache
def _import_closure(module: str, root: Path) -> tuple[str, ...] | None:
    """`module`'s import closure under `root` (None where it cannot be read), parsed once per process:
    a stage fingerprints each of its outputs, some twice."""
    from tracemill.pipeline_deps import Graph

    try:
        return tuple(Graph(root).code_paths(module))
    except TracemillError:
        return None


def _hashed(root: Path, cache: HashCache, pattern: str = "*") -> list[tuple[str, str]]:
    """(path under `root`, sha256) of each file matching `pattern` below the folder `root`, or of `root` itself."""
    if root.is_dir():
        files = sorted(f for f in root.rglob(pattern) if f.is_file() and "__pycache__" not in f.parts)
    else:
        files = [root] if root.is_file() else []
    return [(f.relative_to(root).as_posix(), cache.sha256(f)) for f in files]


class HashCache:
    """sha256 of files keyed by absolute path and trusted while (size, mtime_ns, inode) are unchanged,
    as DVC's state db and git's index do. Kept in a JSON file outside every DVC output; a missing or
    corrupt file is an empty cache, and a write is atomic, so concurrent stages at worst hash again."""

    RACY_NS = 2_000_000_000  # a file changed this recently could change again within the same mtime tick

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries = self._load()
        self.added: dict[str, dict[str, Any]] = {}

    def _load(self) -> dict[str, Any]:
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return entries if isinstance(entries, dict) else {}

    def sha256(self, file: Path) -> str:
        now = time.time_ns()
        st = file.stat()
        key, stamp = str(file.resolve()), [st.st_size, st.st_mtime_ns, st.st_ino]
        known = self.entries.get(key)
        if isinstance(known, dict) and known.get("stat") == stamp and isinstance(known.get("sha256"), str):
            return known["sha256"]
        digest = store.sha256_file(file)
        if now - st.st_mtime_ns > self.RACY_NS:
            self.added[key] = {"stat": stamp, "sha256": digest}
        return digest

    def save(self) -> None:
        """Merge new hashes into what is on disk now (another stage may have written since), dropping
        files that are gone. Best effort: a cache that cannot be written only costs a re-hash. Rank 0 only."""
        if not self.added or not store.is_main_process():
            return
        merged = {k: v for k, v in {**self._load(), **self.added}.items() if os.path.exists(k)}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            store.atomic_write_bytes(self.path, json.dumps(merged, sort_keys=True).encode())
        except OSError:
            pass


def build_folder(out_dir: Path, build: Callable[[Path], dict[str, Any]], fresh: bool) -> dict[str, Any]:
    """Build a model folder as <out_dir>.partial, then swap it in; the scalar metrics of the build. A
    training run keeps the partial folder, whose checkpoints it resumes from; `fresh` clears it first.
    Under a launcher every rank builds (training is collective) and only rank 0 clears and swaps folders."""
    partial = out_dir.with_name(out_dir.name + ".partial")
    main = store.is_main_process()
    if fresh and main:
        shutil.rmtree(partial, ignore_errors=True)
    metrics = build(partial)
    if main:
        shutil.rmtree(out_dir, ignore_errors=True)
        partial.rename(out_dir)
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
