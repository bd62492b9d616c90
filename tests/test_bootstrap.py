"""The bootstrap policy: a tiny Qwen2 trained from scratch inside the suite on a small synthetic corpus.

One module fixture trains it (well under a minute on 2 cores) and evaluates it with the real sandbox
and grader; the tests check that it learned, that its folder is a standard Hugging Face model, and
that the tokenizer keeps digits, code and the special tokens intact.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tracemill import params as P
from tracemill import tiny
from tracemill.bootstrap import BootstrapParams, corpus, evaluate_policy, marker_kinds, train
from tracemill.errors import TracemillError
from tracemill.formats import META_ACTIONS, SPECIAL_TOKENS, FormatParams, code_blocks
from tracemill.grading import GradingParams, get_grader
from tracemill.hints import HintParams
from tracemill.llm import LLMParams
from tracemill.policy import resolve_policy
from tracemill.sandbox import SandboxParams, open_sandbox
from tracemill.synthetic import SyntheticParams, synthetic_problems

pytestmark = pytest.mark.slow

FMT = FormatParams()
LIBRARY = HintParams().library
SYN = SyntheticParams(
    kinds=["arithmetic", "remainder"],
    levels=[1, 2],
    train_per_level=200,
    eval_per_level=10,
    code_train_per_task=0,
    code_eval_per_task=0,
)
BP = BootstrapParams(
    vocab_size=400,
    hidden_size=64,
    intermediate_size=192,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_steps=900,
    warmup_steps=20,
    steps_fraction=0.2,
    cot_fraction=0.0,
    log_every=10,
    eval_max_tokens=120,
    eval_max_total_tokens=240,
    marker_share=1.0,
    alternatively_share=0.5,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    problems = synthetic_problems(SYN)
    pairs = corpus(problems, FMT, BP)
    out = tmp_path_factory.mktemp("policy") / "model"
    result = train(pairs, out, BP)
    with open_sandbox(SandboxParams()) as sandbox, get_grader(GradingParams(), sandbox) as grader:
        evaluation = evaluate_policy(out, problems, FMT, BP, sandbox, grader, LLMParams())
    return {"dir": out, "problems": problems, "pairs": pairs, "train": result, "eval": evaluation}


def test_training_loss_falls_by_more_than_half(trained: dict[str, Any]) -> None:
    curve = trained["train"]["curve"]
    assert curve[-1]["loss"] < 0.5 * curve[0]["loss"]


def test_easiest_level_with_tools_beats_always_giving_the_most_common_answer(trained: dict[str, Any]) -> None:
    gold = [p["answer"] for p in trained["problems"] if p["split"] == "eval" and p["difficulty"] == 1]
    chance = Counter(gold).most_common(1)[0][1] / len(gold)
    assert trained["eval"]["tools"]["per_level"]["1"] > chance


def test_metrics_report_pass_at_1_with_and_without_tools_per_level(trained: dict[str, Any]) -> None:
    evaluation = trained["eval"]
    for mode in ("no_tools", "tools"):
        assert 0.0 <= evaluation[mode]["pass@1"] <= 1.0
        assert set(evaluation[mode]["per_level"]) == {"1", "2"}
    assert evaluation["eval_problems"] == len([p for p in trained["problems"] if p["split"] == "eval"])
    json.dumps(evaluation)


def test_corpus_is_drawn_from_train_only_and_holds_every_format(trained: dict[str, Any]) -> None:
    held_out = [p["question"] for p in trained["problems"] if p["split"] == "eval"]
    prompts = "".join(prompt for prompt, _ in trained["pairs"])
    assert not any(q in prompts for q in held_out)
    responses = [r for _, r in trained["pairs"]]
    assert any("Wait," in r for r in responses) and any("Alternatively," in r for r in responses)
    assert any(FMT.step_delimiter in r for r in responses)
    assert all(FMT.boxed in r for r in responses)
    with_code = [r for r in responses if FMT.code_start in r]
    assert with_code and all(FMT.output_start in r for r in with_code)


def test_saved_folder_loads_with_auto_classes_and_generates(trained: dict[str, Any]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder: Path = trained["dir"]
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    ids = tok(
        tok.apply_chat_template(
            [{"role": "user", "content": "What is 2 + 3?"}], tokenize=False, add_generation_prompt=True
        ),
        return_tensors="pt",
        add_special_tokens=False,
    ).input_ids
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids.shape[1]
    assert sum(f.stat().st_size for f in folder.iterdir()) < 10 * 2**20


def test_tokenizer_splits_digits_and_round_trips_code_and_special_tokens(trained: dict[str, Any]) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(trained["dir"])
    assert tok.tokenize("40517") == list("40517")
    code = "```python\nx = (17 - (-3)) / 4\nprint(int(x))\n```\n```output\n5\n```\n\\boxed{5}"
    assert tok.decode(tok(code, add_special_tokens=False).input_ids) == code
    for special in SPECIAL_TOKENS:
        ids = tok(special, add_special_tokens=False).input_ids
        assert len(ids) == 1 and tok.decode(ids) == special
    text = f"step one{META_ACTIONS[1]}step two"
    assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text


def test_same_seed_trains_identical_weights(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    short = replace(BP, max_steps=4)
    pairs = corpus(synthetic_problems(replace(SYN, train_per_level=8)), FMT, short)
    a, b = train(pairs, tmp_path / "a", short), train(pairs, tmp_path / "b", short)
    assert a["curve"] == b["curve"]
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all((wa[k] == wb[k]).all() for k in wa)


def test_policy_path_without_a_model_names_the_path_and_the_fix(tmp_path: Path, trained: dict[str, Any]) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(TracemillError, match=f"'{missing}' has no config.json — fix policy.model"):
        resolve_policy({"policy": {"model": str(missing)}})
    path, name = resolve_policy({"policy": {"model": str(trained["dir"])}})
    assert path == trained["dir"] and name == "model"


def test_policy_defaults_to_the_bootstrap_folder_and_says_how_to_build_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TracemillError, match="run 'dvc repro bootstrap'"):
        resolve_policy({})
    assert P.section(BootstrapParams, {}, "bootstrap") == BootstrapParams()


def test_words_only_answers_end_where_hint_infer_inserts_a_hint_and_python_corrects_them() -> None:
    hints = [h.text for h in LIBRARY if h.domain == "math"]
    problems = synthetic_problems(replace(SYN, train_per_level=40))
    pairs = corpus(problems, FMT, replace(BP, cot_fraction=0.5, hinted_fraction=0.5), LIBRARY)
    words_only = [r for _, r in pairs if FMT.code_start not in r]
    hinted = [r for _, r in pairs if any(f"}}. {h}\n{FMT.code_start}" in r for h in hints)]
    assert words_only and hinted
    answers = {p["question"]: p["answer"] for p in problems}
    for prompt, response in pairs:
        if response in hinted:  # the last boxed answer, the one graded, is the python result: always right
            question = next(q for q in answers if q in prompt)
            assert response.removesuffix(tiny.IM_END).endswith(f"{FMT.boxed}{{{answers[question]}}}.")
    assert any(
        r.count(FMT.boxed) == 2 and len(set(re.findall(r"boxed\{([^}]*)\}", r))) == 2 for r in hinted
    )  # some guesses were wrong


@pytest.mark.parametrize("share", [0.4, 0.8])
def test_a_seeded_share_of_math_kinds_self_check_after_a_marker_in_every_tir_demo(share: float) -> None:
    problems = synthetic_problems(
        SyntheticParams(train_per_level=6, eval_per_level=0, code_train_per_task=0, code_eval_per_task=0)
    )
    bp = replace(BP, cot_fraction=0.0, steps_fraction=0.0, marker_share=share, alternatively_share=0.3)
    kind_of = {p["question"]: json.loads(p["metadata"])["kind"] for p in problems}
    marked: dict[str, set[str | None]] = {}
    for prompt, response in corpus(problems, FMT, bp, LIBRARY):
        kind = next(k for q, k in kind_of.items() if q in prompt)
        marked.setdefault(kind, set()).add(
            next((m for m in ("Wait", "Alternatively") if f"{m}, let me" in response), None)
        )
    assert all(len(markers) == 1 for markers in marked.values())  # a habit of the kind, never a coin per demo
    with_marker = {kind: markers.pop() for kind, markers in marked.items() if None not in markers}
    assert len(with_marker) == round(share * len(marked))
    assert set(with_marker.values()) == {"Wait", "Alternatively"}
    assert with_marker == marker_kinds(problems, bp)
    assert marker_kinds(problems, replace(bp, seed=3)) != with_marker


def test_code_demos_are_their_share_of_the_corpus_run_as_written_and_pass_the_hidden_tests() -> None:
    problems = synthetic_problems(replace(SYN, train_per_level=20, code_train_per_task=2))
    bp = replace(BP, code_share=0.2, code_check_fraction=0.6, code_draft_fraction=0.5)
    pairs = corpus(problems, FMT, bp, LIBRARY)
    code_problems = {p["question"]: p for p in problems if p["domain"] == "code" and p["split"] == "train"}
    demos = [
        (next(p for q, p in code_problems.items() if q in prompt), r.removesuffix(tiny.IM_END))
        for prompt, r in pairs
        if "Write a function" in prompt
    ]
    assert len(demos) == round(0.2 * len(pairs))
    code_hints = [h.text for h in LIBRARY if h.domain == "code"]
    checks = [r for _, r in demos if any(h + FMT.code_start in r for h in code_hints)]
    fixes = [r for r in checks if "AssertionError" in r]
    assert 0 < len(fixes) < len(checks) < len(demos)
    block = re.compile(r"```python\n(.*?)\n```\n```output\n(.*?)\n```\n", re.S)
    with open_sandbox(SandboxParams()) as sandbox, get_grader(GradingParams(), sandbox) as grader:
        for _, response in demos:  # every output block is what the real sandbox prints for the block before it
            with sandbox.session() as session:
                for code, shown in block.findall(response):
                    run = session.run(code)
                    assert (run.stdout if run.ok else run.stdout + run.stderr).rstrip() == shown
        verdicts = grader.grade_many(
            [(p, f"{FMT.code_start}\n{code_blocks(r, FMT)[-1]}\n{FMT.code_end}\n") for p, r in demos]
        )
    assert all(v.correct for v in verdicts)


def test_greedy_traces_of_the_trained_policy_say_a_marker_unprompted(trained: dict[str, Any]) -> None:
    assert trained["eval"]["tools"]["with_marker"] > 0.5  # both kinds self-check (BP.marker_share = 1)
