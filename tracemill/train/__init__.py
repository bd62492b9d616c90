"""Training: SFT with loss masks, the process preference model (PPM), both on transformers' Trainer.

Params and labels import without torch; the trainers load it on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from tracemill.train.common import TrainError
from tracemill.train.labels import IGNORE_INDEX, build_labels
from tracemill.train.params import PPMParams, SFTParams, TrainParams

_LAZY = {
    "train_sft": "tracemill.train.sft",
    "train_ppm": "tracemill.train.ppm",
    "init_ppm": "tracemill.train.ppm",
    "load_ppm": "tracemill.train.ppm",
    "LossCurve": "tracemill.train.hf",
    "PPMScorer": "tracemill.train.ppm",
}

__all__ = ["IGNORE_INDEX", "PPMParams", "SFTParams", "TrainError", "TrainParams", "build_labels", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tracemill.train' has no attribute '{name}'")
