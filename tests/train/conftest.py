"""Shared by the training tests: a tiny Qwen3.5 checkpoint and records to train it on."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """(folder, tiny Qwen3.5 base with its Japanese tokenizer, 16 example records), per test module."""
    pytest.importorskip("torch")
    from apto_release.dataset.example import write_example_data
    from apto_release.testing import build_japanese_tokenizer, build_tiny_qwen35

    root = tmp_path_factory.mktemp("train")
    base = build_tiny_qwen35(root / "base", tokenizer=build_japanese_tokenizer())
    data = root / "data.jsonl"
    write_example_data(data, n=16)
    return root, base, data
