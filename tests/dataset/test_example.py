"""Tests of the synthetic example-data generator (``apto_release.dataset.example``).

They pin what the README demo, the other tests and the benchmarks rely on: determinism (records
and bytes), validity under record schema v1, the category/jailbreak mix, the record size, prompts
that are not near duplicates, and text that passes the validator's text and personal-data checks.
"""

from __future__ import annotations

import gzip
import itertools
import json
import re
import unicodedata
from collections import Counter
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apto_release.dataset.example import (
    CATEGORY_WEIGHTS,
    ExampleDataResult,
    generate_records,
    write_example_data,
)
from apto_release.io import dump_jsonl_line
from apto_release.schema import CATEGORIES, ID_RE, json_schema

DIST_N = 5000  # records for the share checks (a few points of tolerance at this size)
DUP_N = 1500  # records for the brute-force near-duplicate and text checks
HARMFUL = {"safety_refusal", "mid_refusal"}


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return list(generate_records(DIST_N, seed=0))


def _texts(record: dict) -> list[str]:
    texts = [m["content"] for m in record["messages"]]
    if record["harmful_prefix"]:
        texts.append(record["harmful_prefix"])
    return texts


def _first_user(record: dict) -> str:
    return next(m["content"] for m in record["messages"] if m["role"] == "user")


# --------------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------------


def test_same_seed_gives_the_same_records():
    assert list(generate_records(300, seed=3)) == list(generate_records(300, seed=3))


def test_a_shorter_run_is_a_prefix_of_a_longer_one():
    short = list(generate_records(100, seed=0))
    assert short == list(itertools.islice(generate_records(18000, seed=0), 100))
    # A record far into the set does not depend on how many come after it.
    assert list(generate_records(2000))[-1] == next(itertools.islice(generate_records(18000), 1999, None))


def test_a_different_seed_gives_a_different_dataset():
    a = list(generate_records(200, seed=0))
    b = list(generate_records(200, seed=1))
    same_prompts = sum(_first_user(x) == _first_user(y) for x, y in zip(a, b))
    assert same_prompts == 0
    assert {_first_user(r) for r in a}.isdisjoint({_first_user(r) for r in b})
    assert all(r["metadata"]["seed"] == "1" for r in b)


@given(seed=st.integers(min_value=0, max_value=2**40), n=st.integers(min_value=0, max_value=25))
@settings(max_examples=25, deadline=None)
def test_any_seed_gives_valid_deterministic_prefixes(seed, n):
    recs = list(generate_records(n, seed))
    assert len(recs) == n
    assert recs == list(generate_records(n + 5, seed))[:n]
    for i, rec in enumerate(recs):
        assert rec["id"] == f"synth-{i + 1:06d}"
        assert (rec["harmful_prefix"] is not None) == (rec["category"] == "mid_refusal")


@pytest.mark.parametrize("bad", [-1, 1.5, "10", True])
def test_bad_n_is_rejected(bad, tmp_path):
    with pytest.raises(ValueError):
        list(generate_records(bad))
    with pytest.raises(ValueError):
        write_example_data(tmp_path / "x.jsonl", n=bad)
    assert list(tmp_path.iterdir()) == []


def test_bad_seed_is_rejected():
    with pytest.raises(ValueError):
        list(generate_records(3, seed="0"))


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def test_write_is_byte_identical_and_matches_the_records(tmp_path: Path):
    first = write_example_data(tmp_path / "a" / "data.jsonl", n=300, seed=5)
    second = write_example_data(tmp_path / "b" / "data.jsonl", n=300, seed=5)
    data = first.path.read_bytes()
    assert data == second.path.read_bytes()
    assert data == "".join(dump_jsonl_line(r) for r in generate_records(300, 5)).encode("utf-8")
    lines = data.decode("utf-8").splitlines()
    assert len(lines) == 300

    assert isinstance(first, ExampleDataResult)
    assert first.path == tmp_path / "a" / "data.jsonl"
    assert first.count == 300
    assert list(first.category_counts) == list(CATEGORIES)
    in_file = Counter(json.loads(line)["category"] for line in lines)
    assert first.category_counts == {c: in_file[c] for c in CATEGORIES}
    # Atomic write: nothing but the file itself is left in the folder.
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["data.jsonl"]


def test_gzip_output_is_deterministic_and_equals_the_plain_output(tmp_path: Path):
    plain = write_example_data(tmp_path / "data.jsonl", n=200, seed=2)
    packed = write_example_data(tmp_path / "data.jsonl.gz", n=200, seed=2)
    again = write_example_data(tmp_path / "again" / "data.jsonl.gz", n=200, seed=2)
    raw = packed.path.read_bytes()
    assert raw[:2] == b"\x1f\x8b"
    assert raw == again.path.read_bytes()  # no file name or time in the gzip header
    with gzip.open(packed.path, "rt", encoding="utf-8") as f:
        assert f.read().splitlines() == plain.path.read_text("utf-8").splitlines()
    assert packed.category_counts == plain.category_counts
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "data.jsonl", "data.jsonl.gz"]


def test_an_existing_file_is_replaced(tmp_path: Path):
    dest = tmp_path / "data.jsonl"
    dest.write_text("old\n", encoding="utf-8")
    write_example_data(dest, n=10)
    assert len(dest.read_text("utf-8").splitlines()) == 10
    assert [p.name for p in tmp_path.iterdir()] == ["data.jsonl"]


# --------------------------------------------------------------------------------------------
# Schema and record rules
# --------------------------------------------------------------------------------------------


def test_records_validate_against_the_json_schema(records):
    validator = jsonschema.Draft202012Validator(json_schema())
    for rec in records[:300]:
        errors = list(validator.iter_errors(rec))
        assert not errors, (rec["id"], [e.message for e in errors])


def test_ids_are_unique_and_well_formed(records):
    ids = [r["id"] for r in records]
    assert len(set(ids)) == len(ids)
    assert all(ID_RE.fullmatch(i) for i in ids)
    assert ids[:2] == ["synth-000001", "synth-000002"]


def test_field_rules_by_category(records):
    for rec in records:
        cat = rec["category"]
        assert cat in CATEGORIES
        prefix = rec["harmful_prefix"]
        if cat == "mid_refusal":
            assert isinstance(prefix, str) and prefix.strip()
            # A generic opening, never a real answer: short, no digits, no list.
            assert len(prefix) <= 50 and not re.search(r"[0-9０-９・\n]", prefix)
            assert prefix not in rec["messages"][-1]["content"]
        else:
            assert prefix is None
        harm = rec["harm_category"]
        if cat in HARMFUL:
            assert isinstance(harm, str) and harm
        elif cat == "anti_hallucination":
            assert harm is None
        else:
            assert harm is None or (isinstance(harm, str) and harm)
        assert rec["judge_score"] in (4, 5)
        assert isinstance(rec["has_jailbreak"], bool)


def test_conversation_shape(records):
    for rec in records:
        roles = [m["role"] for m in rec["messages"]]
        assert all(set(m) == {"role", "content"} and m["content"].strip() for m in rec["messages"])
        body = roles[1:] if roles[0] == "system" else roles
        assert "system" not in body
        assert body in (["user", "assistant"], ["user", "assistant"] * 2)


def test_metadata_says_synthetic(records):
    for rec in records[:500]:
        meta = rec["metadata"]
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
        assert meta["source"] == "synthetic"
        assert meta["generator"] == "apto-release example-data"
        assert meta["generator_version"] == "1"
        assert meta["seed"] == "0"
        assert meta["topic"]
        assert ("jailbreak_style" in meta) == rec["has_jailbreak"]


def test_refusals_refuse(records):
    refusal = re.compile(
        r"でき(ません|ない|かねます)|引き受けられません|続けられません|中断します|止めます|書けません"
        r"|応じるべきでは|変わりません|同じお返事|お出ししない"
    )
    for rec in records:
        if rec["category"] in HARMFUL:
            assert refusal.search(rec["messages"][-1]["content"]), rec["id"]


# --------------------------------------------------------------------------------------------
# The mix and the size
# --------------------------------------------------------------------------------------------


def test_category_shares_follow_the_weights(records):
    counts = Counter(r["category"] for r in records)
    for cat, weight in CATEGORY_WEIGHTS.items():
        assert abs(counts[cat] / len(records) - weight) < 0.03, (cat, counts[cat])
    assert abs(sum(CATEGORY_WEIGHTS.values()) - 1) < 1e-9


def test_jailbreak_share_and_where_it_goes(records):
    share = sum(r["has_jailbreak"] for r in records) / len(records)
    assert abs(share - 0.16) <= 0.025
    harmful = [r for r in records if r["category"] in HARMFUL]
    other = [r for r in records if r["category"] not in HARMFUL]
    harmful_rate = sum(r["has_jailbreak"] for r in harmful) / len(harmful)
    other_rate = sum(r["has_jailbreak"] for r in other) / len(other)
    assert harmful_rate > 2 * other_rate


def test_system_turn_and_score_shares(records):
    n = len(records)
    assert abs(sum(r["messages"][0]["role"] == "system" for r in records) / n - 0.30) < 0.04
    assert abs(sum(len(r["messages"]) >= 4 for r in records) / n - 0.10) < 0.03
    assert abs(sum(r["judge_score"] == 4 for r in records) / n - 0.25) < 0.04


def test_record_size(records):
    sizes = [len(dump_jsonl_line(r).encode("utf-8")) for r in records]
    assert 1600 <= sum(sizes) / len(sizes) <= 2400
    assert 1400 <= min(sizes) and max(sizes) <= 2800


# --------------------------------------------------------------------------------------------
# Near duplicates and text hygiene (on the same DUP_N records)
# --------------------------------------------------------------------------------------------


def _normalize(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).lower().split())


def _grams(text: str) -> frozenset[str]:
    return frozenset(text[i:i + 3] for i in range(len(text) - 2)) or frozenset([text])


def max_prompt_jaccard(prompts: list[str], floor: float) -> tuple[float, int, int]:
    """The largest 3-gram Jaccard between two prompts, brute force over the pairs that can reach
    ``floor`` (J(a, b) <= min(|a|, |b|) / max(|a|, |b|), so pairs of very different sizes are
    skipped). Returns (0.0, -1, -1) when no pair can reach ``floor``."""
    sets = sorted(((_grams(_normalize(p)), k) for k, p in enumerate(prompts)), key=lambda x: len(x[0]))
    best = (0.0, -1, -1)
    for i, (a, ka) in enumerate(sets):
        limit = len(a) / floor
        for b, kb in sets[i + 1:]:
            if len(b) > limit:
                break
            common = len(a & b)
            jac = common / (len(a) + len(b) - common)
            if jac > best[0]:
                best = (jac, ka, kb)
    return best


def test_max_prompt_jaccard_helper():
    assert max_prompt_jaccard(["あいうえおかきくけこ", "あいうえおかきくけこ"], 0.5)[0] == 1.0
    jac, a, b = max_prompt_jaccard(["あいうえお", "かきくけこ", "あいうえおか"], 0.5)
    assert (round(jac, 2), {a, b}) == (0.75, {0, 2})


@pytest.fixture(scope="module")
def dup_records(records) -> list[dict]:
    return records[:DUP_N]


def test_no_near_duplicate_prompts(dup_records):
    prompts = [_first_user(r) for r in dup_records]
    # Pairs below 0.7 cannot reach 0.8, so only pairs within a size ratio of 0.7 are compared.
    jac, a, b = max_prompt_jaccard(prompts, floor=0.7)
    assert jac < 0.8, (jac, prompts[a], prompts[b])
    # The generator aims well below the validator's threshold.
    assert jac < 0.7, (jac, prompts[a], prompts[b])


def test_no_identical_conversations(dup_records):
    keys = {tuple(m["content"] for m in r["messages"]) for r in dup_records}
    assert len(keys) == len(dup_records)


FORBIDDEN = {
    "e-mail": re.compile(r"[@＠]"),
    "phone number": re.compile(r"0\d{1,4}[-－‐ ]\d{1,4}[-－‐ ]\d{3,4}|0[5789]0\d{8}|\+81"),
    "10+ digits": re.compile(r"[0-9０-９](?:[-－‐ ]?[0-9０-９]){9,}"),
    "half-width katakana": re.compile("[\uff61-\uff9f]"),
    "zero-width": re.compile("[\u200b-\u200f\u2060\ufeff]"),
    "control": re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]"),
    "mojibake": re.compile("[\ufffdãÃÂ縺繧繝]"),
    "half-width punctuation": re.compile(r"[!?(),]"),
}
_JAPANESE = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff々]")


def test_no_forbidden_characters_or_patterns(dup_records):
    for rec in dup_records:
        for text in _texts(rec):
            for name, pattern in FORBIDDEN.items():
                m = pattern.search(text)
                assert m is None, (rec["id"], name, m and m.group(), text)


def test_forbidden_patterns_catch_what_they_should():
    samples = {
        "e-mail": "連絡先は taro@example.jp です",
        "phone number": "電話は03-1234-5678まで",
        "10+ digits": "番号は1234567890です",
        "half-width katakana": "ｱｲｳ",
        "zero-width": "あ\u200bい",
        "control": "あ\tい",
        "mojibake": "ã\x81\x82",
        "half-width punctuation": "本当?",
    }
    for name, sample in samples.items():
        assert FORBIDDEN[name].search(sample), name


def test_text_is_mostly_japanese(dup_records):
    for rec in dup_records:
        for text in _texts(rec):
            letters = [c for c in text if unicodedata.category(c).startswith("L")]
            share = sum(bool(_JAPANESE.match(c)) for c in letters) / len(letters)
            assert share >= 0.7, (rec["id"], share, text)
