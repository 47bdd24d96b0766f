"""The release state file: records, the hash cache (and its racy-write guard), digests, bad files."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from apto_release.errors import InputError
from apto_release.release import state as state_module
from apto_release.release.state import ReleaseState, StageRecord, changed_inputs, changed_outputs, digest


@pytest.fixture
def counted(monkeypatch):
    """Count the real hashing the state does (the cache answers without it)."""
    calls = []
    real = state_module.hash_file

    def hash_file(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(state_module, "hash_file", hash_file)
    return calls


def age(path, seconds: float) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


def test_the_cache_answers_for_an_unchanged_old_file_and_survives_a_reload(tmp_path, counted):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x" * 1000)
    age(f, 60)
    state = ReleaseState(tmp_path / "state.json")
    first = state.sha256(f)
    assert state.sha256(f) == first and len(counted) == 1
    state.save()
    assert ReleaseState.load(tmp_path / "state.json").sha256(f) == first and len(counted) == 1


def test_a_file_written_just_now_is_hashed_again(tmp_path, counted):
    """Within the racy window a same-size rewrite could keep the modification time: no trust."""
    f = tmp_path / "fresh.bin"
    f.write_bytes(b"a" * 10)
    state = ReleaseState(tmp_path / "state.json")
    state.sha256(f)
    state.sha256(f)
    assert len(counted) == 2


def test_a_changed_file_of_the_same_size_is_seen(tmp_path):
    f = tmp_path / "shard.bin"
    f.write_bytes(b"a" * 10)
    age(f, 60)
    state = ReleaseState(tmp_path / "state.json")
    before = state.sha256(f)
    f.write_bytes(b"b" * 10)
    age(f, 30)  # older than the racy window, but not the recorded modification time
    assert state.sha256(f) != before


def test_listing_and_digest_match_sha256sum(tmp_path):
    folder = tmp_path / "merged"
    (folder / "sub").mkdir(parents=True)
    for name, data in {"b.safetensors": b"2", "a.json": b"1", "sub/c.txt": b"3"}.items():
        (folder / name).write_bytes(data)
    outside = tmp_path / "elsewhere.txt"
    outside.write_bytes(b"4")
    state = ReleaseState(tmp_path / "state.json")
    listing = state.listing([folder / "b.safetensors", folder / "a.json", folder / "sub/c.txt", outside], folder)
    assert list(listing) == sorted(["a.json", "b.safetensors", "sub/c.txt", str(outside.resolve())])
    inside = {k: v for k, v in listing.items() if not k.startswith("/")}
    if shutil.which("sha256sum"):
        text = subprocess.run(["sha256sum", *sorted(inside)], cwd=folder, capture_output=True, check=True).stdout
        assert digest(inside) == subprocess.run(["sha256sum"], input=text, capture_output=True, check=True).stdout.split()[0].decode()


def test_records_outputs_and_what_changed(tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("v1")
    state = ReleaseState(tmp_path / "state.json")
    state.start("merge:m", {"adapter": "a1"})
    assert ReleaseState.load(tmp_path / "state.json").running == {"merge:m": {"adapter": "a1"}}
    state.finish("merge:m", {"adapter": "a1"}, state.listing([out], tmp_path), seconds=1.5, summary="ok")
    loaded = ReleaseState.load(tmp_path / "state.json")
    record = loaded.stages["merge:m"]
    assert loaded.running == {} and record.outputs == {"out.txt": state.sha256(out)} and record.summary == "ok"
    assert changed_outputs(record, tmp_path, loaded) is None
    out.write_text("v2")
    assert changed_outputs(record, tmp_path, loaded) == "out.txt changed since it was written"
    out.unlink()
    assert changed_outputs(record, tmp_path, loaded) == "out.txt is missing"
    assert changed_inputs({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4}) == "input changed: b, c"
    assert changed_inputs({"a": 1}, {"a": 1}) is None
    assert isinstance(record, StageRecord)


@pytest.mark.parametrize("text", ["{not json", '{"format": 99}', '{"format": 1, "stages": {"train:m": {"inputs": {}}}}'])
def test_an_unreadable_state_file_says_how_to_recover(tmp_path, text):
    path = tmp_path / "state.json"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        ReleaseState.load(path)
    assert "delete it to rebuild every stage" in info.value.hint


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_manifest_s_commit_and_uncommitted_changes(tmp_path):
    from types import SimpleNamespace

    from apto_release.release.artifacts import manifest_commit

    manifest = SimpleNamespace(path=tmp_path / "release.toml")
    manifest.path.write_text('version = "1.0.0"\n')
    assert manifest_commit(manifest) == "none (not in a git repository)"
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    assert manifest_commit(manifest) == "none (the manifest is not committed)"
    subprocess.run([*git, "add", "release.toml"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "release"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert manifest_commit(manifest) == head
    (tmp_path / "other.txt").write_text("x")
    subprocess.run([*git, "add", "other.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "not the manifest"], check=True)
    assert manifest_commit(manifest) == head  # the manifest's own last commit, not HEAD
    manifest.path.write_text('version = "1.0.1"\n')
    assert manifest_commit(manifest) == f"{head} + uncommitted changes"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_cards_year_is_the_manifest_s_commit_s_not_today_s(tmp_path):
    """A rebuild next year must write the same cards: their citation year comes from git."""
    from types import SimpleNamespace

    from apto_release.release.artifacts import manifest_year

    manifest = SimpleNamespace(path=tmp_path / "release.toml")
    manifest.path.write_text('version = "1.0.0"\n')
    assert manifest_year(manifest) is None  # not in git: the cards say the current year
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "release.toml"], check=True)
    env = {**os.environ, "GIT_COMMITTER_DATE": "2024-12-31T23:30:00+00:00", "GIT_AUTHOR_DATE": "2024-12-31T23:30:00+00:00"}
    subprocess.run([*git, "commit", "-q", "-m", "release"], check=True, env=env)
    assert manifest_year(manifest) == 2024
