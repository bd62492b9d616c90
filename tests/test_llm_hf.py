"""The transformers backend's own pieces: counter-based sampling on the logits' device, batch-
independent seeded draws, one-forward prefill of mixed groups, stop detection on the decoded tail,
logprobs. Runs on a real tiny Qwen2 model built from scratch."""

import pytest
import torch

from tracemill import tiny
from tracemill.llm import LLMParams, Request
from tracemill.llm.hf import TransformersBackend, _Sampler, sample_tokens, stream_key, uniforms

CORPUS = [
    f"Question {i}: what is {i} plus {5 * i}? Let me think step by step. The answer is \\boxed{{{6 * i}}}."
    for i in range(200)
]
PROMPTS = [f"Question {i}: what is" for i in range(4)]


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    tok = tiny.make_tokenizer(CORPUS, 400)
    path = tiny.save(
        tiny.make_model(tok, tiny.TinyConfig(num_attention_heads=2, num_key_value_heads=1, seed=2)),
        tok,
        tmp_path_factory.mktemp("hf") / "model",
    )
    return TransformersBackend(path, LLMParams(device="cpu"))


def test_every_sampling_path_stays_on_the_logits_device():
    # a CPU random generator fed CUDA logits crashed; on the meta device any CPU tensor mixed in raises too
    meta = torch.device("meta")
    requests = [
        Request(prompt="x", temperature=0.0),
        Request(prompt="x", temperature=0.7, top_p=0.9),
        Request(prompt="x", temperature=1.0),
    ]
    sampler = _Sampler(requests, [stream_key(r.seed, j) for j, r in enumerate(requests)], meta)
    tokens = sampler.draw(torch.zeros(3, 50, device=meta), step=3)
    assert tokens.device == meta and tokens.shape == (3,)
    sampler.select([1, 2])  # rows dropped mid-decode: the kept settings stay on the device too
    assert sampler.draw(torch.zeros(2, 50, device=meta), step=4).device == meta


def test_uniforms_depend_only_on_key_and_step_and_cover_the_unit_interval():
    keys = torch.tensor([stream_key(seed, sample) for seed in range(100) for sample in range(100)])
    u = uniforms(keys, step=5)
    permuted = torch.randperm(len(keys), generator=torch.Generator().manual_seed(0))
    assert torch.equal(uniforms(keys[permuted], step=5), u[permuted])
    assert not torch.equal(uniforms(keys, step=6), u)
    counts = torch.histc(u.float(), bins=20, min=0.0, max=1.0)
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    assert float((counts - len(keys) / 20).abs().max()) < 5 * (len(keys) / 20) ** 0.5  # 5 sigma of a binomial bin


def test_sampled_frequencies_follow_the_distribution_and_its_top_p_cut():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    rows = 20_000
    logits = probs.log().expand(rows, -1)
    keys = torch.tensor([stream_key(7, sample) for sample in range(rows)])
    ones = torch.ones(rows)
    full = torch.bincount(sample_tokens(logits, ones, None, keys, step=0), minlength=4) / rows
    assert torch.allclose(full, probs, atol=0.015)
    # top_p 0.7: {0.5, 0.3} is the smallest set reaching it, renormalised
    cut = torch.bincount(sample_tokens(logits, ones, torch.full((rows,), 0.7), keys, step=0), minlength=4) / rows
    assert torch.allclose(cut, torch.tensor([0.625, 0.375, 0.0, 0.0]), atol=0.015)


def test_seeded_samples_do_not_depend_on_batch_partners_or_batch_size(backend):
    req = Request(prompt=PROMPTS[0], n=5, temperature=1.0, top_p=0.9, seed=5, max_tokens=12)
    alone = [c.text for c in backend.generate([req])[0]]
    partners = [
        Request(prompt=PROMPTS[1], max_tokens=20),
        req,
        Request(prompt=PROMPTS[2], n=2, temperature=0.7, seed=1, max_tokens=6),
    ]
    assert [c.text for c in backend.generate(partners)[1]] == alone
    split = TransformersBackend.from_model(
        backend.model, backend.tokenizer, LLMParams(max_batch=2)
    )  # 5 samples over 3 batches
    assert [c.text for c in split.generate([req])[0]] == alone
    assert len(set(alone)) > 1


def test_fresh_prompts_and_continuations_prefill_together_as_they_would_apart(backend):
    first = backend.generate([Request(prompt=p, max_tokens=10) for p in PROMPTS[:2]])
    mixed = [
        Request(prompt=PROMPTS[2], max_tokens=10),
        Request(continues=first[0][0], append=" so", max_tokens=10),
        Request(continues=first[1][0], append=" Let me think again, step", max_tokens=10),
    ]
    together = [o[0] for o in backend.generate(mixed)]
    apart = [backend.generate([r])[0][0] for r in mixed]
    assert [c.text for c in together] == [c.text for c in apart]
    assert [c.cached_prompt_tokens for c in together] == [c.cached_prompt_tokens for c in apart]
    assert together[0].cached_prompt_tokens == 0 and together[2].cached_prompt_tokens > 0


def test_a_stop_spanning_many_tokens_ends_the_step_it_completes(backend):
    ref = backend.generate([Request(prompt=PROMPTS[3], max_tokens=40)])[0][0]
    tokens = backend._live[ref.handle].ids[ref.prompt_tokens :]
    stop = ref.text[len(ref.text) // 3 : len(ref.text) // 3 + 16]
    completes = next(k for k in range(1, len(tokens) + 1) if stop in backend.tokenizer.decode(tokens[:k]))
    assert completes > 3  # the stop is several tokens long
    c = backend.generate([Request(prompt=PROMPTS[3], max_tokens=40, stop=["never in this text", stop])])[0][0]
    assert (c.finish_reason, c.stop_reason, c.text) == ("stop", stop, ref.text[: ref.text.find(stop)])
    assert c.generated_tokens == completes


def test_logprobs_are_the_models_log_probabilities_of_every_sampled_token(backend):
    c = backend.generate([Request(prompt=PROMPTS[1], temperature=1.0, seed=3, max_tokens=9, logprobs=True)])[0][0]
    ids = backend._live[c.handle].ids  # the end-of-turn token, when sampled, is not among them
    assert len(c.logprobs) == c.generated_tokens == len(ids) - c.prompt_tokens + (c.finish_reason == "eos")
    with torch.inference_mode():
        scores = torch.log_softmax(backend.model(torch.tensor([ids])).logits[0].float(), dim=-1)
    expected = [float(scores[p - 1, ids[p]]) for p in range(c.prompt_tokens, len(ids))]
    assert c.logprobs[: len(expected)] == pytest.approx(expected, abs=1e-4)
    if c.finish_reason == "eos":
        assert any(c.logprobs[-1] == pytest.approx(float(scores[-1, e]), abs=1e-4) for e in backend.eos_ids)
