"""Near-duplicate text detection: exact Jaccard similarity of character 3-gram sets.

Two texts are near duplicates when the Jaccard similarity of their sets of character 3-grams is at
least the threshold (``DEFAULT_THRESHOLD`` = 0.8), after ``normalize`` (NFKC, case folding, all
whitespace removed). Texts shorter than 3 characters count as one gram, themselves.

The join is exact (no MinHash misses): it uses *prefix filtering* (Chaudhuri et al. 2006,
"A primitive operator for similarity joins"; Bayardo et al. 2007, "Scaling up all pairs
similarity search"). Order every gram by how many texts contain it, rarest first. Two sets with
Jaccard >= t share at least one gram among the first ``|x| - ceil(t*|x|) + 1`` grams of each, so
only texts that share a rare gram become candidates, and only candidates are compared in full.
Grams are packed exactly into 63 bits (three 21-bit code points), so there are no hash collisions.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_THRESHOLD = 0.8
_WS = dict.fromkeys(c for c in range(0x3000 + 1) if chr(c).isspace())


def normalize(text: str) -> str:
    """The form texts are compared in: NFKC, case-folded, without any whitespace."""
    return unicodedata.normalize("NFKC", text).casefold().translate(_WS)


@dataclass(frozen=True)
class SimilarPair:
    left: int
    right: int
    jaccard: float


def _gram_sets(texts: Sequence[str]):
    """Sorted unique (text index, gram id) pairs and each text's gram count."""
    import numpy as np

    n = len(texts)
    lens = np.fromiter((len(t) for t in texts), dtype=np.int64, count=n)
    codes = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    owner = np.repeat(np.arange(n, dtype=np.int64), lens)
    pos = np.arange(codes.size, dtype=np.int64) - offsets[owner]
    gram_len = np.maximum(lens - 2, np.minimum(lens, 1))  # texts of 1-2 chars: one gram
    keep = pos < gram_len[owner]
    idx = np.flatnonzero(keep)
    short = lens[owner[idx]] < 3
    c0 = codes[idx]
    c1 = np.where(short, 0, codes[np.minimum(idx + 1, codes.size - 1)])
    c2 = np.where(short, 0, codes[np.minimum(idx + 2, codes.size - 1)])
    # Short texts: pack the whole text (one or two code points) and mark it with bit 62 so that it
    # never equals a real 3-gram.
    c1 = np.where(short & (lens[owner[idx]] == 2), codes[np.minimum(idx + 1, codes.size - 1)], c1)
    grams = (c0 << 42) | (c1 << 21) | c2 | (short.astype(np.int64) << 62)
    gram_values, gram_ids = np.unique(grams, return_inverse=True)
    n_grams = gram_values.size
    pairs = np.unique(owner[idx] * n_grams + gram_ids)
    return pairs // n_grams, pairs % n_grams, n_grams


def similar_pairs(
    texts: Sequence[str],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    groups: Sequence[int] | None = None,
) -> list[SimilarPair]:
    """Every pair of (already ``normalize``d) texts whose 3-gram Jaccard is at least ``threshold``.

    Args:
        texts: the texts; empty texts are never similar to anything.
        threshold: the Jaccard similarity from which a pair is reported, in (0, 1].
        groups: optional group number per text; then only pairs from *different* groups are
            reported (a join of records against benchmark items, say).

    Returns:
        Pairs with ``left < right`` in index order, each with its similarity.
    """
    import numpy as np

    if not 0 < threshold <= 1:
        raise ValueError("threshold must be in (0, 1]")
    if len(texts) < 2:
        return []
    doc, gram, n_grams = _gram_sets(texts)
    size = np.bincount(doc, minlength=len(texts))
    # Rarest grams first; ties broken by gram id so the order is total.
    df = np.bincount(gram, minlength=n_grams)
    rank = np.empty(n_grams, dtype=np.int64)
    rank[np.lexsort((np.arange(n_grams), df))] = np.arange(n_grams)
    order = np.lexsort((rank[gram], doc))
    doc, gram = doc[order], gram[order]
    starts = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(size, out=starts[1:])
    prefix_len = size - np.ceil(threshold * size - 1e-9).astype(np.int64) + 1
    position = np.arange(doc.size) - starts[doc]
    in_prefix = position < prefix_len[doc]
    p_doc, p_gram = doc[in_prefix], gram[in_prefix]

    # Texts sharing a prefix gram are candidates.
    by_gram = np.lexsort((p_doc, p_gram))
    p_doc, p_gram = p_doc[by_gram], p_gram[by_gram]
    bounds = np.flatnonzero(np.diff(p_gram)) + 1
    group_of = None if groups is None else np.asarray(groups)
    candidates: set[tuple[int, int]] = set()
    for members in np.split(p_doc, bounds):
        if members.size < 2:
            continue
        members = members.tolist()
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                candidates.add((a, b))

    grams_of = [None] * len(texts)
    result = []
    for a, b in sorted(candidates):
        if group_of is not None and group_of[a] == group_of[b]:
            continue
        small, large = sorted((int(size[a]), int(size[b])))
        if small < threshold * large - 1e-9:  # length filter: J <= |small| / |large|
            continue
        for t in (a, b):
            if grams_of[t] is None:
                grams_of[t] = set(gram[starts[t]:starts[t + 1]].tolist())
        common = len(grams_of[a] & grams_of[b])
        jaccard = common / (size[a] + size[b] - common)
        if jaccard >= threshold - 1e-12:
            result.append(SimilarPair(a, b, float(jaccard)))
    return result


def jaccard(a: str, b: str) -> float:
    """The 3-gram Jaccard similarity of two normalized texts (a slow reference, for tests)."""

    def grams(t: str) -> set[str]:
        return {t} if 0 < len(t) < 3 else {t[i:i + 3] for i in range(len(t) - 2)}

    ga, gb = grams(a), grams(b)
    if not ga or not gb:
        return 0.0
    return len(ga & gb) / len(ga | gb)

