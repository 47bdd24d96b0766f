"""Every command's --help renders, and the shared option bundles read the same wherever they are used."""

from __future__ import annotations

import click
import pytest

from apto_release.cli import cli


def _commands(group: click.Group = cli, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    out = []
    for name in sorted(group.commands):
        command = group.commands[name]
        out.append(((*path, name), command))
        if isinstance(command, click.Group):
            out += _commands(command, (*path, name))
    return out


COMMANDS = _commands()


def test_the_commands_are_all_there():
    assert {" ".join(path) for path, _ in COMMANDS} == {
        "cards", "dataset", "dataset build", "demo", "eval", "eval generate", "eval judge", "eval run", "eval summarize", "example-data", "gguf", "gguf calibration", "gguf convert",
        "gguf verify", "merge", "push", "release", "sample", "schema", "train", "validate",
    }


@pytest.mark.parametrize("path", [(), *(path for path, _ in COMMANDS)], ids=lambda p: " ".join(p) or "apto-release")
def test_help_renders_with_usage_and_an_example(run_cli, path):
    code, out, err = run_cli(*path, "--help")
    assert code == 0 and err == ""
    assert out.startswith(f"Usage: {' '.join(('apto-release', *path))} [OPTIONS]")
    command = dict(COMMANDS).get(path, cli)
    if not isinstance(command, click.Group) or not path:  # the subcommand groups have no example of their own
        epilog = " ".join(out[out.index("\nOptions:"):].split())
        assert f"Example: {' '.join(('apto-release', *path))} " in epilog


def _help_line(run_cli, path: tuple[str, ...], option: str) -> str:
    """The option's whole entry in ``--help``, its wrapped lines joined (the column width differs
    from one command to another)."""
    _, out, _ = run_cli(*path, "--help")
    lines = out.splitlines()
    (start,) = [i for i, line in enumerate(lines) if line.strip().startswith(option + " ")]
    entry = [lines[start]]
    for line in lines[start + 1:]:
        if not line.strip() or line.lstrip().startswith("-"):
            break
        entry.append(line)
    return " ".join(" ".join(entry).split())


@pytest.mark.parametrize(("option", "paths"), [
    ("--manifest", [("cards",), ("push",), ("release",)]),
    ("--progress", [("release",), ("demo",)]),
    ("--trusted-publishing", [("push",), ("release",)]),
])
def test_a_shared_option_reads_the_same_in_every_command(run_cli, option, paths):
    lines = {path: _help_line(run_cli, path, option) for path in paths}
    assert len(set(lines.values())) == 1, lines
