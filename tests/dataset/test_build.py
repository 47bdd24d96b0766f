"""dataset build: the release folder loads with datasets as is, its card parses, and it is atomic."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from apto_release.dataset import build as build_mod
from apto_release.dataset.build import BuildResult, build_dataset, dataset_features
from apto_release.cards.dataset import CardOptions, render_dataset_card, size_category
from apto_release.errors import BuildError, UsageError
from apto_release.schema import CATEGORIES

datasets = pytest.importorskip("datasets")
pytest.importorskip("huggingface_hub")


def synthetic_records(n: int = 40, *, with_metadata: bool = True, categories=CATEGORIES) -> list[dict]:
    """``n`` valid records over ``categories`` (round robin), with mixed system messages and metadata."""
    records = []
    for i in range(n):
        category = categories[i % len(categories)]
        messages = []
        if i % 3 == 0:
            messages.append({"role": "system", "content": f"あなたは安全なアシスタントです。#{i}"})
        messages += [
            {"role": "user", "content": f"質問 {i}：これについて教えてください。"},
            {"role": "assistant", "content": f"回答 {i}：お答えします。"},
        ]
        if i % 4 == 1:  # a second turn
            messages += [
                {"role": "user", "content": f"追加の質問 {i}"},
                {"role": "assistant", "content": f"追加の回答 {i}\n改行を含みます。"},
            ]
        record = {
            # Ids in reverse order of creation, so the build has to sort them.
            "id": f"rec-{n - i:04d}",
            "category": category,
            "messages": messages,
            "has_jailbreak": i % 2 == 0,
            "judge_score": 4 + i % 2,
        }
        if category == "mid_refusal":
            record["harmful_prefix"] = f"はい、まず手順 {i} は"
        elif i % 5 == 0:
            record["harmful_prefix"] = None  # present but null
        if category in ("safety_refusal", "mid_refusal"):
            record["harm_category"] = "violence" if i % 2 else "privacy"
        elif i % 3 == 1:
            record["harm_category"] = "medical"
        if with_metadata:
            if i % 5 == 0:
                record["metadata"] = {"source": f"s{i}"}
            elif i % 7 == 0:
                record["metadata"] = {"author": "team-a", "source": "x"}
            elif i % 11 == 0:
                record["metadata"] = {}
        records.append(record)
    return records


def expected_row(record: dict, keys: list[str]) -> dict:
    row = {
        "id": record["id"],
        "category": CATEGORIES.index(record["category"]),
        "messages": record["messages"],
        "harmful_prefix": record.get("harmful_prefix"),
        "has_jailbreak": record["has_jailbreak"],
        "harm_category": record.get("harm_category"),
        "judge_score": record["judge_score"],
    }
    if keys:
        row["metadata"] = {k: (record.get("metadata") or {}).get(k) for k in keys}
    return row


@pytest.fixture
def load(monkeypatch, tmp_path_factory):
    """``datasets.load_dataset(DIR[, name], split="train")`` offline, with a temporary cache."""
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)

    def _load(path, name=None):
        cache = tmp_path_factory.mktemp("hf-cache")
        return datasets.load_dataset(str(path), name, split="train", cache_dir=str(cache))

    return _load


@pytest.fixture(scope="module")
def records():
    return synthetic_records(40)


@pytest.fixture(scope="module")
def built(records, tmp_path_factory) -> BuildResult:
    out = tmp_path_factory.mktemp("release") / "hub"
    return build_dataset(copy.deepcopy(records), out)


# --- the folder -------------------------------------------------------------------------------


def test_layout_and_result(built, records):
    assert built.rows == 40
    assert list(built.rows_per_category) == list(CATEGORIES)
    assert built.rows_per_category == {c: 10 for c in CATEGORIES}
    assert built.configs == ["default", *CATEGORIES]
    assert built.files == [Path("README.md")] + [Path("data", c, "train-00000-of-00001.parquet") for c in CATEGORIES]
    on_disk = sorted(p.relative_to(built.out_dir) for p in built.out_dir.rglob("*") if p.is_file())
    assert on_disk == sorted(built.files)
    assert not [p for p in built.out_dir.parent.iterdir() if p.name.startswith(".")]


def test_parquet_files_embed_the_features_and_are_sorted_by_id(built, records):
    import pyarrow.parquet as pq

    schemas = set()
    for category in CATEGORIES:
        path = built.out_dir / "data" / category / "train-00000-of-00001.parquet"
        table = pq.read_table(path)
        ids = table.column("id").to_pylist()
        assert ids == sorted(r["id"] for r in records if r["category"] == category)
        meta = json.loads(table.schema.metadata[b"huggingface"])
        assert meta["info"]["features"]["category"]["names"] == list(CATEGORIES)
        schemas.add(str(table.schema.remove_metadata()))
    assert len(schemas) == 1  # every config has the same schema


def test_default_config_loads_with_the_exact_features_and_rows(built, records, load):
    ds = load(built.out_dir)
    keys = ["author", "source"]
    assert ds.num_rows == 40
    assert ds.features == dataset_features(keys)
    label = ds.features["category"]
    assert isinstance(label, datasets.ClassLabel)
    assert label.names == list(CATEGORIES)
    assert isinstance(ds.features["messages"], datasets.List)
    assert ds.features["judge_score"] == datasets.Value("int8")

    got = {row["id"]: row for row in ds.to_list()}
    want = {r["id"]: expected_row(r, keys) for r in records}
    assert got == want  # messages round-trip exactly, nulls stay null
    with_system = [r for r in records if r["messages"][0]["role"] == "system"]
    assert with_system and all(got[r["id"]]["messages"][0]["role"] == "system" for r in with_system)
    no_meta = next(r for r in records if "metadata" not in r)
    assert got[no_meta["id"]]["metadata"] == {"author": None, "source": None}
    assert got[next(r["id"] for r in records if r["category"] == "anti_hallucination")]["harmful_prefix"] is None


def test_stratified_split_by_category_works(built, load):
    ds = load(built.out_dir)
    split = ds.train_test_split(test_size=0.25, stratify_by_column="category", seed=0)
    assert split["train"].num_rows == 30 and split["test"].num_rows == 10
    test_labels = list(split["test"]["category"])
    assert all(test_labels.count(label) in (2, 3) for label in range(4))  # every category, in proportion


@pytest.mark.parametrize("category", CATEGORIES)
def test_each_category_config_has_its_own_rows_only(built, records, load, category):
    ds = load(built.out_dir, category)
    want = sorted(r["id"] for r in records if r["category"] == category)
    assert ds["id"] == want
    assert set(ds["category"]) == {CATEGORIES.index(category)}
    assert ds.features == dataset_features(["author", "source"])


def test_without_metadata_there_is_no_metadata_column_and_absent_categories_get_no_config(tmp_path, load):
    records = synthetic_records(12, with_metadata=False, categories=("safety_refusal", "anti_hallucination"))
    result = build_dataset(records, tmp_path / "out")
    assert result.configs == ["default", "safety_refusal", "anti_hallucination"]
    assert result.rows_per_category == {"safety_refusal": 6, "overrefusal_prevention": 0, "mid_refusal": 0, "anti_hallucination": 6}
    assert not (tmp_path / "out" / "data" / "mid_refusal").exists()
    ds = load(tmp_path / "out")
    assert "metadata" not in ds.column_names
    assert ds.features["category"].names == list(CATEGORIES)
    assert load(tmp_path / "out", "anti_hallucination").num_rows == 6
    with pytest.raises(ValueError):
        load(tmp_path / "out", "mid_refusal")
    card = (tmp_path / "out" / "README.md").read_text("utf-8")
    assert "no `metadata` column" in card


def test_build_leaves_the_offline_switches_as_they_were(tmp_path):
    from huggingface_hub import constants

    before = (datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE)
    build_dataset(synthetic_records(8), tmp_path / "out")
    assert (datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE) == before


def test_importing_the_build_module_does_not_import_datasets():
    code = (
        "import sys, apto_release.dataset.build, apto_release.cards.dataset\n"
        "heavy = [m for m in ('datasets', 'pyarrow', 'huggingface_hub') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the card ---------------------------------------------------------------------------------


def test_card_metadata_parses_with_huggingface_hub(built):
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(built.out_dir / "README.md")
    data = card.data
    options = CardOptions()
    assert data.language == ["ja"]
    assert data.license == "cc-by-nc-sa-4.0"
    assert data.size_categories == ["n<1K"]
    assert data.task_categories == ["text-generation"]
    assert data.task_ids == ["dialogue-modeling"]
    assert data.annotations_creators == ["expert-generated", "machine-generated"]
    assert data.language_creators == ["expert-generated", "machine-generated"]
    assert data.multilinguality == ["monolingual"]
    assert data.source_datasets == ["original"]
    assert data.pretty_name == options.pretty_name
    assert {"safety", "alignment", "red-teaming", "japanese", "sft", "refusal"} <= set(data.tags)
    configs = data["configs"]
    assert [c["config_name"] for c in configs] == ["default", *CATEGORIES]
    assert configs[0]["default"] is True
    assert configs[0]["data_files"] == [{"split": "train", "path": "data/*/*.parquet"}]
    for c in configs[1:]:
        assert c["data_files"] == [{"split": "train", "path": f"data/{c['config_name']}/*.parquet"}]
    assert data["extra_gated_prompt"] == options.gated_prompt
    assert data["extra_gated_fields"] == options.gated_fields
    assert any(v == "checkbox" for v in data["extra_gated_fields"].values())
    infos = DatasetInfosDict.from_dataset_card_data(data)
    assert sorted(infos) == sorted(["default", *CATEGORIES])
    assert infos["default"].splits["train"].num_examples == 40
    assert infos["mid_refusal"].splits["train"].num_examples == 10
    assert infos["default"].features == dataset_features(["author", "source"])
    assert infos["default"].download_size == sum(
        (built.out_dir / f).stat().st_size for f in built.files if f.suffix == ".parquet"
    )


def test_the_built_card_passes_the_push_check_and_round_trips(built):
    from huggingface_hub import DatasetCard, DatasetCardData

    from apto_release.cards.check import check_card_text, read_front_matter

    text = (built.out_dir / "README.md").read_text("utf-8")
    assert check_card_text(text, "dataset") == []
    assert check_card_text(text, "dataset", rows=40) == []
    meta, _ = read_front_matter(text)
    assert DatasetCard(text).data.to_dict() == meta
    assert DatasetCardData(**meta).to_dict() == meta
    # the row count the push counts from the Parquet files decides the bucket
    assert check_card_text(text, "dataset", rows=1000) == [
        "size_categories is ['n<1K'] but the dataset has 1,000 rows: it must be ['1K<n<10K']"]


def test_card_body_is_bilingual_and_complete(built):
    text = (built.out_dir / "README.md").read_text("utf-8")
    assert text.startswith("---\n")
    body = text.split("\n---\n", 1)[1]
    for heading in ("## 日本語", "## English", "### 概要", "### Summary", "### 作成方法", "### How the data was made"):
        assert heading in body
    for category in CATEGORIES:
        assert f"`{category}`" in body
    assert 'load_dataset("apto/japanese-safety-sft-sample")' in body or 'load_dataset("apto/japanese-safety-sft-sample", split="train")' in body
    assert 'load_dataset("apto/japanese-safety-sft-sample", "mid_refusal"' in body
    assert "SFTTrainer" in body
    assert "AnswerCarefully" in body and "含まれていません" in body and "does **not** include" in body
    assert "@misc{apto_japanese_safety_sft," in body
    assert "Decoupled Refusal Training" in body
    assert "| 5 |" in body and "| 1 |" in body
    # The records' own distribution (no report given).
    assert "| `safety_refusal` | 10 | 25.00 |" in body


def test_card_options_reach_the_card(tmp_path):
    options = CardOptions(
        repo_id="someone/other-name",
        pretty_name="Other Name",
        license="other",
        gated_prompt=None,
        gated_fields={},
        description_en="An extra English paragraph.",
    )
    text = render_dataset_card({"safety_refusal": 3}, options=options)
    assert 'load_dataset("someone/other-name", "mid_refusal"' in text
    assert "An extra English paragraph." in text
    assert "extra_gated_prompt" not in text and "extra_gated_fields" not in text
    assert "license: other" in text


@pytest.mark.parametrize(
    "n, bucket",
    [
        (0, "n<1K"),
        (1, "n<1K"),
        (999, "n<1K"),
        (1000, "1K<n<10K"),
        (9999, "1K<n<10K"),
        (10_000, "10K<n<100K"),
        (18_000, "10K<n<100K"),
        (99_999, "10K<n<100K"),
        (100_000, "100K<n<1M"),
        (1_000_000, "1M<n<10M"),
        (999_999_999_999, "100B<n<1T"),
        (10**12, "n>1T"),
    ],
)
def test_size_category_buckets(n, bucket):
    assert size_category(n) == bucket


def test_size_category_rejects_negative_counts():
    with pytest.raises(ValueError):
        size_category(-1)


def test_size_category_in_card_follows_the_row_count():
    for rows, bucket in ((500, "n<1K"), (1000, "1K<n<10K"), (18_000, "10K<n<100K")):
        text = render_dataset_card({"safety_refusal": rows})
        assert f"size_categories:\n- {bucket}\n" in text


REPORT = {
    "full_count": 18000,
    "sample_count": 40,
    "seed": 7,
    "by": ["category"],
    "categories": [
        {"category": "safety_refusal", "full_count": 7200, "full_share": 0.4, "sample_count": 10, "sample_share": 0.25, "diff_points": -15.0},
        {"category": "overrefusal_prevention", "full_count": 5400, "full_share": 0.3, "sample_count": 10, "sample_share": 0.25, "diff_points": -5.0},
        {"category": "mid_refusal", "full_count": 3600, "full_share": 0.2, "sample_count": 10, "sample_share": 0.25, "diff_points": 5.0},
        {"category": "anti_hallucination", "full_count": 1800, "full_share": 0.1, "sample_count": 10, "sample_share": 0.25, "diff_points": 15.0},
    ],
    "max_abs_diff_points": 15.0,
    "total_variation_distance": 0.2,
}


def test_distribution_table_from_the_sampler_report(tmp_path):
    result = build_dataset(synthetic_records(40), tmp_path / "out", distribution=REPORT)
    text = (result.out_dir / "README.md").read_text("utf-8")
    assert "| `safety_refusal` | 7,200 (40.00%) | 10 (25.00%) | -15.00 |" in text
    assert "| `anti_hallucination` | 1,800 (10.00%) | 10 (25.00%) | +15.00 |" in text
    assert "全体 18,000 件から 40 件" in text
    assert "40 of 18,000 records" in text
    assert "seed 7" in text
    assert "Total variation distance (TVD): 0.2000" in text
    assert "全変動距離（TVD）：0.2000" in text
    assert "full set count (%)" in text and "difference (points)" in text


def test_a_report_of_other_records_is_refused_before_writing(tmp_path):
    report = copy.deepcopy(REPORT)
    report["categories"][0]["sample_count"] = 11
    with pytest.raises(UsageError, match="does not describe these records"):
        build_dataset(synthetic_records(40), tmp_path / "out", distribution=report)
    assert list(tmp_path.iterdir()) == []
    broken = {k: v for k, v in REPORT.items() if k != "categories"}
    with pytest.raises(UsageError, match="categories"):
        build_dataset(synthetic_records(40), tmp_path / "out", distribution=broken)


def test_card_without_report_uses_the_records_own_distribution():
    text = render_dataset_card({"safety_refusal": 3, "mid_refusal": 1})
    assert "| `safety_refusal` | 3 | 75.00 |" in text
    assert "| `mid_refusal` | 1 | 25.00 |" in text
    assert "| `overrefusal_prevention` |" not in text.split("### 分布")[1].split("###")[0]
    assert "| category | count | share (%) |" in text


# --- atomicity --------------------------------------------------------------------------------


def _beside(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_existing_folder_without_overwrite_is_a_usage_error_and_untouched(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(UsageError) as info:
        build_dataset(synthetic_records(8), out)
    assert "--overwrite" in (info.value.hint or "")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert _beside(out) == ["out"]


def test_a_failed_verification_leaves_nothing(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise BuildError("simulated verification failure")

    monkeypatch.setattr(build_mod, "verify_release", fail)
    with pytest.raises(BuildError, match="simulated"):
        build_dataset(synthetic_records(8), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_verification_catches_lost_rows(tmp_path, monkeypatch):
    real = build_mod._write_parquet

    def drop_last(rows, features, dest):
        real(rows[:-1], features, dest)

    monkeypatch.setattr(build_mod, "_write_parquet", drop_last)
    with pytest.raises(BuildError, match="rows"):
        build_dataset(synthetic_records(8), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_a_failure_with_overwrite_keeps_the_old_folder(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    monkeypatch.setattr(build_mod, "verify_release", lambda *a, **k: (_ for _ in ()).throw(BuildError("boom")))
    with pytest.raises(BuildError):
        build_dataset(synthetic_records(8), out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert _beside(out) == ["out"]


def test_overwrite_replaces_the_folder(tmp_path, load):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    result = build_dataset(synthetic_records(8), out, overwrite=True)
    assert not (out / "stale.txt").exists()
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == sorted(result.files)
    assert _beside(out) == ["out"]
    assert load(out).num_rows == 8


def test_no_records_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError):
        build_dataset([], tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
