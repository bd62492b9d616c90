"""One contract for every generation backend: stop strings, n samples, continuation == re-encode,
token accounting. Runs on a real tiny Qwen2 model built from scratch."""

import pytest

from tracemill import tiny
from tracemill.errors import TracemillError
from tracemill.llm import LLMParams, Request, load_backend
from tracemill.llm.hf import TransformersBackend

CORPUS = [
    f"Question {i}: what is {i} plus {3 * i}? Wait, let me compute.\n```python\nprint({i}+{3 * i})\n```\n```output\n{4 * i}\n```\n"
    f"The answer is \\boxed{{{4 * i}}}."
    for i in range(200)
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tok = tiny.make_tokenizer(CORPUS, 400)
    return tiny.save(tiny.make_model(tok, tiny.TinyConfig(seed=1)), tok, tmp_path_factory.mktemp("llm") / "model")


@pytest.fixture(scope="module", params=["transformers"])
def backend(request, model_dir):
    return load_backend(LLMParams(backend=request.param), model_dir)


@pytest.fixture(scope="module")
def naive(model_dir):
    """The same model re-encoding every continuation's whole prefix: the reference."""
    return TransformersBackend(model_dir, LLMParams(), reuse_cache=False)


PROMPTS = [f"Question {i}: what is" for i in range(5)]


def greedy(prompt, **kw):
    return Request(prompt=prompt, max_tokens=kw.pop("max_tokens", 24), **kw)


def test_stop_string_ends_generation_exactly_before_it(backend):
    full = backend.generate([greedy(p) for p in PROMPTS])
    stops = []
    for outs in full:
        text = outs[0].text
        stops.append(text[len(text) // 2 : len(text) // 2 + 3])
    stopped = backend.generate([greedy(p, stop=[s]) for p, s in zip(PROMPTS, stops)])
    for outs, s, ref in zip(stopped, stops, full):
        c = outs[0]
        assert c.finish_reason == "stop" and c.stop_reason == s
        assert c.text == ref[0].text[: ref[0].text.find(s)]
        assert s not in c.text


def test_length_finish_and_token_accounting(backend):
    c = backend.generate([greedy(PROMPTS[0], max_tokens=7)])[0][0]
    assert c.finish_reason == "length" and c.generated_tokens == 7
    assert c.prompt_tokens == len(backend.tokenizer(PROMPTS[0], add_special_tokens=False).input_ids)
    assert c.cached_prompt_tokens == 0


def test_n_samples_are_seeded_and_differ(backend):
    req = Request(prompt=PROMPTS[1], n=4, temperature=1.0, top_p=0.95, seed=7, max_tokens=12)
    a = [c.text for c in backend.generate([req])[0]]
    b = [c.text for c in backend.generate([req])[0]]
    assert len(a) == 4 and a == b
    assert len(set(a)) > 1


def test_greedy_continuation_equals_reencoded_generation(backend, naive):
    stops = ["is", "what"]
    first = backend.generate([greedy(p, stop=stops, max_tokens=16) for p in PROMPTS])
    ref_first = naive.generate([greedy(p, stop=stops, max_tokens=16) for p in PROMPTS])
    assert [o[0].text for o in first] == [o[0].text for o in ref_first]
    for turn in range(3):
        append = f"\nWait, hint {turn}: check it.\n"
        first = backend.generate([Request(continues=o[0], append=append, max_tokens=16, stop=stops) for o in first])
        ref_first = naive.generate([Request(continues=o[0], append=append, max_tokens=16, stop=stops) for o in ref_first])
        assert [o[0].text for o in first] == [o[0].text for o in ref_first]
        for ours, ref in zip(first, ref_first):
            assert ours[0].prompt_tokens == ref[0].prompt_tokens
            assert ref[0].cached_prompt_tokens == 0
            if isinstance(backend, TransformersBackend):
                # everything but the appended text (and at most one re-fed token) came from the cache
                appended = len(backend.tokenizer(append, add_special_tokens=False).input_ids)
                assert ours[0].prompt_tokens - ours[0].cached_prompt_tokens <= appended + 3


def test_batched_generation_equals_one_at_a_time(backend):
    batch = backend.generate([greedy(p) for p in PROMPTS])
    alone = [backend.generate([greedy(p)])[0][0].text for p in PROMPTS]
    assert [o[0].text for o in batch] == alone


def test_released_handles_cannot_be_continued(backend):
    c = backend.generate([greedy(PROMPTS[0], max_tokens=4)])[0][0]
    backend.release([c])
    with pytest.raises(TracemillError, match="unknown or was released"):
        backend.generate([Request(continues=c, append="x", max_tokens=2)])


def test_missing_model_folder_is_one_clear_error(tmp_path):
    with pytest.raises(TracemillError, match="has no config.json — run 'dvc repro bootstrap'"):
        load_backend(LLMParams(), tmp_path / "nope")
