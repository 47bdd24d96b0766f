"""GGUF output sets: split names, staging, and moving complete sets into place."""

from __future__ import annotations

import os

import pytest

from apto_release.errors import UsageError
from apto_release.gguf import output


def test_split_names_follow_llama_cpp():
    assert output.split_names("M-F16", 1) == ["M-F16.gguf"]
    assert output.split_names("M-F16", 3) == ["M-F16-00001-of-00003.gguf", "M-F16-00002-of-00003.gguf", "M-F16-00003-of-00003.gguf"]


def test_publish_moves_the_first_file_last_and_drops_an_older_set(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    for name in output.split_names("M-F16", 3) + ["M-F16-extra.txt", "M-Q8_0.gguf"]:
        (out / name).write_text("old")
    moved = []
    real_replace = os.replace
    monkeypatch.setattr(output.os, "replace", lambda a, b: (moved.append(os.path.basename(b)), real_replace(a, b)))

    with output.staging(out, "M-F16") as staged:
        for name in output.split_names("M-F16", 2):
            (staged / name).write_text("new")
        paths = output.publish(staged, out, "M-F16")

    assert [p.name for p in paths] == output.split_names("M-F16", 2)
    assert moved == ["M-F16-00002-of-00002.gguf", "M-F16-00001-of-00002.gguf"]
    assert sorted(p.name for p in out.iterdir()) == ["M-F16-00001-of-00002.gguf", "M-F16-00002-of-00002.gguf", "M-F16-extra.txt", "M-Q8_0.gguf"]
    assert all((out / n).read_text() == "new" for n in output.split_names("M-F16", 2))


def test_an_incomplete_set_is_not_published(tmp_path):
    with pytest.raises(FileNotFoundError, match="incomplete"), output.staging(tmp_path, "M-F16") as staged:
        (staged / "M-F16-00001-of-00003.gguf").write_text("x")
        (staged / "M-F16-00003-of-00003.gguf").write_text("x")
        output.publish(staged, tmp_path, "M-F16")
    assert list(tmp_path.iterdir()) == []  # the staging folder is gone too


def test_an_interrupt_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt), output.staging(tmp_path, "M-F16") as staged:
        (staged / "M-F16.gguf").write_text("half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_check_free_sees_single_files_and_split_sets(tmp_path):
    output.check_free(tmp_path / "missing", "M-F16", overwrite=False)
    (tmp_path / "M-F16-00002-of-00002.gguf").write_text("x")
    with pytest.raises(UsageError, match="exists"):
        output.check_free(tmp_path, "M-F16", overwrite=False)
    output.check_free(tmp_path, "M-F16", overwrite=True)
    output.check_free(tmp_path, "M-F1", overwrite=False)  # another output's prefix is not a match
