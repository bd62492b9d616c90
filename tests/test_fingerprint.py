"""Stage fingerprints hash input content, never file times or locations, so identical re-runs change nothing."""

import json
import os
import shutil
import socket
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tracemill import records, stage, store

DAY_NS = 86_400 * 10**9


@pytest.fixture(autouse=True)
def hash_cache(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "cache" / "hash-cache.json"
    monkeypatch.setenv("TRACEMILL_HASH_CACHE", str(path))
    return path


def make_input(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text('{"layers": 2}')
    (root / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 64)
    return root


def age(path: Path, by_ns: int = DAY_NS) -> None:
    """Move a file's mtime into the past, as a file written long before the run has it."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - by_ns))


def test_fingerprint_is_unchanged_when_only_a_files_mtime_changes(tmp_path):
    model = make_input(tmp_path / "model")
    before = stage.fingerprint({"k": 1}, [model])
    age(model / "sub" / "weights.bin")
    os.utime(model / "config.json")  # touch
    assert stage.fingerprint({"k": 1}, [model]) == before


def test_fingerprint_changes_when_one_byte_changes(tmp_path):
    model = make_input(tmp_path / "model")
    before = stage.fingerprint({"k": 1}, [model])
    weights = model / "sub" / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[100] ^= 1
    weights.write_bytes(bytes(data))
    assert stage.fingerprint({"k": 1}, [model]) != before
    assert stage.fingerprint({"k": 2}, [model]) != stage.fingerprint({"k": 1}, [model])


def test_fingerprint_changes_with_the_code_so_a_persisted_output_never_keeps_old_rows(tmp_path, monkeypatch):
    """Same params and inputs, one changed line of code (a grader rule, say): the run starts afresh instead of
    resuming the shards the old code wrote. Compiled caches do not count."""
    code = tmp_path / "pkg"
    (code / "__pycache__").mkdir(parents=True)
    (code / "grading.py").write_text("RULES_VERSION = 3\n")
    monkeypatch.setattr(stage, "CODE_ROOTS", (code, tmp_path / "absent"))
    before = stage.fingerprint({"k": 1})
    (code / "__pycache__" / "grading.cpython-311.pyc").write_bytes(b"compiled")
    (code / "notes.txt").write_text("not code")
    assert stage.fingerprint({"k": 1}) == before
    (code / "grading.py").write_text("RULES_VERSION = 4\n")
    assert stage.fingerprint({"k": 1}) != before


def test_a_stages_fingerprint_hashes_its_import_closure_as_dvc_declares_it(tmp_path, monkeypatch):
    """A change DVC would not re-run the stage for (a module it never imports, such as the report) leaves
    its fingerprint, and so the manifest a fresh clone writes, alone; a module it imports changes it."""
    for path, text in {
        "tracemill/__init__.py": "",
        "tracemill/used.py": "X = 1\n",
        "tracemill/report.py": "Y = 1\n",
        "stages/__init__.py": "",
        "stages/job.py": "from tracemill.used import X\n",
    }.items():
        (tmp_path / path).parent.mkdir(exist_ok=True)
        (tmp_path / path).write_text(text)
    monkeypatch.setattr(stage, "CODE_ROOTS", (tmp_path / "tracemill", tmp_path / "stages"))
    assert [p.relative_to(tmp_path).as_posix() for p in stage.code_paths("stages.job", tmp_path)] == [
        "stages/job.py",
        "tracemill/used.py",
    ]
    monkeypatch.setattr(stage, "_stage_module", "stages.job")
    before = stage.fingerprint({"k": 1})
    (tmp_path / "tracemill/report.py").write_text("Y = 2\n")
    assert stage.fingerprint({"k": 1}) == before
    (tmp_path / "tracemill/used.py").write_text("X = 2\n")
    assert stage.fingerprint({"k": 1}) != before


def test_run_keeps_the_stage_module_whose_code_the_fingerprint_hashes(monkeypatch):
    monkeypatch.setattr(stage, "_stage_module", None)

    def main() -> None:
        assert stage._stage_module == __name__

    stage.run(main)


def test_the_real_fingerprint_covers_the_package_and_the_stages():
    assert [root.name for root in stage.CODE_ROOTS] == ["tracemill", "stages"]
    assert all((root / "__init__.py").is_file() or any(root.glob("*.py")) for root in stage.CODE_ROOTS)


def test_fingerprint_does_not_depend_on_where_the_input_lies(tmp_path):
    model = make_input(tmp_path / "a" / "model")
    shutil.copytree(model, tmp_path / "b" / "elsewhere")
    assert stage.fingerprint({}, [model]) == stage.fingerprint({}, [tmp_path / "b" / "elsewhere"])


def test_hash_cache_is_trusted_only_while_size_mtime_and_inode_hold(tmp_path, hash_cache):
    model = make_input(tmp_path / "model")
    for f in (model / "config.json", model / "sub" / "weights.bin"):
        age(f)
    honest = stage.fingerprint({}, [model])
    entries = json.loads(hash_cache.read_text())
    key = str((model / "config.json").resolve())
    assert entries[key]["sha256"] == store.sha256_file(model / "config.json")
    entries[key]["sha256"] = "0" * 64  # a stale entry the cache would serve while the file's stat matches
    hash_cache.write_text(json.dumps(entries))
    assert stage.fingerprint({}, [model]) != honest  # memoised: the file was not read again
    os.utime(model / "config.json")  # a new mtime invalidates the entry
    assert stage.fingerprint({}, [model]) == honest


def test_a_recently_written_file_is_not_memoised(tmp_path, hash_cache):
    model = make_input(tmp_path / "model")  # written just now: could change again within its mtime tick
    stage.fingerprint({}, [model])
    memoised = json.loads(hash_cache.read_text()) if hash_cache.exists() else {}
    assert not any(key.startswith(str(model.resolve())) for key in memoised)


def test_a_corrupt_hash_cache_is_ignored_and_replaced(tmp_path, hash_cache):
    model = make_input(tmp_path / "model")
    age(model / "config.json")
    honest = stage.fingerprint({}, [model])
    hash_cache.write_text('{"truncated": ')
    assert stage.fingerprint({}, [model]) == honest
    assert str((model / "config.json").resolve()) in json.loads(hash_cache.read_text())


def rejected(shard: int) -> list[dict]:
    return [
        {
            "rejected_id": records.content_id(shard, i),
            "stage": "t",
            "table": "problems",
            "reason": "r",
            "detail": None,
            "source": None,
            "raw": f"row {shard}/{i}",
            "metadata": None,
        }
        for i in range(20)
    ]


def run_writer(out_dir: Path, inputs: Path) -> None:
    out = store.StageOutput(out_dir, ["rejected"], stage.fingerprint({"shards": 3}, [inputs]))
    for shard in out.pending(range(3)):
        out.write_shard(shard, {"rejected": rejected(shard)})
    out.finalize(range(3))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rerun_over_identical_inputs_leaves_every_byte_of_the_output_folder_identical(tmp_path):
    inputs = make_input(tmp_path / "inputs")
    out_dir = tmp_path / "data" / "stage"
    run_writer(out_dir, inputs)
    first = snapshot(out_dir)

    for f in inputs.rglob("*"):
        os.utime(f)  # the same content with new times, as a checkout or `dvc checkout` leaves it
    run_writer(out_dir, inputs)  # resumes: every shard is done
    assert snapshot(out_dir) == first

    shutil.rmtree(out_dir)
    shutil.copytree(inputs, tmp_path / "moved")
    run_writer(out_dir, tmp_path / "moved")  # from scratch, inputs elsewhere
    assert snapshot(out_dir) == first

    written = [text for name, data in first.items() if name.endswith((".json", ".done")) for text in [data.decode()]]
    written += [repr(pq.read_metadata(p).metadata) for p in out_dir.rglob("*.parquet")]
    for text in written:
        assert str(tmp_path) not in text and socket.gethostname() not in text


def test_forced_dvc_rerun_with_touched_inputs_keeps_the_outputs_hash(repo_copy):
    """The issue this guards: a fingerprint of file times changed `_manifest.json`, so an identical re-run
    moved the folder's DVC hash and made every downstream stage stale."""
    import yaml
    from conftest import run

    def out_hash() -> str:
        lock = yaml.safe_load((repo_copy / "dvc.lock").read_text())
        return next(o["md5"] for o in lock["stages"]["problems"]["outs"] if o["path"] == "data/problems")

    first = run(["dvc", "repro", "problems"], cwd=repo_copy)
    assert first.returncode == 0, first.stderr + first.stdout
    before = out_hash()
    for f in (repo_copy / "data" / "seeds").rglob("*"):
        os.utime(f)
    again = run(["dvc", "repro", "-f", "problems"], cwd=repo_copy)
    assert again.returncode == 0, again.stderr + again.stdout
    assert out_hash() == before
