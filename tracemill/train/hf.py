"""The one adapter around transformers' Trainer: arguments from params, a seeded length-bucketed
sampler, checkpoint resume guarded by a run fingerprint, and the final save.

Everything version-sensitive in the Trainer API lives here, so a transformers upgrade touches one file.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from transformers import PreTrainedTokenizerBase, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from tracemill.records import content_id
from tracemill.train.common import TrainError
from tracemill.train.labels import IGNORE_INDEX
from tracemill.train.launch import join_single_rank_group, world_size
from tracemill.train.params import TrainerParams

CHECKPOINTS = "checkpoints"
RUN_FILE = "run.json"  # the fingerprint of the run whose checkpoints sit beside it


class BucketSampler(torch.utils.data.Sampler[int]):
    """A seeded shuffle, then each window of micro-batches sorted by length so a micro-batch pads little;
    the micro-batches of a window are shuffled again so an optimizer step mixes lengths.

    The order depends on (seed, epoch) only, so a run resumed mid-epoch sees the batches it would have seen.
    """

    def __init__(self, lengths: Sequence[int], micro_batch_size: int, window: int, seed: int) -> None:
        self.lengths, self.micro, self.window, self.seed, self.epoch = list(lengths), micro_batch_size, window, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(int(content_id("bucket", self.seed, self.epoch), 16))
        order = torch.randperm(len(self.lengths), generator=gen).tolist()
        span = self.micro * self.window
        out: list[int] = []
        for start in range(0, len(order), span):
            chunk = sorted(order[start : start + span], key=lambda i: -self.lengths[i])
            groups = [chunk[i : i + self.micro] for i in range(0, len(chunk), self.micro)]
            # A short last group must stay last, or the DataLoader's batches would straddle two groups.
            full = [g for g in groups if len(g) == self.micro]
            for k in torch.randperm(len(full), generator=gen).tolist():
                out.extend(full[k])
            out.extend(i for g in groups if len(g) < self.micro for i in g)
        return iter(out)


class BucketTrainer(Trainer):
    """Trainer that draws micro-batches from a BucketSampler over precomputed lengths."""

    def __init__(self, *args: Any, lengths: Sequence[int], bucket_window: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lengths, self._window = lengths, bucket_window

    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler[int]:
        return BucketSampler(self._lengths, self.args.per_device_train_batch_size, self._window, self.args.seed)

    def _save(self, output_dir: str | None = None, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        if state_dict is not None:
            state_dict = drop_tied_copies(cast(torch.nn.Module, self.model), state_dict)  # Trainer requires one
        super()._save(output_dir, state_dict=state_dict)


def drop_tied_copies(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict without the copies of tied weights (lm_head = embed_tokens). DeepSpeed ZeRO-1/2 hands
    save_model cloned tensors, so save_pretrained no longer sees that tied weights share storage and would
    write them twice (a folder the size of an untied model); a copy is dropped only when it equals its source."""
    tied = getattr(model, "all_tied_weights_keys", None) or {}
    return {
        k: v
        for k, v in state_dict.items()
        if not (k in tied and tied[k] in state_dict and torch.equal(v, state_dict[tied[k]]))
    }


class LossCurve(TrainerCallback):
    """The run's training loss as `{"step", "loss"}` rows (every `logging_steps`), for a plot. Read at the
    end of training from the Trainer's log history, which a resumed run restores from its checkpoint, so
    the curve covers the steps before the crash too."""

    COLUMNS = ("step", "loss")

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_end(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        self.rows = [{k: h[k] for k in self.COLUMNS} for h in state.log_history if "loss" in h]


def pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """Right-pad to the longest row: the only padding a bucketed micro-batch pays."""
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def causal_lm_collator(pad_id: int) -> Callable[[list[Mapping[str, Any]]], dict[str, torch.Tensor]]:
    """Right-padded micro-batches without an attention mask: under causal attention a real token only sees
    earlier positions, which right padding never touches, and pad positions carry no label. Leaving the mask
    out is exact for every real token and lets attention take its fused causal path (about 1.4x on the CPU)."""

    def collate(features: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        return {
            "input_ids": pad([f["input_ids"] for f in features], pad_id),
            "labels": pad([f["labels"] for f in features], IGNORE_INDEX),
        }

    return collate


def training_args(params: TrainerParams, checkpoints: Path) -> TrainingArguments:
    if params.deepspeed:
        join_single_rank_group()  # processes: 1 outside a launcher; train/launch.py leaves the group afterwards
    world = world_size()
    per_step = params.micro_batch_size * world
    if params.batch_size % per_step:
        raise TrainError(
            f"batch_size {params.batch_size} is not a multiple of micro_batch_size {params.micro_batch_size} x "
            f"{world} processes — change train.*.batch_size or micro_batch_size in params.yaml"
        )
    return TrainingArguments(
        output_dir=str(checkpoints),
        per_device_train_batch_size=params.micro_batch_size,
        per_device_eval_batch_size=params.micro_batch_size,
        gradient_accumulation_steps=params.batch_size // per_step,
        learning_rate=params.learning_rate,
        num_train_epochs=params.epochs,
        lr_scheduler_type=params.lr_scheduler,
        warmup_steps=params.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=params.weight_decay,
        optim=params.optimizer,
        max_grad_norm=params.max_grad_norm,
        save_strategy="steps",
        save_steps=params.save_steps,
        save_total_limit=params.save_total_limit,
        logging_steps=params.logging_steps,
        seed=params.seed,
        data_seed=params.seed,
        use_cpu=params.device == "cpu",
        bf16=params.bf16,
        activation_checkpointing=params.gradient_checkpointing,
        deepspeed=params.deepspeed,
        report_to="none",
        remove_unused_columns=False,  # features carry our own keys, not the model's forward arguments
        dataloader_num_workers=0,
        dataloader_pin_memory=params.device != "cpu",
        eval_strategy="no",
        prediction_loss_only=True,  # evaluation reports the loss; logits are never gathered
    )


def eval_loss(trainer: Trainer, dataset: Sequence[dict[str, Any]]) -> float | None:
    """The mean loss on `dataset` as Trainer.evaluate reports it: micro-batch mean losses weighted by examples.

    Across processes, evaluate() must not run before train(): it marks the model as prepared, so train() would
    skip the DistributedDataParallel wrap and each rank would step on its own gradients; under DeepSpeed there
    is no engine yet (ZeRO-2 refuses to evaluate, "ZeRO inference only makes sense with ZeRO Stage 3", and a
    ZeRO-3 inference engine leaves train() without one to step, even on one rank). So before a distributed or
    DeepSpeed run is wrapped, each process computes the loss itself on the plain model, over the same micro-batches.
    """
    if not dataset:
        return None
    if not (trainer.args.world_size > 1 or trainer.is_deepspeed_enabled) or trainer.model_wrapped is not trainer.model:
        # a list is a map-style dataset to torch's DataLoader; transformers annotates torch's Dataset class
        return float(trainer.evaluate(list(dataset))["eval_loss"])  # type: ignore[arg-type]
    model, micro = trainer.model, trainer.args.per_device_eval_batch_size
    was_training, total = model.training, 0.0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(dataset), micro):
            batch = list(dataset[start : start + micro])
            loss = trainer.compute_loss(model, trainer.data_collator(batch))  # a tuple only with return_outputs
            total += float(cast(torch.Tensor, loss)) * len(batch)
    model.train(was_training)
    return total / len(dataset)


def fingerprint(model_path: Path, row_ids: Sequence[str], params: TrainerParams) -> str:
    """What defines a run: checkpoints of another model, data or params must never be resumed."""
    config = (model_path / "config.json").read_text(encoding="utf-8")
    return content_id(str(model_path.resolve()), config, sorted(row_ids), dataclasses.asdict(params))


def claim_checkpoints(checkpoints: Path, run_id: str, resume: bool) -> str | None:
    """The last checkpoint in `checkpoints` when resuming the run it belongs to (its RUN_FILE names
    run_id); otherwise the folder is emptied and claimed for run_id, and there is none."""
    run_file = checkpoints / RUN_FILE
    same_run = run_file.is_file() and json.loads(run_file.read_text(encoding="utf-8")).get("run_id") == run_id
    if checkpoints.exists() and not (resume and same_run):
        shutil.rmtree(checkpoints)
    checkpoints.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps({"run_id": run_id}), encoding="utf-8")
    return get_last_checkpoint(str(checkpoints))


def resume_point(trainer: Trainer, run_id: str, resume: bool) -> str | None:
    """The checkpoint to resume from, after the main process clears checkpoints of a different run."""
    checkpoints = Path(cast(str, trainer.args.output_dir))  # TrainingArguments.__post_init__ fills in a None
    if trainer.is_world_process_zero():
        claim_checkpoints(checkpoints, run_id, resume)
    trainer.accelerator.wait_for_everyone()
    return get_last_checkpoint(str(checkpoints))


def step_of(checkpoint: str | None) -> int:
    return int(checkpoint.rsplit("-", 1)[1]) if checkpoint else 0


def run(
    trainer: Trainer,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: Path,
    run_id: str,
    resume: bool,
) -> dict[str, Any]:
    """Train (from the last checkpoint of the same run when resuming), save an HF folder to out_dir,
    then drop the checkpoints: the folder is complete and DVC should not version optimizer state."""
    checkpoint = resume_point(trainer, run_id, resume)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(out_dir))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(out_dir))
        shutil.rmtree(cast(str, trainer.args.output_dir), ignore_errors=True)
    return {
        "train_loss": float(result.training_loss),
        "global_step": int(result.global_step),
        "resumed_from_step": step_of(checkpoint),
        "train_runtime_s": float(result.metrics["train_runtime"]),
    }
