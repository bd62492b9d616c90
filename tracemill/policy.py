"""Which model the graph generates with: the bootstrap policy, or any causal-LM folder on disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracemill import params as P
from tracemill.errors import TracemillError

BOOTSTRAP_DIR = Path("models/bootstrap")


@dataclass(frozen=True)
class PolicyParams:
    model: str | None = None  # a Hugging Face model folder (e.g. a Qwen2.5-Math checkpoint); None: the bootstrap policy
    name: str | None = None  # how tables name it; default: the folder name


def resolve_policy(params: dict[str, Any]) -> tuple[Path, str]:
    """(model folder, model name) for the base policy; one clear error when the folder is unusable."""
    cfg = P.section(PolicyParams, params, "policy")
    path = Path(cfg.model) if cfg.model else BOOTSTRAP_DIR
    check_model_folder(path, "policy.model" if cfg.model else None)
    return path, cfg.name or ("bootstrap" if not cfg.model else path.name)


def check_model_folder(path: Path, key: str | None = None) -> Path:
    fix = f"fix {key} in params.yaml" if key else "run 'dvc repro bootstrap' or set policy.model in params.yaml"
    if not (path / "config.json").exists():
        raise TracemillError(f"model path '{path}' has no config.json — {fix}")
    if not any((path / f).exists() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
        raise TracemillError(f"model path '{path}' has no tokenizer files — {fix}")
    return path
