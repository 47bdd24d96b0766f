"""The resumable JSON Lines output of ``eval generate`` and ``eval judge``.

Lines are appended to ``<out>.partial`` and flushed one by one as they arrive (a kill loses
nothing received; a torn last line is dropped on the next run); a rerun keeps the lines whose key
and request hash still match; ``finish`` writes the destination in a stable order and removes the
partial file. Details: docs/eval-runs.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from apto_release.errors import InputError
from apto_release.io import atomic_path, dump_jsonl_line

PARTIAL_SUFFIX = ".partial"
HASH_FIELD = "request_hash"
_DIGITS = re.compile(r"(\d+)")

Key = tuple[Any, ...]


def request_hash(data: Any) -> str:
    """The first 16 hex digits of the SHA-256 of ``data`` as canonical JSON (sorted keys)."""
    text = json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def natural(text: Any) -> tuple:
    """A sort key that orders ``item 2`` before ``item 10`` (digits compared as numbers)."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in _DIGITS.split(str(text)) if part)


def partial_path(dest: str | Path) -> Path:
    """Where the lines of ``dest`` gather until every one is in: ``<dest>.partial``."""
    dest = Path(dest)
    return dest.with_name(dest.name + PARTIAL_SUFFIX)


def read_lines(path: Path, *, tolerate_torn_end: bool = False) -> list[dict[str, Any]]:
    """The JSON objects of a JSON Lines file (none when it does not exist).

    Raises:
        InputError: a malformed line (file and line named); with ``tolerate_torn_end`` the last
            line is dropped instead when it has no newline (a write cut by a kill).
    """
    return [record for _, record in numbered_lines(path, tolerate_torn_end=tolerate_torn_end)]


def numbered_lines(path: Path, *, tolerate_torn_end: bool = False) -> list[tuple[int, dict[str, Any]]]:
    """``read_lines`` with each object's line number in the file (1-based; blank lines count)."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline
    if torn.strip() and not tolerate_torn_end:
        lines.append(torn)
    records = []
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"not a valid JSON line: {exc}", path=path, line=number,
                             hint="the file is damaged: remove it to start again") from None
        if not isinstance(record, dict):
            raise InputError(f"a line must be a JSON object, found {type(record).__name__}", path=path, line=number)
        records.append((number, record))
    return records


class ResumableOutput:
    """The lines of one output file, resumable through ``<dest>.partial``.

    Args:
        dest: the destination file.
        key: a line's identity (``(benchmark, item, turn)``, ...); with the ``request_hash`` field
            it decides whether an earlier line still answers a request.
        order: the sort key of the final file.

    ``kept(key, hash)`` returns an earlier line for that key and hash (from the partial file, or
    from a finished destination being extended), ``add(line)`` appends and flushes a new one,
    ``finish()`` writes ``dest`` in order and removes the partial file. Use it as a context
    manager: the partial file is closed (and kept) on errors.
    """

    def __init__(self, dest: str | Path, *, key: Callable[[dict[str, Any]], Key],
                 order: Callable[[dict[str, Any]], Any]) -> None:
        self.dest = Path(dest)
        self.partial = partial_path(self.dest)
        self._key = key
        self._order = order
        earlier = read_lines(self.dest) + read_lines(self.partial, tolerate_torn_end=True)
        self._earlier: dict[Key, dict[str, Any]] = {key(line): line for line in earlier}
        self._lines: dict[Key, dict[str, Any]] = {}
        self._handle = None

    @property
    def resumed(self) -> int:
        """How many earlier lines were found (before matching)."""
        return len(self._earlier)

    def kept(self, key: Key, digest: str) -> dict[str, Any] | None:
        """The earlier line for ``key`` if it was made by the same request (hash), else None.
        A kept line is part of the output."""
        line = self._lines.get(key)
        if line is not None and line.get(HASH_FIELD) == digest:
            return line
        line = self._earlier.get(key)
        if line is None or line.get(HASH_FIELD) != digest:
            return None
        self._lines[key] = line
        return line

    def __enter__(self) -> ResumableOutput:
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        return self

    def _open(self) -> None:
        """Start the partial file afresh with the lines kept so far (stale and torn lines go)."""
        tmp = self.partial.with_name(self.partial.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as out:
            out.writelines(dump_jsonl_line(line) for line in self._lines.values())
        os.replace(tmp, self.partial)
        self._handle = open(self.partial, "a", encoding="utf-8")

    def add(self, line: dict[str, Any]) -> None:
        """Append one new line to the partial file and flush it (the OS has it: a kill keeps it)."""
        if self._handle is None:
            self._open()
        self._lines[self._key(line)] = line
        self._handle.write(dump_jsonl_line(line))
        self._handle.flush()

    def lines(self) -> Iterable[dict[str, Any]]:
        return self._lines.values()

    def finish(self) -> int:
        """Write every line to ``dest`` in order (beside it, renamed into place) and remove the
        partial file; the number of lines written."""
        self.close()
        ordered = sorted(self._lines.values(), key=self._order)
        with atomic_path(self.dest) as tmp:
            tmp.write_text("".join(dump_jsonl_line(line) for line in ordered), "utf-8")
        self.partial.unlink(missing_ok=True)
        return len(ordered)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __exit__(self, *exc: object) -> None:
        self.close()
