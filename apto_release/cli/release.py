"""``release`` (every stage of a release, resumable) and ``demo`` (a whole release on synthetic data)."""

from __future__ import annotations

import os

import click

from apto_release.cli.options import (
    dry_run_option,
    manifest_option,
    only_option,
    output_dir_option,
    progress_option,
    seed_option,
    trusted_publishing_option,
)

STATUS_MARKS = {"done": "✓", "up to date": "=", "failed": "✗", "would run": "→", "planned": "→"}


def render_table(reports) -> str:
    """The final summary: stage, target, status, time, output size."""
    from apto_release.progress import human_duration
    from apto_release.io import human_size
    from apto_release.release.pipeline import STAGE_TITLES

    header = ("stage", "target", "status", "time", "output")
    rows = [
        (STAGE_TITLES[r.stage], r.target, r.status, human_duration(r.seconds) if r.status in ("done", "planned") else "",
         human_size(r.output_bytes) if r.output_bytes else "")
        for r in reports
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(  # noqa: E731
        f"{c:>{w}}" if i >= 3 else f"{c:<{w}}" for i, (c, w) in enumerate(zip(cells, widths))
    ).rstrip()
    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *(line(r) for r in rows)])


def _progress(mode: str | None):
    from apto_release.progress import Progress

    return Progress(mode)


def _echo_start(job, reason: str) -> None:
    from apto_release.release.pipeline import STAGE_TITLES

    click.echo(f"→ {STAGE_TITLES[job.stage]} {job.target}: {reason}")


def _echo_report(report) -> None:
    from apto_release.progress import human_duration
    from apto_release.release.pipeline import STAGE_TITLES

    mark = STATUS_MARKS.get(report.status, "·")
    text = report.summary if report.status in ("done", "planned", "up to date") and report.summary else report.reason
    took = f" ({human_duration(report.seconds)})" if report.status == "done" else ""
    click.echo(f"{mark} {STAGE_TITLES[report.stage]} {report.target}: {report.status}{took}" + (f" — {text}" if text else ""))


def _finish(result, error=None) -> None:
    """The table, and the step summary in GitHub Actions."""
    from apto_release.cli.output import append_step_summary, release_step_summary

    click.echo("")
    click.echo(render_table(result.reports))
    append_step_summary(release_step_summary(result) + (f"\n**Failed:** {error}\n" if error else ""))


@click.command("release", epilog="Example: apto-release release --manifest release.toml --stages train,merge --only Apto-Qwen3.5-9B-Safety")
@manifest_option
@click.option("--stages", "stages", multiple=True, metavar="STAGE[,STAGE]",
              help="Run only these stages (validate, sample, dataset, train, merge, imatrix, gguf, eval, cards, push); comma-separated or repeated.")
@only_option("Only these targets: data, dataset.sample, dataset.full or a model's name. Repeatable.")
@dry_run_option("Say what would run and why, and the push's plan; write nothing.")
@progress_option
@trusted_publishing_option
def release_command(manifest_path, stages, only, dry_run, progress_mode, trusted_publishing):
    """Cut the release: validate → sample → dataset build → train → merge → GGUF → eval → cards → push.

    A state file (the manifest's `state`, by default .apto-release/state.json beside it) records
    the hashes of every stage's inputs and outputs. A re-run skips what is up to date and says why
    it runs the rest; after an interruption it picks up where the release stopped (training from
    its last checkpoint). The push compares with the Hub every time and commits only what differs.
    """
    from apto_release.release.manifest import load_manifest
    from apto_release.release.pipeline import ReleaseError, run_release

    manifest = load_manifest(manifest_path)
    chosen = [s.strip() for item in stages for s in item.split(",") if s.strip()]
    click.echo(f"apto-release release {manifest.tag} ({manifest_path})" + (": dry run, nothing is written" if dry_run else ""))
    try:
        result = run_release(manifest, stages=chosen, only=only, dry_run=dry_run, progress=_progress(progress_mode),
                             on_start=_echo_start, on_report=_echo_report, trusted_publishing=trusted_publishing)
    except ReleaseError as exc:
        _finish(exc.result, exc.message)
        raise
    _finish(result)
    click.echo(f"State: {manifest.state_file}")
    return 0


@click.command("demo", epilog="Example: apto-release demo -o out/demo")
@output_dir_option("Where the demo writes everything (run it again: everything is up to date).", required=False, default="out/demo", show_default=True)
@click.option("-n", "records", type=click.IntRange(100), default=18000, show_default=True, help="Synthetic records to generate.")
@click.option("--sample-size", type=click.IntRange(1), default=500, show_default=True, help="Records in the public sample.")
@click.option("--steps", type=click.IntRange(1), default=8, show_default=True, help="Training steps of the tiny model.")
@seed_option()
@progress_option
def demo_command(out_dir, records, sample_size, steps, seed, progress_mode):
    """A whole release on synthetic data and a tiny Qwen3.5, pushed to a local Hub server.

    Writes the example records, a tiny Qwen3.5 and a manifest into OUTPUT, then runs the release
    command on them: validate, sample, dataset build, train, merge, GGUF convert and verify, cards,
    and a push to a local server that speaks the Hub's API. Nothing is downloaded.
    """
    from apto_release.demo import run_demo
    from apto_release.release.pipeline import ReleaseError

    click.echo(f"apto-release demo → {out_dir}/")
    try:
        demo = run_demo(out_dir, records=records, sample_size=sample_size, seed=seed, steps=steps,
                        progress=_progress(progress_mode), on_start=_echo_start, on_report=_echo_report)
    except ReleaseError as exc:
        _finish(exc.result, exc.message)
        raise
    _finish(demo.result)
    click.echo("")
    click.echo("Where everything is:")
    for path, what in demo.contents():
        click.echo(f"  {os.path.relpath(path)}/" if path.is_dir() else f"  {os.path.relpath(path)}")
        click.echo(f"      {what}")
    click.echo(f"Try: python -c \"import datasets; print(datasets.load_dataset('{os.path.relpath(demo.sample_dataset)}'))\"")
    click.echo(f"Run it again and every stage is up to date: apto-release demo -o {out_dir}")
    return 0


def register(cli: click.Group) -> None:
    cli.add_command(release_command)
    cli.add_command(demo_command)
