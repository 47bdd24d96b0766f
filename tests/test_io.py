"""Outputs appear whole or not at all, with ordinary permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from apto_release.io import atomic_dir, atomic_path, human_size, write_text


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

    from apto_release.io import OWNER_FILE, remove_stale_temps

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    folders = {name: tmp_path / f".model-Q8_0.{name}.tmp" for name in ("dead", "alive", "unclaimed")}
    for folder in folders.values():
        folder.mkdir()
        (folder / "model-Q8_0.gguf").write_bytes(b"partial")
    (folders["dead"] / OWNER_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout)}))
    (folders["alive"] / OWNER_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    other = tmp_path / ".model-Q8_0-other.x.tmp"  # another output's folder: not matched
    other.mkdir()
    assert remove_stale_temps(tmp_path, "model-Q8_0") == 1
    assert not folders["dead"].exists() and folders["alive"].exists() and folders["unclaimed"].exists() and other.exists()


def _killed_inside(tmp_path, code: str) -> None:
    """Run ``code`` in a child Python that SIGKILLs itself at the end (inside an atomic write)."""
    import signal
    import subprocess
    import sys

    script = "import os, signal\nfrom apto_release.io import atomic_dir, atomic_path\n" + code + "\n"
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr


def test_a_killed_writer_s_temporaries_are_removed_by_the_next_write(tmp_path):
    """A kill inside atomic_path and atomic_dir (and between atomic_dir's two renames) leaves
    marked temporaries; the next write of the same destination removes them, and nothing else."""
    write_text(tmp_path / "folder" / "a", "old")
    _killed_inside(tmp_path, """
with atomic_path("file.txt") as tmp:
    tmp.write_text("half")
    with atomic_dir("folder", overwrite=True) as d:
        (d / "part").write_text("half")
        import apto_release.io as io
        real = os.replace
        def replace(src, dst):  # the first rename (the old folder aside) done, then killed
            real(src, dst)
            os.kill(os.getpid(), signal.SIGKILL)
        io.os.replace = replace
""")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert [n for n in left if n.startswith(".file.txt.")] and len([n for n in left if n.startswith(".folder.")]) == 2, left
    assert all(".o" in n for n in left if n.startswith("."))  # each named with its writer's mark
    other = tmp_path / ".folder-other.x.tmp"  # another output's temporary: not matched
    other.mkdir()
    write_text(tmp_path / "file.txt", "new")
    with atomic_dir(tmp_path / "folder", overwrite=True) as d:
        (d / "b").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".folder-other.x.tmp", "file.txt", "folder"]
    assert os.listdir(tmp_path / "folder") == ["b"]


def test_a_live_writer_s_temporaries_are_kept(tmp_path):
    import subprocess
    import sys

    from apto_release.io import remove_stale_temps

    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom apto_release.io import atomic_dir\n"
        "with atomic_dir(sys.argv[1]) as tmp:\n    print(tmp, flush=True)\n    time.sleep(60)\n"), str(tmp_path / "out")],
        stdout=subprocess.PIPE, text=True)
    try:
        live = Path(child.stdout.readline().strip())
        assert live.is_dir()
        with atomic_dir(tmp_path / "out-2"):  # a write beside it sweeps the folder
            pass
        assert remove_stale_temps(tmp_path) == 0 and remove_stale_temps(tmp_path, "out") == 0
        write_text(tmp_path / "out.txt", "x")
        assert live.is_dir()
    finally:
        child.kill()
        child.wait()
    assert remove_stale_temps(tmp_path) == 1 and not live.exists()


def test_human_size():
    assert human_size(812) == "812 B"
    assert human_size(4_200) == "4.20 KB"
    assert human_size(16_543_000_000) == "16.54 GB"


def test_hash_file_gives_the_sha256_and_under_the_limit_the_git_blob_id(tmp_path, monkeypatch):
    import hashlib

    from apto_release import io

    small = tmp_path / "small.bin"
    small.write_bytes(b"hello\n")
    info = io.hash_file(small)
    # the id 'git hash-object' gives the file (and the Hub lists as a regular file's blob_id)
    assert info == io.FileHash(6, hashlib.sha256(b"hello\n").hexdigest(), "ce013625030ba8dba906f756967f9e9ca394464a")
    assert info.sha256 == io.sha256_file(small)
    monkeypatch.setattr(io, "GIT_SHA1_LIMIT", 6)  # at the limit and above: LFS on the Hub, no blob id
    assert io.hash_file(small) == io.FileHash(6, info.sha256, None)


def test_folder_files_walks_once_in_path_order_and_never_follows_a_folder_link(tmp_path):
    from apto_release.io import folder_files

    (tmp_path / "b" / "__pycache__").mkdir(parents=True)
    (tmp_path / "b" / "__pycache__" / "x.pyc").write_bytes(b"")
    for name in ("b/z.txt", "a.txt", "b/a.txt"):
        (tmp_path / name).write_text(name)
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("no")
    (tmp_path / "link").symlink_to(outside, target_is_directory=True)
    names = lambda paths: [p.relative_to(tmp_path).as_posix() for p in paths]  # noqa: E731
    assert names(folder_files(tmp_path, skip=lambda n: n == "__pycache__")) == ["a.txt", "b/a.txt", "b/z.txt"]
    seen = []
    assert names(folder_files(tmp_path, skip=lambda n: n == "__pycache__", check=seen.append)) == ["a.txt", "b/a.txt", "b/z.txt", "link"]
    assert tmp_path / "link" in seen  # the check sees the folder link and may refuse it; it is never walked
