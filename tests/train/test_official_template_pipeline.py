"""The tokenizer's own chat template (data.chat_template = "") from training to the GGUF file.

A post-trained Qwen3.5 is tuned in its own template, the official one with think blocks; the
adapter carries no template of its own, so merge keeps the base's and the GGUF file holds it.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("gguf")

from apto_release.dataset.example import write_example_data
from apto_release.train.presets import load_preset
from apto_release.train.trainer import train
from tests.conftest import official_qwen35_template


def test_the_official_template_goes_through_train_merge_and_gguf(tmp_path):
    import gguf

    from apto_release.gguf.convert import convert
    from apto_release.merge.merge import merge
    from apto_release.testing import build_japanese_tokenizer, build_tiny_qwen35

    template = official_qwen35_template()
    base = build_tiny_qwen35(tmp_path / "base", tokenizer=build_japanese_tokenizer())
    (base / "chat_template.jinja").write_text(template, "utf-8")
    data = write_example_data(tmp_path / "data.jsonl", n=12).path
    records = [json.loads(line) for line in data.read_text("utf-8").splitlines()]
    assert any(sum(m["role"] == "user" for m in r["messages"]) >= 2 for r in records)  # multi-turn records among them

    adapter = tmp_path / "adapter"
    result = train(load_preset("tiny", {"data.chat_template": ""}), base=str(base), data=data, out_dir=adapter, max_steps=1)
    assert result.steps == 1
    assert not (adapter / "chat_template.jinja").exists()  # the model's own template: nothing to hand on

    merged = tmp_path / "merged"
    merge(base, adapter, merged)
    assert (merged / "chat_template.jinja").read_text("utf-8") == template

    path = convert(merged, tmp_path / "gguf", quant="F16").path
    reader = gguf.GGUFReader(path)
    assert reader.fields["tokenizer.chat_template"].contents() == template
