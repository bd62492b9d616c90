"""Hyperparameters of every training run, one frozen dataclass per params.yaml entry under `train`.

Defaults are the papers' values; params.yaml overrides them with small ones for the embedded CPU run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from tracemill.errors import ParamsError
from tracemill.formats import STYLES
from tracemill.params import above, at_least, bounded, choices


@dataclass(frozen=True)
class TrainerParams:
    """What every Trainer run needs, SFT or PPM."""

    learning_rate: float = above(0, default=7e-6)
    batch_size: int = at_least(1, default=128)  # examples (SFT) or pairs (PPM) per optimizer step, across all devices
    micro_batch_size: int = at_least(1, default=4)  # per device and forward pass; the rest is gradient accumulation
    epochs: float = above(0, default=3.0)
    max_length: int = at_least(1, default=4096)  # longer examples are dropped and counted, never truncated
    lr_scheduler: str = choices("cosine", "linear", "constant_with_warmup", default="cosine")
    warmup_ratio: float = bounded(0, 1, hi_open=True, default=0.1)  # below 1: transformers reads 1 or more as steps
    weight_decay: float = at_least(0, default=0.0)
    # AdamW either way; the fused kernel updates every tensor in one pass (CPU and GPU, torch >= 2.4).
    optimizer: str = choices("adamw_torch_fused", "adamw_torch", default="adamw_torch_fused")
    max_grad_norm: float = at_least(0, default=1.0)  # 0: no clipping
    # Micro-batches whose examples are sorted together by length: more means less padding, less shuffling.
    bucket_window: int = at_least(1, default=50)
    heldout_fraction: float = bounded(0, 0.9, default=0.05)  # examples kept out of training for the held-out metrics
    save_steps: int = at_least(1, default=500)  # optimizer steps between checkpoints
    save_total_limit: int = at_least(1, default=2)
    logging_steps: int = at_least(1, default=10)
    seed: int = at_least(0, default=0)
    device: str = choices("cpu", "auto", default="cpu")  # auto: the GPU when there is one
    bf16: bool = False
    gradient_checkpointing: bool = False
    deepspeed: str | None = None  # a config under configs/deepspeed/ (GPU, or CPU with gloo)
    # Local training processes in one torch.distributed group (train/launch.py): data-parallel ranks over the
    # CPU cores (gloo) or one per GPU (nccl). 1 trains in the stage's own process with every core; 0: one
    # per visible GPU, 1 on a CPU (launch.resolve_processes), so one params file fits any GPU node.
    processes: int = at_least(0, default=1)

    def validate(self, where: str) -> None:
        """Raise ParamsError naming `where` (e.g. 'train.sft_start') when the batch does not split evenly.
        With processes 0 the rank count is known only on the node: train/hf.py checks the split there."""
        if self.batch_size % (self.micro_batch_size * max(1, self.processes)):
            raise ParamsError(
                f"params '{where}.batch_size' = {self.batch_size} must be a multiple of "
                f"'{where}.micro_batch_size' = {self.micro_batch_size} x '{where}.processes' = {self.processes}"
            )


@dataclass(frozen=True)
class SFTParams(TrainerParams):
    """Supervised fine-tuning on the `sft` table; START's defaults (lr 7e-6, batch 128, 3 epochs)."""

    # The system prompt the questions are rendered with (formats.STYLES): the one the data was generated with.
    prompt_style: str = choices(*STYLES, default="tir")
    # Labelled positions whose vocabulary logits exist at once in the loss (train/loss.py); 0: all of them, in
    # fp32. Above 0: Liger Kernel's fused kernel on CUDA when installed, else torch chunks of this many tokens.
    loss_chunk_tokens: int = at_least(0, default=0)


@dataclass(frozen=True)
class PPMParams(TrainerParams):
    """The process preference model trained on the `pairs` table with the Bradley-Terry loss.

    micro_batch_size counts pairs: each forward pass scores twice as many sequences. The head follows
    rStar-Math's reference ValueHead (train/rm.py): its init and dropout below.
    """

    head_init_mean: float = bounded(default=5e-7)
    head_init_std: float = at_least(0, default=1e-6)
    head_dropout: float = bounded(0, 1, hi_open=True, default=0.1)  # on the head's input, training only
    # A pair's share of the loss. count (train/rm.py): 1/(pos x neg), the chosen and rejected steps its prefix
    # paired, so a prefix's pairs weigh 1 together however many it made; uniform: every pair 1
    pair_weighting: str = choices("count", "uniform", default="count")


@dataclass(frozen=True)
class TrainParams:
    """The `train` section of params.yaml: one SFT set per stage that fine-tunes, and the PPM."""

    sft_start0: SFTParams = field(default_factory=SFTParams)  # START-0 on D_seed
    sft_start: SFTParams = field(default_factory=SFTParams)  # START on D_start (RFT)
    rstar_policy: SFTParams = field(default_factory=SFTParams)  # rStar-Math policy per round
    format_tune: SFTParams = field(default_factory=SFTParams)  # Satori format tuning on COAT
    distill: SFTParams = field(default_factory=SFTParams)  # a smaller model on the final traces
    rstar_ppm: PPMParams = field(default_factory=PPMParams)  # rStar-Math process preference model

    def check(self) -> None:
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate(f"train.{f.name}")
