"""The transformers backend: batched decoding on CPU or GPU, with continuations that reuse the
KV cache of their prefix instead of re-encoding it.

Each live sequence keeps its per-layer key/value tensors (never modified in place, so one prefix
can be continued many times, as a search tree does). A generate call takes its requests in groups
of at most `max_batch` rows (a request's n samples are n rows) and prefills each group in one
forward: every row's cached prefix is left-padded into one tensor per layer and its new tokens
are left-padded after it, all masked, so each row's last slot holds its last prompt token (as
`model.generate` pads). A pad slot with nothing to attend to gets zeros from torch >= 2.5 SDPA (a
finite value from eager attention), and no real token attends to a pad slot. The group's rows then
decode together, one forward per token, with one device-to-host copy of the new tokens per step; a
finished row's cache is cut back to the tokens it keeps (to the last token wholly before a stop string)
and the rest of the returned text is carried as `tail` into the next continuation's tokens.

Sampling is counter-based: the uniform a row draws at step t is a hash of (its stream key, t),
computed for all rows at once on the logits' device, so no random generator lives on any device
and a row's draws do not depend on the rows batched with it. The key comes from the documented
seed `seed * 1_000_003 + sample`. Draws invert the (top-p truncated) categorical CDF: one uniform
per row per step (a few integer ops on a (rows,) tensor), where Gumbel-max would hash rows x vocab
values and per-row generators would launch one draw per row. Greedy rows are one argmax.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from tracemill.errors import TracemillError
from tracemill.llm.base import Completion, LLMParams, Request

SEED_STRIDE = 1_000_003  # sample j of seed s uses stream seed s * SEED_STRIDE + j (llm/base.py)
_MASK32 = 0xFFFFFFFF
# odd multipliers below 2**31: a 32-bit value times one stays below 2**63, so int64 tensors never overflow
_MIX = (0x7FEB352D, 0x5BD1E995)
_UTF8_MAX = 4  # bytes of one character: a token can hold a fragment of one, so a window needs this slack


def _mix32(x: Any) -> Any:
    """A 32-bit multiply-xorshift hash; the same code hashes Python ints and int64 tensors."""
    for m in _MIX:
        x = x ^ (x >> 16)
        x = (x * m) & _MASK32
    return x ^ (x >> 15)


def stream_key(seed: int, sample: int) -> int:
    """The 32-bit key of sample `sample` of a request seeded `seed` (any Python int)."""
    s = (int(seed) * SEED_STRIDE + sample) & ((1 << 64) - 1)
    return _mix32(_mix32(s & _MASK32) ^ (s >> 32))


def uniforms(keys: Any, step: int) -> Any:
    """Step `step`'s uniform in [0, 1) for each key, as float64 on the keys' device: a pure function
    of (key, step), so a row gets the same draw alone or in any batch, on any device."""
    return _mix32(keys ^ _mix32(step + 1)).double() / (1 << 32)


def sample_tokens(logits: Any, temperature: Any, top_p: Any | None, keys: Any, step: int) -> Any:
    """One token per row: (rows, vocab) logits, per-row temperature (> 0), top_p and key tensors on
    the logits' device. Inverse-CDF sampling of softmax(logits / temperature), cut to the smallest
    set of tokens reaching top_p (rows with top_p >= 1 are not cut; None: no row is)."""
    import torch

    probs = torch.softmax(logits / temperature.unsqueeze(1), dim=-1)
    if top_p is not None:
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        cut = (torch.cumsum(sorted_p, dim=-1) - sorted_p > top_p.unsqueeze(1)) & (top_p < 1.0).unsqueeze(1)
        probs = probs.scatter(-1, order, sorted_p.masked_fill(cut, 0.0))
    # float64: a float32 running sum over a large vocabulary drifts, and u * total must stay below total
    cdf = torch.cumsum(probs.double(), dim=-1)
    target = uniforms(keys, step) * cdf[:, -1]
    # right=True: the first token whose cdf exceeds the target, so a zero-probability token is never chosen
    return torch.searchsorted(cdf, target.unsqueeze(1), right=True).squeeze(1)


@dataclass
class _Seq:
    ids: list[int]  # every token this sequence stands for
    kv: list[tuple[Any, Any]] | None  # per layer (1, heads, kv_len, dim); covers ids[:kv_len]
    tail: str = ""  # returned text not covered by ids (the part of a token before a stop string)

    @property
    def kv_len(self) -> int:
        return 0 if not self.kv else int(self.kv[0][0].shape[2])


@dataclass
class _Prompt:
    """A request after prefill: the tokens fed before decoding and where they lie in the group's cache."""

    request: Request
    ids: list[int]  # prompt + predecessor + append
    cached: int  # of those, how many came from a cache
    max_new: int
    cache_start: int  # slot of the first cached token; the cached tokens are contiguous
    new_start: int  # slot of the first fed token; fed and then generated tokens follow contiguously


@dataclass
class _Group:
    """Requests prefilled in one forward: one (rows, heads, slots, dim) tensor pair per layer."""

    prompts: list[_Prompt]
    layers: list[tuple[Any, Any]]
    mask: Any  # (rows, slots) 1 where the slot holds one of the row's tokens
    logits: Any  # (rows, vocab) next-token logits


@dataclass
class _Row:
    prompt: _Prompt
    sample: int
    gen: list[int] = field(default_factory=list)
    done: Completion | None = None

    @property
    def request(self) -> Request:
        return self.prompt.request


class _Sampler:
    """The per-row sampling settings of a decode batch, on the device, with host-side flags so that
    choosing a path never waits for the device."""

    def __init__(self, requests: list[Request], keys: list[int], device: Any) -> None:
        import torch

        self.device = device
        self.greedy = torch.tensor([r.temperature <= 0 for r in requests], device=device)
        # a greedy row's draw is discarded; temperature 1 keeps its arithmetic finite
        self.temperature = torch.tensor([r.temperature if r.temperature > 0 else 1.0 for r in requests], device=device)
        self.top_p = torch.tensor([r.top_p for r in requests], device=device)
        self.keys = torch.tensor(keys, dtype=torch.int64, device=device)
        self._flags(requests)

    def _flags(self, requests: list[Request]) -> None:
        self.requests = requests
        self.any_greedy = any(r.temperature <= 0 for r in requests)
        self.all_greedy = all(r.temperature <= 0 for r in requests)
        self.cuts = any(r.temperature > 0 and r.top_p < 1.0 for r in requests)

    def select(self, keep: list[int]) -> None:
        import torch

        index = torch.tensor(keep, device=self.device)
        self.greedy, self.temperature, self.top_p, self.keys = (
            t[index] for t in (self.greedy, self.temperature, self.top_p, self.keys)
        )
        self._flags([self.requests[j] for j in keep])

    def draw(self, logits: Any, step: int) -> Any:
        import torch

        if self.all_greedy:
            return torch.argmax(logits, dim=-1)
        tokens = sample_tokens(logits, self.temperature, self.top_p if self.cuts else None, self.keys, step)
        return torch.where(self.greedy, torch.argmax(logits, dim=-1), tokens) if self.any_greedy else tokens


class TransformersBackend:
    def __init__(self, model_path: str | Path, params: LLMParams, reuse_cache: bool = True) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if params.threads:
            torch.set_num_threads(params.threads)
        self.params = params
        self.reuse_cache = reuse_cache
        self.device = torch.device(
            "cuda"
            if params.device == "auto" and torch.cuda.is_available()
            else ("cpu" if params.device == "auto" else params.device)
        )
        dtype = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
            params.dtype
        ]
        # PreTrainedModel.to is `@wraps(torch.nn.Module.to)`: typeshed's _Wrapped does not bind self
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(self.device)  # type: ignore[arg-type]
        self._attach(model.eval(), AutoTokenizer.from_pretrained(model_path))

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, params: LLMParams, reuse_cache: bool = True) -> TransformersBackend:
        """A backend over a model already in memory (RL generates with the weights it is training; a
        backend's caches are only valid while those weights stay as they are)."""
        self = cls.__new__(cls)
        self.params, self.reuse_cache, self.device = params, reuse_cache, next(model.parameters()).device
        self._attach(model, tokenizer)
        return self

    def _attach(self, model: Any, tokenizer: Any) -> None:
        import numpy as np

        self.tokenizer, self.model = tokenizer, model
        eos = model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            self.eos_ids.add(tokenizer.eos_token_id)
        self._eos = np.array(sorted(self.eos_ids), dtype=np.int64)
        self.max_len = int(getattr(model.config, "max_position_embeddings", 1 << 30))
        self._live: dict[int, _Seq] = {}  # insertion order is recency of use, for eviction
        self._kv_tokens = 0
        self._ids = itertools.count()

    # ---- public protocol ----------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids if text else []

    def generate(self, requests: Sequence[Request]) -> list[list[Completion]]:
        import torch

        out: list[list[Completion]] = [[] for _ in requests]
        with torch.inference_mode():
            for indices in self._groups(requests):
                group = self._prefill([requests[i] for i in indices])
                # n samples of a request share its prefill: sample 0 pays for the prompt, the others report it cached
                rows = [(p, sample) for p in range(len(indices)) for sample in range(requests[indices[p]].n)]
                for start in range(0, len(rows), self.params.max_batch):
                    chunk = rows[start : start + self.params.max_batch]
                    for (p, _), row in zip(chunk, self._decode(group, chunk)):
                        out[indices[p]].append(cast(Completion, row.done))  # _decode returns finished rows
        return out

    def release(self, completions: Sequence[Any]) -> None:
        for c in completions:
            seq = self._live.pop(c.handle if isinstance(c, Completion) else c, None)
            if seq is not None:
                self._kv_tokens -= seq.kv_len

    def live_sequences(self) -> int:
        return len(self._live)

    # ---- prefill ------------------------------------------------------------------------------

    def _groups(self, requests: Sequence[Request]) -> Iterator[list[int]]:
        """Consecutive requests whose samples fit in one decode batch (a request with more samples
        than that is a group alone and decodes in several batches)."""
        group: list[int] = []
        rows = 0
        for index, request in enumerate(requests):
            if group and rows + request.n > self.params.max_batch:
                yield group
                group, rows = [], 0
            group.append(index)
            rows += request.n
        if group:
            yield group

    def _resolve(self, request: Request) -> tuple[list[int], list[tuple[Any, Any]] | None, int]:
        if request.prompt is not None:
            ids = list(request.prompt) if isinstance(request.prompt, tuple) else self.encode(request.prompt)
            kv, cached = None, 0
        else:
            handle = request.continues.handle if isinstance(request.continues, Completion) else request.continues
            seq = self._live.pop(handle, None)
            if seq is None:
                raise TracemillError(
                    f"generation handle {handle!r} is unknown or was released — a continuation needs a live predecessor"
                )
            self._live[handle] = seq  # most recently used
            ids = seq.ids + self.encode(seq.tail + request.append)
            kv, cached = (seq.kv, min(seq.kv_len, len(ids) - 1)) if self.reuse_cache and seq.kv else (None, 0)
        if not ids:
            raise TracemillError("a generation request has an empty prompt")
        # nothing new to feed still re-feeds the last token, for its next-token logits
        return ids, kv and [(k[:, :, :cached], v[:, :, :cached]) for k, v in kv], cached

    def _prefill(self, requests: list[Request]) -> _Group:
        import torch
        import torch.nn.functional as F
        from transformers import DynamicCache

        resolved = [self._resolve(r) for r in requests]
        cached = [c for _, _, c in resolved]
        fed = [len(ids) - c for ids, _, c in resolved]
        width, new = max(cached), max(fed)  # slots: [cache, left-padded][fed tokens, left-padded]
        prompts = [
            _Prompt(r, ids, c, min(r.max_tokens, max(0, self.max_len - len(ids))), width - c, width + new - n)
            for r, (ids, _, c), n in zip(requests, resolved, fed)
        ]
        cache = DynamicCache()
        if width:
            like = next(kv for _, kv, _ in resolved if kv)  # shape, dtype and device of an empty row's padding
            layers = []
            for layer, (k0, v0) in enumerate(like):
                parts = [
                    (F.pad(kv[layer][0], (0, 0, width - c, 0)), F.pad(kv[layer][1], (0, 0, width - c, 0)))
                    if kv
                    else (
                        k0.new_zeros(*k0.shape[:2], width, k0.shape[3]),
                        v0.new_zeros(*v0.shape[:2], width, v0.shape[3]),
                    )
                    for _, kv, c in resolved
                ]
                layers.append((torch.cat([k for k, _ in parts]), torch.cat([v for _, v in parts])))
            cache = DynamicCache(ddp_cache_data=layers)
        # pad slots hold token 0 at position 0: any id works, they are masked out
        input_ids = torch.tensor(
            [[0] * (new - n) + ids[c:] for (ids, _, c), n in zip(resolved, fed)], device=self.device
        )
        slot = torch.arange(width + new, device=self.device)
        starts = torch.tensor([[p.cache_start, p.new_start] for p in prompts], device=self.device)
        mask = ((slot >= starts[:, :1]) & (slot < width)) | (slot >= starts[:, 1:])
        offsets = torch.tensor([[c - (new - n)] for c, n in zip(cached, fed)], device=self.device)
        positions = (torch.arange(new, device=self.device) + offsets).clamp(min=0)
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask.long(),
            position_ids=positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        layers = [(layer.keys, layer.values) for layer in out.cache.layers]
        return _Group(prompts, layers, mask.long(), out.logits[:, -1].float())

    # ---- batched decode -----------------------------------------------------------------------

    def _decode(self, group: _Group, members: list[tuple[int, int]]) -> list[_Row]:
        """Decode rows (prompt index in the group, sample) together until each finishes; returns them finished."""
        import numpy as np
        import torch
        from transformers import DynamicCache

        rows = [_Row(group.prompts[p], sample) for p, sample in members]
        mask, logits, layers = group.mask, group.logits, group.layers
        if [p for p, _ in members] != list(range(len(group.prompts))):  # samples repeat their prompt's row
            index = torch.tensor([p for p, _ in members], device=self.device)
            mask, logits, layers = mask[index], logits[index], [(k[index], v[index]) for k, v in layers]
        # the cache copies its data: the group's tensors stay as they are for its other batches
        cache = DynamicCache(ddp_cache_data=layers)
        positions = torch.tensor([len(r.prompt.ids) for r in rows], device=self.device)
        sampler = _Sampler([r.request for r in rows], [stream_key(r.request.seed, r.sample) for r in rows], self.device)
        steps = max(1, max(r.prompt.max_new for r in rows))
        history = np.zeros((len(rows), steps), dtype=np.int64)  # host copy of every sampled token
        logprobs = np.zeros((len(rows), steps)) if any(r.request.logprobs for r in rows) else None
        max_new = np.array([r.prompt.max_new for r in rows])
        stops = np.array([bool(r.request.stop) for r in rows])
        active = np.arange(len(rows))  # row of each batch position
        step = 0
        while True:
            tokens = sampler.draw(logits, step)
            history[active, step] = tokens.cpu().numpy()  # the step's one device-to-host copy
            if logprobs is not None:
                logprobs[active, step] = (
                    torch.log_softmax(logits, dim=-1).gather(1, tokens.unsqueeze(1)).squeeze(1).cpu().numpy()
                )
            ended = np.isin(history[active, step], self._eos) | (step + 1 >= max_new[active])
            finished = set()
            for j in np.flatnonzero(ended | stops[active]):
                i, row = active[j], rows[active[j]]
                if self._settle(row, history[i, : step + 1]):
                    if logprobs is not None and row.request.logprobs:
                        row.done.logprobs = logprobs[
                            i, : step + 1
                        ].tolist()  # every sampled token's, eos and cut ones too
                    self._finish_row(row, cache, int(j), len(row.prompt.ids) + step)
                    finished.add(int(j))
            if len(finished) == len(active):
                return rows
            if finished:
                keep = [j for j in range(len(active)) if j not in finished]
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                mask, tokens, positions = mask[index], tokens[index], positions[index]
                sampler.select(keep)
                active = active[keep]
            mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=1)
            out = self.model(
                input_ids=tokens.unsqueeze(1),
                attention_mask=mask,
                position_ids=(positions + step).unsqueeze(1),
                cache=cache,
                use_cache=True,
            )
            cache, logits = out.cache, out.logits[:, -1].float()
            step += 1

    def _settle(self, row: _Row, sampled: Any) -> bool:
        """Called for a row that hit eos or its budget, or has stop strings, with every token it has
        sampled; True (and `row.done` set) when the row is finished."""
        req = row.request
        if int(sampled[-1]) in self.eos_ids:
            row.gen = sampled[:-1].tolist()
            row.done = self._completion(row, kept=len(row.gen), text=self._text(row.gen), finish="eos", stop=None)
            return True
        if req.stop and self._stop_in_tail(sampled, req.stop):
            row.gen = sampled.tolist()
            text = self._text(row.gen)
            hit = _first_stop(text, req.stop)
            if hit is not None:
                pos, stop = hit
                returned = text[:pos]
                kept = len(row.gen)
                while kept and not returned.startswith(self._text(row.gen[:kept])):
                    kept -= 1
                row.done = self._completion(row, kept=kept, text=returned, finish="stop", stop=stop)
                return True
        if len(sampled) >= row.prompt.max_new:
            row.gen = sampled.tolist()
            row.done = self._completion(row, kept=len(row.gen), text=self._text(row.gen), finish="length", stop=None)
            return True
        return False

    def _stop_in_tail(self, sampled: Any, stops: Sequence[str]) -> bool:
        """Whether a stop string shows in the text of the last few tokens: a stop that the newest
        token completes lies within its byte length in tokens (a token holds at least one byte),
        plus slack for a character split across tokens. Checked every step, this finds each stop
        the step it appears; the caller confirms on the whole text."""
        window = max(len(s.encode()) for s in stops) + _UTF8_MAX
        tail = self._text(sampled[-window:].tolist())
        return any(s and s in tail for s in stops)

    def _completion(self, row: _Row, kept: int, text: str, finish: str, stop: str | None) -> Completion:
        ids = row.prompt.ids + row.gen[:kept]
        covered = self._text(row.gen[:kept])
        handle = next(self._ids)
        self._live[handle] = _Seq(ids=ids, kv=None, tail=text[len(covered) :])
        return Completion(
            text=text,
            finish_reason=finish,
            stop_reason=stop,
            prompt_tokens=len(row.prompt.ids),
            cached_prompt_tokens=row.prompt.cached if row.sample == 0 else len(row.prompt.ids),
            generated_tokens=len(row.gen) + (1 if finish == "eos" else 0),
            handle=handle,
        )

    def _finish_row(self, row: _Row, cache: Any, batch_index: int, fed: int) -> None:
        """Keep the finished row's cache (its cached and fed spans, cut to the tokens it keeps) for continuations."""
        import torch

        seq = self._live[cast(Completion, row.done).handle]  # called once the row is finished
        keep = min(len(seq.ids), fed)
        p = row.prompt
        spans = ((p.cache_start, p.cached), (p.new_start, keep - p.cached))

        # copies, not views: a view would pin the whole batch tensor of this step in memory
        def cut(t: Any) -> Any:
            return torch.cat([t[batch_index : batch_index + 1, :, start : start + n] for start, n in spans], dim=2)

        seq.kv = [(cut(layer.keys), cut(layer.values)) for layer in cache.layers]
        self._kv_tokens += keep
        self._evict()

    def _evict(self) -> None:
        """Drop the KV of the least recently used traces past `kv_cache_tokens`; their ids stay, so
        continuing one still works and recomputes its prefix."""
        for seq in self._live.values():
            if self._kv_tokens <= self.params.kv_cache_tokens:
                return
            if seq.kv:
                self._kv_tokens -= seq.kv_len
                seq.kv = None

    def _text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False) if ids else ""


def _first_stop(text: str, stops: Sequence[str]) -> tuple[int, str] | None:
    best: tuple[int, str] | None = None
    for stop in stops:
        if not stop:
            continue
        pos = text.find(stop)
        if pos >= 0 and (best is None or pos < best[0]):
            best = (pos, stop)
    return best
