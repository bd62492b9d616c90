"""The `rstar` section of params.yaml: rStar-Math's search, pair and selection knobs.

Field defaults are the paper's values where it states them (16 rollouts, UCT constant 2, PPM from
round 3, top-2 trajectories, 2 vs 2 sibling steps per pair, 4 rounds, temperature 0.7 in round 1
and 1.0 later, 64 more rollouts for problems the last round leaves unsolved) or, for the pair
filters, the reference code's (`train/sample_rm_data.py`: margin 0.5, edit distance 20;
`extra_rm_file.py`: up to 4 on the other side when one side has one); params.yaml holds the
embedded CPU run's smaller numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tracemill.errors import ParamsError
from tracemill.generate import GenParams
from tracemill.params import at_least, bounded, choices


@dataclass(frozen=True)
class RStarParams:
    rounds: int = at_least(1, default=4)  # rounds of self-evolution (policy r and PPM r come from round r's data)
    rollouts: int = at_least(1, default=16)  # rollouts per problem (rounds 2+)
    first_round_rollouts: int | None = at_least(1, default=None)  # round 1; None: rollouts
    escalate_rollouts: int = at_least(0, default=64)  # last round: more rollouts for a still-unsolved problem
    # Round 1's search model (the paper bootstraps with a much larger model): a folder, or a served model's
    # name with first_round_backend openai/vllm; None: the base policy (policy.model or the bootstrap).
    first_round_model: str | None = None
    first_round_backend: str | None = choices("transformers", "vllm", "openai", default=None)  # None: llm.backend
    # The model each round's policy is fine-tuned from (the paper: the same small base every round);
    # None: the base policy.
    sft_base: str | None = None
    children: int = at_least(1, default=8)  # candidate steps sampled per expansion
    max_depth: int = at_least(1, default=16)  # steps on a path; a node this deep without an answer ends its rollout
    uct_c: float = at_least(0, default=2.0)  # exploration constant of UCT
    ppm_from_round: int = at_least(
        1, default=3
    )  # from this round on, the previous round's PPM initialises Q of new nodes
    temperature: float = at_least(0, default=0.7)  # round 1 (the reference's config/sample_mcts.yaml)
    later_temperature: float = at_least(0, default=1.0)  # rounds 2+ (config/sft_sample_mcts.yaml)
    top_p: float = bounded(0, 1, lo_open=True, default=0.95)
    max_step_tokens: int = at_least(1, default=256)  # generated tokens per step; a step cut here is dropped
    max_output_chars: int = at_least(1, default=1_000)  # sandbox output shown to the policy (its tail)
    # a sampled step that is no well-formed step (formats.malformed_step: undecodable bytes, a stray brace
    # after the boxed answer) is a dead end, as a step whose code fails; neither the paper nor its code has
    # this (a 7B policy writes no such steps), a small policy sampled hot does
    drop_malformed: bool = True
    pair_margin: float = bounded(
        0, 2, default=0.5
    )  # a pair's chosen Q must exceed its rejected Q by at least this (Q is in [-1, 1])
    pairs_per_side: int = at_least(1, default=2)  # the k highest-Q and k lowest-Q siblings of a prefix are paired
    pairs_when_one: int = at_least(1, default=4)  # when one side has a single step, this many on the other side
    pair_min_edit_distance: int = at_least(
        0, default=20
    )  # characters; near-identical steps ("23" vs "28") teach nothing
    pair_path_check: bool = True  # chosen's best continuation must average a higher Q than rejected's worst
    ppm_batch_size: int = at_least(1, default=64)  # texts per PPM forward pass during the search
    # PPM rounds: also search this many of the round's problems terminal-guided (no PPM, same policy), so
    # the metrics compare the two on the same problems; 0: no comparison (the paper reports none)
    compare_terminal: int = at_least(0, default=0)
    top_k: int = at_least(1, default=2)  # correct trajectories per problem selected for SFT, by average Q
    split: str = choices("train", default="train")  # test and eval sets are never searched
    sources: list[str] = field(default_factory=list)  # problem sources to search; empty: all
    domains: list[str] = choices("math", "code", default_factory=lambda: ["math"])
    max_problems: int = at_least(1, default=1_000_000)  # per round
    # false (paper): every round searches the same problems; true: round r searches the r-th slice of
    # max_problems, so a small per-round budget still covers rounds x max_problems distinct problems
    new_problems_each_round: bool = False
    shards: int | None = at_least(1, default=None)  # None: run.shards
    q_hist_bins: int = at_least(1, default=20)  # bins of the Q histogram plot
    # The model folders each round's search reads, as dvc.yaml's rstar_* stages iterate over it
    # (`foreach: ${rstar.round_inputs}`; DVC's foreach needs a table as long as `rounds`, and string keys):
    # policy r-1 and, from ppm_from_round on, PPM r-1 (the rstar_policy@ and rstar_ppm@ outputs of round
    # r-1); a round without a PPM names its policy twice (DVC has no optional dependency). Round 1 names
    # first_round_model when that is a folder, so DVC re-runs round 1 when it changes, else the bootstrap.
    # None: not checked (a stage run outside DVC needs no table).
    round_inputs: dict[str, dict[str, str]] | None = None

    def problems(self, round_: int) -> GenParams:
        """Which problems round `round_` searches."""
        offset = (round_ - 1) * self.max_problems if self.new_problems_each_round else 0
        return GenParams(
            split=self.split, sources=self.sources, domains=self.domains, max_problems=self.max_problems, offset=offset
        )

    def check(self) -> None:
        if self.round_inputs is not None:
            problems = self._round_input_problems({str(k): dict(v) for k, v in self.round_inputs.items()})
            if problems:
                raise ParamsError(*(f"params 'rstar.round_inputs' {p}" for p in problems))

    def _round_input_problems(self, table: dict[str, dict[str, str]]) -> list[str]:
        """What makes `table` disagree with rounds, ppm_from_round and first_round_model."""
        keys = [str(r) for r in range(1, self.rounds + 1)]
        if sorted(table, key=str) != sorted(keys) or any(set(v) != {"policy", "ppm"} for v in table.values()):
            rounds = ", ".join(f'"{k}"' for k in keys)
            return [f"must map each round {rounds} (rstar.rounds = {self.rounds}) to {{policy: FOLDER, ppm: FOLDER}}"]
        problems = []
        first = self.first_round_folder()
        if first and table["1"]["policy"] != first:
            problems.append(f'"1" must name rstar.first_round_model = {first}, the folder round 1 searches with')
        for r in range(1, self.rounds + 1):
            guided, same = self.uses_ppm(r), table[str(r)]["ppm"] == table[str(r)]["policy"]
            if guided and same:
                problems.append(
                    f'"{r}": ppm must name PPM {r - 1}, not the policy (rstar.ppm_from_round = {self.ppm_from_round})'
                )
            elif not guided and not same:
                problems.append(f'"{r}": ppm must repeat the policy: round {r} searches without a PPM')
        return problems

    def first_round_folder(self) -> str | None:
        """first_round_model when it is a folder here, which round 1 then depends on; a model served
        behind first_round_backend openai is a name, not a file DVC could track."""
        return self.first_round_model if self.first_round_model and self.first_round_backend != "openai" else None

    def round_arg(self, value: str) -> int:
        """The `round=R` argument of an rstar_* stage, checked against `rounds`."""
        if not value.isdigit() or not 1 <= int(value) <= self.rounds:
            raise ParamsError(f"round={value} is outside 1..rstar.rounds ({self.rounds})")
        return int(value)

    def uses_ppm(self, round_: int) -> bool:
        return round_ > 1 and round_ >= self.ppm_from_round  # round 1 has no earlier PPM

    def rollouts_of(self, round_: int) -> int:
        return self.first_round_rollouts if round_ == 1 and self.first_round_rollouts else self.rollouts

    def temperature_of(self, round_: int) -> float:
        return self.temperature if round_ == 1 else self.later_temperature
