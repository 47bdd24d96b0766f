"""The eval commands: generate answers, judge them, and summarize the judgements into the
evaluation results file the model cards read."""

from __future__ import annotations

from pathlib import Path

import click

from apto_release.cli.options import manifest_option, only_option, output_file_option, progress_option

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
@click.option("--quant", "quants", multiple=True, metavar="TYPE",
              help="A GGUF type (Q4_K_M) that the files use as the model of a GGUF file's judgements: compared with "
                   "the tuned model ('after') on the same items (repeatable).")
def summarize_command(paths, output, model, before_id, after_id, chart, no_chart, seed, resamples, quants):
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
    summary = summarize(paths, model=model, before=before_id, after=after_id, seed=seed, resamples=resamples, quants=quants)
    click.echo(f"Read {summary.judgements:,} judgements from {summary.files} file(s).")
    for finding in summary.findings:
        click.echo(f"{finding.severity}: {finding.message}", err=True)
    if not summary.ok:
        errors = sum(f.severity == "error" for f in summary.findings)
        echo_error(f"the judgements have {errors} error(s); nothing was written.")
        return 1
    chart = None if no_chart else chart or output.parent / CHART_NAME
    evaluation = write_results(summary, output, chart=chart)
    for line in _table(evaluation.overall):
        click.echo(line)
    _agreement(evaluation)
    for quant in evaluation.quants:
        served = f" served from {quant.reference.name}" if quant.reference else ""
        click.echo(f"{quant.type} against the tuned model (before: the tuned model{served}, after: {quant.type}):")
        for line in _table(quant.metrics)[:-1]:
            click.echo(line)
    click.echo(f"Wrote {output}" + (f" and {chart}" if chart else ""))
    return 0


def _table(metrics) -> list[str]:
    """Overall rows as text: value before and after, change (* significant), interval, p-value."""
    header = ("metric", "n", "before", "after", "change", "95% CI", "p")
    rows = [header]
    for m in metrics:
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
    return lines


def _agreement(evaluation) -> None:
    for a in evaluation.agreement:
        value = "not defined (every judgement the same)" if a.value is None else f"{a.value:.3f}"
        click.echo(f"Agreement of {len(a.judges)} judges on {a.benchmark} (Krippendorff's alpha, {a.level}): {value}")


GENERATE_EXAMPLE = (
    "Example: apto-release eval generate --model http://127.0.0.1:8000/v1 --model-name Qwen/Qwen3.5-27B "
    "--bench AnswerCarefully --bench MT-Bench-ja --bench-dir benchmarks/ --label before -o eval/responses-before.jsonl"
)
JUDGE_EXAMPLE = (
    "Example: apto-release eval judge --responses eval/responses-before.jsonl --judge http://gpu01:8000/v1 "
    "--judge-model Qwen/Qwen3-235B-A22B --bench-dir benchmarks/ -o eval/judgements-before-qwen.jsonl"
)


def engine_options(role: str, name_option: str, name_help: str):
    """The options that say where an engine is: ``--<role> URL|PATH``, ``--serve``, the model's
    name, ``--api-key-env``, ``--parallel``."""
    options = [
        click.option(f"--{role}", "target", required=True, metavar="URL|PATH",
                     help="An OpenAI-compatible endpoint's URL, or (with --serve) a .gguf file or checkpoint folder."),
        click.option("--serve", "serve_flag", is_flag=True,
                     help="Start an engine for the PATH (llama.cpp's server for .gguf, vLLM for a folder) and stop it afterwards."),
        click.option(name_option, "name", help=name_help),
        click.option("--threads", type=click.IntRange(1), help="CPU threads of llama.cpp's server (with --serve)."),
        click.option("--api-key-env", metavar="VAR", help="The environment variable holding the endpoint's API key (never written anywhere)."),
        click.option("--parallel", type=click.IntRange(1), default=4, show_default=True, help="Requests in flight at most."),
        click.option("--attempts", type=click.IntRange(1), default=5, show_default=True,
                     help="Tries per request on 429/5xx/timeouts/connection errors (backoff 0.5 s, doubled; Retry-After honoured)."),
        click.option("--bench-dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Local copies of the benchmarks: a folder per benchmark (answercarefully, sorry-bench, multijail, "
                          "mt-bench-ja, jmmlu) in its source's layout, or one benchmark's folder [default: the Hub]."),
    ]

    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def _engine(target: str, serve_flag: bool, name: str | None, api_key_env: str | None, name_option: str,
            threads: int | None, attempts: int):
    """The engine the options name: a URL used as it is, or (with --serve) a local PATH to serve."""
    from apto_release.errors import UsageError
    from apto_release.evals.serve import EngineClient

    if target.startswith(("http://", "https://")):
        if serve_flag:
            raise UsageError(f"--serve starts an engine for a local file or folder, and {target} is a URL",
                             hint="drop --serve to use the running engine")
        if not name:
            raise UsageError(f"{name_option} is required with a URL", hint="give the model name the engine serves")
        return EngineClient(url=target, model=name, api_key_env=api_key_env, attempts=attempts)
    if not serve_flag:
        raise UsageError(f"{target} is not a URL", hint="pass --serve to start an engine for it, or give a running engine's http(s) URL")
    if api_key_env:
        raise UsageError("--api-key-env is for a URL; an engine started with --serve needs no key")
    return EngineClient(path=target, attempts=attempts, threads=threads)


def _resume_hint(exc, output: Path) -> None:
    from apto_release.evals.records import partial_path

    partial = partial_path(output)
    if partial.exists():
        exc.hint = (f"what was received is kept in {partial}; run the same command again to ask only for the rest"
                    + (f" ({exc.hint})" if exc.hint else ""))


@eval_group.command("generate", epilog=GENERATE_EXAMPLE)
@engine_options("model", "--model-name", "The model's name: the one the engine serves (required with a URL) "
                                         "[default with --serve: the file's or folder's name].")
@click.option("--bench", "benches", multiple=True, required=True, metavar="NAME",
              help="A benchmark: AnswerCarefully, SORRY-Bench, MultiJail, MT-Bench-ja, JMMLU (repeatable).")
@click.option("--limit", type=click.IntRange(1), help="Only the first N items of each benchmark.")
@click.option("--max-tokens", type=click.IntRange(1), help="Cap the benchmarks' max_tokens (recorded with each response).")
@click.option("--label", required=True, help='The model side: "before", "after", or a GGUF type such as Q4_K_M.')
@output_file_option("The responses file (JSON Lines).", required=True)
def generate_command(target, serve_flag, name, threads, api_key_env, parallel, attempts, bench_dir, benches, limit, max_tokens, label, output):
    """Ask a model every item of the benchmarks; write one response line per item and turn.

    Resumable: answers gather in OUTPUT.partial as they arrive, and a rerun asks only for the
    items (and turns) whose settings changed or that are missing; OUTPUT is written, in
    (benchmark, item, turn) order, once every item is answered. Exit 0 when written, 1 when the
    engine failed (what was received is kept), 2 for bad options or benchmark files.
    """
    from apto_release.evals.client import EngineError
    from apto_release.evals.generate import generate, load_benchmarks

    items = load_benchmarks(benches, bench_dir, limit=limit)
    with _engine(target, serve_flag, name, api_key_env, "--model-name", threads, attempts) as engine:
        try:
            engine.connect()  # checked before any work, even when every answer is kept
            result = generate(engine, items, output, model=name or engine.model, label=label, engine=engine.engine,
                              parallel=parallel, max_tokens=max_tokens, progress=lambda m: click.echo(m, err=True))
        except EngineError as exc:
            _resume_hint(exc, output)
            raise
    click.echo(f"Wrote {result.written:,} responses to {output} ({result.asked:,} asked, {result.kept:,} kept from an earlier run).")
    return 0


@eval_group.command("judge", epilog=JUDGE_EXAMPLE)
@click.option("--responses", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The responses file of eval generate.")
@engine_options("judge", "--judge-model", "The judge's name: the model the engine serves (required with a URL) "
                                          "[default with --serve: the file's or folder's name]; written in every line.")
@click.option("--max-tokens", type=click.IntRange(1), default=2048, show_default=True, help="The judge's max_tokens.")
@output_file_option("The judgement file (JSON Lines, as eval summarize reads it).", required=True)
def judge_command(responses, target, serve_flag, name, threads, api_key_env, parallel, attempts, bench_dir, max_tokens, output):
    """Judge a responses file and write the judgement file that eval summarize reads.

    An answer the rule cannot read is asked again (3 attempts in all), then written as
    unparseable with the judge's raw text, and counted. JMMLU is scored against its key, without
    the judge. Resume and exit codes as eval generate.
    """
    from apto_release.evals.client import EngineError
    from apto_release.evals.judge import count_unparseable, judge, read_responses

    read_responses(responses)  # a bad file fails before an engine starts
    with _engine(target, serve_flag, name, api_key_env, "--judge-model", threads, attempts) as engine:
        try:
            engine.connect()
            result = judge(engine, responses, output, judge_name=name or engine.model, bench_dir=bench_dir,
                           parallel=parallel, max_tokens=max_tokens, progress=lambda m: click.echo(m, err=True))
        except EngineError as exc:
            _resume_hint(exc, output)
            raise
    unparseable = count_unparseable(output)
    click.echo(f"Wrote {result.written:,} judgements to {output} ({result.asked:,} judge requests, "
               f"{result.kept:,} kept from an earlier run, {unparseable:,} unparseable).")
    return 0


@eval_group.command("run", epilog="Example: apto-release eval run --manifest release.toml --only Apto-Qwen3.5-27B-Safety")
@manifest_option
@only_option("Only these models (by name). Repeatable.")
@progress_option
def run_command(manifest_path, only, progress_mode):
    """Evaluate every model with a [model.eval] table: generate, judge, summarize.

    For each model: generate answers for the base ("before"), the tuned model ("after") and each
    listed GGUF file (labelled with its type), judge them with every judge, and write the model's
    evaluation file and chart. It is the release's eval stage: the state file records its inputs,
    so a rerun with nothing changed is up to date, and an interrupted one asks only for the rest
    (the responses and judgements are kept under the state folder, eval/<model>/). Exit 0 when
    written, 1 when an engine failed, 2 for a bad manifest or benchmark files.
    """
    from apto_release.cli.release import _echo_report, _echo_start, _finish, _progress
    from apto_release.errors import UsageError
    from apto_release.release.manifest import load_manifest
    from apto_release.release.pipeline import ReleaseError, run_release

    manifest = load_manifest(manifest_path)
    names = [m.name for m in manifest.models if m.eval is not None]
    if not names:
        raise UsageError("no model of the manifest has a [model.eval] table", path=manifest.path,
                         hint="add [model.eval] to a model (see the README's manifest section)")
    missing = [n for n in only if n not in names]
    if missing:
        raise UsageError(f"--only {', '.join(missing)}: no such model with [model.eval]; choose from {', '.join(names)}",
                         path=manifest.path)
    try:
        result = run_release(manifest, stages=["eval"], only=only or names, progress=_progress(progress_mode),
                             on_start=_echo_start, on_report=_echo_report)
    except ReleaseError as exc:
        _finish(exc.result, exc.message)
        raise
    _finish(result)
    for model in manifest.models:
        if model.name in (only or names):
            click.echo(f"{model.name}: {model.evaluation}")
    return 0


def register(cli: click.Group) -> None:
    cli.add_command(eval_group)
