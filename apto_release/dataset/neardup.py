"""Near-duplicate text detection: Jaccard similarity of character 3-gram sets.

Two texts are near duplicates when the Jaccard similarity of their sets of character 3-grams is at
least the threshold (``DEFAULT_THRESHOLD`` = 0.8), after ``normalize`` (NFKC, case folding, all
whitespace removed). Texts shorter than 3 characters count as one gram, themselves.

Comparing all pairs of 18,000 prompts is 162 million comparisons, so candidates come from
MinHash locality-sensitive hashing (Broder 1997; Leskovec, Rajaraman and Ullman, *Mining of
Massive Datasets*, ch. 3), and every candidate is then compared exactly:

- Each text gets ``SKETCHES`` one-permutation MinHash sketches (Li, Owen and Zhang 2012) of
  ``BINS`` bins each: 128 minimum hash values in all, computed with a few vectorised passes over
  blocks of texts (so memory stays bounded).
- The values form bands of ``rows_per_band(threshold)`` values: as many as keep a pair at the
  threshold a candidate with probability ``TARGET_RECALL`` (99%). At the default threshold that
  is 21 bands of 6: a pair with Jaccard 0.8 becomes a candidate with probability
  1 - (1 - 0.8^6)^21 > 99.8%, one with Jaccard 0.9 with probability > 99.9999%, and one with
  Jaccard 0.5, which need not be compared, with probability 28%.
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
BIN_BITS = 6
BINS = 1 << BIN_BITS  # bins per sketch; the top bits of a gram's hash pick its bin
VALUES = SKETCHES * BINS
#: The probability with which ``rows_per_band`` wants a pair at the threshold to be a candidate.
TARGET_RECALL = 0.99
#: Values keep 56 bits, so that ``_densify`` can add up to 63 << 56 and stay below ``_EMPTY``.
VALUE_BITS = 56
_EMPTY = (1 << 64) - 1
_SEED = 0x9E3779B97F4A7C15
#: Odd multipliers that turn one well-mixed hash into one hash per sketch and per band row.
_MULTIPLIERS = (0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD)
#: Texts per block when computing signatures, so that memory stays bounded on large files.
_BLOCK = 4096
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
    """The (len(texts), VALUES) matrix of MinHash values, computed a block of texts at a time.

    Each sketch is one-permutation MinHash: a gram's hash picks a bin with its top bits, and each
    bin keeps the smallest value that falls into it. Bins that no gram falls into are filled by
    ``_densify``.
    """
    import numpy as np

    sig = np.empty((len(texts), VALUES), dtype=np.uint64)
    for start in range(0, len(texts), _BLOCK):
        sig[start:start + _BLOCK] = _block_signatures(texts[start:start + _BLOCK])
    return sig


def _block_signatures(texts: Sequence[str]):
    import numpy as np

    n = len(texts)
    # One array of code points for all texts, separated by U+10FFFF; texts of one or two
    # characters are padded with U+10FFFE so that they make exactly one gram (both are
    # noncharacters, which do not occur in text).
    padded = [t + _PAD * (3 - len(t)) if 0 < len(t) < 3 else t for t in texts]
    codes = np.frombuffer(_SEP.join(padded).encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
    sep = codes == np.uint64(ord(_SEP))
    valid = ~(sep[:-2] | sep[1:-1] | sep[2:])
    doc = np.cumsum(sep)[:-2][valid]
    # Three 21-bit code points fill 63 bits exactly: no two grams share a value.
    base = _mix(((codes[:-2] << np.uint64(42)) | (codes[1:-1] << np.uint64(21)) | codes[2:])[valid])
    del codes, sep, valid
    slot_base = doc * BINS
    sig = np.empty((n, VALUES), dtype=np.uint64)
    for s in range(SKETCHES):
        h = base * np.uint64(_MULTIPLIERS[s])
        slot = slot_base + (h >> np.uint64(64 - BIN_BITS)).astype(np.int64)
        block = np.full(n * BINS, _EMPTY, dtype=np.uint64)
        np.minimum.at(block, slot, (h << np.uint64(BIN_BITS)) >> np.uint64(64 - VALUE_BITS))
        sig[:, s * BINS:(s + 1) * BINS] = _densify(block.reshape(n, BINS))
    return sig


def _densify(block):
    """Fill each empty bin from the next non-empty bin to its right (circularly), plus an offset
    for the distance (rotation densification, Shrivastava and Li 2014), so that short texts, which
    leave many bins empty, still agree on about a Jaccard share of their values."""
    import numpy as np

    n, bins = block.shape
    positions = np.arange(bins)
    filled = block != np.uint64(_EMPTY)
    # The index of the next filled bin at or after each bin, looking across two copies of the row
    # so that the search wraps around.
    index = np.where(np.concatenate((filled, filled), axis=1), np.arange(2 * bins), 2 * bins)
    following = np.minimum.accumulate(index[:, ::-1], axis=1)[:, ::-1][:, :bins]
    empty_rows = following[:, 0] == 2 * bins
    following[empty_rows] = positions  # an empty text: handled below
    source = np.take_along_axis(block, following % bins, axis=1)
    distance = (following - positions).astype(np.uint64)
    out = source + (distance << np.uint64(VALUE_BITS))
    # An empty text gets values unique to it, so that it never agrees with anything.
    rows = np.flatnonzero(empty_rows)
    out[rows] = np.uint64(_EMPTY) - np.uint64(1) - (rows[:, None] * bins + positions).astype(np.uint64)
    return out


def rows_per_band(threshold: float) -> int:
    """Values per LSH band: the most for which a pair at ``threshold`` is still a candidate with
    probability ``TARGET_RECALL``. More values per band make fewer candidates of low similarity."""
    for rows in range(VALUES, 0, -1):
        bands = VALUES // rows
        if 1 - (1 - threshold**rows) ** bands >= TARGET_RECALL:
            return rows
    return 1


def _pairs_in_runs(order, keys):
    """Every pair (a < b) of entries of ``order`` whose ``keys`` (sorted) are equal."""
    import numpy as np

    same = keys[1:] == keys[:-1]
    if not same.any():
        return np.empty((0, 2), dtype=np.int64)
    run_id = np.concatenate(([0], np.cumsum(~same)))
    run_start = np.flatnonzero(np.concatenate(([True], ~same)))
    run_size = np.diff(np.concatenate((run_start, [len(order)])))
    # Each entry pairs with every later entry of its run.
    offset = np.arange(len(order)) - run_start[run_id]
    later = run_size[run_id] - offset - 1
    left = np.repeat(np.arange(len(order)), later)
    block_start = np.cumsum(later) - later
    right = left + 1 + (np.arange(len(left)) - np.repeat(block_start, later))
    pairs = np.stack((order[left], order[right]), axis=1)
    pairs.sort(axis=1)
    return pairs


def _candidates(sig, threshold: float):
    """Pairs (a < b) that agree on a whole band and whose share of equal values is within 3.5
    standard deviations of ``threshold``, as a sorted (m, 2) array."""
    import numpy as np

    rows = rows_per_band(threshold)
    # The share of agreeing values estimates the Jaccard similarity with this deviation.
    floor = threshold - 3.5 * (threshold * (1 - threshold) / VALUES) ** 0.5
    kept = []
    for band in range(VALUES // rows):
        cols = sig[:, band * rows:(band + 1) * rows]
        key = cols[:, 0].copy()
        for c in range(1, rows):
            key = key * np.uint64(_MULTIPLIERS[c % len(_MULTIPLIERS)]) ^ cols[:, c]
        order = np.argsort(key, kind="stable")
        pairs = _pairs_in_runs(order, key[order])
        for start in range(0, len(pairs), 1 << 16):  # bounded memory for many candidates
            chunk = pairs[start:start + (1 << 16)]
            agree = (sig[chunk[:, 0]] == sig[chunk[:, 1]]).mean(axis=1)
            kept.append(chunk[agree >= floor])
    if not kept:
        return np.empty((0, 2), dtype=np.int64)
    return _unique_pairs(np.concatenate(kept), sig.shape[0])


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
    pairs = _candidates(signatures(texts), threshold)
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
