import pytest

from tracemill import records, runner, store
from tracemill.errors import ParamsError, TracemillError
from tracemill.params import parse_section

ITEMS = [{"problem_id": records.content_id("p", i), "n": i} for i in range(40)]


def work(shard, items):
    rows = [
        {"rejected_id": records.content_id("r", it["problem_id"]), "stage": "t", "table": "problems", "reason": "r",
         "detail": str(it["n"] * it["n"]), "source": None, "raw": str(it["n"]), "metadata": None}
        for it in items
    ]
    return {"rejected": rows}


def run(root, fp="fp", **kw):
    params = parse_section(runner.RunParams, {"shards": 5, **kw}, "run")
    out = store.StageOutput(root, ["rejected"], fp)
    return runner.run_sharded(out, ITEMS, "problem_id", work, params, "test")


def test_two_workers_merged_equal_one_worker(tmp_path):
    assert run(tmp_path / "one") == {"rejected": 40}
    assert run(tmp_path / "w0", workers=2, worker_index=0) is None
    assert run(tmp_path / "w1", workers=2, worker_index=1) is None
    assert runner.merge(tmp_path / "w0", [tmp_path / "w0", tmp_path / "w1"], 5) == {"rejected": 40}
    one = store.read(tmp_path / "one", "rejected").to_pylist()
    merged = store.read(tmp_path / "w0", "rejected").to_pylist()
    assert one == merged


def test_merge_refuses_outputs_made_with_other_params(tmp_path):
    run(tmp_path / "w0", workers=2, worker_index=0)
    run(tmp_path / "w1", fp="other", workers=2, worker_index=1)
    with pytest.raises(TracemillError, match="fingerprints differ"):
        runner.merge(tmp_path / "w0", [tmp_path / "w0", tmp_path / "w1"], 5)


def test_worker_index_out_of_range_is_a_params_error():
    with pytest.raises(ParamsError, match=r"run.worker_index' = 2 must be in \[0, run.workers=2\)"):
        parse_section(runner.RunParams, {"workers": 2, "worker_index": 2}, "run")


def test_ray_runner_writes_the_same_tables_as_the_local_runner(tmp_path):
    pytest.importorskip("ray")
    assert run(tmp_path / "local") == {"rejected": 40}
    assert run(tmp_path / "ray", runner="ray") == {"rejected": 40}
    assert store.read(tmp_path / "ray", "rejected").to_pylist() == store.read(tmp_path / "local", "rejected").to_pylist()
