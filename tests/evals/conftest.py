"""The eval tests run the CLI with the same in-process fixture as tests/cli; the tiny GGUF that
llama.cpp's real server serves is built once per session."""

from pathlib import Path

import pytest

from tests.cli.conftest import run_cli  # noqa: F401


@pytest.fixture(scope="session")
def gguf(tmp_path_factory) -> Path:
    """A tiny Qwen3 (random weights) as an F16 GGUF file, named TinyQwen3-F16.gguf."""
    from apto_release.gguf.convert import convert
    from apto_release.testing.models import build_tiny_qwen3

    root = tmp_path_factory.mktemp("serve")
    return convert(build_tiny_qwen3(root / "TinyQwen3"), root / "gguf", quant="F16").path
