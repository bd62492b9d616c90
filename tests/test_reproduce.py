"""The reproduce check: what must match exactly between the committed run and a fresh one, what may not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from tracemill import reproduce

ROOT = Path(__file__).resolve().parents[1]


def _committed_copy(tmp_path: Path, name: str) -> Path:
    """The repository's own dvc.lock, metrics and plots, copied: the shapes the check really sees."""
    out = tmp_path / name
    out.mkdir()
    shutil.copy(ROOT / "dvc.lock", out / "dvc.lock")
    shutil.copytree(ROOT / "metrics", out / "metrics")
    shutil.copytree(ROOT / "plots", out / "plots")
    return out


def _edit_lock(tree: Path, edit) -> None:
    lock = yaml.safe_load((tree / "dvc.lock").read_text())
    edit(lock)
    (tree / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))


def _edit_metrics(tree: Path, name: str, edit) -> None:
    path = tree / "metrics" / name
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc, indent=2))


def _first_cached_out(lock: dict) -> tuple[str, dict]:
    for name, stage in lock["stages"].items():
        for out in stage.get("outs", []):
            if not out["path"].startswith(("metrics/", "plots/")):
                return name, out
    raise AssertionError("the committed dvc.lock has no cached output")


def test_identical_runs_reproduce(tmp_path):
    a, b = _committed_copy(tmp_path, "a"), _committed_copy(tmp_path, "b")
    failures, allowed = reproduce.compare_trees(a, b)
    assert failures == [] and allowed == []
    assert reproduce.main([str(a), str(b)]) == 0


def test_a_moved_model_or_table_hash_fails_the_check(tmp_path):
    a, b = _committed_copy(tmp_path, "a"), _committed_copy(tmp_path, "b")
    moved = {}

    def move(lock):
        stage, out = _first_cached_out(lock)
        out["md5"] = "0" * 32 + ".dir"
        moved["where"] = f"{stage} out {out['path']}"

    _edit_lock(b, move)
    failures, _ = reproduce.compare_trees(a, b)
    assert [d.where for d in failures] == [moved["where"]]
    assert reproduce.main([str(a), str(b)]) == 1


def test_timings_are_ignored_but_every_other_metric_must_match(tmp_path):
    a, b = _committed_copy(tmp_path, "a"), _committed_copy(tmp_path, "b")

    def slower(doc):
        doc["train_seconds"] = doc.get("train_seconds", 1.0) * 3
        doc["train_tokens_per_s"] = 1

    _edit_metrics(b, "bootstrap.json", slower)

    # the metric file's hash in dvc.lock moves with its timings: that alone is not a difference
    def rehash_metrics_file(lock):
        for out in lock["stages"]["bootstrap"]["outs"]:
            if out["path"] == "metrics/bootstrap.json":
                out["md5"] = "f" * 32

    _edit_lock(b, rehash_metrics_file)
    assert reproduce.compare_trees(a, b)[0] == []

    _edit_metrics(b, "evaluate.json", lambda doc: doc["models"]["base"].__setitem__("pass@1", 0.5))
    failures, _ = reproduce.compare_trees(a, b)
    assert [d.where for d in failures] == ["metrics/evaluate.json models.base.pass@1"]


def test_a_tolerance_allows_moved_hashes_only_while_metrics_stay_close(tmp_path):
    a, b = _committed_copy(tmp_path, "a"), _committed_copy(tmp_path, "b")
    _edit_lock(b, lambda lock: _first_cached_out(lock)[1].__setitem__("md5", "1" * 32))
    base = json.loads((a / "metrics" / "evaluate.json").read_text())["models"]["base"]["pass@1"]
    _edit_metrics(b, "evaluate.json", lambda doc: doc["models"]["base"].__setitem__("pass@1", base + 0.01))
    failures, allowed = reproduce.compare_trees(a, b, tolerance=0.02)
    assert failures == [] and len(allowed) == 1
    failures, _ = reproduce.compare_trees(a, b, tolerance=0.005)
    assert [d.kind for d in failures] == ["metric"]


def test_a_changed_command_or_param_is_never_tolerated(tmp_path):
    a, b = _committed_copy(tmp_path, "a"), _committed_copy(tmp_path, "b")
    _edit_lock(b, lambda lock: lock["stages"]["problems"].__setitem__("cmd", "python -m stages.other"))
    failures, _ = reproduce.compare_trees(a, b, tolerance=1.0)
    assert [d.where for d in failures] == ["problems cmd"]


def test_timing_keys_are_recognised_and_counts_are_not():
    for key in ("train_seconds", "train_runtime_s", "train_tokens_per_s", "elapsed_s"):
        assert reproduce.is_timing(key), key
    for key in ("pairs", "rows", "problems", "train_loss", "tokens_per_epoch", "global_step"):
        assert not reproduce.is_timing(key), key


def test_a_missing_metric_file_is_a_difference(tmp_path):
    a, b = _committed_copy(tmp_path, "a"), _committed_copy(tmp_path, "b")
    (b / "metrics" / "coat.json").unlink()
    failures, _ = reproduce.compare_trees(a, b)
    assert [(d.kind, d.where) for d in failures] == [("missing", "metrics/coat.json")]


def test_an_id_that_looks_like_a_huge_number_is_compared_as_text(tmp_path):
    """Hex ids such as 123e4567 overflow float() to infinity: equal ones reproduce, different ones do not."""
    a, b = _committed_copy(tmp_path, "a"), _committed_copy(tmp_path, "b")
    for tree, ids in ((a, ["123e4567", "9e99999", "0.5"]), (b, ["123e4567", "8e99999", "0.5"])):
        rows = "\n".join(f"{i},{v}" for i, v in enumerate(ids))
        (tree / "plots" / "ids.csv").write_text("step,state_id\n" + rows + "\n")
    failures, _ = reproduce.compare_trees(a, b)
    assert [(d.where, d.committed, d.fresh) for d in failures] == [("plots/ids.csv [1].state_id", "9e99999", "8e99999")]
