"""Publishing: a Hub-ready folder per dataset, checked with `datasets`, pushed with huggingface_hub.

`publish/<dataset>/` holds one config per table (`data/<config>/<split>-XXXXX-of-YYYYY.parquet`) and a
`README.md` dataset card: YAML front matter the Hub and `datasets` read (configs, features mapped
one-to-one from the table's pyarrow schema, license, tags) and a body with how each table was made,
the seed licenses, provenance (git commit, the dvc.lock hashes and params of the stages that wrote
the inputs, row counts) and citations. The folder is built in a temp sibling, every config is loaded
back with `datasets.load_dataset` and compared with its schema, and only then swapped in.

The folder's bytes depend only on the tables, params, dvc.lock and git state (no timestamps), so a
re-push of an unchanged folder leaves the Hub repo as it was: huggingface_hub compares each file's
hash with the remote one, drops unchanged files from the commit and makes no commit when none are left.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from tracemill import params as P
from tracemill import records, store
from tracemill.errors import ParamsError, TracemillError

CARD = "README.md"
DATA_DIR = "data"
DVC_LOCK = "dvc.lock"
PIPELINE_WRITES = (DVC_LOCK, "metrics", "plots")  # tracked files that `dvc repro` rewrites
UNKNOWN_LICENSE = "unknown"  # the Hub's own id for a license nobody stated
MIXED_LICENSE = "other"  # the Hub's id when one value cannot describe the rows
# Hub config, split and folder names: no slashes or spaces, so they are safe as paths and in URLs.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SPLIT_RE = re.compile(r"^\w+(\.\w+)*$")  # what `datasets` accepts as a split name
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


class PublishError(TracemillError):
    """The publish folder could not be built, validated or pushed."""


# --- params ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigParams:
    config: str  # config name on the Hub: load_dataset(repo, config)
    table: str  # one of records.TABLES
    data: str  # stage directory, or a glob of them (data/mcts/**), holding the table, e.g. data/problems
    required: bool = False  # an empty or missing table fails the stage instead of being skipped

    def check(self) -> None:
        if not NAME_RE.match(self.config):
            raise ParamsError(f"params 'publish' config name '{self.config}' must match {NAME_RE.pattern}")
        if self.table not in records.TABLES:
            known = ", ".join(records.TABLES)
            raise ParamsError(f"params 'publish' config '{self.config}': table '{self.table}' is not one of {known}")


@dataclass(frozen=True)
class DatasetParams:
    name: str  # folder publish/<name> and the default repo name
    pretty_name: str
    configs: list[ConfigParams] = field(default_factory=list)  # the first is the Hub's default config
    license: str | None = None  # null: carried from the seed rows' licenses; a Hub license id overrides
    tags: list[str] = field(default_factory=list)
    task_categories: list[str] = field(default_factory=list)
    language: list[str] = field(default_factory=list)
    split: str = "train"

    def check(self) -> None:
        if not NAME_RE.match(self.name):
            raise ParamsError(f"params 'publish' dataset name '{self.name}' must match {NAME_RE.pattern}")
        if not SPLIT_RE.match(self.split):
            raise ParamsError(f"params 'publish' dataset '{self.name}': split '{self.split}' must match {SPLIT_RE.pattern}")
        if not self.configs:
            raise ParamsError(f"params 'publish' dataset '{self.name}' lists no configs — add at least one under 'configs'")
        names = [c.config for c in self.configs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ParamsError(f"params 'publish' dataset '{self.name}' names config '{dupes[0]}' twice")


@dataclass(frozen=True)
class PublishParams:
    out_dir: str = "publish"
    problems: str = "data/problems"  # stage directory of the problems whose licenses and sources are carried
    shard_rows: int = 100_000  # rows per Parquet shard
    datasets: list[DatasetParams] = field(default_factory=list)

    def check(self) -> None:
        P.positive(self.shard_rows, "publish.shard_rows")
        names = [d.name for d in self.datasets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ParamsError(f"params 'publish.datasets' names dataset '{dupes[0]}' twice")

    def dataset(self, name: str | None) -> DatasetParams:
        """The dataset called `name`, or the only one when `name` is None."""
        if name is None:
            if len(self.datasets) != 1:
                listed = ", ".join(d.name for d in self.datasets) or "none"
                raise ParamsError(
                    f"params 'publish.datasets' lists {len(self.datasets)} datasets ({listed}) — pass --dataset NAME"
                )
            return self.datasets[0]
        for ds in self.datasets:
            if ds.name == name:
                return ds
        known = ", ".join(d.name for d in self.datasets)
        raise ParamsError(f"dataset '{name}' is not in params 'publish.datasets' — add it there or pick one of: {known}")


# --- reading the tables ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigData:
    params: ConfigParams
    dirs: tuple[str, ...]  # stage directories read, relative to the repository root
    table: pa.Table


def stage_dirs(root: Path, pattern: str, table: str) -> list[Path]:
    """Stage directories matching `pattern` that hold `table` (`data/mcts/**` finds every round's output)."""
    return sorted(p for p in root.glob(pattern) if (p / table).is_dir())


def read_config(root: Path, cfg: ConfigParams) -> ConfigData:
    """Every row of the config's table across its stage directories, checked against the schema and sorted by key."""
    dirs = stage_dirs(root, cfg.data, cfg.table)
    parts = [store.read(d, cfg.table) for d in dirs]
    data = pa.concat_tables(parts) if parts else records.schema(cfg.table).empty_table()
    checked = store.sort_by_key(cfg.table, records.validate(cfg.table, data))
    return ConfigData(cfg, tuple(str(d.relative_to(root)) for d in dirs), checked)


def features(table: str):  # -> datasets.Features
    """The `datasets` features of a table, mapped one-to-one from its pyarrow schema."""
    import datasets

    return datasets.Features.from_arrow_schema(records.schema(table))


def write_shards(data: pa.Table, dest: Path, split: str, shard_rows: int) -> None:
    """Write `data` as `<split>-XXXXX-of-YYYYY.parquet` shards, the names the Hub's Parquet tools expect."""
    dest.mkdir(parents=True, exist_ok=True)
    count = max(1, math.ceil(data.num_rows / shard_rows))
    for i in range(count):
        shard = data.slice(i * shard_rows, shard_rows)
        pq.write_table(shard, dest / f"{split}-{i:05d}-of-{count:05d}.parquet", compression="zstd", row_group_size=store.ROW_GROUP_SIZE)


# --- licenses and sources of the published rows ---------------------------------------------------


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
    found = {Origin(s, hub_license(lic)) for s, lic in zip(used.column("source").to_pylist(), used.column("license").to_pylist())}
    if len(used) < len(ids):  # rows whose problem is not in the problems table: their license is not known
        found.add(Origin("unknown", UNKNOWN_LICENSE))
    return found


def card_license(override: str | None, found: set[Origin]) -> str:
    if override:
        return override
    licenses = {o.license for o in found}
    return licenses.pop() if len(licenses) == 1 else MIXED_LICENSE


# --- provenance -----------------------------------------------------------------------------------


def git_state(root: Path) -> dict[str, Any]:
    """HEAD and whether tracked files differ from it. What `dvc repro` itself rewrites (dvc.lock, metrics,
    plots) is left out of the dirty check: a run would otherwise always call itself dirty, and the
    card records the dvc.lock hashes anyway."""
    head = _git(root, "rev-parse", "HEAD")
    if head is None:
        return {"commit": None, "dirty": None}
    excluded = [f":(exclude){path}" for path in PIPELINE_WRITES]
    status = _git(root, "status", "--porcelain", "--untracked-files=no", "--", ".", *excluded)
    return {"commit": head, "dirty": bool(status)}


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None  # not a git checkout (e.g. an exported tarball): the card says so
    return out.stdout.strip()


def load_lock(root: Path) -> dict[str, Any]:
    path = root / DVC_LOCK
    if not path.exists():
        return {}
    try:
        return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("stages", {})
    except yaml.YAMLError as exc:
        raise PublishError(f"'{path}' is not valid YAML: {exc} — restore it from git or re-run dvc repro") from exc


def lock_entry(lock: dict[str, Any], data_dir: str) -> dict[str, Any]:
    """The dvc.lock stage whose output holds `data_dir`: its name, the output's md5 and the stage's params."""
    for name, entry in lock.items():
        for out in entry.get("outs", []):
            path = out["path"].rstrip("/")
            if data_dir == path or data_dir.startswith(path + "/"):
                params = {k: v for f in entry.get("params", {}).values() for k, v in f.items()}
                return {"path": data_dir, "stage": name, "out": path, "md5": out.get("md5"), "params": params}
    return {"path": data_dir, "stage": None, "out": None, "md5": None, "params": {}}


# --- the dataset card -----------------------------------------------------------------------------

# How each table is made: (method, paper key, what one row is and how rows are chosen).
METHODS: dict[str, tuple[str, str | None, str]] = {
    "problems": (
        "seed problems",
        None,
        "every seed source normalised into one table (math with a final answer, code with tests); malformed "
        "rows quarantined",
    ),
    "traces": (
        "START",
        "start",
        "generated responses: greedy, hint-inferred (a hint inserted where the model stops, tool output "
        "appended after each python block) and RFT samples",
    ),
    "d_seed": (
        "START",
        "start",
        "D_seed: traces whose greedy attempt failed and whose hinted attempt succeeded, without repetition, "
        "deduplicated; hint tokens carry no loss",
    ),
    "d_start": (
        "START",
        "start",
        "D_START: rejection-sampled traces of the START-0 model, at most one kept per problem",
    ),
    "nodes": (
        "rStar-Math",
        "rstar",
        "code-augmented CoT Monte Carlo tree search nodes: one natural-language step and its python code; "
        "only nodes whose code runs are kept; Q from terminal correctness or the process preference model",
    ),
    "trajectories": (
        "rStar-Math",
        "rstar",
        "root-to-leaf paths of the search trees with their average Q; the highest-Q correct ones are selected"
        " for SFT",
    ),
    "pairs": (
        "rStar-Math",
        "rstar",
        "step-level preference pairs: highest-Q vs lowest-Q sibling steps that share a prefix, for the "
        "process preference model's Bradley-Terry loss",
    ),
    "coat": (
        "Satori",
        "satori",
        "Chain-of-Action-Thought traces with <|continue|>, <|reflect|> and <|explore|> meta-actions, built "
        "from search trees: a wrong branch, a reflection, an alternative that succeeds",
    ),
    "rae_states": (
        "Satori",
        "satori",
        "restart-and-explore start states taken from intermediate steps, failed ones included",
    ),
    "sft": (
        "START, rStar-Math, Satori",
        None,
        "training examples: a prompt and segments whose loss flag is the loss mask",
    ),
    "rejected": (
        "quarantine",
        None,
        "rows a stage set aside, with the reason",
    ),
}
SFT_PAPERS = ("start", "rstar", "satori")

# The problems stage's source kinds and the papers of their data.
SEED_PAPERS: dict[str, tuple[str, ...]] = {
    "gsm8k": ("gsm8k",),
    "math500": ("math", "prm800k"),
    "mbpp": ("mbpp",),
    "humaneval": ("humaneval",),
}

BIBTEX: dict[str, str] = {
    "start": """@article{li2025start,
  title   = {{START}: Self-taught Reasoner with Tools},
  author  = {Li, Chengpeng and Xue, Mingfeng and Zhang, Zhenru and Yang, Jiaxi and
             Zhang, Beichen and Wang, Xiang and Yu, Bowen and Hui, Binyuan and Lin, Junyang and
             Liu, Dayiheng},
  journal = {arXiv preprint arXiv:2503.04625},
  year    = {2025}
}""",
    "rstar": """@article{guan2025rstarmath,
  title   = {{rStar-Math}: Small {LLMs} Can Master Math Reasoning with Self-Evolved Deep Thinking},
  author  = {Guan, Xinyu and Zhang, Li Lyna and Liu, Yifei and Shang, Ning and Sun, Youran and
             Zhu, Yi and Yang, Fan and Yang, Mao},
  journal = {arXiv preprint arXiv:2501.04519},
  year    = {2025}
}""",
    "satori": """@article{shen2025satori,
  title   = {Satori: Reinforcement Learning with Chain-of-Action-Thought Enhances {LLM} Reasoning via Autoregressive Search},
  author  = {Shen, Maohao and Zeng, Guangtao and Qi, Zhenting and Hong, Zhang-Wei and
             Chen, Zhenfang and Lu, Wei and Wornell, Gregory and Das, Subhro and Cox, David and
             Gan, Chuang},
  journal = {arXiv preprint arXiv:2502.02508},
  year    = {2025}
}""",
    "gsm8k": """@article{cobbe2021gsm8k,
  title   = {Training Verifiers to Solve Math Word Problems},
  author  = {Cobbe, Karl and Kosaraju, Vineet and Bavarian, Mohammad and Chen, Mark and
             Jun, Heewoo and Kaiser, Lukasz and Plappert, Matthias and Tworek, Jerry and
             Hilton, Jacob and Nakano, Reiichiro and Hesse, Christopher and Schulman, John},
  journal = {arXiv preprint arXiv:2110.14168},
  year    = {2021}
}""",
    "math": """@inproceedings{hendrycks2021math,
  title     = {Measuring Mathematical Problem Solving With the {MATH} Dataset},
  author    = {Hendrycks, Dan and Burns, Collin and Kadavath, Saurav and Arora, Akul and
               Basart, Steven and Tang, Eric and Song, Dawn and Steinhardt, Jacob},
  booktitle = {Thirty-fifth Conference on Neural Information Processing Systems Datasets and Benchmarks Track},
  year      = {2021}
}""",
    "prm800k": """@article{lightman2023verify,
  title   = {Let's Verify Step by Step},
  author  = {Lightman, Hunter and Kosaraju, Vineet and Burda, Yura and Edwards, Harri and
             Baker, Bowen and Lee, Teddy and Leike, Jan and Schulman, John and Sutskever, Ilya and
             Cobbe, Karl},
  journal = {arXiv preprint arXiv:2305.20050},
  year    = {2023}
}""",
    "mbpp": """@article{austin2021program,
  title   = {Program Synthesis with Large Language Models},
  author  = {Austin, Jacob and Odena, Augustus and Nye, Maxwell and Bosma, Maarten and
             Michalewski, Henryk and Dohan, David and Jiang, Ellen and Cai, Carrie and
             Terry, Michael and Le, Quoc and Sutton, Charles},
  journal = {arXiv preprint arXiv:2108.07732},
  year    = {2021}
}""",
    "humaneval": """@article{chen2021codex,
  title   = {Evaluating Large Language Models Trained on Code},
  author  = {Chen, Mark and Tworek, Jerry and Jun, Heewoo and Yuan, Qiming and
             Pinto, Henrique Ponde de Oliveira and Kaplan, Jared and Edwards, Harri and
             Burda, Yuri and Joseph, Nicholas and Brockman, Greg and others},
  journal = {arXiv preprint arXiv:2107.03374},
  year    = {2021}
}""",
}
PAPER_TITLES = {
    "start": "START (arXiv 2503.04625)",
    "rstar": "rStar-Math (arXiv 2501.04519)",
    "satori": "Satori (arXiv 2502.02508)",
}


@dataclass(frozen=True)
class Published:
    """One config as it goes into the card."""

    data: ConfigData
    origins: frozenset[Origin]
    inputs: tuple[dict[str, Any], ...]  # dvc.lock entries of its stage directories

    @property
    def config(self) -> str:
        return self.data.params.config

    @property
    def table(self) -> str:
        return self.data.params.table

    @property
    def rows(self) -> int:
        return self.data.table.num_rows


def size_category(rows: int) -> str:
    return next(label for bound, label in SIZE_CATEGORIES if rows < bound)


def card_yaml(ds: DatasetParams, published: list[Published], license_id: str) -> str:
    """The card's front matter, written by the same `datasets` helpers that `push_to_hub` uses."""
    import datasets
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCardData

    extra = {"license_name": "mixed"} if license_id == MIXED_LICENSE else {}
    card = DatasetCardData(
        pretty_name=ds.pretty_name,
        license=license_id,
        language=ds.language or None,
        tags=ds.tags or None,
        task_categories=ds.task_categories or None,
        size_categories=[size_category(sum(p.rows for p in published))],
        **extra,
    )
    default = published[0].config
    configs = MetadataConfigs()
    for p in published:
        configs[p.config] = {"data_files": [{"split": ds.split, "path": f"{DATA_DIR}/{p.config}/{ds.split}-*"}]}
    configs[default]["default"] = True  # load_dataset(repo) with no config name gets the first one
    infos = DatasetInfosDict()
    for p in published:
        splits = datasets.SplitDict()
        splits.add(datasets.SplitInfo(name=ds.split, num_bytes=p.data.table.nbytes, num_examples=p.rows))
        infos[p.config] = datasets.DatasetInfo(features=features(p.table), splits=splits)
    configs.to_dataset_card_data(card)
    infos.to_dataset_card_data(card)
    return card.to_yaml()


def provenance(git: dict[str, Any], ds: DatasetParams, raw_publish: dict[str, Any], published: list[Published]) -> dict[str, Any]:
    """Machine-readable provenance: what the card's numbers and files were made from."""
    stages = {i["stage"]: i["params"] for p in published for i in p.inputs if i["stage"]}
    entry = next((d for d in raw_publish.get("datasets", []) if d.get("name") == ds.name), {})
    return {
        "git": git,
        "inputs": [
            {"config": p.config, "table": p.table, "path": i["path"], "stage": i["stage"], "dvc_out": i["out"], "md5": i["md5"]}
            for p in published
            for i in p.inputs
        ],
        "rows": {p.config: p.rows for p in published},
        "schema_version": records.SCHEMA_VERSION,
        "params": {**stages, "publish": {k: v for k, v in raw_publish.items() if k != "datasets"} | {"dataset": entry}},
    }


def card_body(
    ds: DatasetParams, published: list[Published], skipped: dict[str, str], prov: dict[str, Any], kinds: dict[str, str]
) -> str:
    example = f'ds = load_dataset("ORG/NAME", "{published[0].config}", split="{ds.split}")'
    lines = [f"# {ds.pretty_name}", ""]
    lines += ["Reasoning data made by the tracemill pipeline. One config per table; load one with", ""]
    lines += ["```python", "from datasets import load_dataset", "", example, "```", ""]
    lines += ["| config | table | rows | method |", "| --- | --- | --- | --- |"]
    lines += [f"| `{p.config}` | `{p.table}` | {p.rows} | {METHODS[p.table][0]} |" for p in published]
    if skipped:
        lines += ["", "Not included (no rows when this card was built): " + ", ".join(f"`{c}`" for c in skipped) + "."]
    lines += ["", "## How each table was made", ""]
    for p in published:
        method, paper, text = METHODS[p.table]
        cite = f" ({PAPER_TITLES[paper]})" if paper else ""
        lines += [f"### `{p.config}`", "", f"{method}{cite}: {text}.", ""]
        for i in p.inputs:
            made = f"stage `{i['stage']}`" if i["stage"] else "no dvc.lock stage (built outside `dvc repro`)"
            lines.append(f"- `{i['path']}`: {made}")
            if i["params"]:
                lines += ["", "```yaml", yaml.safe_dump(i["params"], sort_keys=False, allow_unicode=True).rstrip(), "```"]
        lines.append("")
    lines += _licenses_section(published)
    lines += ["## Provenance", "", "```yaml", yaml.safe_dump(prov, sort_keys=False, allow_unicode=True).rstrip(), "```", ""]
    lines += ["## Citations", "", "```bibtex", "\n\n".join(BIBTEX[k] for k in citations(published, kinds)), "```", ""]
    return "\n".join(lines)


def _licenses_section(published: list[Published]) -> list[str]:
    lines = ["## Licenses", ""]
    found = sorted({o for p in published for o in p.origins})
    if not found:
        return lines + ["No published row refers to a seed problem.", ""]
    lines += ["Each row keeps the license of the seed problem it comes from:", ""]
    lines += ["| source | license | configs |", "| --- | --- | --- |"]
    for o in found:
        used = ", ".join(f"`{p.config}`" for p in published if o in p.origins)
        lines.append(f"| {o.source} | {o.license} | {used} |")
    return lines + [""]


def citations(published: list[Published], kinds: dict[str, str]) -> list[str]:
    """BibTeX keys of the methods of the published tables and of the seed sets their rows come from."""
    keys: list[str] = []
    for p in published:
        paper = METHODS[p.table][1]
        keys += SFT_PAPERS if p.table == "sft" else [paper] if paper else []
        for o in sorted(p.origins):  # sorted: set order changes with the hash seed, the card must not
            keys += SEED_PAPERS.get(kinds.get(o.source, ""), ())
    return list(dict.fromkeys(keys))


def source_kinds(raw: dict[str, Any]) -> dict[str, str]:
    """Source name -> kind, from params.yaml `problems.sources`: the kind says which paper to cite."""
    sources = (raw.get("problems") or {}).get("sources") or []
    return {s["name"]: s["kind"] for s in sources if isinstance(s, dict) and "name" in s and "kind" in s}


# --- build and validate ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildReport:
    name: str
    folder: Path
    rows: dict[str, int]
    skipped: dict[str, str]  # config -> why it was left out
    license: str


def build(cfg: PublishParams, ds: DatasetParams, root: Path, raw: dict[str, Any]) -> BuildReport:
    """Write `<out_dir>/<name>/` under `root`, check every config loads with `datasets`, then swap it in."""
    lock = load_lock(root)
    problems = _problems(root / cfg.problems)
    published: list[Published] = []
    skipped: dict[str, str] = {}
    for c in ds.configs:
        data = read_config(root, c)
        if data.table.num_rows == 0:
            why = f"table '{c.table}' has no rows under '{c.data}'"
            if c.required:
                raise PublishError(
                    f"config '{c.config}' of dataset '{ds.name}': {why}"
                    " — run the stage that writes it (dvc repro) or set required: false"
                )
            skipped[c.config] = why
            continue
        inputs = tuple(lock_entry(lock, d) for d in data.dirs)
        published.append(Published(data, frozenset(origins(data.table, problems)), inputs))
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
            write_shards(p.data.table, staging / DATA_DIR / p.config, ds.split, cfg.shard_rows)
        body = card_body(ds, published, skipped, prov, source_kinds(raw))
        (staging / CARD).write_text(f"---\n{card_yaml(ds, published, license_id)}\n---\n\n{body}", encoding="utf-8")
        validate_folder(staging, ds.split, {p.config: (p.table, p.rows) for p in published})
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return BuildReport(ds.name, final, {p.config: p.rows for p in published}, skipped, license_id)


def _problems(stage_dir: Path) -> pa.Table:
    if not stage_dir.exists():
        return records.schema("problems").empty_table()  # no seed problems: licenses show as unknown
    return store.read(stage_dir, "problems", columns=["problem_id", "source", "license"])


def validate_folder(folder: Path, split: str, expected: dict[str, tuple[str, int]]) -> None:
    """Load every config with `datasets.load_dataset` and compare features and row counts with the tables."""
    import datasets

    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory(prefix="tracemill-publish-cache-") as cache:  # never reuse a stale cache
        for config, (table, rows) in expected.items():
            try:
                loaded = datasets.load_dataset(str(folder), config, split=split, cache_dir=cache)
            except Exception as exc:  # any loader failure means the folder is not publishable; say which config
                raise PublishError(
                    f"config '{config}' in '{folder}' does not load with datasets.load_dataset: {type(exc).__name__}: {exc} — "
                    f"check the config's data files and features in {CARD}"
                ) from exc
            want = features(table)
            if loaded.features != want:
                diff = sorted(k for k in set(want) | set(loaded.features) if want.get(k) != loaded.features.get(k))
                raise PublishError(
                    f"config '{config}' loads with features that differ from table '{table}' in column(s) {', '.join(diff)}"
                    f" — the card's features must be built from records.schema('{table}')"
                )
            if loaded.num_rows != rows:
                raise PublishError(
                    f"config '{config}' loads {loaded.num_rows} rows, table '{table}' has {rows} — rebuild the folder"
                )


# --- push -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PushResult:
    repo_id: str
    revision: str
    commit: str
    changed: bool  # False: the Hub already had these files, no commit was made
    url: str


def hf_token() -> str:
    """The Hub token (HF_TOKEN, or the one `hf auth login` saved); checked before any work is done."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise PublishError(
            "no Hugging Face token — set HF_TOKEN to a write token (https://huggingface.co/settings/tokens)"
            " or run `hf auth login`"
        )
    return token


def check_repo_id(repo_id: str) -> None:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise PublishError(f"--repo-id '{repo_id}' is not a Hub repo id: {exc}") from None
    if repo_id.count("/") != 1:
        raise PublishError(f"--repo-id '{repo_id}' must be ORG/NAME (the dataset repo to create or update)")


def push(folder: Path, repo_id: str, *, token: str, private: bool = False, revision: str | None = None) -> PushResult:
    """Upload `folder` to the dataset repo `repo_id`, creating the repo (and branch) when missing.

    `upload_folder` hashes every local file and asks the Hub for the remote file's hash; unchanged files
    are dropped from the commit and, when nothing is left, no commit is made and the branch head is
    returned. Remote shards under data/ that the folder no longer has are deleted in the same commit,
    so a config with fewer shards than before never serves stale rows. The head before and after tells
    whether a commit was made.
    """
    from huggingface_hub import HfApi
    # HTTPError is the HTTP client's base error as the library re-exports it (connection refused, timeouts)
    from huggingface_hub.errors import HfHubHTTPError, HTTPError

    api = HfApi(token=token)
    branch = revision or "main"
    failed = f"pushing '{folder}' to dataset repo '{repo_id}' failed"
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)
        before = api.repo_info(repo_id, repo_type="dataset", revision=branch).sha
        info = api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=folder,
            revision=branch,
            commit_message=f"Publish {folder.name} with tracemill",
            delete_patterns=[f"{DATA_DIR}/*"],
        )
    except HfHubHTTPError as exc:  # the Hub answered: a permission, name or quota problem
        raise PublishError(f"{failed}: {exc} — check HF_TOKEN has write access to '{repo_id}'") from exc
    except (HTTPError, OSError) as exc:  # the Hub was not reached
        raise PublishError(f"{failed}: {exc} — check the network can reach the Hub") from exc
    return PushResult(repo_id, branch, info.oid, info.oid != before, f"https://huggingface.co/datasets/{repo_id}/tree/{branch}")
