"""gguf.llama_source: the llama.cpp source of the pinned llama-cpp-python, fetched once into a cache."""

from __future__ import annotations

import pytest

from apto_release.errors import UsageError
from apto_release.gguf import llama_source


def test_the_source_is_the_vendored_llama_cpp_of_the_pinned_package():
    source = llama_source.source_dir()  # fetched by the README's commands; fetched here otherwise
    assert source.name == "llama.cpp" and (source / "convert_hf_to_gguf.py").is_file()
    assert (source / "tools" / "imatrix" / "imatrix.cpp").is_file() and (source / "gguf-py" / "gguf").is_dir()
    assert source.parent.parent.name == f"llama-cpp-python-{llama_source.LLAMA_CPP_PYTHON}"


def test_a_missing_source_is_named_when_fetching_is_off(tmp_path, monkeypatch):
    monkeypatch.setenv("APTO_CACHE", str(tmp_path))
    with pytest.raises(UsageError, match="llama.cpp's source is not in") as info:
        llama_source.source_dir(fetch=False)
    assert "python -m apto_release.gguf.llama_source" in info.value.hint


def test_another_installed_version_is_refused(monkeypatch):
    monkeypatch.setattr(llama_source, "version", lambda name: "0.3.99")
    with pytest.raises(UsageError, match="llama-cpp-python 0.3.99 is installed"):
        llama_source.source_dir()
