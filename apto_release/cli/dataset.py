"""Commands of the dataset side: example-data, validate, sample, dataset build, schema."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import click

from apto_release.cli import render
from apto_release.cli.options import (
    license_option,
    output_dir_option,
    output_file_option,
    overwrite_option,
    seed_option,
    validation_options,
    version_option,
)

FORMATS = ("text", "json", "github")


def _validate_options(strict, min_judge_score, taxonomy, against, against_fields, threshold, max_record_bytes, **extra):
    from apto_release.dataset.validate import ValidateOptions, load_benchmark, load_taxonomy

    return ValidateOptions(
        strict=strict,
        min_judge_score=min_judge_score,
        taxonomy=load_taxonomy(taxonomy) if taxonomy else None,
        against=tuple(load_benchmark(p, against_fields) for p in against),
        threshold=threshold,
        max_record_bytes=max_record_bytes,
        **extra,
    )


@click.command("validate", epilog="Example: apto-release validate data/records.jsonl --expected-count 18000 --against ac.jsonl")
@click.argument("path", type=click.Path(path_type=Path))
@validation_options
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="Report format [default: github when GITHUB_ACTIONS=true, else text].")
@click.option("--expected-count", type=click.IntRange(0), help="Warn when the record count is more than 10% away from this.")
@click.option("--no-near-duplicates", is_flag=True, help="Skip the near-duplicate prompt check.")
@click.option("--max-findings", type=click.IntRange(0), default=20, show_default=True, help="Findings listed in the text and github formats, errors first (0: all); the JSON report has all.")
@output_file_option("Also write the full report as JSON to this file.")
def validate_command(path, fmt, expected_count, no_near_duplicates, max_findings, output, **kwargs):
    """Check every record of PATH (JSONL, JSONL.GZ or Parquet) against record schema v1.

    Exit 0 when there is no error (warnings allowed unless --strict), 1 when there are
    errors, 2 for usage errors or an unreadable file.
    """
    from apto_release.dataset.validate import validate_file
    from apto_release.io import write_text

    options = _validate_options(**kwargs, expected_count=expected_count, near_duplicates=not no_near_duplicates)
    report = validate_file(path, options).report
    fmt = fmt or ("github" if os.environ.get("GITHUB_ACTIONS") == "true" else "text")
    if fmt == "json":
        click.echo(render.render_json(report))
    elif fmt == "github":
        click.echo(render.render_github(report, max_findings=max_findings))
    else:
        click.echo(render.render_text(report, max_findings=max_findings))
    if output:
        write_text(output, render.render_json(report) + "\n")
    return 0 if report.ok else 1


@click.command("sample", epilog="Example: apto-release sample data/records.jsonl -n 500 --seed 0 -o out/sample")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("-n", "n", type=click.IntRange(1), default=500, show_default=True, help="Records in the sample.")
@seed_option("Selection seed; the same seed gives the same sample.")
@click.option("--by", "by", multiple=True, metavar="FIELD", help="Stratify by FIELD (repeat to nest: --by category --by has_jailbreak). [default: category]")
@output_dir_option("Output folder.")
@click.option("--allow-personal-data", is_flag=True, help="Keep records with personal-data findings in the pool.")
@overwrite_option()
@validation_options
@render.with_validation_report
def sample_command(path, n, seed, by, out_dir, allow_personal_data, overwrite, **kwargs):
    """Draw a stratified, deterministic sample of PATH into a folder.

    Writes sample.jsonl, sample.parquet and a distribution report (distribution.json,
    distribution.md). A file with validation errors is refused.
    """
    from apto_release.dataset.sample import SampleOptions, sample_file

    options = SampleOptions(n=n, seed=seed, by=tuple(by) or ("category",), allow_personal_data=allow_personal_data)
    result = sample_file(path, out_dir, options, _validate_options(**kwargs), overwrite=overwrite)
    report = result.report
    click.echo(f"Drew {report.sample_count:,} of {report.full_count:,} eligible records (seed {seed}, by {', '.join(report.by)}) into {out_dir}/")
    width = max(len(r.stratum) for r in report.categories)
    for row in report.categories:
        click.echo(f"  {row.stratum:<{width}}  {row.sample_count:>5,}  {row.sample_share:6.1%}  (full set {row.full_share:6.1%}, {row.diff_points:+.2f} pt)")
    click.echo(f"Largest difference {report.max_abs_diff_points:.2f} points; total variation distance {report.total_variation_distance:.4f}.")
    if result.excluded:
        click.echo(f"Left out {len(result.excluded)} records with personal-data findings (see distribution.json).")
    return 0


@click.group("dataset")
def dataset_group() -> None:
    """Build the Hub dataset folder."""


@dataset_group.command("build", epilog="Example: apto-release dataset build out/sample/sample.jsonl --report out/sample/distribution.json -o out/dataset")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@output_dir_option("Output folder.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), help="distribution.json from 'sample', for the card's distribution table.")
@click.option("--repo-id", help="Hub repo id used in the card's examples.")
@click.option("--pretty-name", help="The dataset's display name.")
@license_option("Licence id for the card (Hub licence identifiers).")
@version_option("Release version named in the card.")
@click.option("--gated-prompt", help="Text shown to users who request access (extra_gated_prompt).")
@click.option("--gated-field", "gated_fields", multiple=True, metavar="NAME=TYPE", help="An access-request field (text, checkbox, country, date_picker). Repeatable; replaces the defaults.")
@overwrite_option()
@click.option("--no-verify", is_flag=True, help="Skip loading the built folder back with datasets.")
@validation_options
@render.with_validation_report
def dataset_build_command(input_path, out_dir, report, repo_id, pretty_name, license_, version, gated_prompt, gated_fields, overwrite, no_verify, **kwargs):
    """Write a Hub dataset folder (Parquet per category, typed features, bilingual card) from INPUT."""
    from apto_release.dataset.build import build_from_file

    card = {"repo_id": repo_id, "pretty_name": pretty_name, "license": license_, "version": version, "gated_prompt": gated_prompt}
    result = build_from_file(
        input_path, out_dir, validate_options=functools.partial(_validate_options, **kwargs), card=card,
        gated_fields=gated_fields, report=report, overwrite=overwrite, verify=not no_verify,
    )
    click.echo(f"Built {out_dir}/ with {result.rows:,} rows:")
    for category, count in result.rows_per_category.items():
        click.echo(f"  {category:<24} {count:>6,}")
    click.echo(f"Configs: {', '.join(result.configs)}" + ("" if no_verify else " (each loaded back with datasets)"))
    return 0


@click.command("example-data", epilog="Example: apto-release example-data -o data/example.jsonl -n 18000 --seed 0")
@output_file_option("Output file (.jsonl or .jsonl.gz).", name="path", required=True)
@click.option("-n", "n", type=click.IntRange(1), default=18000, show_default=True, help="Number of records.")
@seed_option("Generator seed.")
def example_data_command(path, n, seed):
    """Write a deterministic, clearly labelled synthetic dataset in record schema v1."""
    from apto_release.dataset.example import write_example_data

    result = write_example_data(path, n=n, seed=seed)
    click.echo(f"Wrote {result.count:,} synthetic records to {result.path}")
    for category, count in result.category_counts.items():
        click.echo(f"  {category:<24} {count:>6,}  {count / result.count:6.1%}")
    return 0


@click.command("schema", epilog="Example: apto-release schema -o record-v1.schema.json")
@output_file_option("Write to this file instead of standard output.")
def schema_command(output):
    """Print the JSON Schema of record schema v1."""
    from apto_release import schema
    from apto_release.io import write_text

    text = schema.render_json_schema()
    if output:
        write_text(output, text)
    else:
        click.echo(text, nl=False)
    return 0


def register(cli: click.Group) -> None:
    for command in (example_data_command, validate_command, sample_command, dataset_group, schema_command):
        cli.add_command(command)
