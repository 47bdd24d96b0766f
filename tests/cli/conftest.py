from __future__ import annotations

import pytest

from apto_release.cli import main


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """Run ``apto-release ARGS`` in-process through ``main`` (the error boundary); return (code, out, err)."""
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.delenv("APTO_DEBUG", raising=False)

    def run(*args: str, env: dict[str, str] | None = None):
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        with pytest.raises(SystemExit) as exit_info:
            main([str(a) for a in args])
        out, err = capsys.readouterr()
        code = exit_info.value.code
        return (0 if code is None else code), out, err

    return run
