"""Trace filters for D_seed and D_start. Each returns `(keep, reason)`; dropped rows keep their reason.

Multi-pass work is a sequence of named steps, each inspectable on its own: near-dedup is
`shingles` → `signatures` → `lsh_clusters`; decontamination is `ngrams(eval set)` → `contaminated`.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence, Set
from dataclasses import dataclass
from typing import Any

from tracemill.errors import ParamsError, TracemillError
from tracemill.params import at_least, choices, fraction

Verdict = tuple[bool, str]
KEEP: Verdict = (True, "kept")

_WORD = re.compile(r"\w+", re.UNICODE)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_CODE_ANSWER = re.compile(r"```python\n.*?\n```", re.S)  # a closed python block: a code problem's answer
DOMAINS = ("math", "code")


@dataclass(frozen=True)
class FilterParams:
    repetition_ngram: int = at_least(1, default=20)  # a repeated 20-word run marks a looping trace
    repetition_max_ratio: float = fraction(default=0.3)  # share of n-gram occurrences that may be repeats
    repetition_max_line_repeats: int = at_least(1, default=4)  # the same non-trivial line at most this many times
    min_chars: int = at_least(0, default=20)
    max_chars: int = at_least(1, default=16_000)
    require_boxed: bool = True  # a final answer: \boxed{} for math, a closed python block for code
    near_dup: bool = True
    near_dup_threshold: float = fraction(default=0.8)  # Jaccard similarity of 5-word shingles
    near_dup_num_perm: int = at_least(1, default=128)
    near_dup_shingle: int = at_least(1, default=5)
    decontam_ngram: int = at_least(1, default=8)  # START/Tulu-style 8-gram overlap with every eval set
    dedup_scope: str = choices(
        "problem", "global", default="problem"
    )  # near-dups compared within a problem or across all

    def check(self) -> None:
        if self.min_chars > self.max_chars:
            raise ParamsError(
                f"params 'start.filters.min_chars' = {self.min_chars} must be <= "
                f"'start.filters.max_chars' = {self.max_chars}, or every trace is dropped"
            )
        if self.near_dup:
            from datasketch import MinHashLSH  # its own rule for the thresholds a number of permutations can resolve

            try:
                MinHashLSH(threshold=self.near_dup_threshold, num_perm=self.near_dup_num_perm)
            except ValueError as exc:
                raise ParamsError(
                    f"params 'start.filters.near_dup_threshold' = {self.near_dup_threshold} cannot be resolved with "
                    f"'start.filters.near_dup_num_perm' = {self.near_dup_num_perm} (datasketch: {exc}) — raise "
                    "near_dup_num_perm or lower the threshold"
                ) from None


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def repetition(text: str, p: FilterParams, domain: str = "math") -> Verdict:
    """Degenerate loops: a long n-gram repeated, or the same line over and over."""
    toks = words(text)
    n = p.repetition_ngram
    if len(toks) >= 2 * n:
        grams = Counter(tuple(toks[i : i + n]) for i in range(len(toks) - n + 1))
        repeated = sum(c - 1 for c in grams.values() if c > 1)
        if repeated / max(1, len(toks) - n + 1) > p.repetition_max_ratio:
            return False, "repetition_ngram"
    lines = Counter(line.strip() for line in text.splitlines() if len(line.strip()) > 8)
    if lines and max(lines.values()) > p.repetition_max_line_repeats:
        return False, "repetition_lines"
    return KEEP


def length(text: str, p: FilterParams, domain: str = "math") -> Verdict:
    if len(text) < p.min_chars:
        return False, "too_short"
    if len(text) > p.max_chars:
        return False, "too_long"
    return KEEP


def format_ok(text: str, p: FilterParams, domain: str = "math") -> Verdict:
    """A final answer of the problem's domain, and no code block left open."""
    if p.require_boxed and domain == "code" and not _CODE_ANSWER.search(text):
        return False, "no_code_answer"
    if p.require_boxed and domain == "math" and not _BOXED.search(text):
        return False, "no_boxed_answer"
    if text.count("```") % 2:
        return False, "unclosed_code_block"
    return KEEP


ROW_FILTERS: dict[str, Callable[[str, FilterParams, str], Verdict]] = {
    "length": length,
    "format": format_ok,
    "repetition": repetition,
}


def first_failure(
    text: str, p: FilterParams, names: Sequence[str] = tuple(ROW_FILTERS), domain: str = "math"
) -> Verdict:
    if domain not in DOMAINS:
        raise TracemillError(f"filters: domain '{domain}' is not one of {', '.join(DOMAINS)}")
    for name in names:
        keep, reason = ROW_FILTERS[name](text, p, domain)
        if not keep:
            return keep, reason
    return KEEP


# ---- exact and near duplicates -------------------------------------------------------------------


def normalized_hash(text: str) -> str:
    return hashlib.sha256(" ".join(words(text)).encode()).hexdigest()[:16]


def shingles(text: str, k: int) -> set[bytes]:
    toks = words(text)
    if len(toks) <= k:
        return {" ".join(toks).encode()}
    return {" ".join(toks[i : i + k]).encode() for i in range(len(toks) - k + 1)}


def signatures(texts: Sequence[str], p: FilterParams, seed: int = 1) -> list[Any]:
    from datasketch import MinHash

    sigs = []
    for text in texts:
        mh = MinHash(num_perm=p.near_dup_num_perm, seed=seed)
        mh.update_batch(list(shingles(text, p.near_dup_shingle)))
        sigs.append(mh)
    return sigs


def lsh_clusters(sigs: Sequence[Any], p: FilterParams) -> list[int]:
    """Cluster index per item: each item joins the cluster of the first earlier item LSH calls similar."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=p.near_dup_threshold, num_perm=p.near_dup_num_perm)
    cluster: list[int] = []
    for i, sig in enumerate(sigs):
        hits = [int(k) for k in lsh.query(sig)]
        cluster.append(min(cluster[h] for h in hits) if hits else i)
        lsh.insert(str(i), sig)
    return cluster


@dataclass
class DedupResult:
    keep: list[bool]
    reasons: list[str]
    cluster: list[str]


def dedup(texts: Sequence[str], groups: Sequence[str], p: FilterParams) -> DedupResult:
    """Exact then near-duplicate removal; the first of each cluster is kept. `groups` scopes the
    comparison (the problem id with dedup_scope=problem) so two problems' traces never collide."""
    n = len(texts)
    keep, reasons = [True] * n, ["kept"] * n
    cluster = [""] * n
    scope = list(groups) if p.dedup_scope == "problem" else [""] * n
    seen: dict[tuple[str, str], int] = {}
    for i, text in enumerate(texts):
        key = (scope[i], normalized_hash(text))
        cluster[i] = key[1]
        if key in seen:
            keep[i], reasons[i] = False, "exact_duplicate"
        else:
            seen[key] = i
    if p.near_dup:
        by_scope: dict[str, list[int]] = {}
        for i in range(n):
            if keep[i]:
                by_scope.setdefault(scope[i], []).append(i)
        for idx in by_scope.values():
            clusters = lsh_clusters(signatures([texts[i] for i in idx], p), p)
            for local, c in enumerate(clusters):
                i = idx[local]
                cluster[i] = cluster[idx[c]]
                if c != local:
                    keep[i], reasons[i] = False, "near_duplicate"
    return DedupResult(keep, reasons, cluster)


# ---- decontamination -----------------------------------------------------------------------------


def ngrams(texts: Iterable[str], n: int) -> set[tuple[str, ...]]:
    out: set[tuple[str, ...]] = set()
    for text in texts:
        toks = words(text)
        if len(toks) < n:
            out.add(tuple(toks))  # a short eval question counts whole
        out.update(tuple(toks[i : i + n]) for i in range(len(toks) - n + 1))
    return out


def contaminated(text: str, eval_ngrams: Set[tuple[str, ...]], n: int) -> bool:
    toks = words(text)
    if len(toks) < n:
        return tuple(toks) in eval_ngrams
    return any(tuple(toks[i : i + n]) in eval_ngrams for i in range(len(toks) - n + 1))
