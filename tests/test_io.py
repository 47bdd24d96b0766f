"""Outputs appear whole or not at all, with ordinary permissions."""

from __future__ import annotations

import os
import stat

import pytest

from apto_release.io import atomic_dir, atomic_path, write_text


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    dest = tmp_path / "out.txt"
    write_text(dest, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_text("half", encoding="utf-8")
            raise RuntimeError("interrupted")
    assert dest.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_atomic_dir_replaces_only_when_complete(tmp_path):
    dest = tmp_path / "folder"
    with atomic_dir(dest) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(dest, overwrite=True) as tmp:
            (tmp / "b").write_text("2")
            raise KeyboardInterrupt
    assert sorted(os.listdir(dest)) == ["a"]
    with pytest.raises(FileExistsError):
        with atomic_dir(dest):
            pass
    with atomic_dir(dest, overwrite=True) as tmp:
        (tmp / "c").write_text("3")
    assert sorted(os.listdir(dest)) == ["c"]
    assert os.listdir(tmp_path) == ["folder"]


def test_outputs_get_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "f.txt", "x")
        with atomic_dir(tmp_path / "d"):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


def test_remove_stale_temps_removes_only_a_dead_writer_s_folders(tmp_path):
    import json
    import socket
    import subprocess
    import sys

    from apto_release.io import OWNER_FILE, claim_temp_dir, remove_stale_temps

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    folders = {name: tmp_path / f".model-Q8_0.{name}.tmp" for name in ("dead", "alive", "unclaimed")}
    for folder in folders.values():
        folder.mkdir()
        (folder / "model-Q8_0.gguf").write_bytes(b"partial")
    (folders["dead"] / OWNER_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout)}))
    claim_temp_dir(folders["alive"])
    other = tmp_path / ".model-Q8_0-other.x.tmp"  # another output's folder: not matched
    other.mkdir()
    assert remove_stale_temps(tmp_path, "model-Q8_0") == 1
    assert not folders["dead"].exists() and folders["alive"].exists() and folders["unclaimed"].exists() and other.exists()
