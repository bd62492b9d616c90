"""Stage writes under a launcher that starts the stage once per rank (torchrun, deepspeed --hostfile): two
gloo ranks run one stage's writes through tracemill.store and tracemill.stage on a shared folder, and only
global rank 0 touches a file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tracemill import records, store
from tracemill.train.launch import LAUNCHER_VARIABLES

ROOT = Path(__file__).resolve().parents[1]

# One stage's writes as a stage module makes them: a sharded table, metrics, a plot, a model folder built by
# every rank (a collective, as training is) and swapped in. An audit hook records every file this process
# creates, opens for writing, renames or removes under the shared folder.
STAGE = """
import json, sys
from pathlib import Path
import torch
import torch.distributed as dist

shared, reports = Path(sys.argv[1]), Path(sys.argv[2])
touched = []

def audit(event, args):
    if event == "open" and isinstance(args[1], str) and not set(args[1]) & set("wax+"):
        return
    if event == "open" and args[1] is None and not args[2] & (1 | 2 | 64):  # os.open: O_WRONLY, O_RDWR, O_CREAT
        return
    if event in ("open", "os.rename", "os.remove", "os.mkdir", "os.rmdir", "shutil.rmtree", "os.truncate"):
        paths = args[:2] if event == "os.rename" else args[:1]  # os.replace is audited as os.rename(src, dst)
        touched.extend([event, str(p)] for p in paths if str(p).startswith(str(shared)))

sys.addaudithook(audit)
dist.init_process_group("gloo")
from tracemill import records, stage, store

rows = [{"rejected_id": records.content_id("r", i), "stage": "t", "table": "problems", "reason": "r", "detail": None,
         "source": None, "raw": str(i), "metadata": None} for i in range(12)]
out = store.StageOutput(shared / "data", ["rejected"], "fp")
written = out.write_shard(0, {"rejected": rows[:7]})
out.write_shard(1, {"rejected": rows[7:]})
totals = out.finalize([0, 1])

def build(partial):
    ranks = torch.tensor([float(dist.get_rank())])
    dist.all_reduce(ranks)  # every rank takes part, as in a distributed training run
    store.write_json(partial / "config.json", {"rank_sum": ranks.item()})
    return {"rank_sum": ranks.item()}

metrics = stage.build_folder(shared / "model", build, fresh=True)
store.write_json(shared / "metrics.json", {**metrics, **totals})
store.write_csv(shared / "plot.csv", [{"shard": 0, "rows": written["rejected"]}])
(reports / f"{dist.get_rank()}.json").write_text(json.dumps({"touched": touched, "totals": totals, "metrics": metrics,
                                                             "main": store.is_main_process()}))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_only_rank_zero_writes_under_a_two_process_launcher(tmp_path: Path) -> None:
    shared, reports = tmp_path / "shared", tmp_path / "reports"
    shared.mkdir()
    reports.mkdir()
    (tmp_path / "stage.py").write_text(STAGE)
    outside = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(tmp_path / "stage.py"),
            str(shared),
            str(reports),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=outside | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    rank0, rank1 = (json.loads((reports / f"{r}.json").read_text()) for r in (0, 1))

    assert rank0["main"] and not rank1["main"]
    assert rank1["touched"] == []
    touched = {Path(path).relative_to(shared).parts[0] for _event, path in rank0["touched"] if Path(path) != shared}
    assert touched >= {"data", "model", "model.partial", "metrics.json", "plot.csv"}
    # Both ranks go on with the same counts and metrics; the files are those of one writer.
    assert rank0["totals"] == rank1["totals"] == {"rejected": 12}
    assert rank0["metrics"] == rank1["metrics"] == {"rank_sum": 1.0}
    assert sorted(r["raw"] for r in store.read(shared / "data", "rejected").to_pylist()) == sorted(map(str, range(12)))
    assert json.loads((shared / "model" / "config.json").read_text()) == {"rank_sum": 1.0}
    assert not (shared / "model.partial").exists()
    assert json.loads((shared / "metrics.json").read_text()) == {"rank_sum": 1.0, "rejected": 12}
    assert (shared / "plot.csv").read_text().splitlines() == ["shard,rows", "0,7"]


def test_a_process_outside_any_launcher_writes_and_another_rank_only_validates(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key in LAUNCHER_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    assert store.is_main_process()
    monkeypatch.setenv("RANK", "3")
    assert not store.is_main_process()
    row = {
        "rejected_id": records.content_id("r"),
        "stage": "t",
        "table": "problems",
        "reason": "r",
        "detail": None,
        "source": None,
        "raw": "x",
        "metadata": None,
    }
    assert store.write_parquet("rejected", [row], tmp_path / "part.parquet").num_rows == 1
    with pytest.raises(Exception, match="raw"):
        store.write_parquet("rejected", [{**row, "raw": 5}], tmp_path / "part.parquet")  # still checked off rank 0
    assert list(tmp_path.iterdir()) == []
