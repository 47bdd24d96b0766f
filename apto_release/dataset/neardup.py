"""Near-duplicate text detection: 3-gram Jaccard, plus edit similarity for short texts.

``match`` says whether two texts are near duplicates; ``similar_pairs`` finds the pairs across two
groups (``validate --against``) and ``clusters`` the near-duplicate clusters of one file, both from
MinHash LSH candidates compared exactly, with fixed seeds. The rule, the indexes, the search and
its recall: docs/neardup.md.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

DEFAULT_THRESHOLD = 0.8
#: Texts up to this many characters (normalised) are also compared by edit similarity.
SHORT_MAX = 60
#: The first texts of one bucket that later ones are compared with (see ``clusters``).
MAX_REPRESENTATIVES = 8
#: The latest texts of one bucket, after its first ones, that later ones are compared with too.
RECENT = 256
#: Comparisons that may fail for one text before ``clusters`` stops comparing it with others.
MAX_FAILED = 16
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
#: The measures a ``Match`` names.
IDENTICAL, JACCARD, EDIT = "identical", "jaccard", "edit"
MEASURE_NAMES = {IDENTICAL: "identical after normalisation", JACCARD: "3-gram Jaccard", EDIT: "edit similarity"}


def normalize(text: str) -> str:
    """The form texts are compared in: NFKC, case-folded, without any whitespace."""
    return _WHITESPACE_RE.sub("", unicodedata.normalize("NFKC", text).casefold())


@dataclass(frozen=True)
class Match:
    """How similar two texts are, by the measure that made them near duplicates."""

    similarity: float
    measure: str  # IDENTICAL, JACCARD or EDIT


@dataclass(frozen=True)
class SimilarPair:
    left: int
    right: int
    similarity: float
    measure: str = JACCARD


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


def _is_function(c: str) -> bool:
    """Hiragana, punctuation and symbols: what particles and politeness endings are written in."""
    return "\u3041" <= c <= "\u309f" or unicodedata.category(c)[0] in "PS"


def content_key(text: str) -> str:
    """The characters of a normalized text that carry its content: its kanji, katakana, letters and
    digits in order (all but hiragana, punctuation and symbols)."""
    return "".join(c for c in text if not _is_function(c))


def _split_ending(text: str) -> tuple[str, str]:
    """(body, ending): the ending is the hiragana and punctuation after the last content character."""
    end = len(text)
    while end and _is_function(text[end - 1]):
        end -= 1
    return text[:end], text[end:]


#: The one-character case particles that ``short_variants`` lets two texts swap.
PARTICLES = frozenset("をがはにへでともの")


def short_variants(a: str, b: str) -> bool:
    """Whether two normalized texts of at most ``SHORT_MAX`` characters differ only the way
    politeness and particles make them differ: in their endings (the hiragana and punctuation
    after the last content character: 「教えて。」, 「教えてください。」) and by one-character
    particles swapped before it (「方法を」, 「方法が」), while every other character is the same."""
    if not a or not b or max(len(a), len(b)) > SHORT_MAX:
        return False
    body_a, body_b = _split_ending(a)[0], _split_ending(b)[0]
    return bool(body_a) and len(body_a) == len(body_b) and all(
        x == y or (x in PARTICLES and y in PARTICLES) for x, y in zip(body_a, body_b)
    )


def edit_distance(a: str, b: str) -> int:
    """The Levenshtein distance of two strings (Myers' bit-parallel algorithm as given by Hyyrö
    2001: one pass over ``a`` with the columns of ``b`` as bits of an integer)."""
    if len(a) < len(b):
        a, b = b, a
    m = len(b)
    if m == 0:
        return len(a)
    peq: dict[str, int] = {}
    for i, c in enumerate(b):
        peq[c] = peq.get(c, 0) | (1 << i)
    full, last = (1 << m) - 1, 1 << (m - 1)
    pv, mv, score = full, 0, m
    for c in a:
        eq = peq.get(c, 0)
        xv = eq | mv
        xh = ((((eq & pv) + pv) & full) ^ pv) | eq
        ph = mv | (~(xh | pv) & full)
        mh = pv & xh
        if ph & last:
            score += 1
        elif mh & last:
            score -= 1
        ph = ((ph << 1) | 1) & full
        mh = (mh << 1) & full
        pv = mh | (~(xv | ph) & full)
        mv = ph & xv
    return score


def edit_similarity(a: str, b: str) -> float:
    """1 - Levenshtein distance / length of the longer text (1.0 for two empty texts)."""
    longer = max(len(a), len(b))
    return 1.0 - edit_distance(a, b) / longer if longer else 1.0


def match(a: str, b: str, threshold: float = DEFAULT_THRESHOLD) -> Match | None:
    """Whether two normalized texts are near duplicates (see the module's docstring), and how."""
    return _Verifier([a, b], threshold)(0, 1)


def _common(small, large) -> int:
    """The number of values two sorted arrays of distinct values share: a binary search in the
    larger for each value of the smaller."""
    import numpy as np

    at = np.searchsorted(large, small)
    at[at == len(large)] = 0
    return int(np.count_nonzero(large[at] == small))


class _Verifier:
    """Exact comparison of texts by index. Gram sets are kept as sorted arrays of 63-bit gram codes
    (three 21-bit code points: exact, no hashing), which take 8 bytes a gram and intersect fast."""

    def __init__(self, texts: Sequence[str], threshold: float):
        self.texts, self.threshold, self.comparisons = texts, threshold, 0
        self._codes: dict[int, object] = {}

    def _gram_codes(self, i: int):
        codes = self._codes.get(i)
        if codes is None:
            import numpy as np

            text = self.texts[i]
            if len(text) < 3:  # the text itself is its one gram, as in ``grams``
                text += _PAD * (3 - len(text))
            c = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
            codes = self._codes[i] = np.unique((c[:-2] << np.uint64(42)) | (c[1:-1] << np.uint64(21)) | c[2:])
        return codes

    def __call__(self, a: int, b: int) -> Match | None:
        ta, tb = self.texts[a], self.texts[b]
        if not ta or not tb:
            return None
        if ta == tb:
            return Match(1.0, IDENTICAL)
        self.comparisons += 1
        threshold = self.threshold
        ga, gb = self._gram_codes(a), self._gram_codes(b)
        small, large = sorted((len(ga), len(gb)))
        if small >= threshold * large - 1e-9:  # else J <= |small| / |large| < threshold
            common = _common(ga, gb) if len(ga) <= len(gb) else _common(gb, ga)
            similarity = common / (len(ga) + len(gb) - common)
            if similarity >= threshold - 1e-12:
                return Match(similarity, JACCARD)
        if abs(len(ta) - len(tb)) <= (1 - threshold) * max(len(ta), len(tb)) + 1e-9 and short_variants(ta, tb):
            similarity = edit_similarity(ta, tb)
            if similarity >= threshold - 1e-12:
                return Match(similarity, EDIT)
        return None


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


def _block_signatures(texts: Sequence[str], sketches: int = SKETCHES, bin_bits: int = BIN_BITS, value_bits: int = VALUE_BITS, multipliers=_MULTIPLIERS):
    import numpy as np

    n = len(texts)
    bins = 1 << bin_bits
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
    slot_base = doc * bins
    sig = np.empty((n, sketches * bins), dtype=np.uint64)
    for s in range(sketches):
        h = base * np.uint64(multipliers[s])
        slot = slot_base + (h >> np.uint64(64 - bin_bits)).astype(np.int64)
        block = np.full(n * bins, _EMPTY, dtype=np.uint64)
        np.minimum.at(block, slot, (h << np.uint64(bin_bits)) >> np.uint64(64 - value_bits))
        sig[:, s * bins:(s + 1) * bins] = _densify(block.reshape(n, bins), value_bits)
    return sig


#: The sketch ``clusters`` ranks candidates by: one-permutation MinHash of ``RANKING_VALUES`` bins,
#: whose estimate of the Jaccard has half the standard deviation of the 128 values' that the LSH
#: bands use. Each value keeps 8 bits (b-bit minwise hashing, Li and König 2010): two texts agree
#: on a value with probability J + (1 - J) / 256, which ranks them as J does, at an eighth of the
#: memory to read.
RANKING_BITS = 9
RANKING_VALUES = 1 << RANKING_BITS
_RANKING_MULTIPLIER = 0x9FB21C651E98DF25


def _ranking_signatures(texts: Sequence[str]):
    """The (len(texts), RANKING_VALUES) uint8 matrix of ranking values, a block of texts at a time."""
    import numpy as np

    sig = np.empty((len(texts), RANKING_VALUES), dtype=np.uint8)
    step = _BLOCK * BINS // RANKING_VALUES  # as many values per block as ``signatures`` makes
    for start in range(0, len(texts), step):
        block = _block_signatures(texts[start:start + step], 1, RANKING_BITS, 64 - RANKING_BITS - 1, (_RANKING_MULTIPLIER,))
        # The top 8 bits of a multiple: they depend on every bit, the densification's offset included.
        sig[start:start + step] = (block * np.uint64(_MULTIPLIERS[0]) >> np.uint64(56)).astype(np.uint8)
    return sig


def _densify(block, value_bits: int = VALUE_BITS):
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
    out = source + (distance << np.uint64(value_bits))
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


def _agreement_floor(threshold: float, values: int = VALUES) -> float:
    """The share of equal signature values below which a pair is not compared exactly: 3.5
    standard deviations of the estimate below ``threshold`` (a pair at the threshold falls below
    it with probability 0.02%)."""
    return threshold - 3.5 * (threshold * (1 - threshold) / values) ** 0.5


def _band_keys(sig, threshold: float):
    """One hash per LSH band of ``rows_per_band(threshold)`` signature values: (texts, bands)."""
    import numpy as np

    rows = rows_per_band(threshold)
    keys = np.empty((sig.shape[0], VALUES // rows), dtype=np.uint64)
    for band in range(keys.shape[1]):
        cols = sig[:, band * rows:(band + 1) * rows]
        key = cols[:, 0].copy()
        for c in range(1, rows):
            key = key * np.uint64(_MULTIPLIERS[c % len(_MULTIPLIERS)]) ^ cols[:, c]
        keys[:, band] = key
    return keys


def _buckets(texts: Sequence[str], indices: Sequence[int], threshold: float, sig=None) -> Iterator[tuple[list[int], bool]]:
    """The buckets (lists of two or more indices, ascending) that ``indices`` of ``texts`` fall
    into, each with True for an LSH bucket: one per LSH band and equal band values (``sig`` holds
    the signatures of ``indices``, in order), then one per content key of the short texts."""
    import numpy as np

    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) > 1:
        sig = signatures([texts[i] for i in indices]) if sig is None else sig
        keys = _band_keys(sig, threshold)
        for band in range(keys.shape[1]):
            key = keys[:, band]
            order = np.argsort(key, kind="stable")  # stable: ascending indices within a bucket
            same = key[order][1:] == key[order][:-1]
            if not same.any():
                continue
            starts = np.flatnonzero(np.concatenate(([True], ~same)))
            ends = np.concatenate((starts[1:], [len(order)]))
            for start, end in zip(starts[ends - starts > 1].tolist(), ends[ends - starts > 1].tolist()):
                yield indices[order[start:end]].tolist(), True
    by_key: dict[str, list[int]] = {}
    for i in indices.tolist():
        if 0 < len(texts[i]) <= SHORT_MAX:
            key = content_key(texts[i])
            if key:
                by_key.setdefault(key, []).append(i)
    yield from ((members, False) for members in by_key.values() if len(members) > 1)


def similar_pairs(
    texts: Sequence[str],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    groups: Sequence[int] | None = None,
) -> list[SimilarPair]:
    """Pairs of (already ``normalize``d) texts that ``match`` at ``threshold``.

    Every candidate pair is verified, so the work grows with the square of a bucket's size: use
    ``clusters`` for the texts of one file, and this with ``groups`` to join texts against others.

    Args:
        texts: the texts; empty texts are never similar to anything.
        threshold: the similarity from which a pair is reported, in (0, 1].
        groups: optional group number per text; then only pairs from *different* groups are
            compared and reported (a join of records against benchmark items, say).

    Returns:
        Pairs with ``left < right``, sorted, each with its exact similarity and measure.
    """
    if not 0 < threshold <= 1:
        raise ValueError("threshold must be in (0, 1]")
    if len(texts) < 2:
        return []
    import numpy as np

    sig = signatures(texts)
    floor = _agreement_floor(threshold) * VALUES
    candidates: set[tuple[int, int]] = set()
    for bucket, lsh in _buckets(texts, range(len(texts)), threshold, sig):
        if groups is None:
            pairs = list(itertools.combinations(bucket, 2))
        else:
            by_group: dict[int, list[int]] = {}
            for i in bucket:
                by_group.setdefault(groups[i], []).append(i)
            pairs = [(min(a, b), max(a, b)) for ga, gb in itertools.combinations(by_group.values(), 2) for a in ga for b in gb]
        if lsh and pairs:  # drop the pairs whose signatures agree too little to reach the threshold
            left, right = np.array(pairs).T
            pairs = [pair for pair, keep in zip(pairs, (sig[left] == sig[right]).sum(axis=1) >= floor) if keep]
        candidates.update(pairs)
    # Identical texts are always paired (with the first occurrence), whatever the sketches say.
    first_of: dict[str, int] = {}
    for i, t in enumerate(texts):
        if t in first_of:
            if groups is None or groups[first_of[t]] != groups[i]:
                candidates.add((first_of[t], i))
        elif t:
            first_of[t] = i
    verify = _Verifier(texts, threshold)
    out = []
    for a, b in sorted(candidates):
        found = verify(a, b)
        if found is not None:
            out.append(SimilarPair(a, b, found.similarity, found.measure))
    return out


@dataclass(frozen=True)
class Link:
    """The verified comparison through which a text joined its cluster."""

    other: int
    similarity: float
    measure: str


@dataclass
class Clusters:
    """Near-duplicate clusters of texts: ``representative[i]`` is the first (lowest) index of the
    cluster of text ``i`` (``i`` itself for a text without near duplicates)."""

    representative: list[int]
    #: For each text in a cluster of two or more, a verified link to another text of its cluster.
    links: dict[int, Link]
    #: Exact comparisons made (identical texts not counted): a measure of the work.
    comparisons: int

    def __post_init__(self) -> None:
        self._sizes: dict[int, int] = {}
        for r in self.representative:
            self._sizes[r] = self._sizes.get(r, 0) + 1

    def size(self, i: int) -> int:
        """The number of texts in the cluster of text ``i``."""
        return self._sizes[self.representative[i]]


def clusters(texts: Sequence[str], *, threshold: float = DEFAULT_THRESHOLD) -> Clusters:
    """Group (already ``normalize``d) texts into clusters of near duplicates, without comparing
    every pair of a large cluster (see the module's docstring).

    Every link is an exact ``match``; a cluster is connected by links, so two texts of one cluster
    may be less similar to each other than the threshold (single linkage).
    """
    if not 0 < threshold <= 1:
        raise ValueError("threshold must be in (0, 1]")
    n = len(texts)
    parent = list(range(n))
    links: dict[int, Link] = {}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(a: int, b: int, found: Match) -> None:
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)  # the root is the cluster's lowest index
        links.setdefault(b, Link(a, found.similarity, found.measure))
        links.setdefault(a, Link(b, found.similarity, found.measure))

    # Identical texts join the first occurrence; only the first goes on to the search.
    first_of: dict[str, int] = {}
    unique = []
    for i, t in enumerate(texts):
        if not t:
            continue
        if t in first_of:
            join(first_of[t], i, Match(1.0, IDENTICAL))
        else:
            first_of[t] = i
            unique.append(i)

    verify = _Verifier(texts, threshold)
    if len(unique) > 1:
        _search(texts, unique, threshold, verify, find, join)
    return Clusters([find(i) for i in range(n)], links, verify.comparisons)


#: Buckets up to this size have their pairs screened by signature agreement up front (vectorised).
_SMALL_BUCKET = 32


def _useful_band_values(sig, keys, floor: float):
    """(texts, bands) booleans: whether a text's value in a band is worth searching under. In
    buckets of up to ``_SMALL_BUCKET`` texts that is when some pair of the bucket agrees on at
    least ``floor`` signature values (screened here, vectorised, so that the many buckets of
    unrelated texts cost no Python work); in larger buckets always."""
    import numpy as np

    useful = np.zeros(keys.shape, dtype=bool)
    for band in range(keys.shape[1]):
        order = np.argsort(keys[:, band], kind="stable")
        key = keys[order, band]
        starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
        sizes = np.diff(np.concatenate((starts, [len(key)])))
        size_at = np.repeat(sizes, sizes)
        useful[order[size_at > _SMALL_BUCKET], band] = True
        small = (size_at > 1) & (size_at <= _SMALL_BUCKET)
        pairs = _pairs_in_runs(order[small], key[small])
        for start in range(0, len(pairs), 1 << 16):  # bounded memory
            chunk = pairs[start:start + (1 << 16)]
            agree = chunk[(sig[chunk[:, 0]] == sig[chunk[:, 1]]).sum(axis=1) >= floor]
            useful[agree[:, 0], band] = useful[agree[:, 1], band] = True
    return useful


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


def _search(texts: Sequence[str], unique: list[int], threshold: float, verify: _Verifier, find, join) -> None:
    """The linking step of ``clusters``: texts in order of length, each compared with the
    representatives registered under its keys (LSH band values, and the content key of a short
    text): the first ``MAX_REPRESENTATIVES`` and the latest ``RECENT`` of each, best estimated
    similarity first by the ranking sketch, until ``MAX_FAILED`` comparisons have failed."""
    import numpy as np

    sig = signatures([texts[i] for i in unique])
    keys = _band_keys(sig, threshold)
    # Only texts that share a band value or a short content key with another text need a search.
    shared = _useful_band_values(sig, keys, _agreement_floor(threshold) * VALUES)
    short_keys: dict[int, str] = {}
    key_counts: dict[str, int] = {}
    for row, i in enumerate(unique):
        if len(texts[i]) <= SHORT_MAX and (key := content_key(texts[i])):
            short_keys[row] = key
            key_counts[key] = key_counts.get(key, 0) + 1
    any_shared = shared.any(axis=1)
    rows = [row for row in range(len(unique)) if any_shared[row] or key_counts.get(short_keys.get(row, ""), 0) > 1]
    # Shortest first: a text shares the largest share of its grams with the shortest texts of a
    # template (J = |template| / (|template| + both remainders)), so they make the
    # representatives that most others join.
    rows.sort(key=lambda row: (len(texts[unique[row]]), row))
    ranking_floor = _agreement_floor(threshold, RANKING_VALUES) * RANKING_VALUES
    # The ranking sketch, for the texts searched only: row -> its index in ``fine``.
    fine = _ranking_signatures([texts[unique[row]] for row in rows])
    fine_at = np.full(len(unique), -1, dtype=np.int64)
    fine_at[rows] = np.arange(len(rows))
    # Per key: the first MAX_REPRESENTATIVES texts that came into it (the shortest), and the latest
    # RECENT texts that came after them (those nearest in length).
    first: dict[object, list[int]] = {}
    latest: dict[object, deque[int]] = {}
    for row in rows:
        i = unique[row]
        text_keys: list[object] = [(band, key) for band, (key, other) in enumerate(zip(keys[row].tolist(), shared[row].tolist())) if other]
        seen: set[int] = set()
        for key in text_keys:
            seen.update(first.get(key, ()))
            seen.update(latest.get(key, ()))
        short: set[int] = set()
        if row in short_keys:
            key = short_keys[row]
            text_keys.append(key)
            short.update(first.get(key, ()))
            short.update(latest.get(key, ()))
        ranked: list[int] = []
        if seen or short:
            candidates = np.fromiter(seen | short, dtype=np.int64, count=len(seen | short))
            agree = (fine[fine_at[candidates]] == fine[fine_at[row]]).sum(axis=1)
            # Those whose estimate can reach the threshold come first, then the short texts of the
            # same content key, compared by the short-text measure whatever the estimate says;
            # each best first.
            likely = agree >= ranking_floor
            keep = likely | np.isin(candidates, list(short)) if short else likely
            order = np.lexsort((candidates, -agree, ~likely))
            ranked = candidates[order[keep[order]]].tolist()
        # Candidates come best first: once the text has joined a cluster, the first failure ends
        # the search for further clusters to merge with.
        failed, joined, own = 0, False, find(i)
        for r in ranked:
            other = unique[r]
            if find(other) == own:
                continue
            found = verify(other, i)
            if found is not None:
                join(other, i, found)
                joined, own = True, find(i)
            else:
                failed += 1
                if joined or failed >= MAX_FAILED:
                    break
        for key in text_keys:
            members = first.setdefault(key, [])
            if len(members) < MAX_REPRESENTATIVES:
                members.append(row)
            else:
                latest.setdefault(key, deque(maxlen=RECENT)).append(row)
