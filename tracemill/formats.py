"""The text formats every stage reads and writes, defined once (params section `format`).

- Prompts are ChatML (the Qwen2.5 template): a system prompt per style and the question as the
  user turn. `render_prompt` uses a tokenizer's own chat template when one is given, so a real
  checkpoint gets its exact template; without one it writes the same ChatML text by hand.
- Tool-integrated reasoning (START): free text, code in a ```python block, the sandbox's result in
  a ```output block, the final answer in \\boxed{}. Generation stops at the output block's start
  (`tool_stop`), the caller runs the last code block and appends `output_block(result)`.
- Steps (rStar-Math): one natural-language step, optionally its code and output, then the step
  delimiter; a step whose text holds a boxed answer is terminal.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from tracemill.errors import ParamsError, TracemillError
from tracemill.records import segment

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

STYLES = ("tir", "steps", "cot", "coat")

# ChatML as used by the Qwen2.5 family, so the bootstrap policy and a real checkpoint read the same prompts.
IM_START, IM_END, EOS = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
# Satori's meta-actions: each step of a Chain-of-Action-Thought trace opens with one.
META_ACTIONS = ("<|continue|>", "<|reflect|>", "<|explore|>")
SPECIAL_TOKENS = (EOS, IM_START, IM_END, *META_ACTIONS)


@dataclass(frozen=True)
class FormatParams:
    # Qwen2.5-Math's tool-integrated system prompt, so a real checkpoint sees the prompt it was tuned on.
    system_prompt: str = (
        "Please integrate natural language reasoning with programs to solve the problem above, "
        "and put your final answer within \\boxed{}."
    )
    step_system_prompt: str = (
        "Solve the problem in steps. Each step is one sentence and its python code, ended by "
        "<end_of_step>. Put the final answer within \\boxed{}."
    )
    cot_system_prompt: str = "Please reason step by step, and put your final answer within \\boxed{}."
    # Satori's Chain-of-Action-Thought: every step opens with a meta-action token.
    coat_system_prompt: str = (
        "Solve the problem in steps. Open each step with <|continue|>, check a doubtful step with <|reflect|>, "
        "try another way with <|explore|>. Put the final answer within \\boxed{}."
    )
    code_start: str = "```python"
    code_end: str = "```"
    output_start: str = "```output"
    output_end: str = "```"
    step_delimiter: str = "<end_of_step>"
    # Stop at the output block's start: the model has closed its code, the sandbox writes the output.
    tool_stop: tuple[str, ...] = ("```output",)
    hint_markers: tuple[str, ...] = ("Wait", "Alternatively")
    boxed: str = "\\boxed"

    def check(self) -> None:
        for name in ("code_start", "code_end", "output_start", "output_end", "step_delimiter", "boxed"):
            if not getattr(self, name):
                raise ParamsError(f"params 'format.{name}' must not be empty")
        if self.code_start == self.output_start:
            raise ParamsError("params 'format.code_start' and 'format.output_start' must differ")

    @property
    def step_stop(self) -> list[str]:
        """Stop strings of step-wise generation: the end of a step, or a code block to execute."""
        return [*self.tool_stop, self.step_delimiter]

    def system_for(self, style: str) -> str:
        if style not in STYLES:
            raise TracemillError(f"prompt style '{style}' is not one of {', '.join(STYLES)}")
        return {
            "tir": self.system_prompt,
            "steps": self.step_system_prompt,
            "cot": self.cot_system_prompt,
            "coat": self.coat_system_prompt,
        }[style]


@dataclass(frozen=True)
class Step:
    """One rStar-Math step: a sentence, optionally the code it runs and that code's output."""

    text: str
    code: str | None = None
    output: str | None = None


# --- prompts ---------------------------------------------------------------------------------


def messages(question: str, fmt: FormatParams, style: str = "tir") -> list[dict[str, str]]:
    return [{"role": "system", "content": fmt.system_for(style)}, {"role": "user", "content": question}]


def render_prompt(
    question: str, tokenizer: PreTrainedTokenizerBase | None = None, fmt: FormatParams | None = None, style: str = "tir"
) -> str:
    """The prompt text up to and including the assistant turn's opening, ready for generation."""
    fmt = fmt or FormatParams()
    chat = messages(question, fmt, style)
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        # tokenize=False: the text, which transformers' annotation (every return type at once) does not say
        return cast(str, tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))
    turns = "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in chat)
    return f"{turns}{IM_START}assistant\n"


# --- tool-integrated reasoning ---------------------------------------------------------------


def code_block(code: str, fmt: FormatParams) -> str:
    return f"{fmt.code_start}\n{code.rstrip()}\n{fmt.code_end}\n"


def output_block(output: str, fmt: FormatParams) -> str:
    return f"{fmt.output_start}\n{output.rstrip()}\n{fmt.output_end}\n"


def output_opener(fmt: FormatParams) -> str:
    """The line that opens an output block. The model writes it to hand control to the interpreter, so
    it is the model's text (with loss) wherever a row is split into segments."""
    return f"{fmt.output_start}\n"


def output_segments(output: str, fmt: FormatParams) -> list[dict[str, Any]]:
    """`output_block(output)` as segments: its opener is the model's (`output_opener`); the rest is the
    interpreter's."""
    block = output_block(output, fmt)
    opener = output_opener(fmt)
    return [segment("model", opener), segment("output", block[len(opener) :])]


def _block_re(start: str, end: str) -> re.Pattern[str]:
    return re.compile(re.escape(start) + r"\n(.*?)\n?" + re.escape(end) + r"\n?", re.S)


def code_blocks(text: str, fmt: FormatParams) -> list[str]:
    """The code of every ```python block in `text`, in order."""
    return [m.group(1) for m in _block_re(fmt.code_start, fmt.code_end).finditer(text)]


def ran_cells(text: str, fmt: FormatParams) -> tuple[str, ...]:
    """The code of every ```python block in `text` that an output block follows (nothing but whitespace
    between): the cells the interpreter ran, in order. A restart state's prefix is re-run from these, so
    the code the model goes on to write finds the variables that prefix defined."""
    outputs = {m.start() for m in _block_re(fmt.output_start, fmt.output_end).finditer(text)}
    cells = []
    for m in _block_re(fmt.code_start, fmt.code_end).finditer(text):
        gap = len(text[m.end() :]) - len(text[m.end() :].lstrip())
        if m.end() + gap in outputs:
            cells.append(m.group(1))
    return tuple(cells)


def pending_code(text: str, fmt: FormatParams) -> str | None:
    """The code to execute when generation stopped at a tool stop: the last code block, if the text
    ends with it (optionally followed by the stop string itself); else None."""
    tail = text.rstrip()
    for stop in fmt.tool_stop:
        if tail.endswith(stop):
            tail = tail[: -len(stop)].rstrip()
    if not tail.endswith(fmt.code_end):
        return None
    matches = list(_block_re(fmt.code_start, fmt.code_end).finditer(tail))
    if not matches or matches[-1].end() < len(tail.rstrip()):
        return None
    return matches[-1].group(1)


def strip_tool_stop(text: str, fmt: FormatParams) -> str:
    """`text` without a trailing tool stop string (backends differ on whether they keep it)."""
    for stop in fmt.tool_stop:
        if text.endswith(stop):
            return text[: -len(stop)]
    return text


def split_tir(
    text: str, fmt: FormatParams, hints: Sequence[str] = (), blocks: Sequence[str] = ("code", "output")
) -> list[dict[str, Any]]:
    """A TIR response as `records.segment`s: code blocks -> code, output blocks -> output (each kind
    only when in `blocks`; else it stays model text), each exact occurrence of one of `hints` (text a
    stage inserted) -> hint, everything else -> model. An output block's opener is the model's, as in
    `output_segments`: the model writes ```output to hand control to the interpreter, so it is trained."""
    delimiters = {"code": (fmt.code_start, fmt.code_end), "output": (fmt.output_start, fmt.output_end)}
    pieces = [(m.start(), m.end(), kind) for kind in blocks for m in _block_re(*delimiters[kind]).finditer(text)]
    for hint in filter(None, hints):
        pieces += [(m.start(), m.end(), "hint") for m in re.finditer(re.escape(hint), text)]
    segments: list[dict[str, Any]] = []
    pos = 0
    for start, end, kind in sorted(pieces):
        if start < pos:  # a hint quoted inside a code or output block stays part of that block
            continue
        opener = output_opener(fmt) if kind == "output" else ""
        if start > pos or opener:
            segments.append(segment("model", text[pos:start] + opener))
        segments.append(segment(kind, text[start + len(opener) : end]))
        pos = end
    if pos < len(text):
        segments.append(segment("model", text[pos:]))
    return segments


def has_hint_marker(text: str, fmt: FormatParams) -> bool:
    return any(re.search(rf"\b{re.escape(marker)}\b", text) for marker in fmt.hint_markers)


# --- boxed answers ---------------------------------------------------------------------------


def boxed(answer: str, fmt: FormatParams) -> str:
    return f"{fmt.boxed}{{{answer}}}"


def _last_boxed_span(text: str, fmt: FormatParams) -> tuple[int, int] | None:
    """(start, end) of the content of the last \\boxed{...} in `text` (end: its closing brace), braces
    balanced; None when there is none."""
    start = text.rfind(fmt.boxed + "{")
    if start < 0:
        return None
    pos = start + len(fmt.boxed) + 1
    depth = 1
    for i in range(pos, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return pos, i
    return None


def last_boxed(text: str, fmt: FormatParams) -> str | None:
    """The content of the last \\boxed{...} in `text`, braces balanced; None when there is none."""
    span = _last_boxed_span(text, fmt)
    return None if span is None else text[span[0] : span[1]].strip()


# --- rStar-Math steps ------------------------------------------------------------------------


def step_segments(step: Step, fmt: FormatParams) -> list[dict[str, Any]]:
    """One step as `records.segment`s, in render order: the sentence and the delimiter are model text
    and the code block code (all with loss); the output block is the sandbox's, so it carries none,
    except its opener, which the policy writes to hand over to the sandbox (`output_segments`).
    After an output block the search appends the delimiter itself; it stays a target, so the policy
    learns the one step layout that its prompts and the PPM's texts show."""
    segments = [segment("model", step.text.rstrip() + "\n")]
    if step.code is not None:
        segments.append(segment("code", code_block(step.code, fmt)))
    if step.output is not None:
        segments += output_segments(step.output, fmt)
    return [*segments, segment("model", f"{fmt.step_delimiter}\n")]


def render_step(step: Step, fmt: FormatParams) -> str:
    return "".join(s["text"] for s in step_segments(step, fmt))


def render_steps(steps: Sequence[Step], fmt: FormatParams) -> str:
    return "".join(render_step(s, fmt) for s in steps)


def parse_step(text: str, fmt: FormatParams) -> Step:
    """One step's text (with or without its delimiter) back into a Step."""
    body = text.replace(fmt.step_delimiter, "").strip("\n")
    code_m = _block_re(fmt.code_start, fmt.code_end).search(body)
    out_m = _block_re(fmt.output_start, fmt.output_end).search(body)
    cut = min(m.start() for m in (code_m, out_m) if m) if (code_m or out_m) else len(body)
    return Step(
        text=body[:cut].strip(),
        code=code_m.group(1) if code_m else None,
        output=out_m.group(1) if out_m else None,
    )


def parse_steps(text: str, fmt: FormatParams) -> list[Step]:
    """A step-wise response into its Steps; an unfinished last step (no delimiter) is kept."""
    parts = text.split(fmt.step_delimiter)
    return [parse_step(p, fmt) for p in parts if p.strip()]


def is_terminal(step: Step, fmt: FormatParams) -> bool:
    return last_boxed(step.text, fmt) is not None


def malformed_step(step: Step, fmt: FormatParams) -> str | None:
    """Why a sampled step is not a well-formed step, or None. `undecodable`: its text or code holds
    U+FFFD, which a sample has only when its tokens are no valid UTF-8 (a small policy sampled hot
    writes them). `after_answer`: in a step that gives the answer, a stray brace follows the boxed
    answer ("The answer is \\boxed{284}.4}."), the tail of a second, broken answer; words after it
    ("\\boxed{5} apples.") are fine."""
    if "\ufffd" in step.text or "\ufffd" in (step.code or ""):
        return "undecodable"
    span = _last_boxed_span(step.text, fmt)
    if span is not None and any(brace in step.text[span[1] + 1 :] for brace in "{}"):
        return "after_answer"
    return None
