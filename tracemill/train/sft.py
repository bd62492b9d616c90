"""Supervised fine-tuning on `sft` rows: chat-template prompts, loss only on model and code text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase, TrainerCallback

from tracemill.formats import FormatParams
from tracemill.train.common import model_dir, require_rows, split_heldout
from tracemill.train.hf import (
    CHECKPOINTS,
    BucketTrainer,
    causal_lm_collator,
    eval_loss,
    fingerprint,
    run,
    training_args,
)
from tracemill.train.labels import IGNORE_INDEX, build_labels
from tracemill.train.launch import train_in_processes
from tracemill.train.loss import linear_cross_entropy
from tracemill.train.params import SFTParams


class LabelledTrainer(BucketTrainer):
    """A causal-LM Trainer whose LM head scores only the positions where a token carries a label.

    Hint, tool-output and prompt tokens (about 40% of a tool-integrated trace) still pass through the backbone
    as context, but for one forward a pre-hook hands the head the labelled hidden states alone, and the head's
    own forward is replaced by one that returns their summed cross-entropy (train/loss.py: plain, or chunked so
    the full-vocabulary fp32 logits never exist), which the model hands back as its `logits`. The head runs
    as the module it is, so DeepSpeed ZeRO-3 still gathers its weight around that call. `labelled_loss`
    divides the sum by the Trainer's num_items_in_batch (or the batch's labelled tokens): the model's own
    causal-LM loss, so the gradients are those of the full forward.
    """

    def __init__(self, *args: Any, loss_chunk_tokens: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, compute_loss_func=labelled_loss, **kwargs)
        self._chunk_tokens = loss_chunk_tokens

    def compute_loss(
        self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        shifted = inputs["labels"][:, 1:]
        keep = shifted != IGNORE_INDEX
        targets = shifted[keep]
        head = self.accelerator.unwrap_model(model).get_output_embeddings()

        def summed_loss(labelled: torch.Tensor) -> torch.Tensor:
            return linear_cross_entropy(labelled, head.weight, targets, self._chunk_tokens, head.bias)

        hook = head.register_forward_pre_hook(lambda _head, args: (args[0][:, :-1][keep],))
        head.forward = summed_loss  # an instance attribute over the class's forward, removed below
        try:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            del head.forward
            hook.remove()


def labelled_loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
    """LabelledTrainer's summed loss (the model's `logits`) over num_items_in_batch, else over the labelled tokens."""
    if num_items_in_batch is None:
        num_items_in_batch = (labels[:, 1:] != IGNORE_INDEX).sum()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(outputs.logits.device)
    return outputs.logits / num_items_in_batch


def sft_features(
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Mapping[str, Any]],
    params: SFTParams,
    fmt: FormatParams | None,
) -> tuple[list[dict[str, Any]], int]:
    """(features, dropped): one feature per row that fits max_length; a cut trace would teach a wrong ending."""
    features, dropped = [], 0
    for row in examples:
        input_ids, labels = build_labels(tokenizer, row["prompt"], row["segments"], style=params.prompt_style, fmt=fmt)
        if len(input_ids) > params.max_length:
            dropped += 1
            continue
        features.append({"example_id": row["example_id"], "input_ids": input_ids, "labels": labels})
    return features, dropped


def train_sft(
    model_path: str | Path,
    examples: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    params: SFTParams,
    resume: bool = True,
    callbacks: Sequence[TrainerCallback] = (),
    fmt: FormatParams | None = None,
) -> dict[str, Any]:
    """Fine-tune the causal LM at model_path on `sft` rows; save an HF folder to out_dir and return metrics.

    Checkpoints go to out_dir/checkpoints every save_steps optimizer steps; with resume, a killed run of
    the same model, rows and params goes on from its last one. Held-out loss is measured before and after.
    With params.processes > 1 the training runs data-parallel in that many processes (train/launch.py).
    """
    params.validate("train")
    model_dir(model_path)
    return train_in_processes(
        _train_sft,
        (model_path, list(examples), out_dir, params, resume, fmt),
        callbacks,
        params.processes,
        params.device,
    )


def _train_sft(
    model_path: str | Path,
    examples: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    params: SFTParams,
    resume: bool,
    fmt: FormatParams | None,
    callbacks: list[TrainerCallback],
) -> tuple[dict[str, Any], list[TrainerCallback]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = model_dir(model_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    features, dropped = sft_features(tokenizer, examples, params, fmt)
    require_rows(features, "sft", dropped, params.max_length)
    ids = [f["example_id"] for f in features]
    train, heldout = split_heldout(features, ids, params.heldout_fraction, params.seed)
    out = Path(out_dir)
    trainer = LabelledTrainer(
        model=AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
        args=training_args(params, out / CHECKPOINTS),
        train_dataset=train,
        data_collator=causal_lm_collator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=callbacks,
        lengths=[len(f["input_ids"]) for f in train],
        bucket_window=params.bucket_window,
        loss_chunk_tokens=params.loss_chunk_tokens,
    )
    initial = eval_loss(trainer, heldout)
    metrics = run(trainer, tokenizer, out, fingerprint(path, ids, params), resume)
    tokens = sum(len(f["input_ids"]) for f in train)
    return metrics | {
        "examples": len(train),
        "heldout_examples": len(heldout),
        "dropped_too_long": dropped,
        "tokens_per_epoch": tokens,
        "loss_tokens_per_epoch": sum(sum(1 for x in f["labels"] if x >= 0) for f in train),
        "heldout_loss_initial": initial,
        "heldout_loss": eval_loss(trainer, heldout),
    }, callbacks
