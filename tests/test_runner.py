import os

import pytest

from tracemill import records, runner, store
from tracemill.errors import ParamsError, TracemillError
from tracemill.params import parse_section

ITEMS = [{"problem_id": records.content_id("p", i), "n": i} for i in range(40)]


def work(shard, items):
    rows = [
        {
            "rejected_id": records.content_id("r", it["problem_id"]),
            "stage": "t",
            "table": "problems",
            "reason": "r",
            "detail": str(it["n"] * it["n"]),
            "source": None,
            "raw": str(it["n"]),
            "metadata": None,
        }
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
    assert (
        store.read(tmp_path / "ray", "rejected").to_pylist() == store.read(tmp_path / "local", "rejected").to_pylist()
    )


@pytest.fixture
def two_node_ray(monkeypatch):
    """A Ray cluster of two nodes on this machine, each with its own CPU, resource label and temp folder, as
    `ray start` builds one across machines; RAY_ADDRESS points the driver at its head. Each node runs in
    its own session under `ray start --block` and is stopped by its process group only (a `ray stop` would
    stop every Ray on the machine)."""
    import json
    import os
    import shutil
    import signal
    import socket
    import subprocess
    import sys
    import tempfile
    import time
    from pathlib import Path

    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.exists():
        pytest.skip("the `ray` command is not installed here: pip install 'tracemill[ray]'")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    # Workers import the shard function from this file, as a cluster's nodes import the installed package.
    # A cluster of this machine's loopback only, so no token: Ray 2.5x asks for one from every client otherwise.
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(root), str(root / "tests")]), "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--block", "--disable-usage-stats"]
    # Unix socket paths must stay short: a temp folder directly under /tmp, not pytest's deep one.
    folders = [tempfile.mkdtemp(prefix="tm-ray-", dir="/tmp") for _ in range(2)]
    nodes = [
        subprocess.Popen(
            [
                str(ray_cli),
                "start",
                "--head",
                "--port",
                str(port),
                "--include-dashboard=false",
                "--resources",
                json.dumps({"node_a": 1}),
                "--temp-dir",
                folders[0],
                *common,
            ],
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while subprocess.run([str(ray_cli), "status", "--address", address], env=env, capture_output=True).returncode:
            assert time.monotonic() < deadline and nodes[0].poll() is None, "the head node did not start"
            time.sleep(1)
        nodes.append(
            subprocess.Popen(
                [
                    str(ray_cli),
                    "start",
                    "--address",
                    address,
                    "--resources",
                    json.dumps({"node_b": 1}),
                    "--temp-dir",
                    folders[1],
                    *common,
                ],
                env=env,
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        while (
            "node_b"
            not in subprocess.run(
                [str(ray_cli), "status", "--address", address], env=env, capture_output=True, text=True
            ).stdout
        ):
            assert time.monotonic() < deadline and nodes[1].poll() is None, "the second node did not join"
            time.sleep(1)
        monkeypatch.setenv("RAY_ADDRESS", address)
        yield address
    finally:
        for node in reversed(nodes):
            os.killpg(node.pid, signal.SIGTERM)  # --block stops the node's processes when it is terminated
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait()
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("TRACEMILL_TEST_RAY_CLUSTER"),
    reason="opt-in (TRACEMILL_TEST_RAY_CLUSTER=1): it passes on its own but, after the in-process Ray "
    "tests of the same session, the nodes lose the driver (OwnerDiedError)",
)
def test_ray_runner_on_a_two_node_cluster_writes_the_tables_of_one_process(tmp_path, two_node_ray):
    import ray

    assert run(tmp_path / "local") == {"rejected": 40}
    # The driver joins on the nodes' loopback address too: left to itself it picks this machine's outward IP,
    # which the nodes bound to 127.0.0.1 may not reach (the driver then looks dead to them: OwnerDiedError).
    ray.init(address=two_node_ray, _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False)
    try:
        assert run(tmp_path / "ray", runner="ray") == {"rejected": 40}  # the runner uses the driver's connection
        alive = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    finally:
        ray.shutdown()
    assert (
        store.read(tmp_path / "ray", "rejected").to_pylist() == store.read(tmp_path / "local", "rejected").to_pylist()
    )
    assert sorted(label for resources in alive for label in resources if label.startswith("node_")) == [
        "node_a",
        "node_b",
    ]
