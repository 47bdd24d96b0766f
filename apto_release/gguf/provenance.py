"""Which llama.cpp made and checked a GGUF folder's files, for the GGUF card.

``gguf convert`` (``build_gguf``) records, in ``.gguf-build.json`` beside the files (hidden: never
published), the llama-cpp-python package and the ggml library it loads (version and commit, as the
library reports them), and for each file it wrote: what wrote it (gguf-py or llama.cpp's quantizer),
whether llama.cpp verified it, and its size and modification time. The card states the build only
for files that are still those files; a file written or changed since says nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from apto_release.io import write_json

RECORD_NAME = ".gguf-build.json"


def llama_cpp_build() -> dict[str, str]:
    """The llama.cpp this environment runs: ``{"llama_cpp_python", "ggml", "commit"}`` (what the
    package's metadata and ``ggml_version()`` / ``ggml_commit()`` of its library say)."""
    import ctypes
    from importlib.metadata import version

    from llama_cpp._ggml import libggml

    def text(name: str) -> str:
        function = getattr(libggml, name)
        function.restype = ctypes.c_char_p
        return function().decode("utf-8", "replace")

    return {"llama_cpp_python": version("llama-cpp-python"), "ggml": text("ggml_version"), "commit": text("ggml_commit")}


def _stamp(path: Path) -> dict[str, int]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def record_files(folder: Path, files: Mapping[Path, Mapping[str, Any]]) -> Path:
    """Add ``files`` (path -> ``{"written_by": ..., "verified": bool}``) to the folder's record, each
    with this environment's llama.cpp build and its size and time; other files' entries are kept."""
    build = llama_cpp_build()
    entries = dict(_entries(folder))
    entries.update({p.name: {**info, "llama_cpp": build, **_stamp(p)} for p, info in files.items()})
    return write_json(folder / RECORD_NAME, {"files": dict(sorted(entries.items()))})


def _entries(folder: Path) -> Mapping[str, Any]:
    files = read_record(folder).get("files")
    return files if isinstance(files, dict) else {}


def read_record(folder: Path) -> dict[str, Any]:
    """The folder's record, or ``{}`` when there is none or it cannot be read."""
    try:
        data = json.loads((folder / RECORD_NAME).read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def recorded(paths: Iterable[Path]) -> dict[str, dict[str, Any]] | None:
    """The record of each of ``paths`` (files of one folder), by name, when every one is recorded
    and unchanged since; else None."""
    paths = list(paths)
    entries = _entries(paths[0].parent) if paths else {}
    found = {}
    for p in paths:
        entry = entries.get(p.name)
        if not isinstance(entry, dict) or {k: entry.get(k) for k in ("size", "mtime_ns")} != _stamp(p):
            return None
        found[p.name] = entry
    return found or None
