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
    with pytest.raises(ParamsError, match="'llm.backend' = 'tgi' is not allowed; choose one of: transformers, vllm, openai"):
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
    ok = subprocess.run([*cli, str(ROOT / "params.yaml")], capture_output=True, text=True)
    assert ok.returncode == 0 and f"ok ({len(P.SECTIONS)} sections)" in ok.stdout


def test_mcts_round_inputs_must_match_the_rounds_and_dvc_expands_one_stage_per_round() -> None:
    from dvc.repo import Repo

    from tracemill.search.params import round_inputs

    assert PARAMS["mcts"]["round_inputs"] == round_inputs(PARAMS["mcts"]["rounds"], PARAMS["mcts"]["ppm_from_round"])
    four = round_inputs(4, 3)
    assert four["3"] == {"policy": "models/policy_r2", "ppm": "models/ppm_r2"} and four["2"]["ppm"] == "models/policy_r1"
    bad = copy.deepcopy(PARAMS)
    bad["mcts"] = {**bad["mcts"], "rounds": 3}
    with pytest.raises(ParamsError, match=r"'mcts.round_inputs' does not match mcts.rounds = 3(.|\n)*\"3\": \{policy: models/policy_r2, ppm: models/ppm_r2\}"):
        P.validate(bad)
    stages = {s.addressing for s in Repo(str(ROOT)).index.stages}
    rounds = range(1, PARAMS["mcts"]["rounds"] + 1)
    assert {f"{name}@{r}" for name in ("mcts", "train_policy", "train_ppm") for r in rounds} <= stages
    assert {"coat", "format_tune", "rae_states", "rl", "distill", "evaluate", "publish"} <= stages


def test_overlay_applies_the_gpu_params_keeping_comments_and_refuses_a_bad_file(tmp_path: Path) -> None:
    target = tmp_path / "params.yaml"
    target.write_text((ROOT / "params.yaml").read_text())
    cli = [sys.executable, "-m", "tracemill.cli", "overlay"]
    done = subprocess.run([*cli, str(ROOT / "params.gpu.yaml"), "--params", str(target)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    merged = P.load(target)
    assert P.validate(merged) == list(P.SECTIONS)
    assert merged["llm"]["backend"] == "vllm" and merged["mcts"]["rounds"] == 4 and merged["start"]["rft"]["k"] == 16
    assert merged["train"]["sft_start"]["learning_rate"] == 7.0e-6 and merged["train"]["train_policy"]["prompt_style"] == "steps"
    assert merged["sandbox"] == PARAMS["sandbox"]  # keys the overrides do not name keep their values
    text = target.read_text()
    assert "# --- grading (tracemill/grading) ---" in text and "served_model: null" in text
    assert "mcts.rounds" in done.stdout
    before = target.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text("mcts:\n  rounds: 3\n")  # round_inputs still lists 4 rounds
    done = subprocess.run([*cli, str(bad), "--params", str(target)], capture_output=True, text=True)
    assert done.returncode == 2 and "'mcts.round_inputs' does not match mcts.rounds = 3" in done.stderr
    assert target.read_text() == before  # nothing written


def test_the_params_doc_table_is_current_and_names_every_key() -> None:
    doc = (ROOT / "docs/params.md").read_text()
    assert doc == P.doc_table(ROOT / "params.yaml"), "regenerate: tracemill params-doc > docs/params.md"
    assert "| `mcts.rollouts` | `8` | per problem; paper: 16 |" in doc
    assert "| `` format.code_start `` |" not in doc and "| `format.code_start` | `` ```python `` |" in doc
    for section in PARAMS:
        assert f"`{section}" in doc


def test_new_problems_each_round_gives_each_round_its_own_slice() -> None:
    from tracemill.search.params import MCTSParams
    from tracemill.start import pick_problems

    problems = [{"problem_id": f"p{i:02d}", "split": "train", "domain": "math", "source": "synthetic"} for i in range(10)]
    fresh = MCTSParams(max_problems=4, new_problems_each_round=True)
    rounds = [[p["problem_id"] for p in pick_problems(problems, fresh.problems(r))] for r in (1, 2, 3)]
    assert rounds == [[f"p{i:02d}" for i in range(4)], [f"p{i:02d}" for i in range(4, 8)], ["p08", "p09"]]
    same = MCTSParams(max_problems=4)
    assert pick_problems(problems, same.problems(1)) == pick_problems(problems, same.problems(3))
