"""The eval tests run the CLI with the same in-process fixture as tests/cli."""

from tests.cli.conftest import run_cli  # noqa: F401
