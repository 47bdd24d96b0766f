"""sample: the ±1 allocation, determinism, order invariance, eligibility and the report."""

from __future__ import annotations

import json
import random
from fractions import Fraction

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apto_release.dataset.sample import SampleOptions, allocate, draw, largest_remainder, sample_file
from apto_release.errors import UsageError, ValidationFailed
from tests.conftest import make_record, make_records, write_jsonl


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 500), min_size=1, max_size=12).filter(lambda c: sum(c) > 0), st.data())
def test_largest_remainder_is_within_one_of_the_quota(counts, data):
    n = data.draw(st.integers(0, sum(counts)))
    keys = [(i,) for i in range(len(counts))]
    alloc = largest_remainder(dict(zip(keys, counts)), n, keys)
    assert sum(alloc.values()) == n
    total = sum(counts)
    for key, count in zip(keys, counts):
        quota = Fraction(n * count, total)
        assert abs(alloc[key] - quota) < 1
        assert alloc[key] <= count


def test_largest_remainder_known_case():
    # quotas 2.5, 1.5, 1.0 of n=5: the tie of remainders goes to the larger stratum
    keys = [("a",), ("b",), ("c",)]
    assert largest_remainder({("a",): 5, ("b",): 3, ("c",): 2}, 5, keys) == {("a",): 3, ("b",): 1, ("c",): 1}


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10_000), st.integers(8, 60))
def test_nested_allocation_keeps_category_totals(seed, n):
    rng = random.Random(seed)
    pool = [make_record(i, rng.choice(["safety_refusal", "mid_refusal", "overrefusal_prevention"]), has_jailbreak=rng.random() < 0.3) for i in range(120)]
    flat_full, flat = allocate(pool, n, ["category"])
    full, nested = allocate(pool, n, ["category", "has_jailbreak"])
    assert sum(nested.values()) == n
    for (category,), count in flat.items():
        inner = {k: v for k, v in nested.items() if k[0] == category}
        assert sum(inner.values()) == count
        inner_total = flat_full[(category,)]
        for key, got in inner.items():
            assert abs(got - Fraction(count * full[key], inner_total)) < 1


def _write(tmp_path, records, name="data.jsonl"):
    return write_jsonl(tmp_path / name, records)


def test_sample_is_deterministic_and_order_invariant(tmp_path):
    records = make_records(300)
    a = sample_file(_write(tmp_path, records), tmp_path / "a", SampleOptions(n=50, seed=7))
    shuffled = records[:]
    random.Random(1).shuffle(shuffled)
    b = sample_file(_write(tmp_path, shuffled, "shuffled.jsonl"), tmp_path / "b", SampleOptions(n=50, seed=7))
    assert (tmp_path / "a" / "sample.jsonl").read_bytes() == (tmp_path / "b" / "sample.jsonl").read_bytes()
    assert [r["id"] for r in a.records] == [r["id"] for r in b.records]
    c = sample_file(tmp_path / "data.jsonl", tmp_path / "c", SampleOptions(n=50, seed=8))
    assert {r["id"] for r in c.records} != {r["id"] for r in a.records}
    assert len(a.records) == 50 and len({r["id"] for r in a.records}) == 50


def test_sample_outputs_and_report(tmp_path):
    records = make_records(200)
    result = sample_file(_write(tmp_path, records), tmp_path / "out", SampleOptions(n=30, seed=0))
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["distribution.json", "distribution.md", "sample.jsonl", "sample.parquet"]
    lines = (out / "sample.jsonl").read_text("utf-8").splitlines()
    assert [json.loads(line) for line in lines] == result.records
    table = pq.read_table(out / "sample.parquet")
    assert table.num_rows == 30
    assert table.column("id").to_pylist() == [r["id"] for r in result.records]
    report = json.loads((out / "distribution.json").read_text("utf-8"))
    assert report["full_count"] == 200 and report["sample_count"] == 30 and report["seed"] == 0
    counts = {c: sum(r["category"] == c for r in records) for c in {r["category"] for r in records}}
    for row in report["categories"]:
        assert row["full_count"] == counts[row["category"]]
        assert abs(row["sample_count"] - 30 * row["full_share"]) < 1
        assert row["diff_points"] == pytest.approx((row["sample_share"] - row["full_share"]) * 100)
    assert report["max_abs_diff_points"] == max(abs(r["diff_points"]) for r in report["categories"])
    tvd = 0.5 * sum(abs(r["sample_share"] - r["full_share"]) for r in report["categories"])
    assert report["total_variation_distance"] == pytest.approx(tvd)
    assert len(report["input_sha256"]) == 64
    md = (out / "distribution.md").read_text("utf-8")
    assert "| safety_refusal |" in md and "total variation distance" in md


def test_nested_strata_report(tmp_path):
    records = make_records(200)
    result = sample_file(_write(tmp_path, records), tmp_path / "out", SampleOptions(n=40, by=("category", "has_jailbreak")))
    strata = result.report.strata
    assert {(r.values["category"], r.values["has_jailbreak"]) for r in strata} == {(r["category"], r["has_jailbreak"]) for r in records}
    assert sum(r.sample_count for r in strata) == 40
    assert "By stratum (category / has_jailbreak)" in (tmp_path / "out" / "distribution.md").read_text("utf-8")


def test_usage_errors(tmp_path):
    path = _write(tmp_path, make_records(40))
    with pytest.raises(UsageError, match="larger than the 40 eligible records"):
        sample_file(path, tmp_path / "o1", SampleOptions(n=41))
    with pytest.raises(UsageError, match=r"smaller than the 4 strata.*would get no record: .*anti_hallucination"):
        sample_file(path, tmp_path / "o2", SampleOptions(n=3))
    with pytest.raises(UsageError, match="cannot stratify by 'messages'"):
        sample_file(path, tmp_path / "o3", SampleOptions(n=10, by=("messages",)))
    assert not any(p.name.startswith(("o1", "o2", "o3", ".o")) for p in tmp_path.iterdir())
    sample_file(path, tmp_path / "o4", SampleOptions(n=10))
    with pytest.raises(UsageError, match="already exists"):
        sample_file(path, tmp_path / "o4", SampleOptions(n=10))
    sample_file(path, tmp_path / "o4", SampleOptions(n=12), overwrite=True)
    assert len((tmp_path / "o4" / "sample.jsonl").read_text().splitlines()) == 12


def test_file_with_errors_is_refused(tmp_path):
    path = _write(tmp_path, make_records(20) + [make_record(99, judge_score=2)])
    with pytest.raises(ValidationFailed) as info:
        sample_file(path, tmp_path / "out", SampleOptions(n=5))
    assert [f.rule for f in info.value.report.errors] == ["judge_score_below_gate"]
    assert not (tmp_path / "out").exists()


def test_personal_data_is_left_out_unless_allowed(tmp_path):
    records = make_records(40)
    records[5]["messages"][1]["content"] += " 連絡先は 090-1234-5678 です。"
    path = _write(tmp_path, records)
    result = sample_file(path, tmp_path / "out", SampleOptions(n=39))
    assert records[5]["id"] not in {r["id"] for r in result.records}
    assert result.excluded == [{"id": records[5]["id"], "line": 6, "rules": ["pii_phone"]}]
    assert result.report.full_count == 39
    with pytest.raises(UsageError, match="larger than the 39 eligible"):
        sample_file(path, tmp_path / "o2", SampleOptions(n=40))
    allowed = sample_file(path, tmp_path / "o3", SampleOptions(n=40, allow_personal_data=True))
    assert records[5]["id"] in {r["id"] for r in allowed.records}


def test_draw_direct():
    pool = make_records(100)
    sample, report = draw(pool, SampleOptions(n=10, seed=3))
    assert len(sample) == 10 and report.sample_count == 10
    assert sample == sorted(sample, key=lambda r: (["safety_refusal", "overrefusal_prevention", "mid_refusal", "anti_hallucination"].index(r["category"]), r["id"]))
