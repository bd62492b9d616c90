"""Publishing: a Hub-ready folder per dataset, checked with `datasets`, pushed with huggingface_hub.

`publish/<dataset>/` holds one config per table (`data/<config>/<split>-XXXXX-of-YYYYY.parquet`) and a
`README.md` dataset card: YAML front matter the Hub and `datasets` read (configs and their splits,
features mapped one-to-one from the table's pyarrow schema, license, tags) and a body filled into the
template `publish_card.md`. Every statement the body makes about the rows is computed from the published
rows or from the params and dvc.lock of the stages that wrote them, so the card cannot drift from the code.

Splits follow the problems: only rows of problems whose split is `train` go in a `train` split, and
a row that shares a word n-gram (publish.decontam_ngram) with a held-out (eval or test) question is
held back too; the card and metrics count what was held back and why. Held-out problems and
evaluation traces are published as `test`, never as `train`.

The folder is built in a temp sibling, every config and split is loaded back with
`datasets.load_dataset` and compared with its schema, and only then swapped in. Its bytes depend only
on the tables, params, dvc.lock and git state (no timestamps), so a re-push of an unchanged folder
leaves the Hub repo as it was: huggingface_hub compares each file's hash with the remote one, drops
unchanged files from the commit and makes no commit when none are left.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import string
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from tracemill import filters, records, store
from tracemill import params as P
from tracemill.errors import ParamsError, TracemillError

CARD = "README.md"
CARD_TEMPLATE = Path(__file__).with_name("publish_card.md")  # the card's layout; every fact in it is computed
DATA_DIR = "data"
DVC_LOCK = "dvc.lock"
UNKNOWN_LICENSE = "unknown"  # the Hub's own id for a license nobody stated
MIXED_LICENSE = "other"  # the Hub's id when one value cannot describe the rows
# Hub config and folder names: no slashes or spaces, so they are safe as paths and in URLs.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Published split names (`datasets` wants \w+). A problem whose split is not TRAIN (eval, test) is held out.
TRAIN, TEST = "train", "test"
BY_PROBLEM = "by_problem"  # a config split by its rows' problems: train problems -> TRAIN, held-out ones -> TEST
# Why a row was kept out of a train split (the n-gram reason is f"held_out_{n}gram").
HELD_OUT_PROBLEM = "held_out_problem"
UNKNOWN_PROBLEM = "unknown_problem"
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
    data: list[str]  # stage directories, or globs of them (data/mcts/*), holding the table
    # train: every row in split train, after the leak check; test: every row in split test (evaluation
    # output, published only when publish.evaluation is config); by_problem: rows of train problems in
    # train (after the leak check), rows of held-out problems in test
    split: str = P.choices(TRAIN, TEST, BY_PROBLEM, default=TRAIN)
    required: bool = False  # an empty or missing table fails the stage instead of being skipped

    def check(self) -> None:
        if not NAME_RE.match(self.config):
            raise ParamsError(f"params 'publish' config name '{self.config}' must match {NAME_RE.pattern}")
        if self.table not in records.TABLES:
            known = ", ".join(records.TABLES)
            raise ParamsError(f"params 'publish' config '{self.config}': table '{self.table}' is not one of {known}")
        if not self.data:
            raise ParamsError(f"params 'publish' config '{self.config}' lists no 'data' directories — name the stage outputs it reads")


@dataclass(frozen=True)
class DatasetParams:
    name: str  # folder publish/<name> and the default repo name
    pretty_name: str
    configs: list[ConfigParams] = field(default_factory=list)  # the first is the Hub's default config
    license: str | None = None  # null: carried from the seed rows' licenses; a Hub license id overrides
    tags: list[str] = field(default_factory=list)
    task_categories: list[str] = field(default_factory=list)
    language: list[str] = field(default_factory=list)

    def check(self) -> None:
        if not NAME_RE.match(self.name):
            raise ParamsError(f"params 'publish' dataset name '{self.name}' must match {NAME_RE.pattern}")
        if not self.configs:
            raise ParamsError(f"params 'publish' dataset '{self.name}' lists no configs — add at least one under 'configs'")
        names = [c.config for c in self.configs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ParamsError(f"params 'publish' dataset '{self.name}' names config '{dupes[0]}' twice")


@dataclass(frozen=True)
class PublishParams:
    out_dir: str = "publish"
    problems: str = "data/problems"  # the problems whose splits, questions, licenses and sources decide and describe the rows
    shard_rows: int = P.at_least(1, default=100_000)  # rows per Parquet shard
    decontam_ngram: int = P.at_least(1, default=8)  # a train row sharing a word n-gram with a held-out question is held back
    evaluation: str = P.choices("config", "none", default="config")  # configs with split test: published, or left out
    datasets: list[DatasetParams] = field(default_factory=list)

    def check(self) -> None:
        names = [d.name for d in self.datasets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ParamsError(f"params 'publish.datasets' names dataset '{dupes[0]}' twice")

    def publishes(self, c: ConfigParams) -> bool:
        return c.split != TEST or self.evaluation == "config"

    def reads(self) -> list[str]:
        """Every stage directory or glob a build reads; the publish stage's deps in dvc.yaml must cover them."""
        data = [pattern for ds in self.datasets for c in ds.configs if self.publishes(c) for pattern in c.data]
        return list(dict.fromkeys([self.problems, *data]))

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
    """Stage directories matching `pattern` that hold `table` (`data/mcts/*` finds every round's output)."""
    return sorted(p for p in root.glob(pattern) if (p / table).is_dir())


def read_config(root: Path, cfg: ConfigParams) -> ConfigData:
    """Every row of the config's table across its stage directories, checked against the schema and sorted by key."""
    dirs = sorted({d for pattern in cfg.data for d in stage_dirs(root, pattern, cfg.table)})
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


# --- splits: what a train split may hold ------------------------------------------------------------


@dataclass(frozen=True)
class Guard:
    """The held-out problems a train split must not touch: their ids, the word n-grams of their questions
    (the decontamination helper START's filters use, filters.ngrams / filters.contaminated) and the train
    problems whose question shares one of those n-grams."""

    split_of: dict[str, str]  # problem_id -> the problem's split
    ngrams: frozenset[tuple[str, ...]]
    n: int
    twins: frozenset[str]  # train problems whose own question shares an n-gram with a held-out one

    @classmethod
    def of(cls, problems: pa.Table, n: int) -> Guard:
        ids, splits = problems.column("problem_id").to_pylist(), problems.column("split").to_pylist()
        questions = problems.column("question").to_pylist()
        held = [q for q, s in zip(questions, splits) if s != TRAIN]
        grams = frozenset(filters.ngrams(held, n) - {()})  # an empty question would match every empty string
        twins = frozenset(i for i, s, q in zip(ids, splits, questions) if s == TRAIN and filters.contaminated(q, grams, n))
        return cls(dict(zip(ids, splits)), grams, n, twins)

    @property
    def ngram_reason(self) -> str:
        return f"held_out_{self.n}gram"

    def verdict(self, row: dict[str, Any]) -> str | None:
        """None when `row` may go in a train split, else why not."""
        split = self.split_of.get(row.get("problem_id") or "")
        if split is None:
            return UNKNOWN_PROBLEM  # no problem, or one the problems table lacks: its split cannot be checked
        if split != TRAIN:
            return HELD_OUT_PROBLEM
        if row["problem_id"] in self.twins or any(filters.contaminated(text, self.ngrams, self.n) for text in _strings(row)):
            return self.ngram_reason  # rows of a twin problem too, though they may not quote its question (trajectories)
        return None


def _strings(value: Any) -> Iterator[str]:
    """Every string in a row, nested segments and lists included: any of them could carry a question."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def split_rows(data: pa.Table, mode: str, guard: Guard) -> tuple[dict[str, pa.Table], dict[str, int]]:
    """The rows of each published split (non-empty ones, train first) and the rows held back from train, by reason."""
    if mode == TEST:
        return ({TEST: data} if data.num_rows else {}), {}
    verdicts = [guard.verdict(row) for row in data.to_pylist()]
    to_test = mode == BY_PROBLEM
    train = [i for i, v in enumerate(verdicts) if v is None]
    test = [i for i, v in enumerate(verdicts) if to_test and v == HELD_OUT_PROBLEM]
    held_back = Counter(v for v in verdicts if v is not None and not (to_test and v == HELD_OUT_PROBLEM))
    splits = {TRAIN: data.take(pa.array(train, pa.int64())), TEST: data.take(pa.array(test, pa.int64()))}
    return {s: t for s, t in splits.items() if t.num_rows}, dict(sorted(held_back.items()))


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
    """The newest commit that changed a file the publish stage depends on (its code, as dvc.yaml lists
    it), and whether one differs from it now. Not HEAD, nor the commit of every pipeline input: DVC
    re-runs publish exactly when one of its own dependencies changes, so only their commit can be in the
    card without a fresh clone of a later commit publishing another card. What made the data is named
    by the dvc.lock hashes of the inputs and their params, next to it."""
    inputs = publish_dependencies(root)
    commit = _git(root, "log", "-1", "--format=%H", "--", *inputs) if inputs else None
    if not commit:
        return {"commit": None, "dirty": None}
    status = _git(root, "status", "--porcelain", "--untracked-files=no", "--", *inputs)
    return {"commit": commit, "dirty": bool(status)}


def publish_dependencies(root: Path, stage: str = "publish") -> list[str]:
    """The dependencies dvc.yaml lists for the publish stage."""
    try:
        stages = (yaml.safe_load((root / "dvc.yaml").read_text()) or {}).get("stages") or {}
    except (OSError, yaml.YAMLError):
        return []
    body = stages.get(stage) or {}
    return sorted(d for d in body.get("deps") or [] if isinstance(d, str))


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


@dataclass(frozen=True)
class TableDoc:
    """What one row of a table is (a definition, not a claim about which rows were kept) and which columns
    the card summarises; the counts and ranges themselves are computed from the published rows."""

    row: str
    method: str  # a METHODS key; for a table with an `origin` column, the method of values ORIGIN_METHODS lacks
    tally: tuple[str, ...] = ()  # categorical columns: rows per value
    ranges: tuple[str, ...] = ()  # numeric columns: smallest and largest value
    origin: str | None = None  # the column naming the stage or table each row came from


TABLE_DOCS: dict[str, TableDoc] = {
    "problems": TableDoc("a normalised seed problem: math with a final answer, or code with tests", "seed", ("source", "split", "domain")),
    "traces": TableDoc(
        "a generated response of a model to a problem: its segments, final answer, whether it is correct and its token counts",
        "generation", ("stage", "hint_kind", "correct", "finish_reason"), origin="stage",
    ),
    "d_seed": TableDoc("a trace selected for START's D_seed, with the reason it was kept and its near-duplicate cluster", "start",
                       ("reason_kept", "hint_kind", "correct")),
    "d_start": TableDoc("an RFT sample of the START-0 model selected for D_START, with the reason it was kept", "start",
                        ("reason_kept", "correct")),
    "nodes": TableDoc(
        "a node of a code-augmented CoT Monte Carlo search tree: a natural-language step, its python code, whether that code "
        "ran (exec_ok), its visits, Q and PPM score", "rstar", ("round", "exec_ok", "terminal", "correct"), ("q",),
    ),
    "trajectories": TableDoc("a root-to-leaf path of a search tree with its average Q, and whether it was selected for SFT", "rstar",
                             ("round", "correct", "selected"), ("avg_q",)),
    "pairs": TableDoc("a step-level preference pair: two sibling steps after a shared prefix and their Q values", "rstar",
                      ("round", "final_step"), ("chosen_q", "rejected_q")),
    "coat": TableDoc("a Chain-of-Action-Thought trace with <|continue|>, <|reflect|> and <|explore|> meta-actions, built from "
                     "search-tree nodes", "satori", ("kind", "correct")),
    "rae_states": TableDoc("a restart-and-explore start state: a prefix of steps and the outcome of the trajectory it was taken from",
                           "satori", ("outcome", "ends_with_reflect"), ("q",)),
    "sft": TableDoc("a training example: a prompt and segments whose loss flag is the loss mask; `source` names the table it was "
                    "built from", "training", ("source",), origin="source"),
    "rejected": TableDoc("a row a stage set aside, with the reason", "quarantine", ("stage", "table", "reason")),
}
# Methods: (name in the card's tables, the paper it follows or None); keys that are in BIBTEX are cited.
METHODS: dict[str, tuple[str, str | None]] = {
    "seed": ("seed problems", None),
    "generation": ("generation", None),
    "training": ("training examples", None),
    "evaluation": ("evaluation", None),
    "quarantine": ("quarantine", None),
    "start": ("START", "START (arXiv 2503.04625)"),
    "rstar": ("rStar-Math", "rStar-Math (arXiv 2501.04519)"),
    "satori": ("Satori", "Satori (arXiv 2502.02508)"),
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


@dataclass(frozen=True)
class Published:
    """One config as it goes into the folder and the card."""

    data: ConfigData
    splits: dict[str, pa.Table]  # published split -> its rows
    held_back: dict[str, int]  # reason -> rows kept out of the train split
    origins: frozenset[Origin]
    inputs: tuple[dict[str, Any], ...]  # dvc.lock entries of its stage directories
    methods: tuple[str, ...]  # METHODS keys

    @property
    def config(self) -> str:
        return self.data.params.config

    @property
    def table(self) -> str:
        return self.data.params.table

    @property
    def rows(self) -> dict[str, int]:
        return {split: t.num_rows for split, t in self.splits.items()}

    @property
    def published_rows(self) -> pa.Table:
        return pa.concat_tables(self.splits.values())


def methods(data: pa.Table, table: str) -> tuple[str, ...]:
    """The methods the rows were made by: the table's own, or one per stage/source value it names."""
    doc = TABLE_DOCS[table]
    if doc.origin is None:
        return (doc.method,)
    values = sorted(set(data.column(doc.origin).drop_null().to_pylist()))
    return tuple(dict.fromkeys(ORIGIN_METHODS.get(v, doc.method) for v in values)) or (doc.method,)


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
        "held_back": {p.config: p.held_back for p in published if p.held_back},
        "schema_version": records.SCHEMA_VERSION,
        "params": {**stages, "publish": {k: v for k, v in raw_publish.items() if k != "datasets"} | {"dataset": entry}},
    }


def card_body(
    ds: DatasetParams, published: list[Published], skipped: dict[str, str], prov: dict[str, Any], kinds: dict[str, str], guard: Guard
) -> str:
    """The card's body: CARD_TEMPLATE filled with sections computed from the rows, params and dvc.lock."""
    first = published[0]
    fields = {
        "pretty_name": ds.pretty_name,
        "example": f'ds = load_dataset("ORG/NAME", "{first.config}", split="{next(iter(first.splits))}")',
        "configs": "\n".join(_configs_section(published, skipped)),
        "splits": "\n".join(_splits_section(published, guard)),
        "tables": "\n".join(line for p in published for line in _table_section(p)),
        "licenses": "\n".join(_licenses_section(published)),
        "provenance": yaml.safe_dump(prov, sort_keys=False, allow_unicode=True).rstrip(),
        "citations": "\n\n".join(BIBTEX[k] for k in citations(published, kinds)),
    }
    return string.Template(CARD_TEMPLATE.read_text(encoding="utf-8")).substitute(fields)


def _method_names(p: Published) -> str:
    return ", ".join(METHODS[k][0] for k in p.methods)


def _configs_section(published: list[Published], skipped: dict[str, str]) -> list[str]:
    lines = [f"| config | table | {TRAIN} | {TEST} | method |", "| --- | --- | --- | --- | --- |"]
    lines += [
        f"| `{p.config}` | `{p.table}` | {p.rows.get(TRAIN, 0)} | {p.rows.get(TEST, 0)} | {_method_names(p)} |" for p in published
    ]
    if skipped:
        lines += ["", "Not included:", ""] + [f"- `{c}`: {why}" for c, why in skipped.items()]
    return lines


def _counts(values: Any) -> str:
    return ", ".join(f"{_value(v)} {n}" for v, n in sorted(Counter(values).items(), key=lambda kv: _value(kv[0])))


def _value(v: Any) -> str:
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def _splits_section(published: list[Published], guard: Guard) -> list[str]:
    held = sorted(set(guard.split_of.values()) - {TRAIN})
    lines = [
        f"- `{TRAIN}` holds only rows of problems whose split is `{TRAIN}`. A row is held back from it when its problem is "
        f"held out (problem splits here: {', '.join(held) or 'none'}), is not in the problems table, or it or its problem's "
        f"question shares a word {guard.n}-gram with a held-out question (`publish.decontam_ngram`).",
    ]
    for p in published:
        if TEST in p.splits:
            ids = p.splits[TEST].column("problem_id").to_pylist() if "problem_id" in p.splits[TEST].column_names else []
            lines.append(f"- `{TEST}` of `{p.config}`: rows {p.rows[TEST]}; their problems' splits: "
                         f"{_counts(guard.split_of.get(i) for i in ids) or 'none'}.")
    back = [p for p in published if p.held_back]
    lines += ["", f"Rows held back from `{TRAIN}`: {sum(sum(p.held_back.values()) for p in published)}."]
    if back:
        lines += ["", f"| config | held back from `{TRAIN}` | why |", "| --- | --- | --- |"]
        lines += [f"| `{p.config}` | {sum(p.held_back.values())} | {_counts(Counter(p.held_back).elements())} |" for p in back]
    return lines


def _table_section(p: Published) -> list[str]:
    doc = TABLE_DOCS[p.table]
    papers = [METHODS[k][1] for k in p.methods if METHODS[k][1]]
    lines = [f"### `{p.config}`", "", f"One row of `{p.table}` is {doc.row}." + (f" Method: {', '.join(papers)}." if papers else ""), ""]
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
    out = [f"`{c}`: {_counts(data.column(c).to_pylist())}" for c in doc.tally]
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


def citations(published: list[Published], kinds: dict[str, str]) -> list[str]:
    """BibTeX keys of the methods of the published rows and of the seed sets their rows come from."""
    keys: list[str] = []
    for p in published:
        keys += [k for k in p.methods if k in BIBTEX]
        for o in sorted(p.origins):  # sorted: set order changes with the hash seed, the card must not
            keys += SEED_PAPERS.get(kinds.get(o.source, ""), ())
    return list(dict.fromkeys(keys))


def source_kinds(params: dict[str, Any]) -> dict[str, str]:
    """Source name -> kind, from the `problems.sources` params the problems stage ran with (its dvc.lock entry,
    so the stage reads no params but its own): the kind says which paper to cite."""
    sources = (params.get("problems") or {}).get("sources") or []
    return {s["name"]: s["kind"] for s in sources if isinstance(s, dict) and "name" in s and "kind" in s}


# --- build and validate ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildReport:
    name: str
    folder: Path
    rows: dict[str, dict[str, int]]  # config -> split -> rows
    held_back: dict[str, dict[str, int]]  # config -> reason -> rows kept out of its train split
    skipped: dict[str, str]  # config -> why it was left out
    license: str


def build(cfg: PublishParams, ds: DatasetParams, root: Path, raw: dict[str, Any]) -> BuildReport:
    """Write `<out_dir>/<name>/` under `root`, check every config loads with `datasets`, then swap it in."""
    lock = load_lock(root)
    checks_train = any(c.split != TEST for c in ds.configs if cfg.publishes(c))
    problems = _problems(root, cfg.problems, required=checks_train)
    guard = Guard.of(problems, cfg.decontam_ngram)
    published: list[Published] = []
    skipped: dict[str, str] = {}
    held_back: dict[str, dict[str, int]] = {}
    for c in ds.configs:
        if not cfg.publishes(c):
            skipped[c.config] = f"split {TEST} and publish.evaluation is none"
            continue
        data = read_config(root, c)
        splits, back = split_rows(data.table, c.split, guard)
        if back:
            held_back[c.config] = back
        if not splits:
            _skip(ds, c, data, back, skipped)
            continue
        rows = pa.concat_tables(splits.values())
        inputs = tuple(lock_entry(lock, d) for d in data.dirs)
        published.append(Published(data, splits, back, frozenset(origins(rows, problems)), inputs, methods(rows, c.table)))
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
            for split, rows in p.splits.items():
                write_shards(rows, staging / DATA_DIR / p.config, split, cfg.shard_rows)
        body = card_body(ds, published, skipped, prov, source_kinds(lock_entry(lock, cfg.problems)["params"]), guard)
        (staging / CARD).write_text(f"---\n{card_yaml(ds, published, license_id)}\n---\n\n{body}", encoding="utf-8")
        validate_folder(staging, {p.config: (p.table, p.rows) for p in published})
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    rows = {p.config: p.rows for p in published}
    return BuildReport(ds.name, final, rows, held_back, skipped, license_id)


def _skip(ds: DatasetParams, c: ConfigParams, data: ConfigData, back: dict[str, int], skipped: dict[str, str]) -> None:
    """Record why config `c` has nothing to publish; a required config fails instead."""
    if data.table.num_rows == 0:
        why = f"table '{c.table}' has no rows under {', '.join(repr(d) for d in c.data)}"
        fix = "run the stage that writes it (dvc repro) or set required: false"
    else:
        why = f"all {data.table.num_rows} rows held back from split {TRAIN} ({_counts(Counter(back).elements())})"
        fix = f"its rows come from held-out problems or share n-grams with held-out questions; publish it with split: {TEST} if it is evaluation output"
    if c.required:
        raise PublishError(f"config '{c.config}' of dataset '{ds.name}': {why} — {fix}")
    skipped[c.config] = why


def _problems(root: Path, stage_dir: str, required: bool) -> pa.Table:
    columns = ["problem_id", "split", "question", "source", "license"]
    if not (root / stage_dir).exists():
        if required:
            raise PublishError(
                f"no problems table under '{stage_dir}' to check the train splits against — run `dvc repro problems` or set publish.problems"
            )
        return records.schema("problems").empty_table().select(columns)  # test splits only: licenses show as unknown
    return store.read(root / stage_dir, "problems", columns=columns)


def validate_folder(folder: Path, expected: dict[str, tuple[str, dict[str, int]]]) -> None:
    """Load every config with `datasets.load_dataset` and compare its splits, features and row counts with the tables."""
    import datasets

    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory(prefix="tracemill-publish-cache-") as cache:  # never reuse a stale cache
        for config, (table, splits) in expected.items():
            try:
                loaded = datasets.load_dataset(str(folder), config, cache_dir=cache)
            except Exception as exc:  # any loader failure means the folder is not publishable; say which config
                raise PublishError(
                    f"config '{config}' in '{folder}' does not load with datasets.load_dataset: {type(exc).__name__}: {exc} — "
                    f"check the config's data files and features in {CARD}"
                ) from exc
            if sorted(loaded) != sorted(splits):
                raise PublishError(f"config '{config}' loads splits {sorted(loaded)}, table '{table}' has {sorted(splits)} — rebuild the folder")
            want = features(table)
            for split, rows in splits.items():
                got = loaded[split]
                if got.features != want:
                    diff = sorted(k for k in set(want) | set(got.features) if want.get(k) != got.features.get(k))
                    raise PublishError(
                        f"config '{config}' loads with features that differ from table '{table}' in column(s) {', '.join(diff)}"
                        f" — the card's features must be built from records.schema('{table}')"
                    )
                if got.num_rows != rows:
                    raise PublishError(
                        f"config '{config}' split '{split}' loads {got.num_rows} rows, table '{table}' has {rows} — rebuild the folder"
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
