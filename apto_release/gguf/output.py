"""GGUF output files: names, split sets, and putting them in place only when complete.

A GGUF output is one file, ``<Model>-<TYPE>.gguf``, or a llama.cpp split set,
``<Model>-<TYPE>-00001-of-0000N.gguf`` ... (llama.cpp loads a set from its first file and finds
the others by name). Either way it is written into a hidden staging folder beside the destination
and moved into place when every file of it is complete: the other files first, the first (the one
users open) last, so that a kill between two moves never leaves a set that loads as finished.
An output of the same name from an earlier run is replaced only with ``overwrite``, and leftover
files of an older set (another split count) are removed once the new set is in place.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from apto_release.errors import InputError, UsageError
from apto_release.io import current_umask

#: gguf-py's and llama.cpp's split file names (``gguf.constants.SHARD_NAME_FORMAT``, ``llama_split_path``).
SPLIT_FORMAT = "{stem}-{no:05d}-of-{count:05d}.gguf"
_SPLIT_COUNT = re.compile(r"-\d{5}-of-(\d{5})\.gguf$")  # a split file's name: the set's file count


@dataclass
class Written:
    """One GGUF output as written: a file or a split set (``paths``, the first file first)."""

    quant: str
    paths: tuple[Path, ...]
    bytes: int  # all files together
    seconds: float
    tensor_types: dict[str, int]  # GGML type name -> tensor count

    @property
    def path(self) -> Path:
        return self.paths[0]


def split_names(stem: str, count: int) -> list[str]:
    """The file names of an output with stem ``<Model>-<TYPE>`` in ``count`` files."""
    if count == 1:
        return [f"{stem}.gguf"]
    return [SPLIT_FORMAT.format(stem=stem, no=i, count=count) for i in range(1, count + 1)]


def existing_outputs(out_dir: Path, stem: str) -> list[Path]:
    """The files in ``out_dir`` that belong to an output named ``stem`` (single or any split set)."""
    if not out_dir.is_dir():
        return []
    split = re.compile(re.escape(stem) + r"-\d{5}-of-\d{5}\.gguf")
    return sorted(p for p in out_dir.iterdir() if p.name == f"{stem}.gguf" or split.fullmatch(p.name))


#: Files a GGUF repo publishes beside the GGUF files, written by ``gguf convert`` (``build_gguf``):
#: Ollama's defaults (gguf.sampling.OLLAMA_PARAMS), the vision projector (gguf.mmproj), a glob in
#: which ``{name}`` is the model's name, and the importance matrix and its calibration text (gguf.imatrix).
COMPANION_FILES = ("params", "mmproj-{name}-*.gguf", "imatrix.gguf", "calibration.txt")


def companion_files(folder: Path, name: str | None = None) -> list[Path]:
    """The ``COMPANION_FILES`` that ``folder`` has, of the model ``name`` (None: of any model)."""
    import glob

    found: list[Path] = []
    for pattern in COMPANION_FILES:
        pattern = pattern.replace("{name}", "*" if name is None else glob.escape(name))
        found += sorted(p for p in folder.glob(pattern) if p.is_file()) if folder.is_dir() else []
    return found


def find_output(folder: Path, stem: str, type_: str) -> list[Path]:
    """The files of the output ``stem`` (``<Model>-<TYPE>``, of the GGUF type ``type_``) in
    ``folder``: the single file, or every file of its split set in order, the first first.

    Raises ``InputError`` when there is none, more than one (a single file beside a split set, or
    split sets of two counts), or an incomplete split set.
    """
    found = existing_outputs(folder, stem)
    if not found:
        raise InputError(
            f"no GGUF file for {type_}: expected {stem}.gguf or a split set {stem}-00001-of-0000N.gguf", path=folder,
            hint=f"convert it with 'apto-release gguf convert', or remove {type_} from the manifest's gguf list",
        )
    counts = {int(m.group(1)) for p in found if (m := _SPLIT_COUNT.search(p.name))}
    if folder / f"{stem}.gguf" in found and counts or len(counts) > 1:
        raise InputError(f"more than one output for {type_} ({', '.join(p.name for p in found)}); remove the stale ones", path=folder)
    if counts:
        expected = split_names(stem, counts.pop())
        missing = [n for n in expected if not (folder / n).is_file()]
        if missing:
            raise InputError(f"the split set of {type_} is incomplete: {', '.join(missing)} missing", path=folder)
        found = [folder / n for n in expected]
    return found


def check_free(out_dir: Path, stem: str, *, overwrite: bool) -> None:
    """Refuse to replace an existing output of this name unless ``overwrite``."""
    if not overwrite and (found := existing_outputs(out_dir, stem)):
        raise UsageError("the output file exists", path=found[0], hint="choose another -o or pass --overwrite")


@contextlib.contextmanager
def staging(out_dir: str | Path, stem: str) -> Iterator[Path]:
    """Yield a hidden folder in ``out_dir`` to write ``stem``'s files into; removed afterwards.

    Call ``publish`` inside the block to move the finished files into place; on any exception
    (KeyboardInterrupt included) the folder and whatever is in it are removed. A kill leaves it
    behind, claimed by the dead process: the next staging of the same output removes it.
    """
    from apto_release.io import make_temp_dir, remove_stale_temps

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_dir, stem)  # a killed conversion's partial file: gigabytes, never finished
    tmp = make_temp_dir(out_dir / stem)  # named with this process's mark
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish(staged: Path, out_dir: str | Path, stem: str) -> tuple[Path, ...]:
    """Move the output ``stem`` (one file or a complete split set) from ``staged`` into ``out_dir``.

    Returns the published paths, the first file first.
    """
    out_dir = Path(out_dir)
    files = sorted(p.name for p in staged.iterdir() if p.name == f"{stem}.gguf" or p.name.startswith(f"{stem}-"))
    if not files:
        raise FileNotFoundError(f"nothing named {stem}*.gguf was written in {staged}")
    expected = split_names(stem, len(files))
    if files != expected:
        raise FileNotFoundError(f"incomplete output in {staged}: {files} (expected {expected})")
    old = existing_outputs(out_dir, stem)
    mode = 0o666 & ~current_umask()
    for name in reversed(expected):  # the first file, which users open, goes last
        os.chmod(staged / name, mode)
        with open(staged / name, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(staged / name, out_dir / name)
    for path in old:
        if path.name not in expected:
            path.unlink(missing_ok=True)
    return tuple(out_dir / name for name in expected)

