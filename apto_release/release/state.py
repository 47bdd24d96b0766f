"""The release command's memory: what each stage was run with and what it wrote.

``apto-release release`` keeps one JSON file (the manifest's ``state``, by default
``.apto-release/state.json`` beside the manifest). For every stage and target it records the
*inputs* the stage ran with (content hashes of files and folders, and the settings that shape the
output) and the *outputs* it wrote (each file's size and SHA-256). A re-run compares both with
what is on disk now: a stage whose inputs are unchanged and whose outputs are intact is skipped;
any difference is named, and the stage runs again.

The file also caches file hashes, keyed by path, size, modification time and inode, so that a
re-run does not read a 50 GB checkpoint again to learn that it has not changed. As git's index
does, an entry whose file was modified within ``RACY_SECONDS`` of being hashed is not trusted
(a write in the same clock tick would not change the modification time).

Times (when a stage finished, how long it took) are kept here and nowhere near the outputs, so
that they never make two builds of the same inputs differ.

Folder digests are the SHA-256 of the ``sha256sum`` listing of the folder's files, sorted by
path: ``cd FOLDER && sha256sum FILE... | sha256sum`` with the files in byte order reproduces one.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apto_release.errors import InputError
from apto_release.io import FileHash, hash_file

FORMAT = 1
RACY_SECONDS = 2.0


@dataclass
class StageRecord:
    """One finished stage of one target: the inputs it ran with, the files it wrote (path -> SHA-256)."""

    inputs: dict[str, Any]
    outputs: dict[str, str]
    finished: str = ""  # ISO time; informative only
    seconds: float = 0.0
    summary: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "outputs": self.outputs, "finished": self.finished,
                "seconds": round(self.seconds, 3), "summary": self.summary}


@dataclass
class ReleaseState:
    """The state file, loaded: stage records, stages under way, and the hash cache."""

    path: Path
    stages: dict[str, StageRecord] = field(default_factory=dict)
    #: Stages that started and have not finished, with the inputs they started with (a killed
    #: training run resumes from its checkpoints only when its inputs are still the same).
    running: dict[str, dict[str, Any]] = field(default_factory=dict)
    _hashes: dict[str, dict[str, Any]] = field(default_factory=dict)

    # -- the file -------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> ReleaseState:
        """Read the state file; a missing file is an empty state (a first run)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return cls(path)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"the release state file cannot be read: {exc}", path=path,
                             hint="delete it to rebuild every stage (nothing else is lost)") from None
        hint = "delete it to rebuild every stage (nothing else is lost)"
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InputError(f"the release state file is not in format {FORMAT}", path=path, hint=hint)
        try:
            stages = {
                key: StageRecord(dict(rec["inputs"]), dict(rec["outputs"]), rec.get("finished", ""), rec.get("seconds", 0.0),
                                 rec.get("summary", ""))
                for key, rec in data.get("stages", {}).items()
            }
            return cls(path, stages, dict(data.get("running", {})), dict(data.get("hashes", {})))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"the release state file is damaged ({type(exc).__name__}: {exc})", path=path, hint=hint) from None

    def save(self) -> None:
        """Write the state atomically (a kill never leaves a torn state file)."""
        from apto_release.io import write_json

        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, {
            "format": FORMAT,
            "stages": {key: rec.to_json() for key, rec in sorted(self.stages.items())},
            "running": dict(sorted(self.running.items())),
            "hashes": dict(sorted(self._hashes.items())),
        })

    # -- stages ---------------------------------------------------------------------------------

    def start(self, key: str, inputs: Mapping[str, Any]) -> None:
        """Note that ``key`` is running with ``inputs`` (saved at once) and forget its old record."""
        self.stages.pop(key, None)
        self.running[key] = dict(inputs)
        self.save()

    def finish(self, key: str, inputs: Mapping[str, Any], outputs: Mapping[str, str], *, seconds: float, summary: str) -> None:
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.running.pop(key, None)
        self.stages[key] = StageRecord(dict(inputs), dict(outputs), now, seconds, summary)
        self.save()

    # -- hashing --------------------------------------------------------------------------------

    def hash_file(self, path: str | Path) -> FileHash:
        """The file's hashes, from the cache when size, modification time and inode still match."""
        path = Path(path)
        st = path.stat()
        key = str(path.resolve())
        entry = self._hashes.get(key)
        if (entry and entry["size"] == st.st_size and entry["mtime_ns"] == st.st_mtime_ns and entry["ino"] == st.st_ino
                and entry["hashed_ns"] - st.st_mtime_ns > RACY_SECONDS * 1e9):
            return FileHash(entry["size"], entry["sha256"], entry["git_sha1"])
        hashed_ns = time.time_ns()
        info = hash_file(path)
        self._hashes[key] = {"size": info.size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino, "hashed_ns": hashed_ns,
                             "sha256": info.sha256, "git_sha1": info.git_sha1}
        return FileHash(info.size, info.sha256, info.git_sha1)

    def sha256(self, path: str | Path) -> str:
        return self.hash_file(path).sha256

    def listing(self, files: Iterable[Path], root: Path) -> dict[str, str]:
        """``{path relative to root (posix): SHA-256}`` for ``files``, sorted by path.

        A file outside ``root`` keeps its absolute path (a stage's outputs may live anywhere).
        """
        root = Path(root).resolve()
        table = {}
        for f in files:
            resolved = Path(f).resolve()
            name = resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else str(resolved)
            table[name] = self.sha256(f)
        return dict(sorted(table.items()))

    def forget_missing(self) -> None:
        """Drop cache entries of files that no longer exist (keeps the file small over many runs)."""
        self._hashes = {k: v for k, v in self._hashes.items() if os.path.exists(k)}


def digest(listing: Mapping[str, str]) -> str:
    """The SHA-256 of a ``sha256sum``-style listing (``<sha256>  <path>`` lines, sorted by path)."""
    text = "".join(f"{sha}  {name}\n" for name, sha in sorted(listing.items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def changed_outputs(record: StageRecord, root: Path, state: ReleaseState) -> str | None:
    """Why the recorded outputs are no longer intact (one phrase), or None when every file is as written."""
    for name, sha in record.outputs.items():
        path = root / name
        if not path.is_file():
            return f"{name} is missing"
        if state.sha256(path) != sha:
            return f"{name} changed since it was written"
    return None


def changed_inputs(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """Which inputs differ (one phrase), or None when they are the same."""
    names = [k for k in dict.fromkeys([*old, *new]) if old.get(k) != new.get(k)]
    if not names:
        return None
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return f"input changed: {shown}"
