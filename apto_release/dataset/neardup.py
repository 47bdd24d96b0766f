"""Near-duplicate text detection: Jaccard similarity of character 3-gram sets.

Two texts are near duplicates when the Jaccard similarity of their sets of character 3-grams is at
least the threshold (``DEFAULT_THRESHOLD`` = 0.8), after ``normalize`` (NFKC, case folding, all
whitespace removed). Texts shorter than 3 characters count as one gram, themselves.

Comparing all pairs of 18,000 prompts is 162 million comparisons, so candidates come from
MinHash locality-sensitive hashing (Broder 1997; Leskovec, Rajaraman and Ullman, *Mining of
Massive Datasets*, ch. 3), and every candidate is then compared exactly:

- Each text gets ``SKETCHES`` one-permutation MinHash sketches (Li, Owen and Zhang 2012) of
  ``BINS`` bins each: 64 minimum hash values in all, computed with a few vectorised passes.
- The 64 values form bands of ``rows_per_band(threshold)`` values (4 at the default threshold);
  texts that agree on a whole band are candidates. At the default, a pair with Jaccard 0.8
  becomes a candidate with probability 1 - (1 - 0.8^4)^16 > 99.97%, and one with Jaccard 0.9,
  with probability > 99.9999%. Lower thresholds use shorter bands, so that pairs at the
  threshold are still found with probability above 99%.
- Candidates whose sketches agree on a share of values more than 3.5 standard deviations below
  the threshold are dropped; the rest are verified with exact gram sets, so every reported pair
  and its similarity are exact.
- Texts that are identical after normalisation are always paired, whatever the sketches say.

The hashes have fixed seeds: the same texts give the same pairs on every machine.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_THRESHOLD = 0.8
SKETCHES = 2
BIN_BITS = 5
BINS = 1 << BIN_BITS  # bins per sketch; the top bits of a gram's hash pick its bin
VALUES = SKETCHES * BINS
#: Values keep 57 bits, so that ``_densify`` can add up to 31 << 57 and stay below ``_EMPTY``.
VALUE_BITS = 57
_EMPTY = (1 << 64) - 1
_SEED = 0x9E3779B97F4A7C15
#: Odd multipliers that turn one well-mixed hash into one hash per sketch and per band row.
_MULTIPLIERS = (0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD)
_WHITESPACE_RE = re.compile(r"\s+")
_SEP, _PAD = "\U0010ffff", "\U0010fffe"


def normalize(text: str) -> str:
    """The form texts are compared in: NFKC, case-folded, without any whitespace."""
    return _WHITESPACE_RE.sub("", unicodedata.normalize("NFKC", text).casefold())


@dataclass(frozen=True)
class SimilarPair:
    left: int
    right: int
    jaccard: float


def grams(text: str) -> set[str]:
    """The character 3-gram set of a normalized text (the text itself when shorter)."""
    if len(text) < 3:
        return {text} if text else set()
    return {text[i:i + 3] for i in range(len(text) - 2)}


def jaccard(a: str, b: str) -> float:
    """The exact 3-gram Jaccard similarity of two normalized texts."""
    ga, gb = grams(a), grams(b)
    if not ga or not gb:
        return 0.0
    common = len(ga & gb)
    return common / (len(ga) + len(gb) - common)


def _mix(x):
    """A 64-bit mixing function (SplitMix64's finaliser) of ``x``, for numpy uint64 arrays."""
    import numpy as np

    z = x ^ np.uint64(_SEED)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def signatures(texts: Sequence[str]):
    """The (len(texts), SKETCHES * BINS) matrix of MinHash values.

    Each sketch is one-permutation MinHash: a gram's hash picks a bin with its top bits, and each
    bin keeps the smallest value that falls into it. Bins that no gram falls into are filled by
    ``_densify``.
    """
    import numpy as np

    n = len(texts)
    # One array of code points for all texts, separated by U+10FFFF; texts of one or two
    # characters are padded with U+10FFFE so that they make exactly one gram (both are
    # noncharacters, which do not occur in text).
    padded = [t + _PAD * (3 - len(t)) if 0 < len(t) < 3 else t for t in texts]
    codes = np.frombuffer(_SEP.join(padded).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    sep = codes == np.uint64(ord(_SEP))
    doc_of = np.cumsum(sep)
    # Three 21-bit code points fill 63 bits exactly: no two grams share a value.
    gram = (codes[:-2] << np.uint64(42)) | (codes[1:-1] << np.uint64(21)) | codes[2:]
    valid = ~(sep[:-2] | sep[1:-1] | sep[2:])
    gram, doc = gram[valid], doc_of[:-2][valid]

    base = _mix(gram)
    slot_base = doc * BINS
    sig = np.empty((n, SKETCHES * BINS), dtype=np.uint64)
    for s in range(SKETCHES):
        h = base * np.uint64(_MULTIPLIERS[s])
        slot = slot_base + (h >> np.uint64(64 - BIN_BITS)).astype(np.int64)
        value = (h << np.uint64(BIN_BITS)) >> np.uint64(64 - VALUE_BITS)
        block = np.full(n * BINS, _EMPTY, dtype=np.uint64)
        np.minimum.at(block, slot, value)
        sig[:, s * BINS:(s + 1) * BINS] = _densify(block.reshape(n, BINS))
    return sig


def _densify(block):
    """Fill empty bins from the next non-empty bin to the right, plus an offset per step
    (rotation densification, Shrivastava and Li 2014), so that short texts, which leave many bins
    empty, still agree on about a Jaccard share of their values."""
    import numpy as np

    empty_value = np.uint64(_EMPTY)
    empty = block == empty_value
    shifted = block
    for distance in range(1, BINS):
        if not empty.any():
            break
        shifted = np.roll(shifted, -1, axis=1)
        fill = empty & (shifted != empty_value)
        block = np.where(fill, shifted + np.uint64(distance << VALUE_BITS), block)
        empty &= ~fill
    # An empty text: values unique to it, so that it never agrees with anything.
    rows = np.flatnonzero(empty.all(axis=1))
    block[rows] = empty_value - np.uint64(1) - (rows[:, None] * BINS + np.arange(BINS)).astype(np.uint64)
    return block


def rows_per_band(threshold: float) -> int:
    """Values per LSH band: fewer for lower thresholds, so that recall at the threshold stays high."""
    if threshold >= 0.75:
        return 4
    if threshold >= 0.6:
        return 3
    return 2 if threshold >= 0.4 else 1


def _band_candidates(sig, rows: int):
    """Pairs (a < b) of rows of ``sig`` that agree on at least one whole band, as an (m, 2) array."""
    import numpy as np

    found = []
    for band in range(VALUES // rows):
        cols = sig[:, band * rows:(band + 1) * rows]
        key = cols[:, 0].copy()
        for c in range(1, rows):
            key = key * np.uint64(_MULTIPLIERS[c]) ^ cols[:, c]
        order = np.argsort(key, kind="stable")
        sorted_keys = key[order]
        same_as_next = sorted_keys[1:] == sorted_keys[:-1]
        if not same_as_next.any():
            continue
        # Runs of equal keys: every pair inside a run is a candidate. Most runs are pairs.
        edges = np.flatnonzero(np.diff(np.concatenate(([False], same_as_next, [False])).astype(np.int8)))
        starts, stops = edges[::2], edges[1::2] + 1
        pairs_only = stops - starts == 2
        found.append(np.sort(np.stack((order[starts[pairs_only]], order[starts[pairs_only] + 1]), axis=1), axis=1))
        for start, stop in zip(starts[~pairs_only], stops[~pairs_only]):
            members = np.sort(order[start:stop])
            a, b = np.triu_indices(members.size, k=1)
            found.append(np.stack((members[a], members[b]), axis=1))
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    return _unique_pairs(np.concatenate(found), sig.shape[0])


def _unique_pairs(pairs, n: int):
    """The distinct rows of an (m, 2) array of indices below ``n``, sorted."""
    import numpy as np

    keys = np.unique(pairs[:, 0] * np.int64(n) + pairs[:, 1])
    return np.stack((keys // n, keys % n), axis=1)


def similar_pairs(
    texts: Sequence[str],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    groups: Sequence[int] | None = None,
) -> list[SimilarPair]:
    """Pairs of (already ``normalize``d) texts whose 3-gram Jaccard is at least ``threshold``.

    Args:
        texts: the texts; empty texts are never similar to anything.
        threshold: the Jaccard similarity from which a pair is reported, in (0, 1].
        groups: optional group number per text; then only pairs from *different* groups are
            reported (a join of records against benchmark items, say).

    Returns:
        Pairs with ``left < right``, sorted, each with its exact similarity.
    """
    import numpy as np

    if not 0 < threshold <= 1:
        raise ValueError("threshold must be in (0, 1]")
    if len(texts) < 2:
        return []
    sig = signatures(texts)
    pairs = _band_candidates(sig, rows_per_band(threshold))
    if len(pairs):
        # The share of agreeing values estimates the Jaccard similarity with this deviation.
        margin = 3.5 * (threshold * (1 - threshold) / VALUES) ** 0.5
        agree = np.empty(len(pairs))
        for start in range(0, len(pairs), 65536):  # bounded memory for many candidates
            chunk = pairs[start:start + 65536]
            agree[start:start + 65536] = (sig[chunk[:, 0]] == sig[chunk[:, 1]]).mean(axis=1)
        pairs = pairs[agree >= threshold - margin]
    # Identical texts are always paired (with the first occurrence), whatever the sketches say.
    first_of: dict[str, int] = {}
    identical = []
    for i, t in enumerate(texts):
        if t in first_of:
            identical.append((first_of[t], i))
        elif t:
            first_of[t] = i
    if identical:
        pairs = _unique_pairs(np.concatenate((pairs, np.array(identical, dtype=np.int64))), len(texts))
    if groups is not None and len(pairs):
        group = np.asarray(groups)
        pairs = pairs[group[pairs[:, 0]] != group[pairs[:, 1]]]
    return _verify(texts, pairs, threshold)


def _verify(texts: Sequence[str], pairs, threshold: float) -> list[SimilarPair]:
    out = []
    cache: dict[int, set[str]] = {}
    for a, b in pairs.tolist():
        if not texts[a] or not texts[b]:
            continue
        ga = cache[a] if a in cache else cache.setdefault(a, grams(texts[a]))
        gb = cache[b] if b in cache else cache.setdefault(b, grams(texts[b]))
        small, large = sorted((len(ga), len(gb)))
        if small < threshold * large - 1e-9:  # J <= |small| / |large|
            continue
        common = len(ga & gb)
        similarity = common / (len(ga) + len(gb) - common)
        if similarity >= threshold - 1e-12:
            out.append(SimilarPair(a, b, similarity))
    return out
