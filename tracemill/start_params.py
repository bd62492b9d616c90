"""START's params (section `start`): which problems each generating stage reads, the hint library,
the filters, the selection rule, START's modify step and whether the hint trains. Apart from
tracemill/start.py, so a stage that only reads them (sft) does not depend on START's selection code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tracemill import filters
from tracemill.generate import GenParams
from tracemill.hints import HintParams
from tracemill.params import at_least, choices

RULES = ("greedy_wrong_hint_right", "hint_right")
# START's "modify" step for the answer a hinted trace gave before its hint (the hint at the stop comes
# after a conclusion): keep it, drop the sentence that boxes it, unbox it into a plain claim, or keep the
# whole attempt before the hint as context without loss (mask).
MODIFY = ("keep", "drop", "unbox", "mask")


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
    decontaminate_splits: list[str] = choices(
        "eval", "test", default_factory=lambda: ["test", "eval"]
    )  # eval sets never leak in
