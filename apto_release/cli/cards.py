"""The cards command: render and check the model cards of a release (merged model, adapter, GGUF)."""

from __future__ import annotations

import click

from apto_release.cli.options import manifest_option, only_option

_KIND_TEXT = {"model": "model card", "adapter": "adapter card", "gguf": "GGUF card"}


@click.command("cards", epilog="Example: apto-release cards --manifest release.toml --only Apto-Qwen3.5-27B-Safety --check")
@manifest_option
@only_option("Only this model of the manifest (repeatable).")
@click.option("--check", is_flag=True, help="Render and check every card; write nothing (exit 1 if a card has problems).")
def cards_command(manifest_path, only, check):
    """Write the model cards (README.md) of the manifest's models.

    For each model: the merged model's card into its merged folder (with the training loss
    curve), the adapter's card into its adapter folder when the manifest publishes the adapter,
    and the GGUF card into its GGUF folder when it has GGUF types. Every card is checked offline
    (YAML, required keys, evaluation metadata, huggingface_hub's round trip) before anything is
    written; each file is written atomically. Exit 2 for a missing or bad input (manifest,
    training_summary.json, evaluation results, GGUF files).
    """
    from apto_release.cards.model import build_cards, write_card
    from apto_release.release.manifest import load_manifest

    manifest = load_manifest(manifest_path)
    cards = build_cards(manifest, only=only, strict=not check)
    if check:
        failed = 0
        for card in cards:
            what = f"{_KIND_TEXT[card.kind]} of {card.model} ({card.repo})"
            if card.problems:
                failed += 1
                click.echo(f"FAIL {what}: {card.path}")
                for problem in card.problems:
                    click.echo(f"  - {problem}")
            else:
                click.echo(f"ok   {what}: {card.path}")
        click.echo(f"Checked {len(cards)} card(s): {failed} with problems. Nothing was written.")
        return 1 if failed else 0
    for card in cards:
        write_card(card)
        extra = f" (+ {', '.join(card.assets)})" if card.assets else ""
        click.echo(f"Wrote {card.path}{extra}: {_KIND_TEXT[card.kind]} of {card.model} for {card.repo}")
    return 0


def register(cli: click.Group) -> None:
    cli.add_command(cards_command)
