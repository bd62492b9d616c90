"""One contract for every generation backend: stop strings, n samples, continuation == re-encode,
token accounting. Runs on a real tiny Qwen2 model built from scratch."""

import importlib.util

import pytest

from tracemill import tiny
from tracemill.errors import TracemillError
from tracemill.llm import LLMParams, Request, load_backend
from tracemill.llm.hf import TransformersBackend
from tracemill.llm.openai_backend import OpenAIBackend
from tracemill.llm.server import CompletionServer

CORPUS = [
    f"Question {i}: what is {i} plus {3 * i}? Wait, let me compute.\n"
    f"```python\nprint({i}+{3 * i})\n```\n```output\n{4 * i}\n```\n"
    f"The answer is \\boxed{{{4 * i}}}."
    for i in range(200)
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tok = tiny.make_tokenizer(CORPUS, 400)
    return tiny.save(
        tiny.make_model(tok, tiny.TinyConfig(num_attention_heads=2, num_key_value_heads=1, seed=1)),
        tok,
        tmp_path_factory.mktemp("llm") / "model",
    )


@pytest.fixture(scope="module")
def server(model_dir):
    """A real OpenAI-compatible server on 127.0.0.1 serving the transformers backend."""
    with CompletionServer(load_backend(LLMParams(), model_dir), "tiny") as running:
        yield running


HAS_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.fixture(
    scope="module",
    params=[
        "transformers",
        "openai",
        pytest.param("vllm", marks=pytest.mark.skipif(not HAS_VLLM, reason="vllm not installed (gpu extra)")),
    ],
)
def backend(request, model_dir):
    if request.param == "openai":
        url = request.getfixturevalue("server").url
        params = LLMParams(backend="openai", base_url=url, served_model="tiny", concurrency=8, retries=1)
    else:
        params = LLMParams(backend=request.param)
    b = load_backend(params, model_dir)
    yield b
    getattr(b, "close", lambda: None)()


def token_level(backend):
    return not isinstance(backend, OpenAIBackend)


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
        previous = first
        first = backend.generate([Request(continues=o[0], append=append, max_tokens=16, stop=stops) for o in previous])
        if token_level(backend):
            ref_first = naive.generate(
                [Request(continues=o[0], append=append, max_tokens=16, stop=stops) for o in ref_first]
            )
        else:  # text-level: the server tokenizes the whole text, so the reference is that text from scratch
            ref_first = naive.generate(
                [Request(prompt=o[0].handle + append, max_tokens=16, stop=stops) for o in previous]
            )
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
    if not token_level(backend):
        pytest.skip("text-level: a handle is the trace's text, nothing is kept to release")
    c = backend.generate([greedy(PROMPTS[0], max_tokens=4)])[0][0]
    backend.release([c])
    with pytest.raises(TracemillError, match="unknown or was released"):
        backend.generate([Request(continues=c, append="x", max_tokens=2)])


def test_missing_model_folder_is_one_clear_error(tmp_path):
    with pytest.raises(TracemillError, match="has no config.json — run 'dvc repro bootstrap'"):
        load_backend(LLMParams(), tmp_path / "nope")


def test_seeded_sampling_is_identical_across_backend_instances(model_dir, naive):
    req = Request(prompt=PROMPTS[2], n=3, temperature=0.8, top_p=0.9, seed=11, max_tokens=16)
    fresh = TransformersBackend(model_dir, LLMParams())
    assert [c.text for c in fresh.generate([req])[0]] == [c.text for c in naive.generate([req])[0]]


def test_evicted_cache_recomputes_the_prefix_and_gives_the_same_text(model_dir, naive):
    small = TransformersBackend(model_dir, LLMParams(kv_cache_tokens=1))
    a = small.generate([greedy(PROMPTS[3], max_tokens=8)])[0][0]
    b = naive.generate([greedy(PROMPTS[3], max_tokens=8)])[0][0]
    nxt = small.generate([Request(continues=a, append=" Wait,", max_tokens=8)])[0][0]
    ref = naive.generate([Request(continues=b, append=" Wait,", max_tokens=8)])[0][0]
    assert nxt.cached_prompt_tokens == 0 and nxt.text == ref.text


def test_server_answers_bad_requests_with_400(server):
    import httpx

    reply = httpx.post(f"{server.url}/completions", json={"model": "tiny", "prompt": {"not": "text"}})
    assert reply.status_code == 400 and "prompt" in reply.json()["error"]["message"]


def test_openai_backend_names_the_url_when_no_server_answers(model_dir):
    params = LLMParams(backend="openai", base_url="http://127.0.0.1:9/v1", retries=0, timeout_s=2.0)
    with pytest.raises(TracemillError, match="cannot reach http://127.0.0.1:9/v1/completions"):
        load_backend(params, model_dir).generate([greedy(PROMPTS[0], max_tokens=2)])


def test_n_samples_share_one_prefill_on_transformers(backend):
    outs = backend.generate([Request(prompt=PROMPTS[4] + " twice", n=3, temperature=1.0, seed=3, max_tokens=4)])[0]
    assert [c.prompt_tokens for c in outs] == [outs[0].prompt_tokens] * 3
    if isinstance(backend, TransformersBackend):
        assert [c.cached_prompt_tokens for c in outs] == [0] + [outs[0].prompt_tokens] * 2
