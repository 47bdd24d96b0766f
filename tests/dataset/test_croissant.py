"""Croissant: the metadata the Hub derives from the card and the Parquet files, checked by mlcroissant."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from apto_release.dataset.build import build_dataset, build_from_file
from apto_release.dataset.croissant import CROISSANT_FILE, croissant_metadata, validate_croissant, write_croissant
from apto_release.dataset.sample import SampleOptions, sample_file
from apto_release.dataset.validate import ValidateOptions
from apto_release.errors import BuildError
from apto_release.schema import CATEGORIES


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """The public sample's folder, as 'apto-release sample' and 'dataset build' make it."""
    from apto_release.dataset.example import write_example_data

    base = tmp_path_factory.mktemp("croissant")
    data = write_example_data(base / "data.jsonl", n=400, seed=3).path
    sample_file(data, base / "sample", SampleOptions(n=60, seed=0))
    return build_from_file(base / "sample" / "sample.jsonl", base / "hub", validate_options=ValidateOptions(),
                           report=base / "sample" / "distribution.json")


def test_the_samples_croissant_validates_and_reads_the_parquet_rows(release):
    path = write_croissant(release.out_dir)
    assert path == release.out_dir / CROISSANT_FILE
    meta = json.loads(path.read_text("utf-8"))
    assert meta["conformsTo"] == "http://mlcommons.org/croissant/1.1"
    assert meta["name"] == "japanese-safety-sft-sample"
    assert meta["license"] == "https://choosealicense.com/licenses/cc-by-nc-sa-4.0/"
    assert meta["url"] == "https://huggingface.co/datasets/apto/japanese-safety-sft-sample"
    assert meta["inLanguage"] == ["ja"] and "@misc{apto_japanese_safety_sft," in meta["citeAs"]
    objects = [d for d in meta["distribution"] if d["@type"] == "cr:FileObject"]
    assert sorted(o["contentUrl"] for o in objects) == sorted(f"data/{c}/train-00000-of-00001.parquet" for c in CATEGORIES)
    assert all(len(o["sha256"]) == 64 for o in objects)
    assert [r["@id"] for r in meta["recordSet"]] == ["default", *CATEGORIES]
    fields = {f["@id"]: f for f in meta["recordSet"][0]["field"]}
    assert fields["default/judge_score"]["dataType"] == "cr:Int8"
    assert fields["default/has_jailbreak"]["dataType"] == "sc:Boolean"
    assert fields["default/messages"]["isArray"] is True
    assert [s["@id"] for s in fields["default/messages"]["subField"]] == ["default/messages/role", "default/messages/content"]

    read = validate_croissant(path, records=3)
    assert sorted(read) == sorted(["default", *CATEGORIES])
    for category in CATEGORIES:
        rows = pq.read_table(release.out_dir / "data" / category / "train-00000-of-00001.parquet").slice(0, 3).to_pylist()
        got = [{"id": r[f"{category}/id"].decode(), "category": r[f"{category}/category"],
                "messages": [{"role": m[f"{category}/messages/role"].decode(), "content": m[f"{category}/messages/content"].decode()}
                             for m in r[f"{category}/messages"]],
                "judge_score": int(r[f"{category}/judge_score"])} for r in read[category]]
        assert got == [{k: row[k] for k in ("id", "category", "messages", "judge_score")} for row in rows]


def test_mlcroissant_catches_a_changed_file_and_broken_metadata(release, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(release.out_dir, folder)
    path = write_croissant(folder)
    meta = json.loads(path.read_text("utf-8"))
    del meta["distribution"][0]["sha256"]
    meta["recordSet"][1]["field"][0]["dataType"] = "sc:Nope"
    broken = folder / "broken.json"
    broken.write_text(json.dumps(meta), "utf-8")
    with pytest.raises(BuildError, match="mlcroissant rejects the Croissant metadata: Found the following 2 error") as info:
        validate_croissant(broken)
    assert "should be defined: ['md5', 'sha256']" in str(info.value) and "valid http://mlcommons.org/croissant/dataType" in str(info.value)
    # A file that changed after the metadata was written: its SHA-256 no longer matches.
    target = folder / "data" / "mid_refusal" / "train-00000-of-00001.parquet"
    shutil.copy(folder / "data" / "safety_refusal" / "train-00000-of-00001.parquet", target)
    with pytest.raises(BuildError, match="cannot read the record set 'mid_refusal'"):
        validate_croissant(path, records=1)


def test_a_card_without_dataset_info_has_no_typed_fields(tmp_path):
    from tests.dataset.test_build import synthetic_records

    built = build_dataset(synthetic_records(8), tmp_path / "hub", verify=False)
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(built.out_dir / "README.md")
    card.data.dataset_info = None
    card.save(built.out_dir / "README.md")
    with pytest.raises(BuildError, match="no dataset_info features for config 'default'"):
        croissant_metadata(built.out_dir)


def test_importing_the_module_imports_no_mlcroissant():
    code = "import sys, apto_release.dataset.croissant; assert 'mlcroissant' not in sys.modules and 'datasets' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
