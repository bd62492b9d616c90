"""The process preference model: the policy backbone with a scalar head on the last token.

As rStar-Math's reference code does (`train/rm.py`, `train/train_RM.py`, `rstar_deepthink/llms/llms.py`):
the pairwise Bradley-Terry loss -log sigmoid(r_chosen - r_rejected) is on the head's raw outputs, each
pair weighted by 1/(pos x neg) of its prefix (`pair_weighting`), and
`tanh` bounds a score only where it is used (the search's Q, best-of-N); the new head starts at
normal(head_init_mean, head_init_std) and sees its input through dropout (head_dropout) in training. The
saved folder is a standard sequence-classification model (one label) plus `ppm.json`; `load_ppm(path)`
gives the scorer that MCTS and best-of-N call. `init_ppm` writes the same folder untrained, with a zero
head, for a round that extracted no pairs.
A scored text is always `prefix + step`: the same concatenation in training and in scoring.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

from tracemill.train.common import TrainError, model_dir, require_rows, split_heldout
from tracemill.train.hf import CHECKPOINTS, BucketTrainer, fingerprint, pad, run, training_args
from tracemill.train.launch import train_in_processes
from tracemill.train.params import PPMParams

PPM_FILE = "ppm.json"  # marks a PPM folder and records how its texts are built


def bradley_terry_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """The mean over pairs of -log sigmoid(chosen - rejected), each times its weight. The reference sums
    the weighted losses of a micro-batch instead: the same gradient times the micro-batch size, which a
    mean keeps out of the learning rate."""
    loss = -torch.nn.functional.logsigmoid(chosen - rejected)
    return (loss * weight if weight is not None else loss).mean()


def pair_weight(row: Mapping[str, Any], weighting: str) -> float:
    """A pair's weight in the loss: with "count", 1/(pos x neg) of the counts the search recorded in its
    metadata (how many chosen and rejected steps its prefix paired; a pair without them counts as alone,
    1); with "uniform", 1."""
    if weighting == "uniform":
        return 1.0
    meta = json.loads(row.get("metadata") or "{}")
    return 1.0 / (meta.get("pos_count", 1) * meta.get("neg_count", 1))


def raw_scores(model: PreTrainedModel, input_ids: torch.Tensor) -> torch.Tensor:
    """The head on each right-padded sequence's last real token (the model pools on the last non-pad
    token), unbounded. No attention mask: as in causal_lm_collator, right padding never reaches a real token."""
    return model(input_ids=input_ids).logits.squeeze(-1).float()


def pair_features(
    tokenizer: PreTrainedTokenizerBase, pairs: Sequence[Mapping[str, Any]], max_length: int, weighting: str
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
        features.append(
            {"pair_id": row["pair_id"], "chosen": chosen, "rejected": rejected, "weight": pair_weight(row, weighting)}
        )
    return features, dropped


def pair_collator(pad_id: int) -> Callable[[list[Mapping[str, Any]]], dict[str, torch.Tensor]]:
    """Chosen sequences, then rejected ones, in one right-padded batch: one forward pass scores both; and
    each pair's loss weight."""

    def collate(features: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        return {
            "input_ids": pad([f["chosen"] for f in features] + [f["rejected"] for f in features], pad_id),
            "weight": torch.tensor([f["weight"] for f in features], dtype=torch.float32),
        }

    return collate


class PPMTrainer(BucketTrainer):
    # The loss is a mean over the micro-batch's pairs; let the Trainer divide it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def compute_loss(
        self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        s = raw_scores(model, inputs["input_ids"])
        chosen, rejected = s.chunk(2)
        loss = bradley_terry_loss(chosen, rejected, inputs["weight"])
        return (loss, {"chosen": chosen, "rejected": rejected}) if return_outputs else loss


class PPMScorer:
    """Scores texts (`prefix + step`) in [-1, 1], higher is better: tanh of the raw head output."""

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_length: int, batch_size: int = 64
    ) -> None:
        self.model, self.tokenizer, self.max_length, self.batch_size = model.eval(), tokenizer, max_length, batch_size

    def raw_many(self, texts: Sequence[str]) -> list[float]:
        """The unbounded head output of each text, in batches of similar lengths (less padding)."""
        # Keep the end of a long text: the step being judged is there.
        ids = (
            [t[-self.max_length :] for t in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
            if texts
            else []
        )
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = [0.0] * len(ids)
        with torch.no_grad():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                values = raw_scores(
                    self.model, pad([ids[i] for i in chunk], self.tokenizer.pad_token_id).to(self.model.device)
                )
                for i, v in zip(chunk, values.tolist(), strict=True):
                    out[i] = v
        return out

    def score_many(self, texts: Sequence[str]) -> list[float]:
        return [math.tanh(v) for v in self.raw_many(texts)]

    def score(self, prefix: str, steps: Sequence[str]) -> list[float]:
        """Candidate next steps after one shared prefix."""
        return self.score_many([prefix + s for s in steps])


def load_ppm(
    path: str | Path, device: str = "cpu", dtype: torch.dtype | None = None, batch_size: int = 64
) -> PPMScorer:
    """The scorer of a PPM folder written by train_ppm, on `device` (e.g. the policy's GPU); dtype None:
    bfloat16 on a GPU, float32 on the CPU."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = model_dir(path, "PPM")
    if not (path / PPM_FILE).is_file():
        raise TrainError(f"PPM path '{path}' has no {PPM_FILE} — it is not a PPM folder; run the train_ppm stage")
    meta = json.loads((path / PPM_FILE).read_text(encoding="utf-8"))
    if dtype is None:
        dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype).to(device)
    return PPMScorer(model, AutoTokenizer.from_pretrained(path), meta["max_length"], batch_size)


def load_ppm_beside(path: str | Path, backend: Any, batch_size: int) -> PPMScorer:
    """The PPM next to a policy served by `backend`: on the transformers backend's device, else on the GPU
    when there is one (vLLM and openai hold the policy there or elsewhere), so scoring never copies
    texts' tensors across devices; bfloat16 on a GPU. The search and best-of-N both load it so."""
    device = getattr(backend, "device", None) or ("cuda" if torch.cuda.is_available() else "cpu")
    return load_ppm(path, device=str(device), batch_size=batch_size)


def heldout_metrics(scorer: PPMScorer, heldout: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """Pairwise accuracy (a tie counts half) and the Bradley-Terry loss, on raw scores, of pairs the PPM never saw."""
    if not heldout:
        return {"heldout_pairwise_accuracy": None, "heldout_loss": None}
    raw = torch.tensor(scorer.raw_many([r["prefix"] + side for r in heldout for side in (r["chosen"], r["rejected"])]))
    chosen, rejected = raw[0::2], raw[1::2]
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


def _reference_head(model: PreTrainedModel, head: set[str], params: PPMParams) -> None:
    """The reference's ValueHead: weights from normal(mean, std) (a near-zero start, so early scores are
    close and the loss starts at log 2), dropout on the head's input while training. The head of a
    sequence-classification model has no bias, which the pairwise loss would cancel anyway."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in head:
                param.normal_(params.head_init_mean, params.head_init_std)
    if params.head_dropout:
        p = params.head_dropout
        score = cast(torch.nn.Module, model.score)  # Module.__getattr__ is annotated as Tensor | Module
        score.register_forward_pre_hook(lambda m, args: (torch.nn.functional.dropout(args[0], p, m.training),))


def _write_meta(out: Path, params: PPMParams) -> None:
    (out / PPM_FILE).write_text(
        json.dumps({"max_length": params.max_length, "text": "prefix + step"}), encoding="utf-8"
    )


def init_ppm(model_path: str | Path, out_dir: str | Path, params: PPMParams) -> Path:
    """An untrained PPM that prefers no step: the policy's backbone with a zero head, so every score is
    tanh(0) = 0 and each new node starts at Q 0, as without a PPM. For a round whose search extracted no
    pairs, so the next rounds still find a PPM folder."""
    params.validate("train.rstar_ppm")
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
    params.validate("train.rstar_ppm")
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
    features, dropped = pair_features(tokenizer, pairs, params.max_length, params.pair_weighting)
    require_rows(features, "pairs", dropped, params.max_length)
    ids = [f["pair_id"] for f in features]
    train, heldout = split_heldout(features, ids, params.heldout_fraction, params.seed)
    torch.manual_seed(params.seed)  # the new head's initial weights: the Trainer seeds only after the model exists
    model, head = _ppm_model(path, tokenizer)
    _reference_head(model, head, params)
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
