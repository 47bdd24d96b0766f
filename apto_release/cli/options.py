"""The options that several commands share, declared once (sqlite-utils' option bundles).

Each bundle is a decorator (or returns one) to stack on a command like ``@click.option``; where
the commands' help texts differ, the text is the bundle's parameter, so every command's
``--help`` keeps its own words. An option that one command alone has stays in its module.
"""

from __future__ import annotations

from pathlib import Path

import click

#: ``--manifest`` (release.toml by default): the release that cards, push and release work on.
manifest_option = click.option(
    "--manifest", "manifest_path", default="release.toml", show_default=True, type=click.Path(dir_okay=False, path_type=Path),
    help="The release manifest.",
)

#: ``--progress bars|lines|off``: how release and demo show their progress.
progress_option = click.option(
    "--progress", "progress_mode", type=click.Choice(["bars", "lines", "off"]),
    help="Progress display [default: bars on a terminal, lines otherwise].",
)


#: ``--trusted-publishing/--no-trusted-publishing``: where push and release get the Hub tokens.
trusted_publishing_option = click.option(
    "--trusted-publishing/--no-trusted-publishing", "trusted_publishing", default=None,
    help="Get each repo its own one-hour token by exchanging the CI's OIDC id token (the Hub's Trusted "
         "Publishers); --no-trusted-publishing: the one token of HF_TOKEN or the login. [default: Trusted "
         "Publishing when an id token is at hand (GitHub Actions with id-token: write, or HF_OIDC_ID_TOKEN) "
         "and neither HF_TOKEN nor HF_OIDC_RESOURCE is set]",
)


def overwrite_option(help: str = "Replace an existing output folder."):
    """``--overwrite``: replace what the command would otherwise refuse to write over."""
    return click.option("--overwrite", is_flag=True, help=help)


def dry_run_option(help: str):
    """``--dry-run``: say what the command would do; write nothing."""
    return click.option("--dry-run", is_flag=True, help=help)


def only_option(help: str):
    """``--only NAME`` (repeatable): the targets of the manifest to work on."""
    return click.option("--only", "only", multiple=True, metavar="NAME", help=help)


def output_dir_option(help: str, *, required: bool = True, **extra):
    """``-o/--output`` as ``out_dir``: the folder a command writes (``extra``: a default, ...)."""
    return click.option("-o", "--output", "out_dir", required=required, type=click.Path(file_okay=False, path_type=Path), help=help, **extra)


def output_file_option(help: str, *, name: str = "output", required: bool = False):
    """``-o/--output`` as ``name``: the file a command writes."""
    return click.option("-o", "--output", name, required=required, type=click.Path(dir_okay=False, path_type=Path), help=help)


def seed_option(help: str | None = None):
    """``--seed`` (0 by default): the seed of a deterministic draw."""
    return click.option("--seed", type=int, default=0, show_default=True, help=help)


def threads_option(help: str):
    """``--threads N``: CPU threads for llama.cpp and what runs beside it."""
    return click.option("--threads", type=click.IntRange(1), help=help)


def license_option(help: str):
    """``--license`` as ``license_``: the licence id written into what the command builds."""
    return click.option("--license", "license_", help=help)


def version_option(help: str):
    """A command's ``--version``: the release version written into what it builds (not ``apto-release -V``)."""
    return click.option("--version", "version", help=help)


def validation_options(f):
    """The options that say how records are validated; shared by validate, sample and build."""
    options = [
        click.option("--strict", is_flag=True, help="Treat warnings (unknown fields included) as failures."),
        click.option("--min-judge-score", type=click.IntRange(1, 5), default=4, show_default=True, help="Release gate: lower judge scores are errors."),
        click.option("--taxonomy", type=click.Path(dir_okay=False, path_type=Path), help="Allowed harm categories: one a line, or a JSON list."),
        click.option("--against", "against", multiple=True, type=click.Path(dir_okay=False, path_type=Path), help="Benchmark file (JSONL, JSON or Parquet) whose items must not be in the data. Repeatable."),
        click.option("--against-field", "against_fields", multiple=True, metavar="FIELD", help="Text field of the --against items to compare (default: the usual prompt and answer fields). Repeatable."),
        click.option("--threshold", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.8, show_default=True, help="Similarity from which texts count as near duplicates: 3-gram Jaccard, or edit similarity for short variants (see README)."),
        click.option("--max-record-bytes", type=click.IntRange(1), default=1_000_000, show_default=True, help="Records larger than this are errors."),
    ]
    for option in reversed(options):
        f = option(f)
    return f
