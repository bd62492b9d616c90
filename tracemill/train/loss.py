"""The LM head and cross-entropy as one step, without the full-vocabulary fp32 logits.

A plain head materialises logits for every scored position over the whole vocabulary and the loss upcasts
them to fp32: for Qwen2.5's 151,936 tokens that is 0.6 MB per position, 15.7 GiB for one 64 x 400-token
micro-batch, more than the model and its activations. `linear_cross_entropy` gives the same sum and the same
gradients while holding the logits of at most `chunk_tokens` positions at a time: Liger Kernel's fused
kernel on CUDA when it is installed (it never forms the logits in HBM), else a chunk loop in torch whose
chunks are recomputed in the backward pass (activation checkpointing), so only the inputs are kept.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from tracemill.train.labels import IGNORE_INDEX


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk_tokens: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum over rows of -log softmax(hidden @ weight.T + bias)[target], in fp32; IGNORE_INDEX targets add 0.

    hidden: (tokens, hidden), targets: (tokens,). chunk_tokens 0 is the plain head (every row's fp32 logits
    at once); above 0, the logits of chunk_tokens rows at a time (or none, with Liger on CUDA).
    """
    if chunk_tokens == 0:
        return _chunk_loss(hidden, weight, bias, targets)
    fused = _liger_loss() if hidden.is_cuda else None
    if fused is not None:
        return fused(weight, hidden, targets, bias)
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[0], chunk_tokens):
        rows = slice(start, start + chunk_tokens)
        total = total + checkpoint(_chunk_loss, hidden[rows], weight, bias, targets[rows], use_reentrant=False)
    return total


def _chunk_loss(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor
) -> torch.Tensor:
    # The matmul runs in the model's (or autocast's) dtype; the softmax in fp32, as the model's own loss does.
    logits = F.linear(hidden, weight, bias).float()
    return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")


@functools.cache
def _liger_loss() -> Any:
    """Liger Kernel's fused linear cross-entropy (sum), or None where it is not installed (it needs Triton)."""
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except ImportError:
        return None
    return LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE_INDEX, reduction="sum")
