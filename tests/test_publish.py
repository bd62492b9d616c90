"""Publishing: a real `dvc repro problems` in a repo copy, hand-built rows of other tables, the real
publish stage and CLI, and every config loaded back with `datasets.load_dataset`. No Hub is reachable
here: the push path is exercised up to the library's first request (see docs/publish.md)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import datasets
import pyarrow.compute as pc
import pytest
import yaml
from conftest import run, stage_cmd

from tracemill import params as P
from tracemill import publish, records, store
from tracemill.errors import ParamsError
from tracemill.publish import methods

DATASET = "tracemill-reasoning"
CLOSED_PORT_URL = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once
SAMPLING = {"temperature": 0.6, "top_p": 0.95, "max_tokens": 64, "seed": 0}


def trace(trace_id: str, problem_id: str, stage: str, segments: list[dict]) -> dict:
    """A valid `traces` row."""
    return {
        "trace_id": trace_id,
        "problem_id": problem_id,
        "stage": stage,
        "round": 0,
        "model": "tiny",
        "sample_index": 0,
        "tool_calls": 1,
        "prompt_tokens": 9,
        "cached_prompt_tokens": 4,
        "generated_tokens": 5,
        "finish_reason": "stop",
        "sampling": SAMPLING,
        "segments": segments,
    }


def sft(source: str, problem_id: str | None, segments: list[dict]) -> dict:
    return {
        "example_id": records.content_id("sft", source, problem_id),
        "source": source,
        "problem_id": problem_id,
        "prompt": "Q",
        "segments": segments,
    }


def trajectory(trajectory_id: str, problem_id: str) -> dict:
    return {
        "trajectory_id": trajectory_id,
        "tree_id": f"tree-{problem_id}",
        "problem_id": problem_id,
        "round": 1,
        "node_ids": ["n0", "n1"],
        "avg_q": 0.5,
        "correct": True,
        "selected": True,
        "final_answer": "4",
    }


def pair(pair_id: str, problem_id: str) -> dict:
    return {
        "pair_id": pair_id,
        "problem_id": problem_id,
        "tree_id": f"tree-{problem_id}",
        "round": 1,
        "prefix": "s0",
        "chosen": "a",
        "rejected": "b",
        "chosen_q": 0.9,
        "rejected_q": -0.4,
        "final_step": False,
        "chosen_node_id": "n1",
        "metadata": "{}",
    }


def write_tables(root: Path, tables_by_dir: dict[str, dict[str, list[dict]]]) -> None:
    """Each stage directory's tables written as the stages write them (one shard, completion marker)."""
    for stage_dir, tables in tables_by_dir.items():
        out = store.StageOutput(root / stage_dir, list(tables), fingerprint="test")
        out.write_shard(0, tables)
        out.finalize([0])


SEGMENTS = [
    records.segment("prompt", "Q"),
    records.segment("model", "Let me think."),
    records.segment("hint", "Wait, use Python.", hint_id="h1"),
]


def _rows_for(train: list[str], held_out: str) -> dict[str, dict[str, list[dict]]]:
    """Valid rows of tables the pipeline makes, keyed stage directory -> table -> rows: generated rows of the
    `train` problems, and evaluation traces of a `held_out` problem."""
    pid = train[0]
    return {
        "data/sft_start": {"sft": [sft(source, p, SEGMENTS) for source, p in zip(("d_start", "coat"), train)]},
        "data/rstar_search/round=1": {"trajectories": [trajectory("t1", pid)], "pairs": [pair("p1", pid)]},
        "data/d_seed": {"d_seed": []},
        "data/hint_infer": {"traces": [trace("h1", pid, "hint_infer", SEGMENTS)]},
        "data/rft": {"traces": [trace("r1", pid, "rft", SEGMENTS)]},
        "data/evaluate": {"traces": [trace("e1", held_out, "evaluate", SEGMENTS)]},
    }


def problem(problem_id: str, split: str, question: str, source: str = "synthetic", domain: str = "math") -> dict:
    return {
        "problem_id": problem_id,
        "source": source,
        "split": split,
        "domain": domain,
        "question": question,
        "answer": "7",
        "license": "Apache-2.0",
    }


# Problems of the tests that build outside a repo: two train, one eval, one test.
SMALL_PROBLEMS = [
    problem("p1", "train", "Ann has 3 apples and buys 4 more. How many apples does she have?"),
    problem("p2", "train", "A cat sleeps 12 hours a day. How many hours does it sleep in a week?"),
    problem("e1", "eval", "Tom reads 5 pages every morning and 6 pages every night. How many pages a day?"),
    problem("t1", "test", "Write a function that reverses the words of a sentence.", "mbpp", "code"),
]


def _write_small(root: Path) -> None:
    write_tables(root, {"data/problems": {"problems": SMALL_PROBLEMS}, **_rows_for(["p1", "p2"], "e1")})


@pytest.fixture
def repo(repo_copy: Path) -> Path:
    """A repo copy after a real `dvc repro problems`, with hand-built traces, evaluation, rstar_search and sft outputs
    and an empty d_seed. The generated rows use train problems of two sources that share no 8-gram with
    a held-out question; the evaluation trace is on a GSM8K test problem."""
    done = run(["dvc", "repro", "problems"], cwd=repo_copy)
    assert done.returncode == 0, done.stderr + done.stdout
    problems = store.read(repo_copy / "data/problems", "problems")
    guard = publish.Guard.of(problems, 8)
    first = {}
    for row in problems.to_pylist():
        if row["split"] == publish.TRAIN and guard.verdict(row) is None or row["split"] == "test":
            first.setdefault((row["source"], row["split"]), row["problem_id"])
    write_tables(repo_copy, _rows_for([first["synthetic", "train"], first["mbpp", "train"]], first["gsm8k", "test"]))
    return repo_copy


def _stage(repo: Path) -> dict:
    done = run(stage_cmd("publish"), cwd=repo)
    assert done.returncode == 0, done.stderr + done.stdout
    return json.loads((repo / "metrics/publish.json").read_text())[DATASET]


def _card(folder: Path) -> tuple[dict, str]:
    text = (folder / publish.CARD).read_text()
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def _block(body: str, section: str, lang: str) -> str:
    return re.search(rf"## {section}\n\n```{lang}\n(.*?)\n```", body, re.S).group(1)


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def no_saved_token(monkeypatch, tmp_path):
    """No HF_TOKEN and an empty HF_HOME, so no token saved on this machine is found either."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))


def test_every_config_loads_with_datasets_in_the_split_of_its_problems(repo, tmp_path):
    metrics = _stage(repo)
    folder = repo / "publish" / DATASET
    problems = store.read(repo / "data/problems", "problems")
    held_out = sum(s != "train" for s in problems.column("split").to_pylist())
    held_back = metrics["held_back"].get("problems", {}).get("held_out_8gram", 0)
    assert metrics["rows"] == {
        "problems": {"train": problems.num_rows - held_out - held_back, "test": held_out},
        "traces": {"train": 2},
        "evaluation": {"test": 1},
        "trajectories": {"train": 1},
        "pairs": {"train": 1},
        "sft": {"train": 2},
    }
    assert (
        set(metrics["held_back"]) <= {"problems"} and metrics["held_back_rows"] == held_back
    )  # synthetic templates share 8-grams
    assert {"d_seed", "d_start", "coat"} <= set(metrics["skipped"])  # empty or never written: left out
    card, _ = _card(folder)
    assert sorted(c["config_name"] for c in card["configs"]) == sorted(metrics["rows"])
    assert [c["config_name"] for c in card["configs"] if c.get("default")] == ["problems"]  # the first in params
    tables = {"evaluation": "traces"}
    for config, splits in metrics["rows"].items():
        loaded = datasets.load_dataset(str(folder), config, cache_dir=str(tmp_path / "cache"))
        assert {s: d.num_rows for s, d in loaded.items()} == splits
        for split in splits:
            assert loaded[split].features == datasets.Features.from_arrow_schema(
                records.schema(tables.get(config, config))
            )
            assert (folder / "data" / config / f"{split}-00000-of-00001.parquet").exists()
    sft_rows = datasets.load_dataset(str(folder), "sft", split="train", cache_dir=str(tmp_path / "cache"))
    assert sft_rows[0]["segments"][2] == {"kind": "hint", "text": "Wait, use Python.", "hint_id": "h1", "loss": False}
    traces = datasets.load_dataset(str(folder), "traces", split="train", cache_dir=str(tmp_path / "cache"))
    assert sorted(traces["stage"]) == ["hint_infer", "rft"] and traces[0]["sampling"]["top_p"] == 0.95
    test = datasets.load_dataset(str(folder), "problems", split="test", cache_dir=str(tmp_path / "cache"))
    want = store.sort_by_key("problems", problems.filter(pc.not_equal(problems.column("split"), "train")))
    assert test.data.table.select(problems.column_names).to_pylist() == want.to_pylist()


def test_card_provenance_matches_dvc_lock_and_carries_the_seed_licenses(repo):
    _stage(repo)
    card, body = _card(repo / "publish" / DATASET)
    prov = yaml.safe_load(_block(body, "Provenance", "yaml"))
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    problems_input = next(i for i in prov["inputs"] if i["config"] == "problems")
    assert problems_input["md5"] == next(o["md5"] for o in lock["problems"]["outs"] if o["path"] == "data/problems")
    assert prov["params"]["problems"]["problems"] == lock["problems"]["params"]["params.yaml"]["problems"]
    assert (
        next(i for i in prov["inputs"] if i["config"] == "sft")["stage"] == "sft_start"
    )  # the dvc.lock stage writing it
    head = run(["git", "rev-parse", "HEAD"], cwd=repo).stdout.strip()
    assert prov["git"] == {"commit": head, "dirty": False}  # dvc repro rewrote dvc.lock and metrics only
    assert prov["rows"]["sft"] == {"train": 2} and prov["rows"]["evaluation"] == {"test": 1}
    assert sorted(i["path"] for i in prov["inputs"] if i["config"] == "traces") == ["data/hint_infer", "data/rft"]
    assert card["license"] == "other" and card["license_name"] == "mixed"  # Apache-2.0, MIT and CC-BY-4.0 seeds
    licenses = body.split("## Licenses", 1)[1].split("## Provenance", 1)[0]
    assert "| mbpp | cc-by-4.0 | `problems`, `sft` |" in licenses
    assert "| gsm8k | mit | `problems`, `evaluation` |" in licenses
    assert "| synthetic | apache-2.0 | `problems`, `traces`, `trajectories`, `pairs`, `sft` |" in licenses
    bibtex = _block(body, "Citations", "bibtex")
    for arxiv in ("2503.04625", "2501.04519", "2502.02508", "2110.14168", "2108.07732", "2107.03374"):
        assert f"arXiv:{arxiv}" in bibtex  # satori: the sft row built from coat
    assert "{MATH} Dataset" in bibtex
    assert (
        "| `evaluation` | `traces` | 0 | 1 | evaluation |" in body and "| `traces` | `traces` | 2 | 0 | START |" in body
    )


def test_committing_a_run_record_leaves_the_card_as_it_was(repo):
    """The commit that records a run (dvc.lock, metrics, README) or changes code publish does not run
    must not change what a fresh clone of it publishes: the card names the newest commit of publish's
    own dependencies, which DVC re-runs it for."""
    _stage(repo)
    card = (repo / "publish" / DATASET / "README.md").read_bytes()
    made_by = run(["git", "rev-parse", "HEAD"], cwd=repo).stdout.strip()
    (repo / "README.md").write_text((repo / "README.md").read_text() + "\nresults of the run\n")
    (repo / "tracemill" / "report.py").write_text(
        (repo / "tracemill" / "report.py").read_text() + "\n# not publish code\n"
    )
    run(["git", "commit", "-qam", "record the run"], cwd=repo)
    assert run(["git", "rev-parse", "HEAD"], cwd=repo).stdout.strip() != made_by
    _stage(repo)
    assert (repo / "publish" / DATASET / "README.md").read_bytes() == card
    code = repo / "tracemill" / "publish" / "build.py"
    code.write_text(code.read_text() + "\n# an edit\n")
    run(["git", "commit", "-qam", "edit publish"], cwd=repo)
    _stage(repo)
    prov = yaml.safe_load(_block(_card(repo / "publish" / DATASET)[1], "Provenance", "yaml"))
    assert prov["git"] == {"commit": run(["git", "rev-parse", "HEAD"], cwd=repo).stdout.strip(), "dirty": False}


def test_rebuilding_with_the_cli_gives_the_same_bytes_so_a_repush_has_nothing_to_commit(repo, monkeypatch):
    folder = repo / "publish" / DATASET
    digests = []
    for hash_seed in ("1", "2"):  # set order differs between these processes; the folder must not
        monkeypatch.setenv("PYTHONHASHSEED", hash_seed)
        done = run(["tracemill", "publish"], cwd=repo)
        assert done.returncode == 0, done.stderr + done.stdout
        digests.append(_digest(folder))
    assert digests[0] == digests[1]
    assert f"built publish/{DATASET}" in done.stdout
    assert "config 'evaluation': test 1 rows" in done.stdout


def test_publish_without_a_token_fails_with_one_line_before_any_work(repo_copy, no_saved_token):
    done = run(["tracemill", "publish", "--repo-id", "org/name"], cwd=repo_copy)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: no Hugging Face token — set HF_TOKEN to a write token (https://huggingface.co/settings/tokens) "
        "or run `hf auth login`"
    ]
    assert not (repo_copy / "publish").exists()


def test_push_to_an_unreachable_hub_fails_with_one_clear_line(repo, no_saved_token, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_unused")
    monkeypatch.setenv("HF_ENDPOINT", CLOSED_PORT_URL)
    done = run(["tracemill", "publish", "--repo-id", "org/name"], cwd=repo)
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert (
        line.startswith(f"error: pushing 'publish/{DATASET}' to dataset repo 'org/name' failed")
        and "reach the Hub" in line
    )
    assert (repo / "publish" / DATASET / publish.CARD).exists()  # built and validated before the push


def _params(tmp_path: Path, configs: list[dict], **dataset) -> tuple[publish.PublishParams, dict]:
    entry = {"name": "d", "pretty_name": "D", "configs": configs, **dataset}
    raw = {"publish": {"out_dir": str(tmp_path / "out"), "problems": "data/problems", "datasets": [entry]}}
    return P.section(publish.PublishParams, raw, "publish"), raw


def test_a_required_empty_table_fails_naming_config_and_fix(tmp_path):
    _write_small(tmp_path)
    cfg, raw = _params(tmp_path, [{"config": "seed", "table": "d_seed", "data": ["data/d_seed"], "required": True}])
    with pytest.raises(
        publish.PublishError, match="config 'seed' of dataset 'd': table 'd_seed' has no rows under 'data/d_seed'"
    ):
        publish.build(cfg, cfg.datasets[0], tmp_path, raw)


def test_a_train_split_without_a_problems_table_to_check_it_against_fails(tmp_path):
    write_tables(tmp_path, _rows_for(["p1"], "e1"))
    cfg, raw = _params(tmp_path, [{"config": "steps", "table": "pairs", "data": ["data/rstar_search/*"]}])
    with pytest.raises(
        publish.PublishError, match="no problems table under 'data/problems' to check the train splits against"
    ):
        publish.build(cfg, cfg.datasets[0], tmp_path, raw)


def test_outside_a_git_checkout_without_problems_the_license_override_and_unknown_origin_are_recorded(tmp_path):
    write_tables(tmp_path, _rows_for(["p1", "p2"], "e1"))
    cfg, raw = _params(
        tmp_path,
        [{"config": "steps", "table": "pairs", "data": ["data/rstar_search/*"], "split": "test"}],
        license="cc-by-4.0",
    )
    report = publish.build(cfg, cfg.datasets[0], tmp_path, raw)
    card, body = _card(report.folder)
    assert report.rows == {"steps": {"test": 1}} and card["license"] == "cc-by-4.0"
    assert "| unknown | unknown | `steps` |" in body  # the problem is not in any problems table
    prov = yaml.safe_load(_block(body, "Provenance", "yaml"))
    assert prov["git"] == {"commit": None, "dirty": None} and prov["inputs"][0]["path"] == "data/rstar_search/round=1"


def test_a_config_whose_every_row_is_held_back_is_skipped_or_fails_when_required(tmp_path):
    _write_small(tmp_path)
    evaluation = {"config": "leaky", "table": "traces", "data": ["data/evaluate"]}  # evaluation traces put in train
    cfg, raw = _params(tmp_path, [{"config": "steps", "table": "pairs", "data": ["data/rstar_search/*"]}, evaluation])
    report = publish.build(cfg, cfg.datasets[0], tmp_path, raw)
    assert report.rows == {"steps": {"train": 1}} and report.held_back == {"leaky": {"held_out_problem": 1}}
    assert report.skipped == {"leaky": "all 1 rows held back from split train (held_out_problem 1)"}
    cfg, raw = _params(tmp_path, [{**evaluation, "required": True}])
    with pytest.raises(
        publish.PublishError, match="config 'leaky' of dataset 'd': all 1 rows held back .* publish it with split: test"
    ):
        publish.build(cfg, cfg.datasets[0], tmp_path, raw)


def test_evaluation_none_leaves_test_configs_out_and_unread(tmp_path):
    _write_small(tmp_path)
    configs = [
        {"config": "traces", "table": "traces", "data": ["data/hint_infer"]},
        {"config": "evaluation", "table": "traces", "data": ["data/evaluate"], "split": "test"},
    ]
    cfg, raw = _params(tmp_path, configs)
    assert publish.build(cfg, cfg.datasets[0], tmp_path, raw).rows == {
        "traces": {"train": 1},
        "evaluation": {"test": 1},
    }
    raw["publish"]["evaluation"] = "none"
    cfg = P.section(publish.PublishParams, raw, "publish")
    assert cfg.reads() == ["data/problems", "data/hint_infer"]
    report = publish.build(cfg, cfg.datasets[0], tmp_path, raw)
    assert report.rows == {"traces": {"train": 1}} and report.skipped == {
        "evaluation": "split test and publish.evaluation is none"
    }


def test_card_facts_are_computed_from_the_rows_not_typed(tmp_path):
    nodes = [
        {
            "node_id": f"n{i}",
            "tree_id": "tr",
            "problem_id": "p1",
            "round": 1,
            "depth": i,
            "step_text": "s",
            "exec_ok": ok,
            "terminal": False,
            "visits": 1,
            "q": q,
        }
        for i, (ok, q) in enumerate([(True, 0.5), (False, -1.0), (False, 0.25)])
    ]
    _write_small(tmp_path)
    write_tables(tmp_path, {"data/rstar_search/round=2": {"nodes": nodes}})
    configs = [
        {"config": "nodes", "table": "nodes", "data": ["data/rstar_search/*"]},
        {"config": "traces", "table": "traces", "data": ["data/hint_infer", "data/rft"]},
    ]
    cfg, raw = _params(tmp_path, configs)
    _, body = _card(publish.build(cfg, cfg.datasets[0], tmp_path, raw).folder)
    section = body.split("### `nodes`", 1)[1].split("###", 1)[0]
    assert "- `exec_ok`: false 2, true 1" in section  # the search keeps nodes whose code failed, marked
    assert "- `q`: -1.0 to 0.5" in section and "- problems: 1, at most 3 rows each" in section
    traces = body.split("### `traces`", 1)[1].split("## Licenses", 1)[0]
    assert (
        "- `stage`: hint_infer 1, rft 1" in traces
        and "- loss on segment kinds: model; no loss on: hint, prompt" in traces
    )
    assert (
        "- `train` holds only rows of problems whose split is `train`" in body
        and "(problem splits here: eval, test)" in body
    )


def test_a_folder_whose_splits_features_or_rows_differ_from_the_table_fails_validation(tmp_path):
    _write_small(tmp_path)
    cfg, raw = _params(tmp_path, [{"config": "sft", "table": "sft", "data": ["data/sft_start"]}])
    folder = publish.build(cfg, cfg.datasets[0], tmp_path, raw).folder
    with pytest.raises(
        publish.PublishError, match="config 'sft' loads with features that differ from table 'coat' in column"
    ):
        publish.validate_folder(folder, {"sft": ("coat", {"train": 2})})
    with pytest.raises(publish.PublishError, match="config 'sft' split 'train' loads 2 rows, table 'sft' has 3"):
        publish.validate_folder(folder, {"sft": ("sft", {"train": 3})})
    with pytest.raises(
        publish.PublishError, match=r"config 'sft' loads splits \['train'\], table 'sft' has \['test', 'train'\]"
    ):
        publish.validate_folder(folder, {"sft": ("sft", {"train": 2, "test": 1})})
    with pytest.raises(publish.PublishError, match="config 'nope' in .* does not load with datasets.load_dataset"):
        publish.validate_folder(folder, {"nope": ("sft", {"train": 1})})


def test_single_seed_license_becomes_the_card_license():
    found = {
        publish.Origin("gsm8k", publish.hub_license("MIT")),
        publish.Origin("math500", publish.hub_license(" MIT ")),
    }
    assert publish.card_license(None, found) == "mit"
    assert publish.card_license(None, found | {publish.Origin("x", publish.hub_license(None))}) == "other"


def test_every_table_has_a_row_definition_and_every_cited_key_a_bibtex_entry():
    """The card's prose lives in files beside the code; a table or key they lack would fail a build late."""
    assert set(methods.row_definitions()) == set(records.TABLES) == set(methods.TABLE_DOCS)
    cited = {m.cite for m in methods.METHODS.values() if m.cite} | {
        k for keys in methods.SEED_PAPERS.values() for k in keys
    }
    entries = methods.references()
    assert cited <= set(entries)
    assert all(
        entry.startswith(("@article{", "@inproceedings{")) and entry.endswith("\n}") for entry in entries.values()
    )


def test_a_bibtex_entry_without_its_closing_brace_names_the_file(tmp_path):
    bib = tmp_path / "references.bib"
    bib.write_text("@article{a2025x,\n  title = {{X}: a title},\n")
    with pytest.raises(publish.PublishError, match="references.bib' has an entry with no closing brace"):
        methods.references(bib)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"config": "a", "table": "nope", "data": ["data/x"]}, "table 'nope' is not one of"),
        ({"config": "a/b", "table": "sft", "data": ["data/sft"]}, "config name 'a/b' must match"),
        (
            {"config": "a", "table": "sft", "data": ["data/sft"], "split": "validation"},
            "'validation' is not allowed; choose one of: train, test, by_problem",
        ),
        ({"config": "a", "table": "sft", "data": []}, "config 'a' lists no 'data' directories"),
    ],
)
def test_bad_publish_params_name_the_key(tmp_path, config, message):
    with pytest.raises(ParamsError, match=message):
        _params(tmp_path, [config])
