"""The llama.cpp source that our pinned llama-cpp-python vendors, for llama.cpp's own converter
(``convert_hf_to_gguf.py``) and tools: one llama.cpp version, the one that quantizes and verifies.

``source_dir()`` unpacks llama-cpp-python's source distribution from PyPI (checked by its SHA-256)
once into a cache folder keyed by the version, ``$APTO_CACHE`` or ``~/.cache/apto-release``:
``<cache>/llama-cpp-python-<version>/vendor/llama.cpp``. The README's commands fetch it when they
install (``python -m apto_release.gguf.llama_source``); the download is about 77 MB.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from apto_release.errors import BuildError, UsageError
from apto_release.io import make_temp_dir

LLAMA_CPP_PYTHON = "0.3.36"  # as pinned in pyproject.toml's [gguf] extra
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
_DONE = ".complete"


def cache_root() -> Path:
    """Where fetched sources live: ``$APTO_CACHE``, else ``~/.cache/apto-release``."""
    return Path(os.environ.get("APTO_CACHE") or Path.home() / ".cache" / "apto-release")


def source_dir(*, fetch: bool = True) -> Path:
    """The vendored ``llama.cpp`` folder of the pinned llama-cpp-python, fetched if needed.

    Raises:
        UsageError: the installed llama-cpp-python is another version; not fetched and ``fetch`` is false.
        BuildError: the download failed or its SHA-256 is not the pinned one.
    """
    try:
        installed = version("llama-cpp-python")
    except PackageNotFoundError:
        installed = None
    if installed not in (None, LLAMA_CPP_PYTHON):
        raise UsageError(f"llama-cpp-python {installed} is installed, and its llama.cpp source is pinned at {LLAMA_CPP_PYTHON}",
                         hint="install with -c constraints.txt")
    folder = cache_root() / f"llama-cpp-python-{LLAMA_CPP_PYTHON}"
    source = folder / "vendor" / "llama.cpp"
    if (folder / _DONE).is_file():
        return source
    if not fetch:
        raise UsageError(f"llama.cpp's source is not in {folder}", hint="fetch it: python -m apto_release.gguf.llama_source")
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = make_temp_dir(folder)
    try:
        _download(work)
        with tarfile.open(work / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz") as archive:
            archive.extractall(work / "x", filter="data")
        unpacked = work / "x" / f"llama_cpp_python-{LLAMA_CPP_PYTHON}"
        (unpacked / _DONE).touch()
        try:
            unpacked.rename(folder)
        except OSError:  # another process finished first
            if not (folder / _DONE).is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return source


def _download(into: Path) -> None:
    command = [sys.executable, "-m", "pip", "download", f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "--no-binary", ":all:",
               "--no-deps", "--quiet", "--dest", str(into)]
    done = subprocess.run(command, capture_output=True, text=True)
    sdist = into / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
    if done.returncode or not sdist.is_file():
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise BuildError(f"could not download llama-cpp-python {LLAMA_CPP_PYTHON}'s source from PyPI: {tail}")
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise BuildError(f"llama-cpp-python {LLAMA_CPP_PYTHON}'s source has SHA-256 {digest}, not the pinned {SDIST_SHA256}")


if __name__ == "__main__":
    print(source_dir())
