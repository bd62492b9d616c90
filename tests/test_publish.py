"""Publishing: a real `dvc repro problems` in a repo copy, hand-built rows of other tables, the real
publish stage and CLI, and every config loaded back with `datasets.load_dataset`. No Hub is reachable
here: the push path is exercised up to the library's first request (see docs/publish.md)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import datasets
import pytest
import yaml
from conftest import run

from tracemill import params as P
from tracemill import publish, records, store
from tracemill.errors import ParamsError

DATASET = "tracemill-reasoning"
CLOSED_PORT_URL = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once


def _rows_for(problem_ids: list[str]) -> dict[str, dict[str, list[dict]]]:
    """Valid rows of tables the pipeline will make, keyed stage directory -> table -> rows."""
    segs = [records.segment("prompt", "Q"), records.segment("model", "Let me think.")]
    segs.append(records.segment("hint", "Wait, use Python.", hint_id="h1"))
    pid = problem_ids[0]
    sft = [
        {"example_id": records.content_id("sft", i), "source": "d_start", "problem_id": p, "prompt": "Q", "segments": segs}
        for i, p in enumerate(problem_ids)
    ]
    traj = [
        {"trajectory_id": "t1", "tree_id": "tr1", "problem_id": pid, "round": 1, "node_ids": ["n0", "n1"], "avg_q": 0.5,
         "correct": True, "selected": True, "final_answer": "4"}
    ]
    pairs = [
        {"pair_id": "p1", "problem_id": pid, "tree_id": "tr1", "round": 1, "prefix": "s0", "chosen": "a", "rejected": "b",
         "chosen_q": 0.9, "rejected_q": -0.4, "final_step": False, "chosen_node_id": "n1", "metadata": "{}"}
    ]
    sampling = {"temperature": 0.6, "top_p": 0.95, "max_tokens": 64, "seed": 0}
    trace = {"problem_id": pid, "round": 0, "model": "tiny", "sample_index": 0, "tool_calls": 1, "prompt_tokens": 9,
             "cached_prompt_tokens": 4, "generated_tokens": 5, "finish_reason": "stop", "sampling": sampling, "segments": segs}
    return {
        "data/sft": {"sft": sft},
        "data/mcts/round-1": {"trajectories": traj, "pairs": pairs},
        "data/d_seed": {"d_seed": []},
        "data/hint_infer": {"traces": [{**trace, "trace_id": "h1", "stage": "hint_infer"}]},
        "data/rft": {"traces": [{**trace, "trace_id": "r1", "stage": "rft"}]},
    }


def _write_tables(root: Path, problem_ids: list[str]) -> None:
    for stage_dir, tables in _rows_for(problem_ids).items():
        out = store.StageOutput(root / stage_dir, list(tables), fingerprint="test")
        out.write_shard(0, tables)
        out.finalize([0])


@pytest.fixture
def repo(repo_copy: Path) -> Path:
    """A repo copy after a real `dvc repro problems`, with hand-built traces, mcts and sft outputs and an empty d_seed."""
    done = run(["dvc", "repro", "problems"], cwd=repo_copy)
    assert done.returncode == 0, done.stderr + done.stdout
    problems = store.read(repo_copy / "data/problems", "problems")
    by_source = {s: i for s, i in zip(problems.column("source").to_pylist(), problems.column("problem_id").to_pylist())}
    _write_tables(repo_copy, [by_source["gsm8k"], by_source["mbpp"]])
    return repo_copy


def _stage(repo: Path) -> dict:
    done = run(["python", "-m", "stages.publish"], cwd=repo)
    assert done.returncode == 0, done.stderr + done.stdout
    return json.loads((repo / "metrics/publish.json").read_text())[DATASET]


def _card(folder: Path) -> tuple[dict, str]:
    text = (folder / publish.CARD).read_text()
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def _block(body: str, section: str, lang: str) -> str:
    return re.search(rf"## {section}\n\n```{lang}\n(.*?)\n```", body, re.S).group(1)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def no_saved_token(monkeypatch, tmp_path):
    """No HF_TOKEN and an empty HF_HOME, so no token saved on this machine is found either."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))


def test_every_config_loads_with_datasets_and_its_features_equal_the_schema(repo, tmp_path):
    metrics = _stage(repo)
    folder = repo / "publish" / DATASET
    assert metrics["rows"] == {"problems": metrics["rows"]["problems"], "traces": 2, "trajectories": 1, "pairs": 1, "sft": 2}
    assert {"d_seed", "d_start", "coat"} <= set(metrics["skipped"])  # empty or never written: left out
    card, _ = _card(folder)
    assert sorted(c["config_name"] for c in card["configs"]) == sorted(metrics["rows"])
    assert [c["config_name"] for c in card["configs"] if c.get("default")] == ["problems"]  # the first in params
    for config, rows in metrics["rows"].items():
        table = config  # the default params name each config after its table
        loaded = datasets.load_dataset(str(folder), config, split="train", cache_dir=str(tmp_path / "cache"))
        assert loaded.features == datasets.Features.from_arrow_schema(records.schema(table))
        assert loaded.num_rows == rows
        assert sorted(folder.joinpath("data", config).iterdir())[0].name == "train-00000-of-00001.parquet"
    sft = datasets.load_dataset(str(folder), "sft", split="train", cache_dir=str(tmp_path / "cache"))
    assert sft[0]["segments"][2] == {"kind": "hint", "text": "Wait, use Python.", "hint_id": "h1", "loss": False}
    traces = datasets.load_dataset(str(folder), "traces", split="train", cache_dir=str(tmp_path / "cache"))
    assert sorted(traces["stage"]) == ["hint_infer", "rft"] and traces[0]["sampling"]["top_p"] == 0.95
    problems = store.read(repo / "data/problems", "problems")
    loaded = datasets.load_dataset(str(folder), "problems", split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded.data.table.select(problems.column_names).to_pylist() == store.sort_by_key("problems", problems).to_pylist()


def test_card_provenance_matches_dvc_lock_and_carries_the_seed_licenses(repo):
    _stage(repo)
    card, body = _card(repo / "publish" / DATASET)
    prov = yaml.safe_load(_block(body, "Provenance", "yaml"))
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    problems_input = next(i for i in prov["inputs"] if i["config"] == "problems")
    assert problems_input["md5"] == next(o["md5"] for o in lock["problems"]["outs"] if o["path"] == "data/problems")
    assert prov["params"]["problems"]["problems"] == lock["problems"]["params"]["params.yaml"]["problems"]
    assert next(i for i in prov["inputs"] if i["config"] == "sft")["stage"] is None  # hand-built, not from dvc.lock
    head = run(["git", "rev-parse", "HEAD"], cwd=repo).stdout.strip()
    assert prov["git"] == {"commit": head, "dirty": False}  # dvc repro rewrote dvc.lock and metrics only
    assert prov["rows"]["sft"] == 2
    assert sorted(i["path"] for i in prov["inputs"] if i["config"] == "traces") == ["data/hint_infer", "data/rft"]
    assert card["license"] == "other" and card["license_name"] == "mixed"  # MIT and CC-BY-4.0 seeds
    licenses = body.split("## Licenses", 1)[1].split("## Provenance", 1)[0]
    assert "| mbpp | cc-by-4.0 | `problems`, `sft` |" in licenses
    assert "| gsm8k | mit | `problems`, `traces`, `trajectories`, `pairs`, `sft` |" in licenses
    bibtex = _block(body, "Citations", "bibtex")
    for arxiv in ("2503.04625", "2501.04519", "2502.02508", "2110.14168", "2108.07732", "2107.03374"):
        assert f"arXiv:{arxiv}" in bibtex
    assert "{MATH} Dataset" in bibtex


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


def test_publish_without_a_token_fails_with_one_line_before_any_work(repo_copy, no_saved_token):
    done = run(["tracemill", "publish", "--repo-id", "org/name"], cwd=repo_copy)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: no Hugging Face token — set HF_TOKEN to a write token (https://huggingface.co/settings/tokens) or run `hf auth login`"
    ]
    assert not (repo_copy / "publish").exists()


def test_push_to_an_unreachable_hub_fails_with_one_clear_line(repo, no_saved_token, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_unused")
    monkeypatch.setenv("HF_ENDPOINT", CLOSED_PORT_URL)
    done = run(["tracemill", "publish", "--repo-id", "org/name"], cwd=repo)
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: pushing 'publish/{DATASET}' to dataset repo 'org/name' failed") and "reach the Hub" in line
    assert (repo / "publish" / DATASET / publish.CARD).exists()  # built and validated before the push


def _params(tmp_path: Path, configs: list[dict], **dataset) -> tuple[publish.PublishParams, dict]:
    entry = {"name": "d", "pretty_name": "D", "configs": configs, **dataset}
    raw = {"publish": {"out_dir": str(tmp_path / "out"), "problems": "data/problems", "datasets": [entry]}}
    return P.section(publish.PublishParams, raw, "publish"), raw


def test_a_required_empty_table_fails_naming_config_and_fix(tmp_path):
    _write_tables(tmp_path, ["p1"])
    cfg, raw = _params(tmp_path, [{"config": "seed", "table": "d_seed", "data": "data/d_seed", "required": True}])
    with pytest.raises(publish.PublishError, match="config 'seed' of dataset 'd': table 'd_seed' has no rows under 'data/d_seed'"):
        publish.build(cfg, cfg.datasets[0], tmp_path, raw)


def test_outside_a_git_checkout_without_problems_the_license_override_and_unknown_origin_are_recorded(tmp_path):
    _write_tables(tmp_path, ["p1", "p2"])
    cfg, raw = _params(tmp_path, [{"config": "steps", "table": "pairs", "data": "data/mcts/**"}], license="cc-by-4.0")
    report = publish.build(cfg, cfg.datasets[0], tmp_path, raw)
    card, body = _card(report.folder)
    assert report.rows == {"steps": 1} and card["license"] == "cc-by-4.0"
    assert "| unknown | unknown | `steps` |" in body  # the problem is not in any problems table
    prov = yaml.safe_load(_block(body, "Provenance", "yaml"))
    assert prov["git"] == {"commit": None, "dirty": None} and prov["inputs"][0]["path"] == "data/mcts/round-1"


def test_a_folder_whose_features_or_rows_differ_from_the_table_fails_validation(tmp_path):
    _write_tables(tmp_path, ["p1"])
    cfg, raw = _params(tmp_path, [{"config": "sft", "table": "sft", "data": "data/sft"}])
    folder = publish.build(cfg, cfg.datasets[0], tmp_path, raw).folder
    with pytest.raises(publish.PublishError, match="config 'sft' loads with features that differ from table 'coat' in column"):
        publish.validate_folder(folder, "train", {"sft": ("coat", 1)})
    with pytest.raises(publish.PublishError, match="config 'sft' loads 1 rows, table 'sft' has 2"):
        publish.validate_folder(folder, "train", {"sft": ("sft", 2)})
    with pytest.raises(publish.PublishError, match="config 'nope' in .* does not load with datasets.load_dataset"):
        publish.validate_folder(folder, "train", {"nope": ("sft", 1)})


def test_single_seed_license_becomes_the_card_license():
    found = {publish.Origin("gsm8k", publish.hub_license("MIT")), publish.Origin("math500", publish.hub_license(" MIT "))}
    assert publish.card_license(None, found) == "mit"
    assert publish.card_license(None, found | {publish.Origin("x", publish.hub_license(None))}) == "other"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"config": "a", "table": "nope", "data": "data/x"}, "table 'nope' is not one of"),
        ({"config": "a/b", "table": "sft", "data": "data/sft"}, "config name 'a/b' must match"),
    ],
)
def test_bad_publish_params_name_the_key(tmp_path, config, message):
    with pytest.raises(ParamsError, match=message):
        _params(tmp_path, [config])
