from dataclasses import dataclass, field

import pytest

from tracemill.errors import ParamsError
from tracemill.params import choices, parse_section


@dataclass(frozen=True)
class Inner:
    k: int = 1
    temperature: float = 0.0


@dataclass(frozen=True)
class Outer:
    name: str = choices("a", "b", default="a")
    sampled: Inner = field(default_factory=lambda: Inner(k=16, temperature=0.6))
    items: list[Inner] = field(default_factory=list)


def test_partial_nested_override_keeps_the_sections_own_defaults():
    p = parse_section(Outer, {"sampled": {"k": 4}}, "outer")
    assert p.sampled == Inner(k=4, temperature=0.6)


def test_lists_of_sections_and_int_to_float():
    p = parse_section(Outer, {"items": [{"k": 2, "temperature": 1}]}, "outer")
    assert p.items == [Inner(k=2, temperature=1.0)] and isinstance(p.items[0].temperature, float)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"nme": "a"}, r"'outer.nme' is not a known key; allowed: items, name, sampled"),
        ({"name": "c"}, r"'outer.name' = 'c' is not allowed; choose one of: a, b"),
        ({"sampled": {"k": "many"}}, r"'outer.sampled.k' = 'many' must be of type int"),
        ({"items": [{"k": True}]}, r"'outer.items\[0\].k' = True must be of type int"),
    ],
)
def test_bad_values_name_the_full_key(raw, message):
    with pytest.raises(ParamsError, match=message):
        parse_section(Outer, raw, "outer")


# ---- the project's own params.yaml: every section is read by a dataclass that rejects bad values ----

import copy  # noqa: E402
import dataclasses  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from tracemill import params as P  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PARAMS = P.load(ROOT / "params.yaml")


def test_the_shipped_params_file_names_only_known_sections_and_all_of_them_parse() -> None:
    assert set(PARAMS) == set(P.SECTIONS) | {"seed"}
    assert P.validate(PARAMS) == list(P.SECTIONS)


@pytest.mark.parametrize("name", sorted(P.SECTIONS))
def test_every_section_rejects_an_unknown_key_by_its_full_name(name: str) -> None:
    bad = copy.deepcopy(PARAMS)
    bad[name] = {**(bad.get(name) or {}), "no_such_knob": 1}
    with pytest.raises(ParamsError, match=f"'{name}.no_such_knob' is not a known key; allowed: "):
        P.validate(bad)


@pytest.mark.parametrize("name", sorted(P.SECTIONS))
def test_every_section_rejects_a_value_of_the_wrong_type(name: str) -> None:
    field_ = next(f for f in dataclasses.fields(P.section_class(name)) if f.type not in ("Any", "typing.Any"))
    bad = copy.deepcopy(PARAMS)
    bad[name] = {**(bad.get(name) or {}), field_.name: complex(1, 1)}  # no key of any section takes a complex
    with pytest.raises(ParamsError, match=f"'{name}.{field_.name}' = .* must be of type"):
        P.validate(bad)


def test_a_bad_choice_lists_the_allowed_values_and_an_unknown_section_is_named() -> None:
    bad = copy.deepcopy(PARAMS)
    bad["llm"] = {**bad["llm"], "backend": "tgi"}
    with pytest.raises(
        ParamsError, match="'llm.backend' = 'tgi' is not allowed; choose one of: transformers, vllm, openai"
    ):
        P.validate(bad)
    with pytest.raises(ParamsError, match="'mtcs' is not a known section"):
        P.validate({**PARAMS, "mtcs": {}})


def test_tracemill_check_exits_2_with_one_line_on_a_bad_file(tmp_path: Path) -> None:
    import yaml

    bad = copy.deepcopy(PARAMS)
    bad["sandbox"] = {**bad["sandbox"], "timeout_s": "soon"}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(bad))
    cli = [sys.executable, "-m", "tracemill.cli", "check", "--params"]
    done = subprocess.run([*cli, str(path)], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: params 'sandbox.timeout_s' = 'soon' must be of type float"]
    ok = subprocess.run(
        [*cli, str(ROOT / "params.yaml")], capture_output=True, text=True, cwd=ROOT
    )  # seed paths are relative
    assert ok.returncode == 0 and f"ok ({len(P.SECTIONS)} sections)" in ok.stdout


def test_rstar_round_inputs_must_match_the_rounds_and_dvc_expands_one_stage_per_round() -> None:
    from dvc.repo import Repo

    bad = copy.deepcopy(PARAMS)
    bad["rstar"] = {**bad["rstar"], "rounds": 3}
    with pytest.raises(
        ParamsError, match=r"'rstar.round_inputs' must map each round \"1\", \"2\", \"3\" \(rstar.rounds = 3\)"
    ):
        P.validate(bad)
    unguided = copy.deepcopy(PARAMS)
    unguided["rstar"] = {**unguided["rstar"], "ppm_from_round": 3}  # round 2 now searches without PPM 1
    with pytest.raises(ParamsError, match=r"'rstar.round_inputs' \"2\": ppm must repeat the policy"):
        P.validate(unguided)
    stages = {s.addressing for s in Repo(str(ROOT)).index.stages}
    rounds = range(1, PARAMS["rstar"]["rounds"] + 1)
    assert {
        f"{name}@{r}" for name in ("rstar_search", "rstar_policy", "rstar_ppm", "rstar_bestofn") for r in rounds
    } <= stages
    assert {"coat", "format_tune", "rae_states", "rl", "distill", "evaluate", "publish"} <= stages


def test_overlay_applies_the_gpu_params_keeping_comments_and_refuses_a_bad_file(tmp_path: Path) -> None:
    target = tmp_path / "params.yaml"
    target.write_text((ROOT / "params.yaml").read_text())
    cli = [sys.executable, "-m", "tracemill.cli", "overlay"]
    done = subprocess.run(
        [*cli, str(ROOT / "params.gpu.yaml"), "--params", str(target)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    merged = P.load(target)
    assert P.validate(merged) == list(P.SECTIONS)
    assert merged["llm"]["backend"] == "vllm" and merged["rstar"]["rounds"] == 4 and merged["start"]["rft"]["k"] == 16
    assert (
        merged["train"]["sft_start"]["learning_rate"] == 7.0e-6
        and merged["train"]["rstar_policy"]["prompt_style"] == "steps"
    )
    assert merged["sandbox"] == PARAMS["sandbox"]  # keys the overrides do not name keep their values
    text = target.read_text()
    assert "# --- grading (tracemill/grading) ---" in text and "served_model: null" in text
    assert "rstar.rounds" in done.stdout
    before = target.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text("rstar:\n  rounds: 3\n")  # round_inputs still lists 4 rounds
    done = subprocess.run([*cli, str(bad), "--params", str(target)], capture_output=True, text=True)
    assert done.returncode == 2 and "'rstar.round_inputs' must map each round" in done.stderr
    assert target.read_text() == before  # nothing written


def test_the_params_doc_table_is_current_and_names_every_key() -> None:
    doc = (ROOT / "docs/params.md").read_text()
    assert doc == P.doc_table(ROOT / "params.yaml"), "regenerate: tracemill params-doc > docs/params.md"
    assert "| `rstar.rollouts` | `8` | per problem; paper: 16 |" in doc
    assert "| `` format.code_start `` |" not in doc and "| `format.code_start` | `` ```python `` |" in doc
    for section in PARAMS:
        assert f"`{section}" in doc


def test_new_problems_each_round_gives_each_round_its_own_slice() -> None:
    from tracemill.generate import pick_problems
    from tracemill.rstar.params import RStarParams

    problems = [
        {"problem_id": f"p{i:02d}", "split": "train", "domain": "math", "source": "synthetic"} for i in range(10)
    ]
    fresh = RStarParams(max_problems=4, new_problems_each_round=True)
    rounds = [[p["problem_id"] for p in pick_problems(problems, fresh.problems(r))] for r in (1, 2, 3)]
    assert rounds == [[f"p{i:02d}" for i in range(4)], [f"p{i:02d}" for i in range(4, 8)], ["p08", "p09"]]
    same = RStarParams(max_problems=4)
    assert pick_problems(problems, same.problems(1)) == pick_problems(problems, same.problems(3))


# ---- types and ranges of every knob, the files a params file names, and every problem at once ----

import typing  # noqa: E402

import yaml  # noqa: E402

CHECK = [sys.executable, "-m", "tracemill.cli", "check"]


def _check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CHECK, *args], capture_output=True, text=True, cwd=ROOT
    )  # paths in params are relative to the root


def _numeric(hint: typing.Any) -> bool:
    return hint in (int, float) or any(_numeric(arg) for arg in typing.get_args(hint))


def _unranged(cls: type, seen: set[type] | None = None) -> list[str]:
    """Every int or float field (alone, optional, in a list or as dict values) of cls and of the
    dataclasses it nests that carries neither `range` nor `choices` metadata."""
    seen = set() if seen is None else seen
    seen.add(cls)
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if _numeric(hints[f.name]) and not ({"range", "choices"} & set(f.metadata)):
            out.append(f"{cls.__name__}.{f.name}")
        nested = [a for a in (hints[f.name], *typing.get_args(hints[f.name])) if dataclasses.is_dataclass(a)]
        for inner in nested:
            if inner not in seen:
                out += _unranged(inner, seen)
    return out


def test_every_numeric_knob_of_every_section_carries_a_range() -> None:
    @dataclasses.dataclass(frozen=True)
    class NewKnob:
        rollouts: int = 4

    assert _unranged(NewKnob) == ["NewKnob.rollouts"]  # what a knob added without P.at_least(...) looks like
    missing = [name for section in P.SECTIONS for name in _unranged(P.section_class(section))]
    assert missing == [], f"give these a range (params.bounded / at_least / above / fraction): {missing}"


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("problems.max_question_chars", -5, r"'problems.max_question_chars' = -5 must be >= 1"),
        ("start.filters.near_dup", "maybe", r"'start.filters.near_dup' = 'maybe' must be of type bool"),
        ("start.filters.near_dup", 1, r"'start.filters.near_dup' = 1 must be of type bool"),
        ("start.filters.near_dup_threshold", 1.5, r"'start.filters.near_dup_threshold' = 1.5 must be between 0 and 1"),
        ("start.rft.top_p", 0.0, r"'start.rft.top_p' = 0.0 must be > 0 and <= 1"),
        ("train.sft_start.learning_rate", 0, r"'train.sft_start.learning_rate' = 0 must be > 0"),
        ("rstar.temperature", -0.1, r"'rstar.temperature' = -0.1 must be >= 0"),
        ("synthetic.levels", [1, 7], r"'synthetic.levels\[1\]' = 7 must be between 1 and 4"),
        ("satori.coat.mix", {"plain": -1}, r"'satori.coat.mix.plain' = -1 must be >= 0"),
        (
            "evaluate.domains",
            ["math", "physics"],
            r"'evaluate.domains\[1\]' = 'physics' is not allowed; choose one of: math, code",
        ),
        ("llm.timeout_s", float("nan"), r"'llm.timeout_s' = nan must be > 0"),
        ("seed", -1, r"'seed' = -1 must be >= 0"),
    ],
)
def test_a_value_of_the_wrong_type_or_out_of_range_names_the_key_the_value_and_what_is_allowed(
    key, value, message
) -> None:
    bad = copy.deepcopy(PARAMS)
    *path, last = key.split(".")
    node = bad
    for part in path:
        node = node.setdefault(part, {})
    node[last] = value
    with pytest.raises(ParamsError, match=message):
        P.validate(bad)


@pytest.mark.parametrize(
    "override, message",
    [
        (
            {"start": {"filters": {"min_chars": 500, "max_chars": 100}}},
            r"'start.filters.min_chars' = 500 must be <= 'start.filters.max_chars' = 100",
        ),
        (
            {"start": {"filters": {"near_dup_threshold": 0.8, "near_dup_num_perm": 4}}},
            r"'start.filters.near_dup_threshold' = 0.8 cannot be resolved",
        ),
        ({"evaluate": {"k": 4, "temperature": 0}}, r"'evaluate.temperature' = 0 with 'evaluate.k' > 0"),
        (
            {"evaluate": {"sources": ["gsm8kk"]}},
            r"'evaluate.sources' names source 'gsm8kk', which problems.sources does not make",
        ),
        (
            {"satori": {"rl": {"reward": {"correct": -1.0, "wrong": 1.0}}}},
            r"'satori.rl.reward.correct' = -1.0 must be above",
        ),
        (
            {"bootstrap": {"num_attention_heads": 4, "num_key_value_heads": 3}},
            r"'bootstrap.num_attention_heads' = 4 must be a multiple",
        ),
        ({"sandbox": {"uid_base": 2**32 - 10}}, r"'sandbox.uid_base' \+ 'sandbox.uid_range'"),
        (
            {"problems": {"sources": [{"name": "s", "kind": "synthetic", "options": {"levels": [9]}}]}},
            r"'problems.sources\[s\].options.levels\[0\]' = 9 must be between 1 and 4",
        ),
        (
            {"problems": {"sources": [{"name": "x", "kind": "jsonl", "path": "x.jsonl", "columns": {"questio": "q"}}]}},
            r"'problems.sources\[x\].columns.questio' is not a problems column",
        ),
    ],
)
def test_rules_between_knobs_and_inside_a_source_name_the_keys(tmp_path: Path, override: dict, message: str) -> None:
    over = tmp_path / "over.yaml"
    over.write_text(yaml.safe_dump(override))
    with pytest.raises(ParamsError, match=message):
        P.validate(P.merged(ROOT / "params.yaml", over))


def test_only_true_and_false_are_booleans_and_1e_3_is_a_float(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("a: yes\nb: on\nc: true\nd: 1e-3\ne: False\nf: 1.5e3\ng: .5E-2\nh: 1e3x\n")
    # as DVC (YAML 1.2) reads them
    assert P.load(path) == {
        "a": "yes",
        "b": "on",
        "c": True,
        "d": 0.001,
        "e": False,
        "f": 1500.0,
        "g": 0.005,
        "h": "1e3x",
    }


def test_an_int_too_large_for_a_float_is_checked_against_the_range_not_crashed_on() -> None:
    assert 10**400 in P.Range(lo=1) and 10**400 not in P.Range(hi=10) and float("inf") not in P.Range(lo=1)


def test_check_prints_every_problem_with_its_fix_and_exits_2_without_a_traceback(tmp_path: Path) -> None:
    text = (ROOT / "params.yaml").read_text()
    for old, new in [
        ("max_question_chars: 20000", "max_question_chars: -5"),
        ("near_dup: true", "near_dup: maybe"),
        ("require_boxed: true", "require_boxed: yes"),
        ("path: data/seeds/math500_test.jsonl", "path: data/seeds/nope.jsonl"),
    ]:
        assert text.count(old) == 1
        text = text.replace(old, new)
    bad = tmp_path / "params.yaml"
    bad.write_text(text)
    done = _check("--params", str(bad))
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stdout == ""
    assert done.stderr.splitlines() == [
        "error: params 'problems.max_question_chars' = -5 must be >= 1",
        "error: params 'start.filters.require_boxed' = 'yes' must be of type bool",
        "error: params 'start.filters.near_dup' = 'maybe' must be of type bool",
        "error: params 'problems.sources[math500].path' = 'data/seeds/nope.jsonl' does not exist (kind 'math500') "
        "— put the "
        f"file there or fix the path (relative to {ROOT})",
    ]


def test_the_shipped_params_files_pass_check_and_missing_model_folders_only_warn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT)
    plain = _check()
    assert (
        plain.returncode == 0 and plain.stderr == "" and f"params.yaml: ok ({len(P.SECTIONS)} sections)" in plain.stdout
    )
    gpu = _check("--overlay", "params.gpu.yaml")
    assert gpu.returncode == 0, gpu.stderr
    assert "params.yaml + params.gpu.yaml: ok" in gpu.stdout
    for line in gpu.stderr.splitlines():  # the GPU file names model folders of the machine that runs it
        assert line.startswith("warning: model path '/models/"), line
    merged = P.merged(ROOT / "params.yaml", ROOT / "params.gpu.yaml")
    assert (
        P.validate(merged) == list(P.SECTIONS) and P.missing_files(merged)[0] == []
    )  # seeds and DeepSpeed configs are here
    assert P.validate(P.merged(ROOT / "params.yaml", ROOT / "tests/data/e2e.params.yaml")) == list(P.SECTIONS)
    alone = _check("--params", "params.gpu.yaml")  # an overrides file lacks sections: the note says how to check it
    assert alone.returncode == 2 and "tracemill check --overlay params.gpu.yaml" in alone.stderr


def test_a_missing_deepspeed_config_is_a_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    over = tmp_path / "over.yaml"
    over.write_text("train:\n  rstar_ppm: {deepspeed: configs/deepspeed/zero9.json}\n")
    problems, warnings = P.missing_files(P.merged(ROOT / "params.yaml", over))
    assert (
        problems
        == [
            "params 'train.rstar_ppm.deepspeed' = 'configs/deepspeed/zero9.json' is not a file — point it at a "
            "DeepSpeed config (configs/deepspeed/) or set it to null"
        ]
        and warnings == []
    )
