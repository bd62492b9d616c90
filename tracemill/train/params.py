"""Hyperparameters of every training run, one frozen dataclass per params.yaml entry under `train`.

Defaults are the papers' values; params.yaml overrides them with small ones for the embedded CPU run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from tracemill.errors import ParamsError
from tracemill.formats import STYLES
from tracemill.params import choices, in_range, positive


@dataclass(frozen=True)
class TrainerParams:
    """What every Trainer run needs, SFT or PPM."""

    learning_rate: float = 7e-6
    batch_size: int = 128  # examples (SFT) or pairs (PPM) per optimizer step, across all devices
    micro_batch_size: int = 4  # per device and forward pass; the rest is gradient accumulation
    epochs: float = 3.0
    max_length: int = 4096  # longer examples are dropped and counted, never truncated
    lr_scheduler: str = choices("cosine", "linear", "constant_with_warmup", default="cosine")
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    # AdamW either way; the fused kernel updates every tensor in one pass (CPU and GPU, torch >= 2.4).
    optimizer: str = choices("adamw_torch_fused", "adamw_torch", default="adamw_torch_fused")
    max_grad_norm: float = 1.0
    # Micro-batches whose examples are sorted together by length: more means less padding, less shuffling.
    bucket_window: int = 50
    heldout_fraction: float = 0.05  # examples kept out of training for the held-out metrics
    save_steps: int = 500  # optimizer steps between checkpoints
    save_total_limit: int = 2
    logging_steps: int = 10
    seed: int = 0
    device: str = choices("cpu", "auto", default="cpu")  # auto: the GPU when there is one
    bf16: bool = False
    gradient_checkpointing: bool = False
    deepspeed: str | None = None  # a config under configs/deepspeed/ (GPU, or CPU with gloo)
    # Local training processes in one torch.distributed group (train/launch.py): data-parallel ranks over the
    # CPU cores (gloo) or one per GPU (nccl). 1 trains in the stage's own process with every core.
    processes: int = 1

    def validate(self, where: str) -> None:
        """Raise ParamsError naming `where` (e.g. 'train.sft_start') and the key that is out of range."""
        for key in ("learning_rate", "batch_size", "micro_batch_size", "epochs", "max_length", "bucket_window",
                    "save_steps", "save_total_limit", "logging_steps", "processes"):
            positive(getattr(self, key), f"{where}.{key}")
        in_range(self.warmup_ratio, 0.0, 0.99, f"{where}.warmup_ratio")
        in_range(self.heldout_fraction, 0.0, 0.9, f"{where}.heldout_fraction")
        if self.batch_size % (self.micro_batch_size * self.processes):
            raise ParamsError(
                f"params '{where}.batch_size' = {self.batch_size} must be a multiple of "
                f"'{where}.micro_batch_size' = {self.micro_batch_size} x '{where}.processes' = {self.processes}"
            )


@dataclass(frozen=True)
class SFTParams(TrainerParams):
    """Supervised fine-tuning on the `sft` table; START's defaults (lr 7e-6, batch 128, 3 epochs)."""

    # The system prompt the questions are rendered with (formats.STYLES): the one the data was generated with.
    prompt_style: str = choices(*STYLES, default="tir")


@dataclass(frozen=True)
class PPMParams(TrainerParams):
    """The process preference model trained on the `pairs` table with the Bradley-Terry loss.

    micro_batch_size counts pairs: each forward pass scores twice as many sequences.
    """


@dataclass(frozen=True)
class TrainParams:
    """The `train` section of params.yaml: one SFT set per stage that fine-tunes, and the PPM."""

    sft_start0: SFTParams = field(default_factory=SFTParams)  # START-0 on D_seed
    sft_start: SFTParams = field(default_factory=SFTParams)  # START on D_start (RFT)
    train_policy: SFTParams = field(default_factory=SFTParams)  # rStar-Math policy per round
    format_tune: SFTParams = field(default_factory=SFTParams)  # Satori format tuning on COAT
    distill: SFTParams = field(default_factory=SFTParams)  # a smaller model on the final traces
    ppm: PPMParams = field(default_factory=PPMParams)

    def check(self) -> None:
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate(f"train.{f.name}")
