"""One model's ``[model.eval]``: generate answers for the base ("before"), the tuned model ("after")
and each listed GGUF file (labelled with its type), judge them with every judge, and summarize
to the model's ``evaluation`` file (and, with ``details_repo``, the details dataset). Each step is resumable: its files live under
``<state folder>/eval/<model>/`` and an engine is started only for a step with requests left.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from apto_release.errors import InputError, UsageError
from apto_release.release.manifest import EngineSpec, ModelTarget

Progress = Callable[[str], None]


@dataclass(frozen=True)
class EvalRun:
    """What ``evaluate_model`` did: the evaluation file, the chart, the labels evaluated, and the
    requests asked and answers kept from an earlier run (generation and judging together)."""

    evaluation: Path
    chart: Path
    labels: tuple[str, ...]
    asked: int
    kept: int
    details: Path | None = None  # the details dataset's folder, when ``details_repo`` is set


def engine_name(spec: EngineSpec) -> str:
    """The model's name as the engine serves it (and as the responses and judgements record it)."""
    from apto_release.evals.serve import served_name

    return spec.model or served_name(spec.path)


def eval_sides(model: ModelTarget, base_folder: Path | None) -> list[tuple[str, EngineSpec]]:
    """The (label, engine) of every model side ``model.eval`` evaluates: before, after, each GGUF type.

    Raises:
        UsageError: a listed GGUF type has no file yet (the gguf stage makes it).
    """
    from apto_release.gguf.output import existing_outputs, find_output

    config = model.eval
    base = config.base if not config.base.serve or config.base.path else replace(config.base, path=base_folder)
    tuned = config.tuned if not config.tuned.serve or config.tuned.path else replace(config.tuned, path=model.merged)
    sides = [("before", base), ("after", tuned)]
    for type_ in config.gguf:
        stem = f"{model.name}-{type_}"
        if not existing_outputs(model.gguf_folder, stem):
            raise UsageError(f"{model.name} has no {type_} GGUF file to evaluate", path=model.gguf_folder,
                             hint="run the gguf stage first (apto-release release --stages gguf)")
        # the file, or a complete split set's first file (llama.cpp finds the others); a stale
        # file beside a split set or an incomplete set is an error, as for the cards and the push
        sides.append((type_, EngineSpec(path=find_output(model.gguf_folder, stem, type_)[0])))
    return sides


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "judge"


def _engine(spec: EngineSpec, attempts: int, progress: Progress | None):
    """The engine of ``spec``, started (a path) or connected (a URL) only if a step asks it something."""
    from apto_release.evals.serve import EngineClient

    on_start = (lambda name: progress(f"starting an engine for {name}")) if progress else None
    if spec.url:
        return EngineClient(url=spec.url, model=spec.model, api_key_env=spec.api_key_env, attempts=attempts)
    return EngineClient(path=spec.path, model=spec.model, attempts=attempts, on_start=on_start)


def evaluate_model(model: ModelTarget, work: Path, *, base_folder: Path | None = None, attempts: int = 5,
                   seed: int = 0, progress: Progress | None = None) -> EvalRun:
    """Run ``model.eval``: generate, judge and summarize into ``model.evaluation`` (and its chart).

    Args:
        model: a manifest model with an ``eval`` table and an ``evaluation`` file.
        work: the folder for the responses and judgement files (``<state>/eval/<model>``).
        base_folder: the base checkpoint's folder, served when ``base`` is ``{ serve = true }``.
        attempts: tries per request on 429/5xx/timeouts.
        seed: the bootstrap's seed.
        progress: called with a line of text per step.

    Raises:
        EngineError: an engine failed (what was received stays in the step's ``.partial`` file).
        InputError: a benchmark file is bad, or the judgements have errors (nothing written).
    """
    from apto_release.evals.chart import CHART_NAME
    from apto_release.evals.generate import load_benchmarks
    from apto_release.evals.generate import generate as generate_responses
    from apto_release.evals.judge import judge as judge_responses
    from apto_release.evals.summarize import summarize, write_results

    config = model.eval
    if config is None or model.evaluation is None:
        raise UsageError(f"{model.name} has no [model.eval] table with an evaluation file")
    say = progress or (lambda _: None)
    items = load_benchmarks(config.benchmarks, config.bench_dir, limit=config.limit)
    work.mkdir(parents=True, exist_ok=True)
    asked = kept = 0
    judgements: dict[str, list[Path]] = {}
    for label, spec in eval_sides(model, base_folder):
        responses = work / f"responses-{label}.jsonl"
        say(f"{model.name}: generating for {label} ({engine_name(spec)})")
        with _engine(spec, attempts, progress) as client:
            done = generate_responses(client, items, responses, model=engine_name(spec), label=label, engine=client.engine,
                                      parallel=config.parallel, max_tokens=config.max_tokens, progress=progress)
        asked, kept = asked + done.asked, kept + done.kept
        for judge in config.judges or (None,):
            name = engine_name(judge) if judge else None
            dest = work / f"judgements-{label}-{_slug(name or 'key')}.jsonl"
            say(f"{model.name}: judging {label}" + (f" with {name}" if name else ""))
            with contextlib.ExitStack() as stack:
                client = stack.enter_context(_engine(judge, attempts, progress)) if judge else None
                done = judge_responses(client, responses, dest, judge_name=name, bench_dir=config.bench_dir,
                                       parallel=config.parallel, progress=progress)
            asked, kept = asked + done.asked, kept + done.kept
            judgements.setdefault(label, []).append(dest)
    paths = [p for label in ("before", "after", *config.gguf) for p in judgements[label]]
    summary = summarize(paths, model=model.name, seed=seed, quants=config.gguf)
    errors = [f.message for f in summary.findings if f.severity == "error"]
    if errors:
        raise InputError(f"the judgements have {len(errors)} error(s), first: {errors[0]}; nothing was written",
                         path=work, hint="see apto-release eval summarize on the files there")
    chart = model.evaluation.parent / CHART_NAME
    write_results(summary, model.evaluation, chart=chart)
    details = model.details_folder
    if details is not None:
        from apto_release.evals.details import build_details

        say(f"{model.name}: writing the details dataset")
        build_details(model.name, [work / f"responses-{label}.jsonl" for label in judgements], paths, details,
                      items={(i.benchmark, i.id): i for i in items}, repo_id=config.details_repo, model_repo=model.repo)
    return EvalRun(model.evaluation, chart, tuple(judgements), asked, kept, details)
