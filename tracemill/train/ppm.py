"""The process preference model: the policy backbone with a scalar head, score = tanh(head(last token)).

Trained on `pairs` rows with the pairwise Bradley-Terry loss -log sigmoid(r_chosen - r_rejected) on the
tanh-bounded scores, as rStar-Math does. The saved folder is a standard sequence-classification model
(one label) plus `ppm.json`; `load_ppm(path)` gives the scorer that MCTS and best-of-N call. `init_ppm`
writes the same folder untrained, with a zero head, for a round that extracted no pairs.
A scored text is always `prefix + step`: the same concatenation in training and in scoring.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

from tracemill.train.common import TrainError, model_dir, require_rows, split_heldout
from tracemill.train.hf import CHECKPOINTS, BucketTrainer, fingerprint, pad, run, training_args
from tracemill.train.launch import train_in_processes
from tracemill.train.params import PPMParams

PPM_FILE = "ppm.json"  # marks a PPM folder and records how its texts are built


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    return -torch.nn.functional.logsigmoid(chosen - rejected).mean()


def scores(model: PreTrainedModel, input_ids: torch.Tensor) -> torch.Tensor:
    """tanh of the head on each right-padded sequence's last real token (the model pools on the last non-pad
    token). No attention mask: as in causal_lm_collator, right padding never reaches a real token."""
    return torch.tanh(model(input_ids=input_ids).logits.squeeze(-1).float())


def pair_features(
    tokenizer: PreTrainedTokenizerBase, pairs: Sequence[Mapping[str, Any]], max_length: int
) -> tuple[list[dict[str, Any]], int]:
    """(features, dropped): a pair is dropped when either side is longer than max_length."""
    features, dropped = [], 0
    for row in pairs:
        chosen, rejected = tokenizer(
            [row["prefix"] + row["chosen"], row["prefix"] + row["rejected"]], add_special_tokens=False
        )["input_ids"]
        if max(len(chosen), len(rejected)) > max_length:
            dropped += 1
            continue
        features.append({"pair_id": row["pair_id"], "chosen": chosen, "rejected": rejected})
    return features, dropped


def pair_collator(pad_id: int) -> Callable[[list[Mapping[str, Any]]], dict[str, torch.Tensor]]:
    """Chosen sequences, then rejected ones, in one right-padded batch: one forward pass scores both."""

    def collate(features: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        return {"input_ids": pad([f["chosen"] for f in features] + [f["rejected"] for f in features], pad_id)}

    return collate


class PPMTrainer(BucketTrainer):
    # The loss is a mean over the micro-batch's pairs; let the Trainer divide it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def compute_loss(self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        s = scores(model, inputs["input_ids"])
        chosen, rejected = s.chunk(2)
        loss = bradley_terry_loss(chosen, rejected)
        return (loss, {"chosen": chosen, "rejected": rejected}) if return_outputs else loss


class PPMScorer:
    """Scores candidate next steps after a shared prefix; each score is in [-1, 1], higher is better."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        self.model, self.tokenizer, self.max_length = model.eval(), tokenizer, max_length

    def score(self, prefix: str, steps: Sequence[str]) -> list[float]:
        if not steps:
            return []
        # Keep the end of a long text: the step being judged is there.
        ids = [t[-self.max_length:] for t in self.tokenizer([prefix + s for s in steps], add_special_tokens=False)["input_ids"]]
        with torch.no_grad():
            out = scores(self.model, pad(ids, self.tokenizer.pad_token_id).to(self.model.device))
        return out.tolist()


def load_ppm(path: str | Path, device: str = "cpu") -> PPMScorer:
    """The scorer of a PPM folder written by train_ppm."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = model_dir(path, "PPM")
    if not (path / PPM_FILE).is_file():
        raise TrainError(f"PPM path '{path}' has no {PPM_FILE} — it is not a PPM folder; run the train_ppm stage")
    meta = json.loads((path / PPM_FILE).read_text(encoding="utf-8"))
    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).to(device)
    return PPMScorer(model, AutoTokenizer.from_pretrained(path), meta["max_length"])


def heldout_metrics(scorer: PPMScorer, heldout: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """Pairwise accuracy (a tie counts half) and the Bradley-Terry loss on pairs the PPM never saw."""
    if not heldout:
        return {"heldout_pairwise_accuracy": None, "heldout_loss": None}
    pairs = torch.tensor([scorer.score(r["prefix"], [r["chosen"], r["rejected"]]) for r in heldout])
    chosen, rejected = pairs[:, 0], pairs[:, 1]
    accuracy = ((chosen > rejected).float() + 0.5 * (chosen == rejected).float()).mean()
    return {"heldout_pairwise_accuracy": float(accuracy), "heldout_loss": float(bradley_terry_loss(chosen, rejected))}


def _tokenizer(path: Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        raise TrainError(f"tokenizer at '{path}' has no pad token — the PPM pools on the last non-pad token")
    return tokenizer


def _ppm_model(path: Path, tokenizer: PreTrainedTokenizerBase) -> tuple[PreTrainedModel, set[str]]:
    """The policy's backbone with a new one-output head (rStar-Math replaces the LM head), and the names
    of the head's parameters."""
    from transformers import AutoModelForSequenceClassification

    model, info = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, dtype=torch.float32, output_loading_info=True
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, set(info["missing_keys"])


def _write_meta(out: Path, params: PPMParams) -> None:
    (out / PPM_FILE).write_text(json.dumps({"max_length": params.max_length, "text": "prefix + step"}), encoding="utf-8")


def init_ppm(model_path: str | Path, out_dir: str | Path, params: PPMParams) -> Path:
    """An untrained PPM that prefers no step: the policy's backbone with a zero head, so every score is
    tanh(0) = 0 and each new node starts at Q 0, as without a PPM. For a round whose search extracted no
    pairs, so the next rounds still find a PPM folder."""
    params.validate("train.ppm")
    path = model_dir(model_path)
    tokenizer = _tokenizer(path)
    model, head = _ppm_model(path, tokenizer)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in head:
                param.zero_()
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    _write_meta(out, params)
    return out


def train_ppm(
    model_path: str | Path,
    pairs: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    params: PPMParams,
    resume: bool = True,
    callbacks: Sequence[TrainerCallback] = (),
) -> dict[str, Any]:
    """Train a PPM from the policy at model_path on `pairs` rows; save it to out_dir and return metrics.
    With params.processes > 1 the training runs data-parallel in that many processes (train/launch.py);
    the held-out pairs are scored here, from the saved folder."""
    params.validate("train.ppm")
    model_dir(model_path)
    metrics, heldout_ids = train_in_processes(
        _train_ppm, (model_path, list(pairs), out_dir, params, resume), callbacks, params.processes, params.device
    )
    out = Path(out_dir)
    _write_meta(out, params)
    by_id = {r["pair_id"]: r for r in pairs}
    return metrics | heldout_metrics(load_ppm(out), [by_id[i] for i in heldout_ids])


def _train_ppm(
    model_path: str | Path,
    pairs: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    params: PPMParams,
    resume: bool,
    callbacks: list[TrainerCallback],
) -> tuple[tuple[dict[str, Any], list[str]], list[TrainerCallback]]:
    path = model_dir(model_path)
    tokenizer = _tokenizer(path)
    features, dropped = pair_features(tokenizer, pairs, params.max_length)
    require_rows(features, "pairs", dropped, params.max_length)
    ids = [f["pair_id"] for f in features]
    train, heldout = split_heldout(features, ids, params.heldout_fraction, params.seed)
    torch.manual_seed(params.seed)  # the new head's initial weights: the Trainer seeds only after the model exists
    model, _ = _ppm_model(path, tokenizer)
    out = Path(out_dir)
    trainer = PPMTrainer(
        model=model,
        args=training_args(params, out / CHECKPOINTS),
        train_dataset=train,
        data_collator=pair_collator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=callbacks,
        lengths=[max(len(f["chosen"]), len(f["rejected"])) for f in train],
        bucket_window=params.bucket_window,
    )
    metrics = run(trainer, tokenizer, out, fingerprint(path, ids, params), resume)
    counts = {"pairs": len(train), "heldout_pairs": len(heldout), "dropped_too_long": dropped}
    return (metrics | counts, [f["pair_id"] for f in heldout]), callbacks
