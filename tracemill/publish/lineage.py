"""Provenance: what made the published rows — the dvc.lock stage, output hash and params of each input
directory, and the git commit of the publish stage's own code."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tracemill import records
from tracemill.publish.errors import PublishError
from tracemill.publish.params import DatasetParams
from tracemill.publish.tables import Published

DVC_LOCK = "dvc.lock"


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


def provenance(
    git: dict[str, Any], ds: DatasetParams, raw_publish: dict[str, Any], published: list[Published]
) -> dict[str, Any]:
    """Machine-readable provenance: what the card's numbers and files were made from."""
    stages = {i["stage"]: i["params"] for p in published for i in p.inputs if i["stage"]}
    entry: dict[str, Any] = next((d for d in raw_publish.get("datasets", []) if d.get("name") == ds.name), {})
    return {
        "git": git,
        "inputs": [
            {
                "config": p.config,
                "table": p.table,
                "path": i["path"],
                "stage": i["stage"],
                "dvc_out": i["out"],
                "md5": i["md5"],
            }
            for p in published
            for i in p.inputs
        ],
        "rows": {p.config: p.rows for p in published},
        "held_back": {p.config: p.held_back for p in published if p.held_back},
        "schema_version": records.SCHEMA_VERSION,
        "params": {**stages, "publish": {k: v for k, v in raw_publish.items() if k != "datasets"} | {"dataset": entry}},
    }
