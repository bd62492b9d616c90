"""The transformers backend: batched decoding on CPU or GPU, with continuations that reuse the
KV cache of their prefix instead of re-encoding it.

Each live sequence keeps its per-layer key/value tensors (never modified in place, so one prefix
can be continued many times, as a search tree does). A request prefills only the tokens its
predecessor did not cover, alone (no padding: a padded ragged prefill can produce NaNs in fully
masked rows); then all rows decode together with their caches left-padded and masked. When a stop
string ends a row, the row's cache is cut back to the last token that lies wholly before the stop,
and the rest of the returned text is carried as `tail` into the next continuation's tokens.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracemill.errors import TracemillError
from tracemill.llm.base import Completion, LLMParams, Request


@dataclass
class _Seq:
    ids: list[int]  # every token this sequence stands for
    kv: list[tuple[Any, Any]] | None  # per layer (1, heads, kv_len, dim); covers ids[:kv_len]
    tail: str = ""  # returned text not covered by ids (the part of a token before a stop string)

    @property
    def kv_len(self) -> int:
        return 0 if not self.kv else int(self.kv[0][0].shape[2])


@dataclass
class _Row:
    request: Request
    seq_prefix: list[int]  # tokens fed before decoding (prompt + predecessor + append)
    cached: int  # of those, how many came from a cache
    kv: list[tuple[Any, Any]]  # after prefill
    logits: Any  # next-token logits after prefill
    generator: Any
    max_new: int
    gen: list[int]
    logprobs: list[float]
    done: Completion | None = None


class TransformersBackend:
    def __init__(self, model_path: str | Path, params: LLMParams, reuse_cache: bool = True) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if params.threads:
            torch.set_num_threads(params.threads)
        self.params = params
        self.reuse_cache = reuse_cache
        self.device = torch.device("cuda" if params.device == "auto" and torch.cuda.is_available() else ("cpu" if params.device == "auto" else params.device))
        dtype = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[params.dtype]
        self._attach(AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(self.device).eval(),
                     AutoTokenizer.from_pretrained(model_path))

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, params: LLMParams, reuse_cache: bool = True) -> "TransformersBackend":
        """A backend over a model already in memory (RL generates with the weights it is training; a
        backend's caches are only valid while those weights stay as they are)."""
        self = cls.__new__(cls)
        self.params, self.reuse_cache, self.device = params, reuse_cache, next(model.parameters()).device
        self._attach(model, tokenizer)
        return self

    def _attach(self, model: Any, tokenizer: Any) -> None:
        self.tokenizer, self.model = tokenizer, model
        eos = model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            self.eos_ids.add(tokenizer.eos_token_id)
        self.max_len = int(getattr(model.config, "max_position_embeddings", 1 << 30))
        self._live: dict[int, _Seq] = {}  # insertion order is recency of use, for eviction
        self._kv_tokens = 0
        self._ids = itertools.count()

    # ---- public protocol ----------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids if text else []

    def generate(self, requests: Sequence[Request]) -> list[list[Completion]]:
        import torch

        with torch.inference_mode():
            rows: list[_Row] = []
            owners: list[int] = []
            for index, request in enumerate(requests):
                first = self._prefill(request)
                rows.append(first)
                owners.append(index)
                for sample in range(1, request.n):
                    rows.append(self._sibling(first, sample))
                    owners.append(index)
            for start in range(0, len(rows), self.params.max_batch):
                self._decode(rows[start : start + self.params.max_batch])
        out: list[list[Completion]] = [[] for _ in requests]
        for owner, row in zip(owners, rows):
            out[owner].append(row.done)
        return out

    def release(self, completions: Sequence[Any]) -> None:
        for c in completions:
            seq = self._live.pop(c.handle if isinstance(c, Completion) else c, None)
            if seq is not None:
                self._kv_tokens -= seq.kv_len

    def live_sequences(self) -> int:
        return len(self._live)

    # ---- prefill ------------------------------------------------------------------------------

    def _resolve(self, request: Request) -> tuple[list[int], list[tuple[Any, Any]] | None, int]:
        if request.prompt is not None:
            return self.encode(request.prompt), None, 0
        handle = request.continues.handle if isinstance(request.continues, Completion) else request.continues
        seq = self._live.pop(handle, None)
        if seq is None:
            raise TracemillError(f"generation handle {handle!r} is unknown or was released — a continuation needs a live predecessor")
        self._live[handle] = seq  # most recently used
        ids = seq.ids + self.encode(seq.tail + request.append)
        if not self.reuse_cache or not seq.kv:
            return ids, None, 0
        kv_len = seq.kv_len
        if kv_len >= len(ids):  # nothing new to feed: re-feed the last token to get next-token logits
            kv_len = len(ids) - 1
        kv = [(k[:, :, :kv_len], v[:, :, :kv_len]) for k, v in seq.kv]
        return ids, kv, kv_len

    def _prefill(self, request: Request) -> _Row:
        import torch
        from transformers import DynamicCache

        ids, kv, cached = self._resolve(request)
        if not ids:
            raise TracemillError("a generation request has an empty prompt")
        new = torch.tensor([ids[cached:]], device=self.device)
        positions = torch.arange(cached, len(ids), device=self.device).unsqueeze(0)
        cache = DynamicCache(ddp_cache_data=kv) if kv else DynamicCache()
        out = self.model(input_ids=new, position_ids=positions, past_key_values=cache, use_cache=True)
        layers = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        generator = self._generator(request, 0)
        room = max(0, self.max_len - len(ids))
        return _Row(request, ids, cached, layers, out.logits[0, -1].float(), generator, min(request.max_tokens, room), [], [])

    def _sibling(self, first: _Row, sample: int) -> _Row:
        """Sample `sample` of a request shares the first sample's prefill: its prompt is all cached."""
        generator = self._generator(first.request, sample)
        return _Row(first.request, first.seq_prefix, len(first.seq_prefix), first.kv, first.logits, generator, first.max_new, [], [])

    def _generator(self, request: Request, sample: int) -> Any:
        import torch

        return torch.Generator(device="cpu").manual_seed(int(request.seed) * 1_000_003 + sample)

    # ---- batched decode -----------------------------------------------------------------------

    def _decode(self, rows: list[_Row]) -> None:
        import torch
        import torch.nn.functional as F
        from transformers import DynamicCache

        lengths = [len(r.seq_prefix) for r in rows]  # tokens covered by each row's cache after prefill
        longest = max(lengths)
        n_layers = len(rows[0].kv)
        data = []
        for layer in range(n_layers):
            keys = torch.cat([F.pad(r.kv[layer][0], (0, 0, longest - n, 0)) for r, n in zip(rows, lengths)])
            values = torch.cat([F.pad(r.kv[layer][1], (0, 0, longest - n, 0)) for r, n in zip(rows, lengths)])
            data.append((keys, values))
        cache = DynamicCache(ddp_cache_data=data)
        mask = torch.zeros(len(rows), longest, dtype=torch.long, device=self.device)
        for i, n in enumerate(lengths):
            mask[i, longest - n :] = 1
        pads = [longest - n for n in lengths]
        active = list(range(len(rows)))
        logits = torch.stack([r.logits for r in rows])
        step = 0
        while active:
            tokens = [self._sample(rows[i], logits[j]) for j, i in enumerate(active)]
            keep = []
            for j, i in enumerate(active):
                if self._after_token(rows[i], tokens[j]):
                    self._finish_row(rows[i], cache, j, pads[i], lengths[i] + step)
                else:
                    keep.append(j)
            if not keep:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                mask = mask[index]
                logits = logits[index]
                active = [active[j] for j in keep]
                tokens = [tokens[j] for j in keep]
            mask = torch.cat([mask, torch.ones(len(active), 1, dtype=torch.long, device=self.device)], dim=1)
            positions = torch.tensor([[lengths[i] + step] for i in active], device=self.device)
            out = self.model(
                input_ids=torch.tensor([[t] for t in tokens], device=self.device),
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
            )
            cache = out.past_key_values
            logits = out.logits[:, -1].float()
            step += 1

    def _sample(self, row: _Row, logits: Any) -> int:
        import torch

        req = row.request
        if req.temperature <= 0:
            token = int(torch.argmax(logits))
        else:
            probs = torch.softmax(logits / req.temperature, dim=-1)
            if req.top_p < 1.0:
                sorted_p, order = torch.sort(probs, descending=True)
                cut = torch.cumsum(sorted_p, dim=-1) - sorted_p > req.top_p  # keep the smallest set reaching top_p
                sorted_p[cut] = 0.0
                probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
            token = int(torch.multinomial(probs / probs.sum(), 1, generator=row.generator))
        if req.logprobs:
            row.logprobs.append(float(torch.log_softmax(logits, dim=-1)[token]))
        return token

    def _after_token(self, row: _Row, token: int) -> bool:
        """Record `token`; True when the row is finished (eos, stop string, or budget)."""
        req = row.request
        if token in self.eos_ids:
            row.done = self._completion(row, kept=len(row.gen), text=self._text(row.gen), finish="eos", stop=None)
            return True
        row.gen.append(token)
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
        if len(row.gen) >= row.max_new:
            row.done = self._completion(row, kept=len(row.gen), text=text, finish="length", stop=None)
            return True
        return False

    def _completion(self, row: _Row, kept: int, text: str, finish: str, stop: str | None) -> Completion:
        ids = row.seq_prefix + row.gen[:kept]
        covered = self._text(row.gen[:kept])
        handle = next(self._ids)
        self._live[handle] = _Seq(ids=ids, kv=None, tail=text[len(covered):])
        return Completion(
            text=text,
            finish_reason=finish,
            stop_reason=stop,
            prompt_tokens=len(row.seq_prefix),
            cached_prompt_tokens=row.cached,
            generated_tokens=len(row.gen) + (1 if finish == "eos" else 0),
            handle=handle,
            logprobs=row.logprobs if row.request.logprobs else None,
        )

    def _finish_row(self, row: _Row, cache: Any, batch_index: int, pad: int, fed: int) -> None:
        """Keep the finished row's cache (its valid span, cut to the tokens it keeps) for continuations."""
        seq = self._live[row.done.handle]
        keep = min(len(seq.ids), fed)
        # copies, not views: a view would pin the whole batch tensor of this step in memory
        seq.kv = [
            (layer.keys[batch_index : batch_index + 1, :, pad : pad + keep].clone(), layer.values[batch_index : batch_index + 1, :, pad : pad + keep].clone())
            for layer in cache.layers
        ]
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
