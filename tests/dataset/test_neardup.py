"""Near-duplicate search: exact similarities, no false pairs, and the recall the docs promise."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from apto_release.dataset.neardup import grams, jaccard, normalize, similar_pairs

# A small alphabet makes similar texts common, so that the search is really exercised.
texts = st.lists(st.text(alphabet="あいうえおかきAb ", min_size=0, max_size=14), min_size=0, max_size=30)


def brute_force(items, threshold, groups=None):
    out = {}
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            if groups is not None and groups[i] == groups[j]:
                continue
            similarity = jaccard(items[i], items[j])
            if similarity >= threshold - 1e-12:
                out[(i, j)] = similarity
    return out


@settings(max_examples=400, deadline=None)
@given(texts, st.sampled_from([0.3, 0.5, 0.8, 0.9, 1.0]), st.booleans(), st.data())
def test_pairs_are_exact_and_identical_sets_always_found(raw, threshold, grouped, data):
    items = [normalize(t) for t in raw]
    groups = data.draw(st.lists(st.integers(0, 1), min_size=len(items), max_size=len(items))) if grouped else None
    found = {(p.left, p.right): p.jaccard for p in similar_pairs(items, threshold=threshold, groups=groups)}
    truth = brute_force(items, threshold, groups)
    assert set(found) <= set(truth)  # nothing false
    for pair, similarity in found.items():
        assert abs(similarity - truth[pair]) < 1e-12
    for (i, j) in truth:  # the same gram set (Jaccard 1) is always found
        if grams(items[i]) == grams(items[j]):
            assert (i, j) in found


def _variant(rng, text, edits):
    chars = list(text)
    for _ in range(edits):
        chars[rng.randrange(len(chars))] = rng.choice("あいうえおかきくけこさしすせそ")
    return "".join(chars)


def test_recall_at_the_default_threshold():
    rng = random.Random(0)
    alphabet = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
    bases = ["".join(rng.choice(alphabet) for _ in range(rng.randint(60, 160))) for _ in range(300)]
    items = list(bases)
    expected = {}
    for i, base in enumerate(bases):
        for edits in range(1, 6):
            variant = _variant(rng, base, edits)
            similarity = jaccard(base, variant)
            if similarity >= 0.8:
                items.append(variant)
                expected[(i, len(items) - 1)] = similarity
                break
    found = {(p.left, p.right) for p in similar_pairs(items)}
    assert len(expected) > 250
    assert len(found & set(expected)) >= 0.99 * len(expected)


def test_normalize():
    assert normalize("Ｈｅｌｌｏ　Ｗｏｒｌｄ\n") == "helloworld"
    assert normalize("ｶﾀｶﾅ です") == "カタカナです"


def test_unicode_beyond_the_bmp_and_short_texts():
    items = [normalize(t) for t in ["𠮷野家の牛丼について教えて", "𠮷野家の牛丼について教えて！", "別の質問", "はい", "はい", "", ""]]
    assert [(p.left, p.right) for p in similar_pairs(items)] == [(0, 1), (3, 4)]
