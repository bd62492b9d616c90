"""START's params (section `start`): which problems each generating stage reads, the hint library,
the filters, the selection rule, START's modify step and whether the hint trains. Apart from
tracemill/start.py, so a stage that only reads them (sft) depends on no generation code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tracemill import filters
from tracemill.hints import HintParams
from tracemill.params import at_least, bounded, choices

RULES = ("greedy_wrong_hint_right", "hint_right")
# START's "modify" step for the answer a hinted trace gave before its hint (the hint at the stop comes
# after a conclusion): keep it, drop the sentence that boxes it, or unbox it into a plain claim.
MODIFY = ("keep", "drop", "unbox")


@dataclass(frozen=True)
class GenParams:
    """Which problems a generating stage reads and how much it may write per trace."""

    split: str = choices("train", "eval", "test", default="train")
    sources: list[str] = field(default_factory=list)  # problem sources to use; empty: all
    domains: list[str] = choices("math", "code", default_factory=lambda: ["math"])
    max_problems: int = at_least(0, default=64)
    offset: int = at_least(0, default=0)  # skip this many problems of the id-ordered list first (disjoint slices for different stages)
    interleave_domains: bool = False  # take the domains in turn (each in id order), so a small domain is not crowded out by a large one
    max_tokens_per_turn: int = at_least(1, default=256)
    max_tokens_total: int = at_least(1, default=768)
    temperature: float = at_least(0, default=0.0)
    top_p: float = bounded(0, 1, lo_open=True, default=1.0)
    k: int = at_least(1, default=1)  # samples per problem (RFT: START's k=16)


@dataclass(frozen=True)
class SelectParams:
    rule: str = choices(*RULES, default="greedy_wrong_hint_right")  # START's Hint-RFT rule
    max_per_problem: int = at_least(1, default=1)  # START keeps at most one trace per problem
    merge_seed: bool = True  # D_start also holds D_seed (START trains on both)


def _default_rft() -> GenParams:
    return GenParams(k=16, temperature=0.6, top_p=0.95)  # START's RFT sampling


@dataclass(frozen=True)
class StartParams:
    hint_infer: GenParams = field(default_factory=GenParams)
    rft: GenParams = field(default_factory=_default_rft)
    hints: HintParams = field(default_factory=HintParams)
    filters: filters.FilterParams = field(default_factory=filters.FilterParams)
    select: SelectParams = field(default_factory=SelectParams)
    hint_loss: bool = True  # START: the hint is trained on, so the model learns to say it and call the tool unprompted
    modify: str = choices(*MODIFY, default="unbox")  # the answer boxed before a hint (see modify_premature)
    decontaminate_splits: list[str] = choices("eval", "test", default_factory=lambda: ["test", "eval"])  # eval sets never leak in
