"""From raw judgements to the results file: every metric before and after, with paired statistics.

``summarize`` reads the judgement files (``judgements``), keeps the items judged for both models,
and computes per benchmark and metric (``metrics``): the value before and after, the change, its
95% interval and significance (``stats``), the same per category, each judge's own values, and
the judges' agreement (``agreement``). With ``quants``, each GGUF file's judgements are compared
with the tuned model's the same way (the tuned model as "before", the quant as "after": the
results file's ``quants``, with what served the tuned model as its ``reference``). ``write_results`` writes the results file the cards read
(``apto_release.evals.results``, format 1) and the chart beside it (``chart``).

All of it is deterministic: the same files, seed and resamples give byte-identical outputs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from apto_release.evals.agreement import krippendorff_alpha
from apto_release.evals.chart import plot_evaluation
from apto_release.evals.judgements import ANSWER_KEY, SIDES, BenchmarkJudgements, Finding, Judgement, collate, read_judgements
from apto_release.evals.metrics import BENCHMARKS, MetricSpec
from apto_release.evals.stats import Comparison, compare_means, compare_rates
from apto_release.errors import UsageError
from apto_release.gguf import GGUF_TYPES
from apto_release.io import write_json
from apto_release.evals.results import FORMAT, Evaluation, parse_evaluation

DEFAULT_RESAMPLES = 10_000


@dataclass(frozen=True)
class Summary:
    """What ``summarize`` found: the findings, and the results file's content when none is an error."""

    findings: list[Finding]
    results: dict[str, Any] | None
    judgements: int
    files: int

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)


def summarize(
    paths: Sequence[str | Path],
    *,
    model: str,
    before: str | None = None,
    after: str | None = None,
    seed: int = 0,
    resamples: int = DEFAULT_RESAMPLES,
    quants: Sequence[str] = (),
) -> Summary:
    """Summarize the judgement files of the base model (before) and the tuned ``model`` (after).

    ``before`` and ``after`` are model ids that the files use for the two models. Each metric's
    bootstrap starts from ``seed``, so a metric's interval does not depend on the others.
    ``quants`` are GGUF types (``Q4_K_M``) that the files use as the ``model`` of a GGUF file's
    judgements: each is compared with the tuned model (``after``) on the items both were judged
    on, every metric of every benchmark judged for it (overall rows only).

    Raises:
        InputError: a file is missing or a line is malformed (see ``judgements.read_judgements``).
        UsageError: ``before`` and ``after`` clash; a quant is not a GGUF type, is repeated, or is
            ``before`` or ``after``.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be positive, found {resamples}")
    _check_quants(quants, before, after)
    judgements = read_judgements(paths, before=before, after=after, quants=quants)
    benchmarks, findings = collate(j for j in judgements if j.side in SIDES)
    quant_benchmarks = {q: _collate_quant(judgements, q, findings) for q in quants}
    if any(f.severity == "error" for f in findings):
        return Summary(findings, None, len(judgements), len(paths))
    overall, by_category = [], []
    for data in benchmarks:
        overall += [_overall_row(data, spec, seed=seed, resamples=resamples) for spec in data.benchmark.metrics]
        by_category += _category_rows(data, seed=seed, resamples=resamples)
    results: dict[str, Any] = {"format": FORMAT, "model": model, "metrics": overall + by_category}
    judges = sorted({j for data in benchmarks for j in data.judges} - {ANSWER_KEY})
    if judges:
        results["judges"] = judges
    agreement = [_agreement(data) for data in benchmarks if len(data.judges) > 1]
    if agreement:
        results["agreement"] = agreement
    if quants:
        results["quants"] = []
        for q in quants:
            entry: dict[str, Any] = {"type": q, "metrics": [_overall_row(data, spec, seed=seed, resamples=resamples)
                                                           for data in quant_benchmarks[q] for spec in data.benchmark.metrics]}
            reference = _reference(judgements, q, findings)
            if reference:
                entry["reference"] = reference
            results["quants"].append(entry)
    unparseable = _unparseable(judgements, ("before", "after", *quants))
    if unparseable:
        results["unparseable"] = unparseable
    rows = results["metrics"] + [row for q in results.get("quants", []) for row in q["metrics"]]
    if any(row["method"] == "bootstrap" for row in rows):
        results["bootstrap"] = {"resamples": resamples, "seed": seed}
    return Summary(findings, results, len(judgements), len(paths))


def _unparseable(judgements: Sequence[Judgement], sides: Sequence[str]) -> list[dict[str, Any]]:
    """The results' ``unparseable``: per benchmark, side and judge with any, how many of its judgements could not be read."""
    totals: dict[tuple[str, str, str], list[int]] = {}
    for j in {j.key: j for j in judgements}.values():  # an identical repeat counts once (a different one is an error)
        counts = totals.setdefault((j.benchmark.name, j.side, j.judge), [0, 0])
        counts[0] += j.value is None
        counts[1] += 1
    order = {b.name: i for i, b in enumerate(BENCHMARKS)}
    return [
        {"benchmark": benchmark, "model": side, "judge": judge, "count": count, "judgements": total}
        for (benchmark, side, judge), (count, total) in sorted(totals.items(), key=lambda kv: (order[kv[0][0]], sides.index(kv[0][1]), kv[0][2]))
        if count
    ]


def _check_quants(quants: Sequence[str], before: str | None, after: str | None) -> None:
    for q in quants:
        if q in (before, after):
            side = "before" if q == before else "after"
            raise UsageError(f"--quant {q} is also --{side}", hint=f"a GGUF file's judgements are either the {side} model's or a quant's, not both")
        if q not in GGUF_TYPES:
            raise UsageError(f"--quant '{q}' is not a GGUF type", hint=f"one of {', '.join(GGUF_TYPES)} (as the judgement files' 'model')")
    if len(set(quants)) < len(quants):
        raise UsageError("a --quant is given twice", hint="name each GGUF type once")


def _collate_quant(judgements: Sequence[Judgement], quant: str, findings: list[Finding]) -> list[BenchmarkJudgements]:
    """The paired judgements of the tuned model (as "before") and the GGUF type ``quant`` (as "after").

    Only the benchmarks judged for ``quant`` count; its findings join ``findings`` once each,
    named for the quant (a problem of the tuned model's lines is already there).
    """
    benches = {j.benchmark.name for j in judgements if j.side == quant}
    if not benches:
        findings.append(Finding("error", f"{quant}: no judgement has the model '{quant}'; give the GGUF file's judgement files"))
        return []
    pairs = [replace(j, side="before" if j.side == "after" else "after") for j in judgements
             if j.side in ("after", quant) and j.benchmark.name in benches]
    collated, found = collate(pairs)
    known = {f.message for f in findings}
    for f in found:
        if f.message not in known:
            text = (f.message.replace("for both models", f"for both the tuned model and {quant}")
                    .replace("(before only)", "(tuned model only)").replace("(after only)", f"({quant} only)"))
            findings.append(Finding(f.severity, f"{quant} against the tuned model: {text}"))
    return collated


def _reference(judgements: Sequence[Judgement], quant: str, findings: list[Finding]) -> dict[str, str] | None:
    """What served the tuned model that ``quant`` is compared with: the one ``served`` record of the
    tuned model's judgements of the benchmarks judged for ``quant``; None (and a warning) for several."""
    benches = {j.benchmark.name for j in judgements if j.side == quant}
    found = sorted({j.served for j in judgements if j.side == "after" and j.benchmark.name in benches and j.served},
                   key=lambda s: (s[0], s[1] or ""))
    if len(found) > 1:
        names = ", ".join(name + (f" ({engine})" if engine else "") for name, engine in found)
        findings.append(Finding("warning", f"{quant} against the tuned model: the tuned model's judgements name {len(found)} "
                                           f"engines ({names}): the card names none"))
    if len(found) != 1:
        return None
    name, engine = found[0]
    return {"name": name, "engine": engine} if engine else {"name": name}


def write_results(summary: Summary, dest: str | Path, *, chart: str | Path | None = None) -> Evaluation:
    """Write the results file (and the chart, when given), each atomically; return the results as read back.

    The file names the chart by its path relative to the file, so that the cards find it.
    """
    if summary.results is None:
        raise ValueError("the summary has errors; there are no results to write")
    dest = Path(dest)
    data = dict(summary.results)
    if chart is not None:
        data["chart"] = Path(os.path.relpath(Path(chart).resolve(), dest.parent.resolve())).as_posix()
    evaluation = parse_evaluation(data, dest)  # what the cards will read must parse
    if chart is not None:
        plot_evaluation(evaluation.overall, chart)
    write_json(dest, data)
    return evaluation


# ---------------------------------------------------------------------------------------------
# Rows of the results file


def outcomes(data: BenchmarkJudgements, spec: MetricSpec, items: Sequence[str], judge: str | None = None) -> dict[str, list]:
    """Each item's outcome for ``spec``, per model: one judge's, or (``judge`` None) all judges' combined."""
    found: dict[str, list] = {side: [] for side in SIDES}
    for item in items:
        judges = [judge] if judge else list(data.cells[item])
        for side in SIDES:
            found[side].append(spec.combine([spec.outcome(data.value(item, j, side)) for j in judges]))
    return found


def compare(data: BenchmarkJudgements, spec: MetricSpec, items: Sequence[str], *, seed: int, resamples: int) -> Comparison:
    """The paired comparison of ``spec`` over ``items``: McNemar and Newcombe for a rate, the bootstrap for a mean."""
    found = outcomes(data, spec, items)
    if spec.kind == "rate":
        return compare_rates(found["before"], found["after"])
    return compare_means(found["before"], found["after"], resamples=resamples, seed=seed)


def _overall_row(data: BenchmarkJudgements, spec: MetricSpec, *, seed: int, resamples: int) -> dict[str, Any]:
    row = _row(data, spec, compare(data, spec, data.items, seed=seed, resamples=resamples))
    if len(data.judges) > 1:
        row["per_judge"] = [_judge_values(data, spec, judge) for judge in data.judges]
    return row


def _category_rows(data: BenchmarkJudgements, *, seed: int, resamples: int) -> list[dict[str, Any]]:
    rows = []
    for category in sorted({c for c in data.categories.values() if c is not None}):
        items = [item for item, c in data.categories.items() if c == category]
        for spec in data.benchmark.metrics:
            rows.append(_row(data, spec, compare(data, spec, items, seed=seed, resamples=resamples), category=category))
    return rows


def _row(data: BenchmarkJudgements, spec: MetricSpec, c: Comparison, *, category: str | None = None) -> dict[str, Any]:
    """A metric row of the results file (see ``apto_release.evals.results``)."""
    row: dict[str, Any] = {"benchmark": data.benchmark.name, "metric": spec.id}
    if category is not None:
        row["category"] = category
    row.update({
        "label": spec.label, "label_ja": spec.label_ja, "unit": spec.unit, "higher_is_better": spec.higher_is_better,
        "before": _shown(c.before, spec), "after": _shown(c.after, spec),
        "ci95": [_shown(c.ci[0], spec), _shown(c.ci[1], spec)], "significant": c.significant, "method": c.method,
    })
    if c.p_value is not None:
        row["p_value"] = float(f"{c.p_value:.4g}")
    if data.benchmark.dataset_id:
        row["dataset_id"] = data.benchmark.dataset_id
    row["n"] = c.n
    return row


def _judge_values(data: BenchmarkJudgements, spec: MetricSpec, judge: str) -> dict[str, Any]:
    items = [item for item in data.items if judge in data.cells[item]]
    found = outcomes(data, spec, items, judge)
    before, after = (sum(found[side]) / len(items) for side in SIDES)
    return {"judge": judge, "before": _shown(before, spec), "after": _shown(after, spec), "n": len(items)}


def _shown(value: float, spec: MetricSpec) -> float:
    """A value as the results file keeps it: a rate in percent to 0.1, a score to 0.01 (no -0.0)."""
    if spec.kind == "rate":
        return round(100 * value, 1) + 0.0
    return round(value, 2) + 0.0


def _agreement(data: BenchmarkJudgements) -> dict[str, Any]:
    """Krippendorff's alpha between a benchmark's judges, over every item, model and turn."""
    units = data.units()
    alpha = krippendorff_alpha(units, data.benchmark.agreement)
    return {
        "benchmark": data.benchmark.name, "measure": "krippendorff_alpha", "level": data.benchmark.agreement,
        "value": None if alpha is None else round(alpha, 3) + 0.0, "judges": list(data.judges),
        "units": sum(len(u) > 1 for u in units),
    }
