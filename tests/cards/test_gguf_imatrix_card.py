"""The GGUF card says how the importance matrix was made, from the build record (issue 18)."""

from __future__ import annotations

import hashlib
import os

import pytest

from apto_release.cards.model import find_gguf_outputs, render_gguf_card
from apto_release.release.manifest import load_manifest
from tests.cards.test_cards import make_release

pytest.importorskip("llama_cpp")


@pytest.fixture
def quantized(tmp_path):
    from apto_release.gguf.provenance import record_files

    manifest = load_manifest(make_release(tmp_path))
    model = manifest.models[0]
    folder = model.gguf_folder
    (folder / "imatrix.gguf").write_bytes(b"GGUF imatrix bytes")
    (folder / "calibration.txt").write_text("<|im_start|>user\nこんにちは<|im_end|>\n\n吾輩は猫である。\n\n", "utf-8")
    sha = {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in ("imatrix.gguf", "calibration.txt")}
    made_with = {"file": "imatrix.gguf", "sha256": sha["imatrix.gguf"], "chunks": 585, "context": 512,
                 "calibration": {"file": "calibration.txt", "sha256": sha["calibration.txt"], "records": "records.jsonl",
                                 "records_drawn": 1200, "tokens": 300_000, "tokens_by_source": {"records": 210_000, "general": 90_000},
                                 "against": ["ac.jsonl"], "left_out": 3, "general": "wiki.txt"}}
    outputs = find_gguf_outputs(model)
    record_files(folder, {f.path: {"written_by": "llama.cpp's quantizer" if o.type == "Q4_K_M" else "gguf-py", "verified": True,
                                   **({"imatrix": made_with} if o.type == "Q4_K_M" else {})} for o in outputs for f in o.files})
    return manifest, model, outputs, sha


def test_the_card_says_how_the_imatrix_was_made_in_both_languages(quantized):
    manifest, model, outputs, sha = quantized
    text = render_gguf_card(manifest, model, outputs).text
    assert "### 重要度行列（imatrix）" in text and "### Importance matrix (imatrix)" in text
    for digest in sha.values():
        assert text.count(digest) == 2  # once per language
    assert "300,000" in text and "210,000" in text and "90,000" in text
    assert "`records.jsonl`" in text and "`wiki.txt`" in text and "`ac.jsonl`" in text
    assert "3 records close to" in text and "3 件" in text
    assert "\nQ4_K_M were quantized with llama.cpp's importance matrix" in text  # only the file made with it
    assert "\nQ4_K_M は、llama.cpp の重要度行列" in text
    assert "Both files are in this repo." in text and "両方のファイルがこのリポジトリにあります。" in text
    assert "imatrix.gguf) | vision projector" not in text  # a companion .gguf, not a projector


def test_no_imatrix_section_when_the_files_changed_or_were_made_without_one(quantized, tmp_path):
    manifest, model, outputs, _ = quantized
    (model.gguf_folder / "imatrix.gguf").write_bytes(b"another imatrix")  # not the one that made the files
    assert "Importance matrix" not in render_gguf_card(manifest, model, outputs).text
    (model.gguf_folder / "imatrix.gguf").write_bytes(b"GGUF imatrix bytes")
    assert "Importance matrix" in render_gguf_card(manifest, model, outputs).text
    q4 = next(o for o in outputs if o.type == "Q4_K_M").files[0].path
    os.utime(q4, ns=(0, 0))  # changed since: the record no longer speaks for it
    assert "Importance matrix" not in render_gguf_card(manifest, model, outputs).text
    other = load_manifest(make_release(tmp_path / "plain"))
    assert "Importance matrix" not in render_gguf_card(other, other.models[0], find_gguf_outputs(other.models[0])).text
