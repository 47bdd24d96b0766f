"""The eval commands: from raw judgements to the evaluation results file the model cards read."""

from __future__ import annotations

from pathlib import Path

import click

from apto_release.cli.options import output_file_option

SUMMARIZE_EXAMPLE = (
    "Example: apto-release eval summarize --judgements eval/judgements-before.jsonl "
    "--judgements eval/judgements-after.jsonl --model Apto-Qwen3.5-27B-Safety -o eval/27b.json"
)


@click.group("eval")
def eval_group() -> None:
    """Evaluation results: from per-item judgements to the file the model cards read."""


@eval_group.command("summarize", epilog=SUMMARIZE_EXAMPLE)
@click.option("-j", "--judgements", "paths", multiple=True, required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A judgement file (JSON Lines; repeatable).")
@output_file_option("The results file to write (the manifest's 'evaluation').", required=True)
@click.option("--model", required=True, help="The tuned model's name in the manifest (or its repo id).")
@click.option("--before", "before_id", metavar="MODEL_ID", help="The base model's id, where the files name it instead of 'before'.")
@click.option("--after", "after_id", metavar="MODEL_ID", help="The tuned model's id, where the files name it instead of 'after'.")
@click.option("--chart", type=click.Path(dir_okay=False, path_type=Path), help="The chart's PNG [default: eval_chart.png beside -o].")
@click.option("--no-chart", is_flag=True, help="Write no chart.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="The bootstrap's seed.")
@click.option("--bootstrap", "resamples", type=click.IntRange(100), default=10_000, show_default=True,
              help="Bootstrap resamples for the intervals of mean scores.")
def summarize_command(paths, output, model, before_id, after_id, chart, no_chart, seed, resamples):
    """Compute the before/after results, with 95% intervals and tests, from per-item judgements.

    Reads the judgement files (one line per item, model and judge: benchmark, item, model,
    judge, category and the judge's output; see the README), keeps the items judged for both
    models, and writes the results file and a PNG chart beside it. Exit 0 when written (warnings
    allowed), 1 when the judgements have errors (nothing is written), 2 for an unreadable file
    or a malformed line.
    """
    from apto_release.cli.output import echo_error
    from apto_release.errors import UsageError
    from apto_release.evals.chart import CHART_NAME
    from apto_release.evals.summarize import summarize, write_results

    if chart and no_chart:
        raise UsageError("--chart and --no-chart contradict each other", hint="give one of them")
    summary = summarize(paths, model=model, before=before_id, after=after_id, seed=seed, resamples=resamples)
    click.echo(f"Read {summary.judgements:,} judgements from {summary.files} file(s).")
    for finding in summary.findings:
        click.echo(f"{finding.severity}: {finding.message}", err=True)
    if not summary.ok:
        errors = sum(f.severity == "error" for f in summary.findings)
        echo_error(f"the judgements have {errors} error(s); nothing was written.")
        return 1
    chart = None if no_chart else chart or output.parent / CHART_NAME
    evaluation = write_results(summary, output, chart=chart)
    for line in _table(evaluation):
        click.echo(line)
    click.echo(f"Wrote {output}" + (f" and {chart}" if chart else ""))
    return 0


def _table(evaluation) -> list[str]:
    """The overall rows as text: value before and after, change (* significant), interval, p-value."""
    header = ("metric", "n", "before", "after", "change", "95% CI", "p")
    rows = [header]
    for m in evaluation.overall:
        digits = 1 if m.unit == "%" else 2
        ci = f"[{m.ci95[0]:+.{digits}f}, {m.ci95[1]:+.{digits}f}]" if m.ci95 else ""
        rows.append((
            m.label + (" (%)" if m.unit == "%" else ""), f"{m.n:,}" if m.n else "", f"{m.before:.{digits}f}",
            f"{m.after:.{digits}f}", f"{round(m.change, digits) + 0.0:+.{digits}f}" + ("*" if m.significant else " "), ci,
            f"{m.p_value:.3g}" if m.p_value is not None else "",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
             for row in rows]
    lines.append("* significant at the 95% level (rates: exact McNemar test; scores: bootstrap interval excludes 0)")
    for a in evaluation.agreement:
        value = "not defined (every judgement the same)" if a.value is None else f"{a.value:.3f}"
        lines.append(f"Agreement of {len(a.judges)} judges on {a.benchmark} (Krippendorff's alpha, {a.level}): {value}")
    return lines


def register(cli: click.Group) -> None:
    cli.add_command(eval_group)
