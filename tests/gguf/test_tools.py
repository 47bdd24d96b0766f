"""gguf.tools: llama-imatrix and llama-quantize built once from the pinned llama.cpp source, then found.

The first run builds them into the cache (minutes on 2 cores; CI pays once, the cache is kept);
later runs find them there.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from apto_release.errors import BuildError, UsageError
from apto_release.gguf import llama_source, tools


@pytest.fixture(scope="module")
def bin_dir():
    return tools.build_tools()


def test_the_tools_are_built_once_into_the_versioned_cache(bin_dir):
    assert bin_dir == tools.tools_dir() / "bin" and tools.tools_dir().name == f"llama-cpp-{llama_source.LLAMA_CPP_PYTHON}-tools"
    record = json.loads((tools.tools_dir() / tools.RECORD).read_text())
    assert record["llama_cpp_python"] == llama_source.LLAMA_CPP_PYTHON and record["seconds"] >= 0
    assert tools.build_tools() == bin_dir  # the second call finds them
    assert not tools.tools_dir().with_name(f".{tools.tools_dir().name}.build").exists()  # the build folder is gone


def test_the_quantizer_lists_the_types_we_make(bin_dir):
    proc = subprocess.run([str(tools.find_tool("llama-quantize"))], capture_output=True, text=True)
    assert proc.returncode == 1 and "usage:" in proc.stdout  # llama.cpp's usage() exits 1
    for name in ("Q4_K_M", "IQ4_XS", "IQ2_XS", "Q2_K_S"):
        assert f" {name} " in proc.stdout.replace(":", " "), name


def test_imatrix_speaks_its_own_version(bin_dir):
    out = tools.run_tool([str(tools.find_tool("llama-imatrix")), "--version"], "printing its version")
    assert "version:" in out


def test_a_given_folder_is_the_only_place_searched(bin_dir, tmp_path):
    assert tools.find_tool("llama-quantize", bin_dir.parent) == bin_dir / "llama-quantize"  # <dir>/bin
    with pytest.raises(UsageError, match="'llama-imatrix' is not in") as info:
        tools.find_tool("llama-imatrix", tmp_path)
    assert info.value.field == "llama-cpp"


def test_path_is_searched_when_nothing_is_cached(bin_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("APTO_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert tools.find_tool("llama-imatrix") == bin_dir / "llama-imatrix"
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UsageError, match="is not built"):
        tools.find_tool("llama-imatrix", build=False)


def test_a_failed_build_leaves_nothing_that_looks_finished(tmp_path, monkeypatch):
    """Real CMake on a source folder without CMakeLists.txt: configuring fails, no tools folder appears."""
    if not tools.shutil.which("cmake"):
        pytest.skip("no cmake")
    monkeypatch.setenv("APTO_CACHE", str(tmp_path))
    monkeypatch.setattr(tools, "source_dir", lambda: tmp_path / "no-source")
    (tmp_path / "no-source").mkdir()
    with pytest.raises(BuildError, match="CMake failed configuring"):
        tools.build_tools()
    assert tools.built_bin() is None and not tools.tools_dir().exists()
