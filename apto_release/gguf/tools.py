"""llama.cpp's own tools (``llama-imatrix``, ``llama-quantize``), built from the source our pinned
llama-cpp-python vendors (``llama_source``), so that one llama.cpp version quantizes and verifies.

``build_tools()`` configures and builds only those two targets with CMake (Release, static, no curl
or OpenSSL, ``GGML_NATIVE`` on as llama.cpp's default, then ``$CMAKE_ARGS``: the flags
llama-cpp-python's wheel was built with, e.g. CI's portable AVX2 build), once, into
``<cache>/llama-cpp-<version>-tools/bin/``. The CMake build folder beside it (hidden) is kept so that
an interrupted build resumes; the ``-tools`` folder itself appears only when both binaries are in it
(renamed into place). ``find_tool()`` looks in ``--llama-cpp DIR``, then the cache, then ``PATH``,
and builds when it finds nothing.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from apto_release.errors import BuildError, UsageError
from apto_release.gguf.llama_source import LLAMA_CPP_PYTHON, cache_root, source_dir
from apto_release.io import make_temp_dir

TOOLS = ("llama-imatrix", "llama-quantize")
#: Configure flags: the tools only, linked statically (the binaries move out of the build folder).
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DGGML_NATIVE=ON",
    "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_BUILD_TOOLS=ON",
)
RECORD = "build.json"  # in the tools folder: version, flags, seconds
_TAIL = 15  # lines of CMake's output quoted when it fails


def tools_dir() -> Path:
    """``<cache>/llama-cpp-<version>-tools``: the finished build (``bin/``) of the pinned version."""
    return cache_root() / f"llama-cpp-{LLAMA_CPP_PYTHON}-tools"


def built_bin() -> Path | None:
    """The cached ``bin`` folder with every tool, or None when not built yet."""
    folder = tools_dir() / "bin"
    return folder if all((folder / tool).is_file() for tool in TOOLS) else None


def build_tools(*, jobs: int | None = None) -> Path:
    """Build ``llama-imatrix`` and ``llama-quantize`` once; returns their ``bin`` folder.

    Raises:
        BuildError: CMake is missing, or configuring or building failed (its output's tail quoted).
    """
    done = built_bin()
    if done is not None:
        return done
    beside = Path(sys.executable).parent / "cmake"  # the venv's, from PyPI (the gguf extra)
    cmake = str(beside) if beside.is_file() else shutil.which("cmake")
    if cmake is None:
        raise BuildError("CMake is needed to build llama.cpp's tools and is not on PATH",
                         hint="pip install cmake (the gguf extra installs it)")
    source = source_dir()
    final = tools_dir()
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.with_name(f".{final.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time (pytest -n 2 workers, two commands)
        done = built_bin()
        return done if done is not None else _build(cmake, source, final, jobs)


def _build(cmake: str, source: Path, final: Path, jobs: int | None) -> Path:
    build = final.with_name(f".{final.name}.build")  # kept: a second run resumes an interrupted build
    started = time.monotonic()
    flags = [*CMAKE_FLAGS, *shlex.split(os.environ.get("CMAKE_ARGS", ""))]  # llama-cpp-python's wheel takes CMAKE_ARGS too
    _cmake([cmake, "-S", str(source), "-B", str(build), *flags], "configuring")
    jobs = jobs or max(1, os.cpu_count() or 1)
    _cmake([cmake, "--build", str(build), "--config", "Release", "-j", str(jobs), "--target", *TOOLS], "building")
    work = make_temp_dir(final)
    try:
        (work / "bin").mkdir()
        for tool in TOOLS:
            shutil.copy2(build / "bin" / tool, work / "bin" / tool)
        record = {"llama_cpp_python": LLAMA_CPP_PYTHON, "flags": flags, "seconds": round(time.monotonic() - started, 1)}
        (work / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        try:
            work.rename(final)
        except OSError:  # another process finished first
            if built_bin() is None:
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(build, ignore_errors=True)
    return final / "bin"


def _cmake(command: list[str], doing: str) -> None:
    proc = subprocess.run(command, capture_output=True, text=True, errors="replace")
    if proc.returncode:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-_TAIL:])
        raise BuildError(f"CMake failed {doing} llama.cpp's tools (exit {proc.returncode}):\n{tail}")


def find_tool(name: str, llama_cpp: str | Path | None = None, *, build: bool = True) -> Path:
    """The path of llama.cpp's tool ``name``: in ``llama_cpp`` (a folder, or its ``bin``), the cache, ``PATH``.

    Args:
        llama_cpp: a folder given by the user (``--llama-cpp DIR``); when given, only it is searched.
        build: build the tools into the cache when they are found nowhere.

    Raises:
        UsageError: not in ``llama_cpp``; found nowhere and ``build`` is false.
        BuildError: building failed.
    """
    if name not in TOOLS:
        raise UsageError(f"unknown llama.cpp tool '{name}'; known: {', '.join(TOOLS)}")
    if llama_cpp is not None:
        folder = Path(llama_cpp)
        for candidate in (folder / name, folder / "bin" / name, folder / "build" / "bin" / name):
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
        raise UsageError(f"'{name}' is not in {folder} (nor in its bin/ or build/bin/)", path=folder, field="llama-cpp",
                         hint="give llama.cpp's folder, or leave --llama-cpp out to build the tools once")
    cached = built_bin()
    if cached is not None:
        return cached / name
    on_path = shutil.which(name)
    if on_path:
        return Path(on_path)
    if not build:
        raise UsageError(f"llama.cpp's '{name}' is not built", hint="build it: python -m apto_release.gguf.tools")
    return build_tools() / name


def run_tool(command: list[str], what: str, *, cwd: str | Path | None = None) -> str:
    """Run a llama.cpp tool; returns its output (stdout and stderr together).

    Raises:
        BuildError: it exited non-zero or crashed (the tail of its output quoted).
    """
    proc = subprocess.run(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    if proc.returncode:
        tail = "\n".join(proc.stdout.strip().splitlines()[-_TAIL:])
        how = f"crashed (signal {-proc.returncode})" if proc.returncode < 0 else f"failed (exit {proc.returncode})"
        raise BuildError(f"{Path(command[0]).name} {how} {what}:\n{tail}")
    return proc.stdout


if __name__ == "__main__":
    print(build_tools())
