"""Token ids and labels of one `sft` row: loss where a segment's `loss` flag says so (START: model text,
code, the tool-output opener and the hint), none on the prompt and the tool output.

The prompt is rendered by formats.render_prompt (the tokenizer's chat template) and tokenized on its own,
exactly as generation sees it. The completion (the segments, then the template's end of turn) is tokenized
as one text, so its tokens are the ones the model would emit; a token carries loss only when every
character it covers comes from a segment whose `loss` flag is set. Masked tokens stay in `input_ids`, so
later tokens attend to them: a tool output (or a hint trained without loss) is context, never a target.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from tracemill.errors import TracemillError
from tracemill.formats import IM_END, FormatParams, render_prompt

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100  # the label value torch's cross entropy (and every HF loss) skips
# Stands in for the assistant's text when the template is rendered to find its end-of-turn suffix.
_SENTINEL = "\x00TRACEMILL-SENTINEL\x00"


class LabelError(TracemillError):
    """A tokenizer cannot render or tokenize a training example."""


def turn_end(tokenizer: PreTrainedTokenizerBase, question: str) -> str:
    """What the template writes after the assistant's text (ChatML: '<|im_end|>\\n'); trained on, so the model stops."""
    if not tokenizer.chat_template:
        return f"{IM_END}\n"  # the ChatML that formats.render_prompt writes by hand for such a tokenizer
    rendered = cast(  # tokenize=False: the text (transformers annotates every return type at once)
        str,
        tokenizer.apply_chat_template(
            [{"role": "user", "content": question}, {"role": "assistant", "content": _SENTINEL}], tokenize=False
        ),
    )
    return rendered[rendered.rindex(_SENTINEL) + len(_SENTINEL) :]


def build_labels(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    segments: Sequence[Mapping[str, Any]],
    *,
    style: str = "tir",
    fmt: FormatParams | None = None,
) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one example; labels are IGNORE_INDEX on the prompt and on segments without loss.

    `prompt` is the question; formats.render_prompt wraps it in the system prompt of `style`."""
    if not getattr(tokenizer, "is_fast", False):
        raise LabelError(
            f"tokenizer '{tokenizer.name_or_path}' is not a fast tokenizer; labels need its offset mapping"
        )
    prompt_ids = tokenizer(render_prompt(prompt, tokenizer, fmt, style), add_special_tokens=False)["input_ids"]
    texts = [str(seg["text"]) for seg in segments] + [turn_end(tokenizer, prompt)]
    char_loss = [bool(seg["loss"]) for seg in segments for _ in str(seg["text"])] + [True] * len(texts[-1])
    encoded = tokenizer("".join(texts), add_special_tokens=False, return_offsets_mapping=True)
    labels = [
        token if start < end and all(char_loss[start:end]) else IGNORE_INDEX
        for token, (start, end) in zip(encoded["input_ids"], encoded["offset_mapping"])
    ]
    return prompt_ids + encoded["input_ids"], [IGNORE_INDEX] * len(prompt_ids) + labels
