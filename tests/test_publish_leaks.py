"""No evaluation data in a published train split, checked from outside the publisher: the shipped
`publish` params build a folder from tables written with the project's store and records (held-out
problems, evaluation traces, rows that quote a held-out question), and DuckDB reads the published
Parquet back. Also: every path the publisher reads is a dependency of its dvc.yaml stage."""

from __future__ import annotations

import copy
from pathlib import Path

import datasets
import duckdb
import pytest
import yaml
from test_publish import SEGMENTS, pair, problem, sft, trace, trajectory, write_tables

from tracemill import params as P
from tracemill import publish, records

ROOT = Path(__file__).resolve().parents[1]
N = 8  # params start.filters.decontam_ngram and publish.decontam_ngram

EVAL_Q = "Eve counts 12 blue marbles in the jar on the kitchen shelf. How many are left after she gives 3 away?"
TEST_Q = "Write a function that returns the longest palindromic substring of a given input string."
PROBLEMS = [
    problem(
        "tr1", "train", "Ann has 3 red apples and buys 4 more at the market stall. How many apples does she have now?"
    ),
    problem(
        "tr2", "train", "A train travels 60 miles in one hour along the coast. How far does it travel in five hours?"
    ),
    # a template twin of the eval question: its own words share an 8-gram with it
    problem(
        "tr3", "train", "Bob counts 12 blue marbles in the jar on the kitchen shelf and adds 5 more. How many now?"
    ),
    problem("ev1", "eval", EVAL_Q),
    problem("te1", "test", TEST_Q, "mbpp", "code"),
]


def _answer(text: str) -> list[dict]:
    return [records.segment("prompt", "Q"), records.segment("model", text)]


# Stage directory -> table -> rows, leaks included: each is named by the reason it must be held back for.
TABLES = {
    "data/problems": {"problems": PROBLEMS},
    "data/hint_infer": {
        "traces": [
            trace("clean", "tr1", "hint_infer", SEGMENTS),
            trace(
                "quotes-test", "tr2", "hint_infer", _answer(f"This is like: {TEST_Q.lower()} So 300 miles.")
            ),  # held_out_8gram
            trace(
                "twin", "tr3", "hint_infer", _answer("5 more makes 17.")
            ),  # held_out_8gram: its problem's question shares one
            trace("on-eval", "ev1", "hint_infer", SEGMENTS),  # held_out_problem
        ]
    },
    "data/rft": {"traces": [trace("rft-clean", "tr2", "rft", SEGMENTS)]},
    "data/evaluate": {
        "traces": [trace("eval-1", "ev1", "evaluate", SEGMENTS), trace("eval-2", "te1", "evaluate", SEGMENTS)]
    },
    "data/sft_start": {
        "sft": [
            sft("d_start", "tr1", SEGMENTS),
            sft("d_start", "te1", SEGMENTS),  # held_out_problem
            sft("d_start", None, SEGMENTS),  # unknown_problem
            {**sft("d_start", "tr2", SEGMENTS), "prompt": EVAL_Q},  # held_out_8gram
        ]
    },
    "data/rstar_search/round=1": {
        "trajectories": [trajectory("t-train", "tr1"), trajectory("t-eval", "ev1")],
        "pairs": [pair("p-train", "tr1"), pair("p-test", "te1")],
    },
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, publish.BuildReport]:
    """The folder the shipped params build from TABLES."""
    root = tmp_path_factory.mktemp("leaks")
    write_tables(root, TABLES)
    raw = copy.deepcopy(P.load(ROOT / "params.yaml"))
    raw["publish"]["out_dir"] = str(root / "publish")
    cfg = P.section(publish.PublishParams, raw, "publish")
    return root, publish.build(cfg, cfg.dataset(None), root, raw)


def _connect(root: Path) -> duckdb.DuckDBPyConnection:
    """DuckDB with the source problems and the word n-grams of every held-out question (regexp \\w+ on
    lower-cased text, as the decontamination filter splits words)."""
    con = duckdb.connect()
    con.execute(f"CREATE VIEW problems AS SELECT * FROM read_parquet('{root}/data/problems/problems/*.parquet')")
    con.execute(f"""CREATE TABLE held_grams AS
        WITH words AS (SELECT regexp_extract_all(lower(question), '\\w+') AS w FROM problems WHERE split <> 'train'),
             starts AS (SELECT w, unnest(range(1, len(w) - {N - 2})) AS i FROM words)
        SELECT DISTINCT array_to_string(w[i:i + {N - 1}], ' ') AS g FROM starts""")
    return con


def _texts_sql(con: duckdb.DuckDBPyConnection, files: str) -> str:
    """SQL giving (row, text) for every string of every row in `files`: text columns, lists of strings and
    the segments' texts."""
    rows = f"read_parquet('{files}', filename = true, file_row_number = true)"
    parts = []
    for name, kind, *_ in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{files}')").fetchall():
        value = {"VARCHAR": f'"{name}"', "VARCHAR[]": f'unnest("{name}")'}.get(kind)
        if kind.startswith('STRUCT(kind VARCHAR, "text" VARCHAR'):
            value = f'unnest("{name}").text'
        if value:
            parts.append(f"SELECT (filename, file_row_number) AS row, {value} AS text FROM {rows}")
    return " UNION ALL ".join(parts)


def _leaks(con: duckdb.DuckDBPyConnection, files: str) -> tuple[int, int]:
    """(rows whose problem is not a train problem, rows with a text sharing an n-gram with a held-out question)."""
    by_id_sql = f"""SELECT count(*) FROM read_parquet('{files}') t
        WHERE t.problem_id IS NULL OR t.problem_id NOT IN (SELECT problem_id FROM problems WHERE split = 'train')"""
    by_text_sql = f"""
        WITH texts AS ({_texts_sql(con, files)}),
             words AS (SELECT row, regexp_extract_all(lower(text), '\\w+') AS w FROM texts),
             starts AS (SELECT row, w, unnest(range(1, len(w) - {N - 2})) AS i FROM words)
        SELECT count(DISTINCT row) FROM starts
        WHERE array_to_string(w[i:i + {N - 1}], ' ') IN (SELECT g FROM held_grams)"""
    by_id = con.execute(by_id_sql).fetchone()[0]
    by_text = con.execute(by_text_sql).fetchone()[0]
    return by_id, by_text


def test_the_fixture_leaks_and_the_sql_check_sees_it(tmp_path):
    """The check below is only worth something if it finds the leaks in the unpublished tables."""
    write_tables(tmp_path, TABLES)
    con = _connect(tmp_path)
    assert all(len(q.split()) >= N for q in (EVAL_Q, TEST_Q))  # a shorter question would only count whole
    assert _leaks(con, f"{tmp_path}/data/hint_infer/traces/*.parquet") == (1, 1)
    assert _leaks(con, f"{tmp_path}/data/sft_start/sft/*.parquet") == (2, 1)
    by_id, by_text = _leaks(con, f"{tmp_path}/data/problems/problems/*.parquet")
    assert by_id == 2 and by_text > 2  # the held-out questions themselves, and tr3's twin


def test_no_train_split_row_has_a_held_out_problem_or_a_held_out_8gram(built):
    root, report = built
    folder = report.folder
    con = _connect(root)
    train_files = sorted(folder.glob("data/*/train-*.parquet"))
    assert {f.parent.name for f in train_files} == {"problems", "traces", "sft", "trajectories", "pairs"}
    for files in train_files:
        assert _leaks(con, str(files)) == (0, 0), files
    stages = con.execute(
        f"SELECT DISTINCT stage FROM read_parquet('{folder}/data/traces/train-*.parquet') ORDER BY 1"
    ).fetchall()
    assert stages == [("hint_infer",), ("rft",)]  # evaluation traces are never in a training config
    assert report.held_back == {
        "problems": {"held_out_8gram": 1},  # tr3, the eval question's template twin
        "traces": {"held_out_8gram": 2, "held_out_problem": 1},
        "sft": {"held_out_8gram": 1, "held_out_problem": 1, "unknown_problem": 1},
        "trajectories": {"held_out_problem": 1},
        "pairs": {"held_out_problem": 1},
    }


def test_held_out_problems_and_evaluation_traces_load_as_test_and_the_card_counts_what_was_held_back(built, tmp_path):
    _, report = built
    folder = report.folder
    assert report.rows["problems"] == {"train": 2, "test": 2} and report.rows["evaluation"] == {"test": 2}
    cache = str(tmp_path / "cache")
    assert sorted(datasets.load_dataset(str(folder), "problems", cache_dir=cache)) == ["test", "train"]
    evaluation = datasets.load_dataset(str(folder), "evaluation", cache_dir=cache)
    assert list(evaluation) == ["test"] and sorted(evaluation["test"]["problem_id"]) == ["ev1", "te1"]
    assert list(datasets.load_dataset(str(folder), "traces", cache_dir=cache)) == ["train"]
    body = (folder / publish.CARD).read_text()
    assert "Rows held back from `train`: 9." in body
    assert "| `sft` | 3 | held_out_8gram 1, held_out_problem 1, unknown_problem 1 |" in body


def _base(pattern: str) -> str:
    """The directory a glob reads under: its parts before the first wildcard."""
    parts = Path(pattern).parts
    return Path(*parts[: next((i for i, p in enumerate(parts) if any(c in p for c in "*?[")), len(parts))]).as_posix()


def test_every_path_publish_reads_is_a_dependency_of_its_dvc_stage():
    """dvc status is only truthful when the stage declares what it reads: the data directories of the shipped
    params (PublishParams.reads, the paths build opens), the card template and the n-gram filter it imports."""
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["publish"]
    deps = set(stage["deps"])
    cfg = P.section(publish.PublishParams, P.load(ROOT / "params.yaml"), "publish")
    bases = {_base(p) for p in cfg.reads()}
    needed = {
        b for b in bases if not any(b.startswith(o + "/") for o in bases)
    }  # data/distill covers data/distill/selected
    assert sorted(d for d in deps if d.startswith("data/")) == sorted(needed)
    package = "tracemill/publish"  # its code, the card template, row definitions and references
    assert {"stages/publish.py", package, "tracemill/filters.py"} <= deps
    assert publish.CARD_TEMPLATE.resolve().parent == (ROOT / package).resolve()
    assert stage["params"] == ["publish"]  # seed citations come from the problems stage's params in dvc.lock
    assert "data/evaluate" in needed and "data/*" not in cfg.reads()  # evaluation is read for its own config only
