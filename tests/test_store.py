import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tracemill import records, store
from tracemill.errors import CorruptPartError, SchemaError, TracemillError


def rejected_rows(n: int, shard: int) -> list[dict]:
    return [
        {
            "rejected_id": records.content_id(shard, i),
            "stage": "t",
            "table": "problems",
            "reason": "r",
            "detail": None,
            "source": None,
            "raw": "x" * 50,
            "metadata": None,
        }
        for i in range(n)
    ]


def test_write_parquet_sorts_by_key_and_keeps_schema(tmp_path):
    rows = rejected_rows(100, 0)
    path = tmp_path / "part-00000.parquet"
    store.write_parquet("rejected", rows, path)
    table = pq.read_table(path)
    ids = table.column("rejected_id").to_pylist()
    assert ids == sorted(ids)
    assert table.schema.metadata[b"tracemill.table"] == b"rejected"
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).statistics is not None


def test_write_rejects_wrong_rows_and_leaves_nothing(tmp_path):
    with pytest.raises(SchemaError):
        store.write_parquet("rejected", [{"rejected_id": "x"}], tmp_path / "part-00000.parquet")
    assert list(tmp_path.iterdir()) == []


def test_stage_output_skips_finished_shards(tmp_path):
    out = store.StageOutput(tmp_path / "s", ["rejected"], "fp1")
    assert out.pending(range(3)) == [0, 1, 2]
    out.write_shard(0, {"rejected": rejected_rows(3, 0)})
    again = store.StageOutput(tmp_path / "s", ["rejected"], "fp1")
    assert again.pending(range(3)) == [1, 2]
    with pytest.raises(TracemillError, match="shard 1 is not complete"):
        again.finalize(range(3))


def test_changed_fingerprint_starts_afresh(tmp_path):
    store.StageOutput(tmp_path / "s", ["rejected"], "fp1").write_shard(0, {"rejected": rejected_rows(3, 0)})
    out = store.StageOutput(tmp_path / "s", ["rejected"], "fp2")
    assert out.pending([0]) == [0]
    assert not list((tmp_path / "s" / "rejected").glob("part-*"))


def test_finalize_drops_parts_outside_the_plan(tmp_path):
    out = store.StageOutput(tmp_path / "s", ["rejected"], "fp")
    for shard in range(3):
        out.write_shard(shard, {"rejected": rejected_rows(2, shard)})
    assert out.finalize([0, 1]) == {"rejected": 4}
    assert store.read(tmp_path / "s", "rejected").num_rows == 4


def test_read_missing_stage_dir_says_which_stage_to_run(tmp_path):
    with pytest.raises(TracemillError, match="run the stage"):
        store.read(tmp_path / "nope", "problems")


def test_quarantine_records_reason_and_raw():
    q = store.Quarantine("problems")
    q.reject("no_answer", {"question": "q"}, table="problems", detail="empty", source="gsm8k")
    q.reject("bad_json", "{oops", table="problems", source="gsm8k")
    rows = q.take()
    assert q.counts == {"no_answer": 1, "bad_json": 1}
    assert rows[0]["raw"] == '{"question": "q"}' and rows[1]["raw"] == "{oops"
    records.validate("rejected", rows)


WRITER = textwrap.dedent(
    """
    import sys
    from tracemill import records, store
    root, shards, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    out = store.StageOutput(root, ["rejected"], "fp")
    for shard in out.pending(range(shards)):
        data = [{"rejected_id": records.content_id(shard, i), "stage": "t", "table": "problems", "reason": "r",
                 "detail": None, "source": None, "raw": "x" * 200, "metadata": None} for i in range(rows)]
        out.write_shard(shard, {"rejected": data})
    print(out.finalize(range(shards))["rejected"])
    """
)


def _writer(root: Path, shards: int, rows: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), str(shards), str(rows)], stdout=subprocess.PIPE, text=True
    )


def test_write_killed_half_way_leaves_no_partial_part_and_rerun_completes(tmp_path):
    root = tmp_path / "stage"
    shards, rows = 4, 60_000
    proc = _writer(root, shards, rows)
    deadline = time.time() + 60
    while time.time() < deadline:  # kill while shard 1 is being written: after shard 0's marker
        if (root / "_shards" / "00000.done").exists():
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for part in (root / "rejected").glob("part-*.parquet"):
        pq.read_table(part)  # every visible part is a whole Parquet file
    finished = sorted(p.name for p in (root / "_shards").glob("*.done"))
    assert finished and len(finished) < shards, finished

    rerun = _writer(root, shards, rows)
    out, _ = rerun.communicate(timeout=120)
    assert rerun.returncode == 0
    assert int(out.strip()) == shards * rows
    table = store.read(root, "rejected")
    assert table.num_rows == shards * rows
    assert len(set(table.column("rejected_id").to_pylist())) == shards * rows
    assert not list((root / "rejected").glob(".part-*"))


FULL_DISK = textwrap.dedent(
    """
    import resource, signal, sys
    from tracemill import stage
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as ENOSPC would
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
    sys.argv = [sys.argv[0], *sys.argv[2:]]
    exec(compile(open(sys.argv[0] + ".writer").read(), "writer", "exec"))
    """
)


def test_a_full_disk_fails_the_stage_with_one_line_and_no_half_written_table(tmp_path):
    """No part fits (RLIMIT_FSIZE stands in for a full disk): the stage exits 2 with one error line naming the table,
    no part is left half-written or unmarked, and a re-run with room completes every shard."""
    root = tmp_path / "stage"
    script = tmp_path / "full_disk.py"
    script.write_text(FULL_DISK)
    (tmp_path / "full_disk.py.writer").write_text(
        "from tracemill import stage\n" + "def main():\n" + textwrap.indent(WRITER, "    ") + "\nstage.run(main)\n"
    )
    shards, rows = 3, 20_000
    full = subprocess.run(
        [sys.executable, str(script), str(50_000), str(root), str(shards), str(rows)], capture_output=True, text=True
    )
    assert full.returncode == 2, full.stderr[-2000:]
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not write table 'rejected'"), lines
    for part in (root / "rejected").glob("part-*.parquet"):
        pq.read_table(part)  # every visible part is whole
    assert not list((root / "rejected").glob(".part-*"))  # the failed write removed its temp file
    done = {int(m.stem) for m in (root / "_shards").glob("*.done")}
    assert len(done) < shards
    rerun = _writer(root, shards, rows)
    out, _ = rerun.communicate(timeout=120)
    assert rerun.returncode == 0 and int(out.strip()) == shards * rows


def _truncate(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)


def _three_shards(root: Path, rows: int = 50) -> store.StageOutput:
    out = store.StageOutput(root, ["rejected"], "fp")
    for shard in range(3):
        out.write_shard(shard, {"rejected": rejected_rows(rows, shard)})
    out.finalize(range(3))
    return out


def test_marker_records_each_parts_rows_and_sha256(tmp_path):
    _three_shards(tmp_path / "s", rows=7)
    part = tmp_path / "s" / "rejected" / "part-00001.parquet"
    recorded = json.loads((tmp_path / "s" / "_shards" / "00001.done").read_text())
    assert recorded == {"rejected": {"rows": 7, "sha256": hashlib.sha256(part.read_bytes()).hexdigest()}}


def test_reading_a_truncated_part_raises_one_clear_error_naming_the_file_and_the_fix(tmp_path):
    _three_shards(tmp_path / "s")
    part = tmp_path / "s" / "rejected" / "part-00001.parquet"
    _truncate(part)
    for reader in (store.read, store.read_rows, store.read_polars):
        with pytest.raises(CorruptPartError) as err:
            reader(tmp_path / "s", "rejected")
        message = str(err.value)
        assert f"'{part}'" in message and "re-run the stage that wrote it" in message and "dvc repro" in message
        assert "\n" not in message


def test_reading_a_part_changed_in_place_fails_its_checksum(tmp_path):
    _three_shards(tmp_path / "s")
    part = tmp_path / "s" / "rejected" / "part-00002.parquet"
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, footer intact: only the checksum can tell
    part.write_bytes(bytes(data))
    with pytest.raises(CorruptPartError, match="part-00002.parquet' does not match the sha256"):
        store.read(tmp_path / "s", "rejected")


def test_reading_a_truncated_part_without_a_marker_still_names_the_file(tmp_path):
    _three_shards(tmp_path / "s")
    for marker in (tmp_path / "s" / "_shards").glob("*.done"):
        marker.unlink()
    _truncate(tmp_path / "s" / "rejected" / "part-00000.parquet")
    with pytest.raises(CorruptPartError, match="part-00000.parquet' is not readable Parquet"):
        store.read(tmp_path / "s", "rejected")


def test_resume_rewrites_a_shard_whose_part_was_truncated_instead_of_trusting_its_marker(tmp_path, capsys):
    root, rows = tmp_path / "s", 50
    _three_shards(root, rows)
    capsys.readouterr()
    _truncate(root / "rejected" / "part-00001.parquet")

    resumed = store.StageOutput(root, ["rejected"], "fp")
    todo = resumed.pending(range(3))
    assert todo == [1]
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "shard 1 is not intact" in lines[0] and "part-00001.parquet" in lines[0], lines
    for shard in todo:
        resumed.write_shard(shard, {"rejected": rejected_rows(rows, shard)})
    assert resumed.finalize(range(3)) == {"rejected": 3 * rows}
    ids = store.read(root, "rejected").column("rejected_id").to_pylist()
    assert sorted(ids) == sorted(r["rejected_id"] for s in range(3) for r in rejected_rows(rows, s))
    assert store.StageOutput(root, ["rejected"], "fp").pending(range(3)) == []


def test_a_marker_without_checksums_is_not_trusted(tmp_path):
    root = tmp_path / "s"
    _three_shards(root)
    (root / "_shards" / "00000.done").write_text(json.dumps({"rejected": 50}))  # the format before checksums
    assert store.StageOutput(root, ["rejected"], "fp").pending(range(3)) == [0]


def test_a_bad_part_error_names_the_dvc_stage_that_writes_its_folder(tmp_path):
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  mcts@1:\n    cmd: x\n    outs:\n    - path: data/mcts/round=1\n"
    )
    out = store.StageOutput(tmp_path / "data" / "mcts" / "round=1", ["rejected"], "fp")
    out.write_shard(0, {"rejected": rejected_rows(5, 0)})
    _truncate(out.root / "rejected" / "part-00000.parquet")
    with pytest.raises(CorruptPartError, match=r"`dvc repro -f mcts@1`, or delete '.*round=1' and run `dvc repro`"):
        store.read(out.root, "rejected")
