"""apto-release cards: writes every card of the manifest, --check writes nothing, errors are one line."""

from __future__ import annotations

import json

import pytest

from apto_release.cli import cards as cards_cli
from apto_release.cli import cli
from tests.cards.test_cards import NAME, make_release, tiny_png


@pytest.fixture(autouse=True)
def registered():
    """The command is registered by apto_release.cli; make sure it is, even before that line lands."""
    if "cards" not in cli.commands:
        cards_cli.register(cli)
        yield
        cli.commands.pop("cards", None)
    else:
        yield


def readmes(tmp_path):
    return sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("README.md"))


def test_cards_writes_every_card(run_cli, tmp_path):
    manifest = make_release(tmp_path)
    code, out, err = run_cli("cards", "--manifest", manifest)
    assert code == 0, err
    assert readmes(tmp_path) == ["out/adapter/README.md", "out/gguf/README.md", "out/merged/README.md"]
    assert (tmp_path / "out/merged/loss_curve.png").read_bytes() == tiny_png()
    lines = out.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"Wrote {tmp_path / 'out/merged/README.md'} (+ loss_curve.png): model card of {NAME}")
    assert "adapter card" in lines[1] and "GGUF card" in lines[2]
    assert "llama-server -hf apto-ai/Apto-Tiny-Safety-GGUF:Q4_K_M" in (tmp_path / "out/gguf/README.md").read_text("utf-8")
    assert not list(tmp_path.rglob(".README.md.*"))  # no temporary file left


def test_only_and_an_unknown_name(run_cli, tmp_path):
    manifest = make_release(tmp_path, gguf=False)
    code, out, err = run_cli("cards", "--manifest", manifest, "--only", NAME)
    assert code == 0, err
    code, out, err = run_cli("cards", "--manifest", manifest, "--only", "Nope")
    assert code == 2
    assert "has no model 'Nope'" in err


def test_check_writes_nothing(run_cli, tmp_path):
    manifest = make_release(tmp_path)
    code, out, err = run_cli("cards", "--manifest", manifest, "--check")
    assert code == 0, err
    assert readmes(tmp_path) == []
    assert not (tmp_path / "out/merged/loss_curve.png").exists()
    assert out.count("ok   ") == 3 and "Nothing was written." in out


def test_check_exits_1_on_a_card_with_problems(run_cli, tmp_path, monkeypatch):
    from apto_release.cards import model as cards

    monkeypatch.setattr(cards, "check_card", lambda text, kind: ["metadata key 'license' is missing"] if kind == "gguf" else [])
    manifest = make_release(tmp_path)
    code, out, err = run_cli("cards", "--manifest", manifest, "--check")
    assert code == 1
    assert "FAIL GGUF card" in out and "  - metadata key 'license' is missing" in out
    assert readmes(tmp_path) == []
    # without --check the failing card stops the run before anything is written
    code, out, err = run_cli("cards", "--manifest", manifest)
    assert code == 1
    assert err.startswith("Error: ") and f"the GGUF card of {NAME} fails its check: metadata key 'license' is missing" in err
    assert readmes(tmp_path) == []


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (lambda t: (t / "out/adapter/training_summary.json").unlink(), "no training_summary.json in the adapter folder"),
        (lambda t: (t / "out/gguf/Apto-Tiny-Safety-F16.gguf").unlink(), "no GGUF file for F16"),
        (lambda t: (t / "eval/tiny.json").write_text(json.dumps({"format": 1, "model": NAME, "metrics": [{"benchmark": "x"}]})),
         "'metrics[1].metric' is missing"),
        (lambda t: (t / "eval/tiny.json").write_text("{"), "not valid JSON"),
        (lambda t: (t / "out/merged/config.json").unlink(), "no config.json (the merged model's config)"),
    ],
)
def test_missing_inputs_are_one_line_errors(run_cli, tmp_path, breakage, expected):
    manifest = make_release(tmp_path)
    breakage(tmp_path)
    code, out, err = run_cli("cards", "--manifest", manifest)
    assert code == 2
    first = err.splitlines()[0]
    assert first.startswith("Error: ") and expected in first
    assert "Traceback" not in err
    assert all(line.startswith(("Error: ", "Hint: ")) for line in err.splitlines())
    assert readmes(tmp_path) == []


def test_a_missing_manifest(run_cli, tmp_path):
    code, out, err = run_cli("cards", "--manifest", tmp_path / "nope.toml")
    assert code == 2
    assert "the release manifest does not exist" in err
