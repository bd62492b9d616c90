"""The manual's run figures, rendered from what the pipeline wrote: `metrics/*.json`, the params the
run used (`dvc.lock`) and `plots/*.csv` — so neither the README nor a docs page can drift from the
committed run.

A markdown file of `DOC_FILES` (README.md and the docs pages that show measures) holds each generated
block between `<!-- tracemill:begin NAME -->` and `<!-- tracemill:end NAME -->`; a block may sit in
several of them. `tracemill readme` prints the blocks, `--write` rewrites them in place in every file
and `--check` exits non-zero when one differs from what the metrics give or sits in no file
(tests/test_readme.py runs the check). A figure a stage has not written renders as "not run", never as
a crash or a stale number.

The spread over seeds (`make seeds`) lives here too: `seed_overrides` are the `dvc exp run -S`
values of one seed, `seed_runs` picks each seed's experiment out of `dvc exp show --json`, and
`aggregate_seeds` writes `metrics/seeds.json` (mean, std, min, max per model and metric).
"""

from __future__ import annotations

import dataclasses
import re
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from itertools import takewhile
from pathlib import Path
from typing import Any

from tracemill.errors import TracemillError
from tracemill.runfiles import leaves, read_lock, read_metrics, read_plot

NOT_RUN = "not run"
BEGIN = "<!-- tracemill:begin {} -->"
END = "<!-- tracemill:end {} -->"
MARKER = re.compile(r"<!-- tracemill:(begin|end) ([\w-]+) -->")

# How the README names each model of `evaluate.models`; a name not listed here is shown as is.
MODEL_LABELS = {
    "start0": "START-0",
    "start": "START",
    "satori_ft": "Satori format-tuned (COAT)",
    "satori_rl": "Satori after RL",
    "satori_rl_r2": "Satori after RL, round 2",
    "satori_distill": "Satori distilled student",
}
RSTAR = re.compile(r"rstar_r(\d+)$")


class ReportError(TracemillError):
    """README markers that do not pair up, or a seed experiment that cannot be found."""


class Missing(Exception):
    """A figure the run has not written; a sentence that needs it renders as 'not run: <what>'."""


# --- the run: metrics, params, plots --------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """What one pipeline run left behind. `metrics` and `plots` are keyed by file stem
    (`metrics/evaluate.json` -> "evaluate"); `params` is nested, as the stages read them."""

    metrics: Mapping[str, Any]
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    plots: Mapping[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)

    def get(self, name: str, *path: str) -> Any:
        """metrics/<name>.json at `path`, or None when the file or the key is missing."""
        return _dig(self.metrics.get(name), path)

    def need(self, name: str, *path: str) -> Any:
        value = self.get(name, *path)
        if value is None:
            where = f"metrics/{name}.json"
            raise Missing(f"`{where}` has no `{'.'.join(path)}`" if name in self.metrics else f"`{where}` is missing")
        return value

    def param(self, dotted: str) -> Any:
        return _dig(self.params, dotted.split("."))

    def need_plot(self, name: str) -> list[dict[str, Any]]:
        if not self.plots.get(name):
            raise Missing(f"`plots/{name}.csv` is missing")
        return self.plots[name]


def _dig(obj: Any, path: Iterable[str]) -> Any:
    for key in path:
        if not isinstance(obj, Mapping) or key not in obj:
            return None
        obj = obj[key]
    return obj


def load_run(root: Path) -> Run:
    """The run under `root`: root/metrics/*.json, the params recorded in root/dvc.lock, root/plots/*.csv."""
    plots = {p.stem: read_plot(p) for p in sorted((root / "plots").glob("*.csv"))}
    return Run(read_metrics(root / "metrics"), lock_params(read_lock(root / "dvc.lock")), plots)


def lock_params(lock: Mapping[str, Any]) -> dict[str, Any]:
    """Every params.yaml value some stage of dvc.lock ran with, nested (`train.sft_start0` -> train/sft_start0)."""
    params: dict[str, Any] = {}
    for stage in (lock.get("stages") or {}).values():
        for dotted, value in ((stage.get("params") or {}).get("params.yaml") or {}).items():
            *parents, last = dotted.split(".")
            node = params
            for key in parents:
                node = node.setdefault(key, {})
            node[last] = value
    return params


# --- formatting -----------------------------------------------------------------------------------


def fixed(value: Any, places: int = 3) -> str:
    """A number rounded half up (0.8125 -> 0.813, as a reader rounds), or 'not run'."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return NOT_RUN
    return str(Decimal(repr(float(value))).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def percent(value: float) -> str:
    return f"{fixed(value * 100, 0)}%"


def thousands(value: float) -> str:
    """491136 -> 491k, 22351 -> 22.4k."""
    return f"{fixed(value / 1000, 0 if value >= 100_000 else 1)}k"


def compare(a: float, b: float, places: int = 3) -> str:
    """How `a` stands against `b` at the precision the README prints."""
    x, y = Decimal(fixed(a, places)), Decimal(fixed(b, places))
    return "above" if x > y else "below" if x < y else "level with"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _bold_best(rows: list[list[str]], columns: Iterable[int]) -> None:
    """Bold the highest value of each column (every one of them on a tie)."""
    for c in columns:
        numbers = [Decimal(r[c]) for r in rows if r[c] != NOT_RUN]
        for r in rows:
            if numbers and r[c] != NOT_RUN and Decimal(r[c]) == max(numbers):
                r[c] = f"**{r[c]}**"


def sentences(*parts: Callable[[], str]) -> str:
    """Each part rendered, or 'not run: <what is missing>' in its place."""
    out = []
    for part in parts:
        try:
            out.append(part())
        except Missing as missing:
            out.append(f"*{NOT_RUN}: {missing}.*")
    return "\n".join(out)


# --- the models of `evaluate` ---------------------------------------------------------------------


def model_names(run: Run, found: Iterable[str]) -> list[str]:
    """The models in the order of `evaluate.models` in params, then any others the metrics hold."""
    listed = [m["name"] for m in run.param("evaluate.models") or [] if isinstance(m, Mapping) and "name" in m]
    return listed + sorted(set(found) - set(listed))


def model_label(name: str, run: Run | None = None) -> str:
    """The README's name for a model; with a run, the size of the data it was trained on where that helps."""
    if match := RSTAR.match(name):
        return f"rStar-Math round-{match[1]} policy"
    if name == "base":  # policy.model: a real checkpoint instead of the embedded policy
        model = run.param("policy.model") if run else None
        return f"base ({Path(model).name if model else 'bootstrap'})"
    label = MODEL_LABELS.get(name, name)
    if run is None:
        return label
    detail = {"start0": ("D_seed", run.get("d_seed", "size")), "start": ("D_start", run.get("d_start", "size"))}.get(
        name
    )
    if detail and detail[1] is not None:
        return f"{label} ({detail[0]}, {detail[1]} rows)"
    if (
        name == "satori_distill"
        and run.param("satori.distill.student") is None
        and run.param("satori.distill.student_layers")
    ):
        layers = run.param("satori.distill.student_layers")
        return f"{label} ({layers} layer{'s' if layers != 1 else ''})"
    return label


def _rounds(run: Run) -> list[int]:
    return sorted(
        int(name.removeprefix("rstar_search_round"))
        for name in run.metrics
        if re.fullmatch(r"rstar_search_round\d+", name)
    )


# --- the blocks -----------------------------------------------------------------------------------


def bootstrap_block(run: Run) -> str:
    def measured() -> str:
        steps = run.param("bootstrap.max_steps")
        size = (
            f"{thousands(run.need('bootstrap', 'parameters'))} parameters, "
            f"{fixed(run.need('bootstrap', 'model_bytes') / 1e6, 1)} MB folder"
        )
        return (
            f"`metrics/bootstrap.json`: {f'{steps:,} steps, ' if steps else ''}{size}; training took "
            f"{fixed(run.need('bootstrap', 'train_seconds'), 0)} s "
            f"({thousands(run.need('bootstrap', 'train_tokens_per_s'))} tokens/s) on the machine that ran it."
        )

    def levels() -> str:
        rows = [
            ("pass@1 without tools", run.get("bootstrap", "no_tools")),
            ("pass@1 with tools (sandbox runs its code)", run.get("bootstrap", "tools")),
        ]
        keys = sorted({level for _, m in rows for level in (m or {}).get("per_level", {})}, key=int)
        problems = run.need("bootstrap", "eval_problems")
        return "\n" + table(
            [f"held-out, greedy ({problems} problems)", *(f"level {k}" for k in keys), "all"],
            [
                [what, *(fixed(_dig(m, ["per_level", k]), 2) for k in keys), f"**{fixed(_dig(m, ['pass@1']), 2)}**"]
                for what, m in rows
            ],
        )

    return sentences(measured, levels)


def evaluation_block(run: Run) -> str:
    def setup() -> str:
        rounds = _rounds(run)
        searched = sorted({run.need(f"rstar_search_round{r}", "problems") for r in rounds})
        new = "new " if run.param("rstar.new_problems_each_round") else ""
        per_round = (
            f"{searched[0]} {new}problems each"
            if len(searched) == 1
            else f"{'/'.join(map(str, searched))} {new}problems"
        )
        return (
            f"On the embedded run ({run.need('hint_infer', 'problems')} hint-infer problems → D_seed "
            f"{run.need('d_seed', 'size')}, RFT k={run.need('rft', 'k')} on {run.need('rft', 'problems')} → D_start "
            f"{run.need('d_start', 'size')}, {len(rounds)} MCTS rounds of {per_round}, COAT {run.need('coat', 'rows')} "
            f"traces, {run.need('rl', 'steps')} GRPO steps; {run.need('evaluate', 'problems')} held-out problems, "
            f"k={run.need('evaluate', 'k')}), `metrics/evaluate.json`:"
        )

    def scores() -> str:
        k = run.need("evaluate", "k")
        models = run.need("evaluate", "models")
        temperature = run.param("evaluate.temperature")
        header = [
            "model",
            "greedy pass@1",
            "level " + " / ".join(_levels(models)),
            f"sampled accuracy{f' (T={temperature})' if temperature is not None else ''}",
            f"pass@{k}",
            f"maj@{k}",
        ]
        rows = []
        for name in model_names(run, models):
            m = models.get(name) or {}
            per_level = m.get("per_level")
            rows.append(
                [
                    model_label(name, run),
                    fixed(m.get("pass@1")),
                    " / ".join(fixed(per_level.get(level), 2) for level in _levels(models)) if per_level else NOT_RUN,
                    fixed(m.get("sampled_accuracy")),
                    fixed(_dig(m, ["pass@k", str(k)])),
                    fixed(m.get(f"maj@{k}")),
                ]
            )
        _bold_best(rows, [1, 3, 4, 5])
        return "\n" + table(header, rows)

    return sentences(setup, scores)


def _levels(models: Mapping[str, Any]) -> list[str]:
    return sorted({level for m in models.values() for level in (m or {}).get("per_level", {})}, key=int)


def findings_block(run: Run) -> str:
    def greedy(name: str) -> float:
        return run.need("evaluate", "models", name, "pass@1")

    def sampled(name: str) -> float:
        return run.need("evaluate", "models", name, "sampled_accuracy")

    def start() -> str:
        s0, s, base = greedy("start0"), greedy("start"), greedy("base")
        return (
            f"- START-0, fine-tuned on the {run.need('d_seed', 'size')} rows of D_seed, scores {compare(s0, base)} the "
            f"base greedily ({fixed(s0)} vs {fixed(base)}); START, on the {run.need('d_start', 'size')} rows of "
            f"D_start, scores {compare(s, base)} it ({fixed(s)})."
        )

    def rstar() -> str:
        rounds = _rounds(run)
        policies = " and ".join(f"{fixed(sampled(f'rstar_r{r}'))} (round {r})" for r in rounds)
        greedy_ = " and ".join(fixed(greedy(f"rstar_r{r}")) for r in rounds)
        text = (
            f"- Sampled, rStar-Math's policies score {policies}, against {greedy_} greedily; the base scores "
            f"{fixed(sampled('base'))} sampled and {fixed(greedy('base'))} greedily."
        )
        if len(rounds) < 2:
            return text
        last, before = rounds[-1], rounds[-2]
        a, b = greedy(f"rstar_r{last}"), greedy(f"rstar_r{before}")
        return (
            f"{text} Round {last} scores {compare(a, b)} round {before} greedily ({fixed(a)} vs {fixed(b)}); its "
            f"search solved {percent(run.need(f'rstar_search_round{last}', 'solve_rate'))} of its problems "
            f"(round {before}: "
            f"{percent(run.need(f'rstar_search_round{before}', 'solve_rate'))}), and its trees hold "
            f"{run.need(f'rstar_search_round{last}', 'pairs')} preference pairs (round {before}: "
            f"{run.need(f'rstar_search_round{before}', 'pairs')})."
        )

    def satori() -> str:
        ft, rl, base = greedy("satori_ft"), greedy("satori_rl"), greedy("base")
        ft_s, rl_s, base_s = sampled("satori_ft"), sampled("satori_rl"), sampled("base")
        answers = run.need("evaluate", "problems") * run.need("evaluate", "k")
        moved = round((rl_s - ft_s) * answers)
        change = (
            f"{abs(moved)} {'more' if moved > 0 else 'fewer'} of its {answers} sampled answers right than before"
            if moved
            else f"as many of its {answers} sampled answers right as before"
        )
        return (
            f"- Satori's format-tuned policy scores {compare(ft, base)} the base greedily "
            f"({fixed(ft)} vs {fixed(base)}) "
            f"and {compare(ft_s, base_s)} it sampled ({fixed(ft_s)} vs {fixed(base_s)}). After "
            f"{run.need('rl', 'steps')} GRPO steps it scores {fixed(rl)} greedily and {fixed(rl_s)} sampled "
            f"({change}). Round 2 (the base fine-tuned on the RL policy's {run.need('rl_sft', 'examples')} correct "
            f"samples, then {run.need('rl_r2', 'steps')} GRPO steps from the bare problems) scores "
            f"{fixed(greedy('satori_rl_r2'))} greedily and {fixed(sampled('satori_rl_r2'))} sampled. The distilled "
            f"student scores {fixed(greedy('satori_distill'))} greedily, trained on {run.need('distill', 'examples')} "
            f"of the round-2 policy's correct samples."
        )

    return sentences(start, rstar, satori)


def satori_block(run: Run) -> str:
    def data() -> str:
        kinds = run.need("coat", "by_kind")
        rounds = _rounds(run)
        trees = " and ".join(f"round-{r}" for r in rounds)
        solved = " and ".join(percent(run.need(f"rstar_search_round{r}", "solve_rate")) for r in rounds)
        return (
            f"On the embedded run: COAT {run.need('coat', 'rows')} traces "
            f"({', '.join(f'{n} {kind}' for kind, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))}, from "
            f"{run.need('coat', 'problems')} problems; the {trees} trees solve {solved} of their problems), "
            f"{run.need('rae_states', 'states')} restart states from the format-tuned policy's "
            f"{run.need('rae_states', 'samples')} samples ({run.need('rae_states', 'from_correct')} cut from right "
            f"samples, {run.need('rae_states', 'from_failed')} from wrong ones, {run.need('rae_states', 'bare')} bare "
            f"problems)."
        )

    def rl() -> str:
        curve = run.need_plot("rl_reward")
        rewards = [row["reward"] for row in curve]
        flat = len(list(takewhile(lambda row: row.get("reward_std") == 0, reversed(curve))))
        rollouts = run.param("satori.rl.per_device_train_batch_size")
        steps = "the last step" if flat == 1 else f"the last {flat} steps"
        tail = (
            f"; in {steps} every rollout of a group got the same reward, so GRPO's advantage was zero" if flat else ""
        )
        return (
            f"GRPO ran {run.need('rl', 'steps')} steps{f' of {rollouts} tool-integrated rollouts' if rollouts else ''} "
            f"(mean reward per step from {min(rewards):+.2f} to {max(rewards):+.2f}{tail})."
        )

    def distill() -> str:
        return (
            f"The student trained on {run.need('distill', 'examples')} of the round-2 policy's correct samples (it "
            f"answered {percent(run.need('distill', 'teacher_accuracy'))} of its "
            f"{run.need('distill', 'samples')} samples right)."
        )

    return sentences(data, rl, distill)


def seeds_block(run: Run) -> str:
    report = run.metrics.get("seeds")
    if not report:
        return (
            f"*{NOT_RUN}: `metrics/seeds.json` is missing — `make seeds` runs the pipeline once per seed and "
            f"writes it.*"
        )
    k = report.get("k")
    columns = [
        ("pass@1", "greedy pass@1"),
        ("sampled_accuracy", "sampled accuracy"),
        (f"pass@k.{k}", f"pass@{k}"),
        (f"maj@{k}", f"maj@{k}"),
    ]
    models = report.get("models", {})
    rows = []
    for name in model_names(run, models):
        stats = models.get(name, {})
        rows.append(
            [model_label(name), *(_mean_std(stats.get(key)) for key, _ in columns), _range(stats.get("pass@1"))]
        )
    seeds = ", ".join(str(s) for s in report.get("seeds", []))
    stale = _seeds_stale(run, report)
    measures = report.get("measures") or {}
    measure_rows = [  # in SEED_MEASURES' order (the file's keys are sorted)
        [m["label"], _mean_std(m), _range(m), " / ".join(fixed(v) for v in m["values"])]
        for _, path, key in SEED_MEASURES
        if (m := measures.get(f"{path}:{key}"))
    ]
    return (
        stale + f"Seeds {seeds} (n={len(report.get('seeds', []))}; {report.get('problems')} held-out problems, k={k}): "
        "mean ± standard deviation over seeds, `metrics/seeds.json`.\n\n"
        + table(["model", *(title for _, title in columns), "greedy pass@1 min–max"], rows)
        + (
            "\n\nMethod measures over the same seeds (`measures`):\n\n"
            + table(["measure", "mean ± sd", "min–max", "per seed"], measure_rows)
            if measure_rows
            else ""
        )
    )


def _seeds_stale(run: Run, report: Mapping[str, Any]) -> str:
    """A warning when the seeds' run of the committed seed is not the committed run: the spread was measured on
    other code or params, so it says nothing about the figures above."""
    seed = run.param("seed")
    order = list(report.get("seeds", []))
    if seed not in order:
        return ""
    at = order.index(seed)
    moved = sorted(
        name
        for name, stats in report.get("models", {}).items()
        if (values := (stats.get("pass@1") or {}).get("values"))
        and at < len(values)
        and run.get("evaluate", "models", name, "pass@1") is not None
        and fixed(values[at]) != fixed(run.get("evaluate", "models", name, "pass@1"))
    )
    missing = sorted(set(run.get("evaluate", "models") or {}) - set(report.get("models", {})))
    if not moved and not missing:
        return ""
    return (
        f"*Stale: seed {seed} of these runs does not reproduce the committed evaluation "
        f"({', '.join(moved + [m + ' not in the seed runs' for m in missing])}) — the code or params changed "
        f"since `make seeds`; run it again.*\n\n"
    )


def _mean_std(stats: Mapping[str, Any] | None) -> str:
    if not stats:
        return NOT_RUN
    return f"{fixed(stats['mean'])} ± {fixed(stats['std'])}" if stats.get("std") is not None else fixed(stats["mean"])


def _range(stats: Mapping[str, Any] | None) -> str:
    return f"{fixed(stats['min'])}–{fixed(stats['max'])}" if stats else NOT_RUN


def grading_block(run: Run) -> str:
    report = run.metrics.get("grading")
    if not report:
        return f"*{NOT_RUN}: `metrics/grading.json` is missing — `dvc repro grading_check` writes it.*"
    return (
        f"The labelled set graded by tracemill (`grading.math: {report['grader']}`, grader version "
        f"{report['grader_version']}) and by math-verify {report['math_verify_version']} alone "
        "(`parse` + `verify`, gold in `\\boxed`), `metrics/grading.json`:\n\n" + grading_table(report)
    )


def grading_table(report: Mapping[str, Any]) -> str:
    """Per kind, then over all pairs: right (of pairs) and false positives of each grader."""

    def right(counts: Mapping[str, int], grader: str) -> str:
        hits = counts[grader + "_right"]
        return f"{hits}/{counts['pairs']} ({fixed(100 * hits / counts['pairs'], 1)} %)"

    rows = [
        [
            name,
            str(c["pairs"]),
            right(c, "ours"),
            str(c["ours_false_positives"]),
            right(c, "math_verify"),
            str(c["math_verify_false_positives"]),
        ]
        for name, c in [*report["kinds"].items(), ("**all**", report["all"])]
    ]
    return table(["kind", "pairs", "tracemill right", "tracemill FP", "math-verify right", "math-verify FP"], rows)


def _counts(counts: Mapping[str, int] | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted((counts or {}).items())) or "none"


def start_block(run: Run) -> str:
    """START's measures: where hints landed, D_seed's yield, tool calls without hints, accuracy per hint round."""

    def data() -> str:
        by_domain = run.need("d_seed", "rows_per_hinted_problem_by_domain")
        return (
            f"- Hint-infer's hints landed {_counts(run.need('hint_infer', 'hint_at'))} (after a Wait/Alternatively "
            f"marker or at the stop) on {run.need('d_seed', 'hinted_problems')} problems; "
            f"D_seed kept {run.need('d_seed', 'size')} rows ({_counts(run.get('d_seed', 'kept_hint_at'))}), "
            f"{fixed(run.need('d_seed', 'rows_per_hinted_problem'))} per hinted problem "
            f"({', '.join(f'{d} {fixed(v)}' for d, v in sorted(by_domain.items()))}); D_start "
            f"{run.need('d_start', 'size')} rows. Modify step: `{run.need('d_seed', 'modify')}`."
        )

    def rounds() -> str:
        models = [m for m in ("base", "start0", "start") if run.get("evaluate", "models", m)]
        if not models:
            raise Missing("`metrics/evaluate.json` has no START models")
        counts = sorted({r for m in models for r in (run.need("evaluate", "models", m, "hint_rounds") or {})}, key=int)
        rows = [
            [
                model_label(m),
                fixed(run.need("evaluate", "models", m, "tool_calls_per_problem"), 2),
                *(
                    f"{fixed(h[r]['accuracy'])} ({fixed(h[r]['tokens'], 0)} tok)" if r in h else NOT_RUN
                    for h in [run.need("evaluate", "models", m, "hint_rounds")]
                    for r in counts
                ),
            ]
            for m in models
        ]
        return (
            "Held-out greedy: tool calls per problem with no hint, and accuracy (mean generated tokens) after 0 "
            f"to {counts[-1] if counts else 0} hints at the stop, `metrics/evaluate.json`:\n\n"
            + table(["model", "tool calls, no hint", *(f"{r} hint rounds" for r in counts)], rows)
        )

    return sentences(data, rounds)


def start_modify_block(run: Run) -> str:
    """START-0 per modify mode over seeds, from `benchmarks/start_modify.py` (metrics/start_modify.json)."""
    report = run.metrics.get("start_modify")
    if not report:
        return (
            f"*{NOT_RUN}: `metrics/start_modify.json` is missing — `python benchmarks/start_modify.py --json "
            "metrics/start_modify.json` writes it.*"
        )
    committed = run.get("evaluate", "models", "base", "pass@1")
    moved = committed is not None and fixed(committed) != fixed(report["base"]["pass@1"])
    stale = ""
    if moved or report.get("hint_problems") != run.param("start.hint_infer.max_problems"):
        stale = (
            "*Stale: the base or hint-infer of this measurement is not the committed run's — run "
            "benchmarks/start_modify.py again.*\n\n"
        )
    return stale + start_modify_table(report, run.param("start.modify"))


def start_modify_table(report: Mapping[str, Any], chosen: str | None) -> str:
    """The table of `metrics/start_modify.json` (benchmarks/start_modify.py prints it too); `chosen`: the
    mode params.yaml sets."""
    base = report["base"]
    rows = [
        [
            "base (no D_seed)",
            "–",
            fixed(base["pass@1"]),
            fixed(base["tool_calls_per_problem"], 2),
            fixed(base["said_hint"]),
        ]
    ]
    for mode, m in report["modes"].items():
        rows.append(
            [
                f"`{mode}`" + (" (params)" if mode == chosen else ""),
                str(m["d_seed_rows"]),
                *(
                    f"{fixed(m[k]['mean'], places)} ± {fixed(m[k]['std'], places)} "
                    f"({fixed(m[k]['min'], places)}–{fixed(m[k]['max'], places)})"
                    for k, places in (("pass@1", 3), ("tool_calls_per_problem", 2), ("said_hint", 3))
                ),
            ]
        )
    seeds = ", ".join(str(s) for s in report["seeds"])
    return (
        f"START-0 per `start.modify`, hint-infer on {report['hint_problems']} problems, seeds {seeds} (mean ± sd "
        f"(min–max)), held-out greedy with no hint, `metrics/start_modify.json` (commit "
        f"{str(report.get('commit', ''))[:7]}):\n\n"
        + table(["modify", "D_seed rows", "START-0 pass@1", "tool calls / problem", "said a hint"], rows)
    )


def rstar_block(run: Run) -> str:
    """rStar-Math's measures per round: search yield, re-walks, PPM guidance, the PPM, best-of-N."""

    def search() -> str:
        rounds = _rounds(run)
        if not rounds:
            raise Missing("`metrics/rstar_search_round1.json` is missing")
        keys: list[tuple[str, str, Callable[[Any], str]]] = [
            ("solve_rate", "solve rate", fixed),
            ("nodes_per_tree", "nodes / tree", fixed),
            ("rewalked_rollout_share", "re-walked rollouts", percent),
            ("trajectories_per_tree", "trajectories / tree", fixed),
            ("correct_trajectories_per_solved_tree", "correct / solved tree", fixed),
            ("solved_trees_with_2_correct", "solved trees with ≥ 2 correct", str),
            ("pairs", "pairs", str),
        ]
        rows = []
        for r in rounds:
            m = run.metrics[f"rstar_search_round{r}"]
            ppm = run.get(f"rstar_ppm_round{r}", "heldout_pairwise_accuracy")
            best = run.metrics.get(f"rstar_bestofn_round{r}") or {}
            n = best.get("n")
            picks = (
                (
                    f"{fixed(best.get('pass@1'))} / {fixed(best.get(f'maj@{n}'))} / "
                    f"{fixed(best.get(f'ppm_best_of_{n}'))} (N={n})"
                )
                if n
                else NOT_RUN
            )
            rows.append(
                [
                    str(r),
                    "yes" if m.get("ppm") else "no",
                    *(NOT_RUN if m.get(k) is None else fmt(m[k]) for k, _, fmt in keys),
                    fixed(ppm),
                    picks,
                ]
            )
        return (
            "Per round, `metrics/rstar_search_round<r>.json`, `rstar_ppm_round<r>.json`, `rstar_bestofn_round<r>.json` "
            "(held-out: pass@1 / maj@N / best-of-N by the round's PPM):\n\n"
            + table(
                ["round", "PPM-guided", *(t for _, t, _ in keys), "PPM held-out pair acc.", "pass@1 / maj / PPM best"],
                rows,
            )
        )

    def guidance() -> str:
        found = [
            (r, run.metrics[f"rstar_search_round{r}"]["guidance_on_same_problems"])
            for r in _rounds(run)
            if run.get(f"rstar_search_round{r}", "guidance_on_same_problems")
        ]
        if not found:
            raise Missing("no PPM-guided round wrote `guidance_on_same_problems`")
        r, g = found[-1]

        def side(k: str) -> str:
            return (
                f"solve rate {fixed(g[k]['solve_rate'])}, {fixed(g[k]['trajectories_per_tree'])} trajectories "
                f"per tree, {fixed(g[k]['correct_trajectories_per_solved_tree'])} correct per solved tree"
            )

        return (
            f"- On the same {g['ppm_guided']['trees']} problems of round {r}: PPM-guided {side('ppm_guided')}; "
            f"terminal-guided {side('terminal_guided')}."
        )

    def dropped() -> str:
        per_round = [(r, run.get(f"rstar_search_round{r}", "dropped_steps")) for r in _rounds(run)]
        if all(d is None for _, d in per_round):
            raise Missing("no round wrote `dropped_steps`")
        return (
            "- Sampled steps that were dead ends before any code ran (`dropped_steps`): "
            + "; ".join(
                f"round {r}: " + (", ".join(f"{n} {why}" for why, n in d.items()) if d else "none")
                for r, d in per_round
                if d is not None
            )
            + "."
        )

    return sentences(search, guidance, dropped)


def satori_measures_block(run: Run) -> str:
    """Satori's measures: the format-tuned policy's own samples, the reward's parts, self-correction per round."""

    def states() -> str:
        return (
            f"- Restart states: {run.need('rae_states', 'states')} from the format-tuned policy's samples "
            f"(sampled accuracy {fixed(run.get('rae_states', 'sampled_accuracy'))})."
        )

    def rates() -> str:
        rows = []
        for name, label in (("rl", "1 (restart states)"), ("rl_r2", "2 (bare problems)")):
            m = run.metrics.get(name)
            if not m:
                continue
            rows.append(
                [
                    label,
                    str(m.get("steps", 0)),
                    fixed(m.get("reward_first")),
                    fixed(m.get("reward_last")),
                    fixed(m.get("self_correction_rate")),
                    fixed(m.get("break_rate")),
                    fixed(m.get("in_rollout_self_correction_rate")),
                    fixed(m.get("in_rollout_break_rate")),
                ]
            )
        if not rows:
            raise Missing("`metrics/rl.json` is missing")
        return (
            "RL rounds, `metrics/rl.json` and `metrics/rl_r2.json` (self-correction: a wrong start or earlier answer "
            "ends right; break: a right one ends wrong):\n\n"
            + table(
                [
                    "round",
                    "steps",
                    "reward first",
                    "reward last",
                    "self-correction (states)",
                    "break (states)",
                    "self-correction (in rollout)",
                    "break (in rollout)",
                ],
                rows,
            )
        )

    def reflect() -> str:
        r = run.need("rl", "reflect_states")
        before, after = r["before_rl"], r["after_rl"]
        return (
            f"- Greedy continuations from the same {before['rollouts_from_correct'] + before['rollouts_from_failed']} "
            f"restart states that end with `<|reflect|>` ({before['rollouts_from_correct']} cut from right samples, "
            f"{before['rollouts_from_failed']} from wrong ones), `metrics/rl.json` `reflect_states`: the "
            f"format-tuned policy self-corrects {fixed(before['self_correction_rate'])} and breaks "
            f"{fixed(before['break_rate'])}; after RL it self-corrects {fixed(after['self_correction_rate'])} and "
            f"breaks {fixed(after['break_rate'])}."
        )

    return sentences(states, reflect, rates)


BLOCKS: dict[str, Callable[[Run], str]] = {
    "bootstrap": bootstrap_block,
    "satori": satori_block,
    "evaluation": evaluation_block,
    "findings": findings_block,
    "seeds": seeds_block,
    "grading": grading_block,
    "start": start_block,
    "start_modify": start_modify_block,
    "rstar": rstar_block,
    "satori_measures": satori_measures_block,
}


def render(run: Run) -> dict[str, str]:
    return {name: build(run) for name, build in BLOCKS.items()}


# --- the generated blocks of the README and the docs pages -----------------------------------------

# The markdown files that hold generated blocks, relative to the repository root: the README's
# results and each docs page's measures. `tracemill readme` reads every one of them.
DOC_FILES = (
    "README.md",
    "docs/bootstrap.md",
    "docs/start.md",
    "docs/rstar.md",
    "docs/satori.md",
    "docs/grading.md",
    "docs/evaluation.md",
)


def blocks_in(text: str, where: str = "README.md") -> dict[str, str]:
    """The content of each generated block of one markdown file (between its begin and end marker lines)."""
    found: dict[str, str] = {}
    open_name, start = None, 0
    for match in MARKER.finditer(text):
        kind, name = match.groups()
        if kind == "begin":
            if open_name is not None:
                raise ReportError(
                    f"{where}: block '{open_name}' has no end marker before '{name}' begins "
                    f"— add {END.format(open_name)}"
                )
            if name in found:
                raise ReportError(f"{where}: block '{name}' appears twice — keep one")
            open_name, start = name, match.end()
        elif name != open_name:
            raise ReportError(f"{where}: end marker '{name}' closes no open block — check the begin marker of '{name}'")
        else:
            found[name] = text[start : match.start()].strip("\n")
            open_name = None
    if open_name is not None:
        raise ReportError(f"{where}: block '{open_name}' has no end marker — add {END.format(open_name)}")
    unknown = sorted(set(found) - set(BLOCKS))
    if unknown:
        raise ReportError(f"{where}: block '{unknown[0]}' is not one tracemill renders; known: {', '.join(BLOCKS)}")
    return found


def rewrite(text: str, blocks: Mapping[str, str]) -> str:
    """`text` with the content of every generated block it holds replaced by `blocks`."""
    for name in blocks_in(text):
        begin, end = BEGIN.format(name), END.format(name)
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{begin}\n{blocks[name]}\n{end}{tail}"
    return text


def stale_blocks(text: str, blocks: Mapping[str, str], where: str = "README.md") -> list[str]:
    """Names of one file's generated blocks whose content differs from `blocks`."""
    return [name for name, content in blocks_in(text, where).items() if content != blocks[name]]


def doc_files(root: Path) -> list[Path]:
    """`DOC_FILES` under `root`; a missing one is an error naming it."""
    paths = [root / name for name in DOC_FILES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ReportError(f"{missing[0]} is missing — it holds generated blocks (listed in tracemill.report.DOC_FILES)")
    return paths


def unplaced_blocks(texts: Mapping[Path, str]) -> list[str]:
    """Blocks tracemill renders that sit in none of `texts` (so nothing would show them)."""
    placed = {name for path, text in texts.items() for name in blocks_in(text, str(path))}
    return [name for name in BLOCKS if name not in placed]


# --- spread over seeds (`make seeds`) -------------------------------------------------------------

# Knobs a seed sets. The bootstrap policy stands in for a fixed pretrained base model, and
# `synthetic.seed` draws the problems, held-out ones included: both stay fixed, so every seed
# starts from the same model and is scored on the same questions.
FIXED_SEEDS = ("bootstrap.seed", "synthetic.seed")


def seed_params(seed: int) -> dict[str, int]:
    """Every seed knob a run of the pipeline draws from: sampling (top-level `seed`: hint-infer, RFT,
    MCTS, distillation samples, evaluation), GRPO (`satori.rl.seed`) and each training set's shuffle,
    held-out split and head init (`train.<set>.seed`, a dataclass default that params.yaml leaves out)."""
    from tracemill.train.params import TrainParams

    keys = ["seed", "satori.rl.seed", *(f"train.{f.name}.seed" for f in dataclasses.fields(TrainParams))]
    return {key: seed for key in keys}


def seed_overrides(seed: int) -> list[str]:
    """`dvc exp run` arguments for one seed; `++` sets a key whether or not params.yaml spells it."""
    return [arg for key, value in seed_params(seed).items() for arg in ("-S", f"++{key}={value}")]


@dataclass(frozen=True)
class SeedRun:
    seed: int
    name: str
    rev: str
    metrics: Mapping[str, Any]  # every metrics file of the experiment, by path

    @property
    def evaluate(self) -> Mapping[str, Any]:
        return self.metrics["metrics/evaluate.json"]


# Method measures whose spread over seeds the seeds block reports beside held-out accuracy: (label,
# metrics file, dotted key). A seed whose run lacks one leaves it out of that measure's n.
SEED_MEASURES: tuple[tuple[str, str, str], ...] = (
    (
        "rStar-Math round 2, PPM-guided: correct trajectories per solved tree",
        "metrics/rstar_search_round2.json",
        "guidance_on_same_problems.ppm_guided.correct_trajectories_per_solved_tree",
    ),
    (
        "rStar-Math round 2, terminal-guided (same problems): correct trajectories per solved tree",
        "metrics/rstar_search_round2.json",
        "guidance_on_same_problems.terminal_guided.correct_trajectories_per_solved_tree",
    ),
    (
        "Satori reflect states, format-tuned: self-correction",
        "metrics/rl.json",
        "reflect_states.before_rl.self_correction_rate",
    ),
    ("Satori reflect states, format-tuned: break", "metrics/rl.json", "reflect_states.before_rl.break_rate"),
    (
        "Satori reflect states, after RL: self-correction",
        "metrics/rl.json",
        "reflect_states.after_rl.self_correction_rate",
    ),
    ("Satori reflect states, after RL: break", "metrics/rl.json", "reflect_states.after_rl.break_rate"),
)


def seed_runs(exp_show: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> list[SeedRun]:
    """Each seed's newest experiment in `dvc exp show --json` output whose params hold every knob of
    `seed_params(seed)` and whose `metrics/evaluate.json` was written; a seed without one is an error."""
    candidates: dict[int, list[tuple[str, SeedRun]]] = {s: [] for s in seeds}
    wanted = {s: seed_params(s) for s in seeds}
    for baseline in exp_show:
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs") or []:
                data = rev.get("data") or {}
                params = _dig(data, ["params", "params.yaml", "data"]) or {}
                evaluate = _dig(data, ["metrics", "metrics/evaluate.json", "data"])
                if rev.get("error") or not evaluate:
                    continue
                metrics = {path: m.get("data") or {} for path, m in (data.get("metrics") or {}).items()}
                for s, knobs in wanted.items():
                    if all(_dig(params, key.split(".")) == value for key, value in knobs.items()):
                        name = rev.get("name") or exp.get("name") or rev["rev"][:7]
                        run = SeedRun(s, name, rev["rev"], metrics)
                        candidates[s].append((data.get("timestamp") or "", run))
    missing = [s for s in seeds if not candidates[s]]
    if missing:
        raise ReportError(
            f"no experiment of this commit ran with seed {missing[0]} and wrote metrics/evaluate.json — "
            f"run 'make seeds' (or 'dvc exp run --temp $(tracemill seeds overrides {missing[0]})')"
        )
    return [max(candidates[s], key=lambda c: c[0])[1] for s in seeds]


def aggregate_seeds(runs: Sequence[SeedRun]) -> dict[str, Any]:
    """metrics/seeds.json: per model and metric of evaluate.json, the mean, the sample standard
    deviation (n-1; null for one seed), min, max and n over the seeds that report it, and the values."""
    first = runs[0].evaluate
    names: list[str] = []
    for r in runs:
        names += [n for n in r.evaluate.get("models", {}) if n not in names]
    models: dict[str, dict[str, Any]] = {}
    for name in names:
        per_seed = [dict(_numbers(_dig(r.evaluate, ["models", name]) or {})) for r in runs]
        keys = sorted({key for values in per_seed for key in values})
        models[name] = {key: seed_stats([v[key] for v in per_seed if key in v]) for key in keys}
    measures: dict[str, Any] = {}
    for label, path, key in SEED_MEASURES:
        values = [v for r in runs if isinstance(v := _dig(r.metrics.get(path) or {}, key.split(".")), (int, float))]
        if values:
            measures[f"{path}:{key}"] = {"label": label, **seed_stats([float(v) for v in values])}
    return {
        "seeds": [r.seed for r in runs],
        "experiments": {str(r.seed): {"name": r.name, "rev": r.rev} for r in runs},
        "varied": list(seed_params(0)),
        "fixed": list(FIXED_SEEDS),
        "split": first.get("split"),
        "problems": first.get("problems"),
        "k": first.get("k"),
        "models": models,
        "measures": measures,
    }


def _numbers(obj: Mapping[str, Any]) -> Iterable[tuple[str, float]]:
    """Numeric leaves of a model's metrics, keyed by their dotted path (`pass@k.2`, `per_level.3`)."""
    return ((key, float(v)) for key, v in leaves(obj) if isinstance(v, (int, float)) and not isinstance(v, bool))


def seed_stats(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (n-1; None for one value), min, max and the values over seeds."""
    return {
        "mean": round(statistics.fmean(values), 4),
        "std": round(statistics.stdev(values), 4) if len(values) > 1 else None,
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "values": values,
    }
