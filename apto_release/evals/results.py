"""The evaluation results file: what a model card's before/after table and ``model-index`` show.

One JSON file per model (the manifest's ``evaluation = "eval/27b.json"``). A later stage computes
it from the raw judgements; the cards only read it. Format 1::

    {
      "format": 1,
      "model": "Apto-Qwen3.5-27B-Safety",      # the manifest's model name (or its repo id)
      "metrics": [
        {
          "benchmark": "AnswerCarefully",      # the benchmark, as people know it
          "metric": "acceptable_rate",         # the metric's id (model-index metric type)
          "label": "AC acceptable rate",       # the table's row label (English)
          "label_ja": "AC 許容回答率",          # optional: the Japanese table's label
          "unit": "%",                          # "%" (change shown in points) or "" (a score)
          "higher_is_better": true,
          "before": 84.1,                       # the base model
          "after": 89.8,                        # the tuned model
          "ci95": [3.9, 7.5],                   # optional: 95% interval of the change (after - before)
          "significant": true,                  # optional: is the change significant
          "dataset_id": "llm-jp/AnswerCarefully",  # optional: the Hub dataset (model-index dataset type)
          "n": 1000                             # optional: number of evaluated items
        }
      ],
      "judges": ["gpt-4.1-2025-04-14"]          # optional: the judge models (strings or
                                                #   objects with a "name" or "model")
    }

``apto-release eval summarize`` computes the file from raw judgements and also writes these
optional keys (a hand-written file may use them too)::

    metrics[i]:
      "category": "差別・偏見",                 # a per-category row; without it the row is overall
      "method": "mcnemar",                      # how ci95/significant were found: "mcnemar" (a rate:
                                                #   exact McNemar test, Newcombe's interval) or
                                                #   "bootstrap" (a mean: paired bootstrap over items)
      "p_value": 0.0004,                        # the McNemar test's two-sided p-value
      "per_judge": [{"judge": "qwen3-235b", "before": 83.9, "after": 90.2, "n": 1000}]
    top level:
      "agreement": [{"benchmark": "AnswerCarefully", "measure": "krippendorff_alpha",
                     "level": "ordinal", "value": 0.712, "judges": ["gemma-3-27b", "qwen3-235b"],
                     "units": 2000}],           # value null: not defined (every judgement the same)
      "bootstrap": {"resamples": 10000, "seed": 0},
      "chart": "eval_chart.png",                # a PNG beside the file (a relative path)
      "quants": [{"type": "Q4_K_M",             # a GGUF type (apto_release.gguf.GGUF_TYPES), once each
                  "metrics": [...],             # overall metric rows as above, "before" the tuned
                                                #   model and "after" the GGUF file (eval summarize --quant)
                  "reference": {"name": "Model-F16.gguf",   # optional: what served the tuned model that
                                "engine": "llama.cpp's server"}}]  # the file is compared with (engine optional)
      "unparseable": [{"benchmark": "AnswerCarefully", "model": "after", "judge": "gemma-3-27b",
                       "count": 3, "judgements": 200}]
                                                # judgements left out because the judge's output could
                                                #   not be read, per benchmark, model ("before", "after"
                                                #   or a type of "quants") and judge; only non-zero counts

Rows are shown in file order; a metric the file does not have is simply not in the table. The
overall rows (no ``category``) make the table and the ``model-index``; at least one is required.
The change is ``after - before``, in points for a ``%`` unit and in the metric's own units
otherwise. Unknown keys are errors (a typo must not silently drop a value). ``load_evaluation``
reports the first problem as one line naming the file and the field (``metrics[2].after``).
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apto_release.errors import InputError
from apto_release.gguf import GGUF_TYPES
from apto_release.hub.targets import repo_id_problem

FORMAT = 1
UNITS = ("%", "")
METHODS = ("mcnemar", "bootstrap")
AGREEMENT_MEASURES = ("krippendorff_alpha",)
AGREEMENT_LEVELS = ("nominal", "ordinal", "interval")

_TOP_REQUIRED = ("format", "model", "metrics")
_TOP_OPTIONAL = ("judges", "agreement", "bootstrap", "chart", "quants", "unparseable")
_METRIC_REQUIRED = ("benchmark", "metric", "label", "higher_is_better", "before", "after")
_METRIC_OPTIONAL = ("label_ja", "unit", "ci95", "significant", "dataset_id", "n", "category", "method", "p_value", "per_judge")
_JUDGE_VALUE_KEYS = ("judge", "before", "after", "n")
_AGREEMENT_KEYS = ("benchmark", "measure", "level", "value", "judges", "units")
_BOOTSTRAP_KEYS = ("resamples", "seed")
_QUANT_KEYS = ("type", "metrics")
_REFERENCE_KEYS = ("name", "engine")
_UNPARSEABLE_KEYS = ("benchmark", "model", "judge", "count", "judgements")


class EvaluationError(InputError):
    """The evaluation results file cannot be used (one line: the file, the field, the problem)."""


@dataclass(frozen=True)
class JudgeValue:
    """One judge's own value of a metric, before and after."""

    judge: str
    before: float
    after: float
    n: int | None = None


@dataclass(frozen=True)
class Agreement:
    """How far a benchmark's judges agree (``value`` None: not defined, every judgement the same)."""

    benchmark: str
    measure: str
    level: str
    value: float | None
    judges: tuple[str, ...]
    units: int


@dataclass(frozen=True)
class Metric:
    """One row of the results table: a metric of the base model (before) and the tuned model (after)."""

    benchmark: str
    metric: str
    label: str
    unit: str
    higher_is_better: bool
    before: float
    after: float
    label_ja: str | None = None
    ci95: tuple[float, float] | None = None
    significant: bool | None = None
    dataset_id: str | None = None
    n: int | None = None
    category: str | None = None  # None: an overall row
    method: str | None = None  # "mcnemar" or "bootstrap"
    p_value: float | None = None
    per_judge: tuple[JudgeValue, ...] = ()

    @property
    def change(self) -> float:
        """``after - before`` (points for a percentage)."""
        return self.after - self.before

    @property
    def improved(self) -> bool | None:
        """Whether the change goes the good way (None when there is no change)."""
        if self.change == 0:
            return None
        return (self.change > 0) == self.higher_is_better


@dataclass(frozen=True)
class Served:
    """What served a model: a file or folder's name (or a served model name) and the engine, if known."""

    name: str
    engine: str | None = None


@dataclass(frozen=True)
class QuantResults:
    """A GGUF file's metrics against the tuned model: ``before`` the tuned model (as ``reference``
    served it, when known), ``after`` the file."""

    type: str
    metrics: tuple[Metric, ...]
    reference: Served | None = None

    def metric(self, benchmark: str, metric: str) -> Metric | None:
        """The row of ``benchmark``'s ``metric``, if the file has it."""
        return next((m for m in self.metrics if (m.benchmark, m.metric) == (benchmark, metric)), None)


@dataclass(frozen=True)
class Unparseable:
    """How many of a judge's judgements of one benchmark and model side could not be read (and were left out)."""

    benchmark: str
    model: str  # "before", "after" or a GGUF type of the results' quants
    judge: str
    count: int
    judgements: int  # all of that judge's judgements of the benchmark and side


@dataclass(frozen=True)
class Evaluation:
    """A model's evaluation results file, checked."""

    path: Path
    model: str
    metrics: tuple[Metric, ...]
    judges: tuple[str, ...] = ()
    agreement: tuple[Agreement, ...] = ()
    bootstrap_resamples: int | None = None
    chart: Path | None = None  # resolved against the file's folder
    quants: tuple[QuantResults, ...] = ()
    unparseable: tuple[Unparseable, ...] = ()

    @property
    def overall(self) -> tuple[Metric, ...]:
        """The rows of the table and the ``model-index``: those without a category."""
        return tuple(m for m in self.metrics if m.category is None)

    @property
    def by_category(self) -> tuple[Metric, ...]:
        """The per-category rows (the cards fold them away under the table)."""
        return tuple(m for m in self.metrics if m.category is not None)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _unknown(keys: Any, known: tuple[str, ...], where: str, path: Path) -> None:
    for key in keys:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            raise EvaluationError(
                f"unknown key '{where}{key}'" + (f" (did you mean '{where}{close[0]}'?)" if close else ""),
                path=path, field=f"{where}{key}",
            )


def _metric(entry: Any, i: int, path: Path, prefix: str = "") -> Metric:
    where = f"{prefix}metrics[{i}]"

    def fail(field: str, message: str) -> EvaluationError:
        return EvaluationError(f"'{where}.{field}' {message}", path=path, field=f"{where}.{field}")

    if not isinstance(entry, dict):
        raise EvaluationError(f"'{where}' is not an object", path=path, field=where)
    _unknown(entry, _METRIC_REQUIRED + _METRIC_OPTIONAL, f"{where}.", path)
    for key in _METRIC_REQUIRED:
        if key not in entry:
            raise fail(key, "is missing")
    for key in ("benchmark", "metric", "label"):
        if not isinstance(entry[key], str) or not entry[key].strip():
            raise fail(key, f"must be a non-empty string, found {entry[key]!r}")
    if not isinstance(entry["higher_is_better"], bool):
        raise fail("higher_is_better", f"must be true or false, found {entry['higher_is_better']!r}")
    for key in ("before", "after"):
        if not _number(entry[key]):
            raise fail(key, f"must be a number, found {entry[key]!r}")
    unit = entry.get("unit", "")
    if unit not in UNITS:
        raise fail("unit", f'must be "%" or "", found {unit!r}')
    label_ja = entry.get("label_ja")
    if label_ja is not None and (not isinstance(label_ja, str) or not label_ja.strip()):
        raise fail("label_ja", f"must be a non-empty string, found {label_ja!r}")
    ci95 = entry.get("ci95")
    if ci95 is not None:
        if not (isinstance(ci95, list) and len(ci95) == 2 and all(_number(x) for x in ci95)) or ci95[0] > ci95[1]:
            raise fail("ci95", f"must be [low, high] with low <= high, found {ci95!r}")
        ci95 = (float(ci95[0]), float(ci95[1]))
    significant = entry.get("significant")
    if significant is not None and not isinstance(significant, bool):
        raise fail("significant", f"must be true or false, found {significant!r}")
    dataset_id = entry.get("dataset_id")
    if dataset_id is not None and (not isinstance(dataset_id, str) or dataset_id.count("/") != 1 or repo_id_problem(dataset_id)):
        raise fail("dataset_id", f"must be a Hub dataset id (organisation/name), found {dataset_id!r}")
    n = entry.get("n")
    if n is not None and not _count(n, 1):
        raise fail("n", f"must be a positive integer, found {n!r}")
    category = entry.get("category")
    if category is not None and (not isinstance(category, str) or not category.strip()):
        raise fail("category", f"must be a non-empty string, found {category!r}")
    method = entry.get("method")
    if method is not None and method not in METHODS:
        raise fail("method", f"must be one of {', '.join(METHODS)}, found {method!r}")
    p_value = entry.get("p_value")
    if p_value is not None and not (_number(p_value) and 0 <= p_value <= 1):
        raise fail("p_value", f"must be a number from 0 to 1, found {p_value!r}")
    per_judge = entry.get("per_judge", [])
    if not isinstance(per_judge, list):
        raise fail("per_judge", "must be a list")
    return Metric(
        benchmark=entry["benchmark"].strip(), metric=entry["metric"].strip(), label=entry["label"].strip(), unit=unit,
        higher_is_better=entry["higher_is_better"], before=float(entry["before"]), after=float(entry["after"]),
        label_ja=label_ja.strip() if label_ja else None, ci95=ci95, significant=significant, dataset_id=dataset_id, n=n,
        category=category.strip() if category else None, method=method,
        p_value=float(p_value) if p_value is not None else None,
        per_judge=tuple(_judge_value(v, f"{where}.per_judge[{j}]", path) for j, v in enumerate(per_judge, 1)),
    )


def _count(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _object(entry: Any, keys: tuple[str, ...], required: tuple[str, ...], where: str, path: Path) -> dict:
    """``entry`` checked to be an object with only ``keys`` and all of ``required``."""
    if not isinstance(entry, dict):
        raise EvaluationError(f"'{where}' is not an object", path=path, field=where)
    _unknown(entry, keys, f"{where}.", path)
    for key in required:
        if key not in entry:
            raise EvaluationError(f"'{where}.{key}' is missing", path=path, field=f"{where}.{key}")
    return entry


def _judge_value(entry: Any, where: str, path: Path) -> JudgeValue:
    entry = _object(entry, _JUDGE_VALUE_KEYS, ("judge", "before", "after"), where, path)
    if not isinstance(entry["judge"], str) or not entry["judge"].strip():
        raise EvaluationError(f"'{where}.judge' must be a non-empty string", path=path, field=f"{where}.judge")
    for key in ("before", "after"):
        if not _number(entry[key]):
            raise EvaluationError(f"'{where}.{key}' must be a number, found {entry[key]!r}", path=path, field=f"{where}.{key}")
    n = entry.get("n")
    if n is not None and not _count(n, 1):
        raise EvaluationError(f"'{where}.n' must be a positive integer, found {n!r}", path=path, field=f"{where}.n")
    return JudgeValue(entry["judge"].strip(), float(entry["before"]), float(entry["after"]), n)


def _agreement(entry: Any, where: str, path: Path) -> Agreement:
    entry = _object(entry, _AGREEMENT_KEYS, _AGREEMENT_KEYS, where, path)

    def fail(key: str, message: str) -> EvaluationError:
        return EvaluationError(f"'{where}.{key}' {message}, found {entry[key]!r}", path=path, field=f"{where}.{key}")

    if not isinstance(entry["benchmark"], str) or not entry["benchmark"].strip():
        raise fail("benchmark", "must be a non-empty string")
    if entry["measure"] not in AGREEMENT_MEASURES:
        raise fail("measure", f"must be one of {', '.join(AGREEMENT_MEASURES)}")
    if entry["level"] not in AGREEMENT_LEVELS:
        raise fail("level", f"must be one of {', '.join(AGREEMENT_LEVELS)}")
    if entry["value"] is not None and not (_number(entry["value"]) and entry["value"] <= 1):
        raise fail("value", "must be a number up to 1, or null")
    judges = entry["judges"]
    if not isinstance(judges, list) or len(judges) < 2 or not all(isinstance(j, str) and j.strip() for j in judges):
        raise fail("judges", "must list two or more judges")
    if not _count(entry["units"], 0):
        raise fail("units", "must be a count")
    value = entry["value"]
    return Agreement(entry["benchmark"].strip(), entry["measure"], entry["level"], None if value is None else float(value),
                     tuple(j.strip() for j in judges), entry["units"])


def _bootstrap(entry: Any, path: Path) -> int:
    entry = _object(entry, _BOOTSTRAP_KEYS, _BOOTSTRAP_KEYS, "bootstrap", path)
    if not _count(entry["resamples"], 1):
        raise EvaluationError(f"'bootstrap.resamples' must be a positive integer, found {entry['resamples']!r}", path=path,
                              field="bootstrap.resamples")
    if not _count(entry["seed"], 0):
        raise EvaluationError(f"'bootstrap.seed' must be a non-negative integer, found {entry['seed']!r}", path=path,
                              field="bootstrap.seed")
    return entry["resamples"]


def _chart(value: Any, path: Path) -> Path:
    if not isinstance(value, str) or not value.lower().endswith(".png") or Path(value).is_absolute():
        raise EvaluationError(f"'chart' must be the relative path of a PNG file, found {value!r}", path=path, field="chart")
    return path.parent / value


def _judge(entry: Any, i: int, path: Path) -> str:
    if isinstance(entry, str) and entry.strip():
        return entry.strip()
    if isinstance(entry, dict):
        name = entry.get("name") or entry.get("model")
        if isinstance(name, str) and name.strip():
            return name.strip()
    raise EvaluationError(
        f"'judges[{i}]' must be a string or an object with a \"name\" or \"model\", found {entry!r}", path=path, field=f"judges[{i}]"
    )


def parse_evaluation(data: Any, path: str | Path = "<evaluation>") -> Evaluation:
    """Check an already-parsed results object (see the module docstring)."""
    path = Path(path)
    if not isinstance(data, dict):
        raise EvaluationError("the evaluation results file is not a JSON object", path=path)
    _unknown(data, _TOP_REQUIRED + _TOP_OPTIONAL, "", path)
    for key in _TOP_REQUIRED:
        if key not in data:
            raise EvaluationError(f"'{key}' is missing", path=path, field=key)
    if data["format"] != FORMAT or isinstance(data["format"], bool):
        raise EvaluationError(
            f"unsupported format {data['format']!r} (this version reads format {FORMAT})", path=path, field="format",
            hint="upgrade apto-release, or write the file in format 1",
        )
    if not isinstance(data["model"], str) or not data["model"].strip():
        raise EvaluationError(f"'model' must be a non-empty string, found {data['model']!r}", path=path, field="model")
    if not isinstance(data["metrics"], list) or not data["metrics"]:
        raise EvaluationError("'metrics' must be a non-empty list", path=path, field="metrics")
    metrics = _metrics(data["metrics"], path)
    if all(m.category is not None for m in metrics):
        raise EvaluationError("'metrics' has per-category rows only; the table needs overall rows (without 'category')",
                              path=path, field="metrics")
    judges = data.get("judges", [])
    if not isinstance(judges, list):
        raise EvaluationError("'judges' must be a list", path=path, field="judges")
    agreement = data.get("agreement", [])
    if not isinstance(agreement, list):
        raise EvaluationError("'agreement' must be a list", path=path, field="agreement")
    quants = _quants(data["quants"], path) if "quants" in data else ()
    return Evaluation(
        path, data["model"].strip(), tuple(metrics), tuple(_judge(j, i, path) for i, j in enumerate(judges, 1)),
        agreement=tuple(_agreement(a, f"agreement[{i}]", path) for i, a in enumerate(agreement, 1)),
        bootstrap_resamples=_bootstrap(data["bootstrap"], path) if "bootstrap" in data else None,
        chart=_chart(data["chart"], path) if "chart" in data else None,
        quants=quants,
        unparseable=_unparseable(data["unparseable"], quants, path) if "unparseable" in data else (),
    )


def _metrics(entries: list, path: Path, prefix: str = "") -> list[Metric]:
    """The metric rows of a list, each checked, none repeated."""
    metrics = [_metric(entry, i, path, prefix) for i, entry in enumerate(entries, 1)]
    seen: dict[tuple[str, str, str | None], int] = {}
    for i, m in enumerate(metrics, 1):
        key = (m.benchmark, m.metric, m.category)
        if key in seen:
            what = f"{m.benchmark} {m.metric}" + (f" of category '{m.category}'" if m.category else "")
            raise EvaluationError(f"'{prefix}metrics[{i}]' repeats {what} (also {prefix}metrics[{seen[key]}])", path=path,
                                  field=f"{prefix}metrics[{i}]")
        seen[key] = i
    return metrics


def _quants(entries: Any, path: Path) -> tuple[QuantResults, ...]:
    """The GGUF files' results: each a known GGUF type, once, with overall metric rows."""
    if not isinstance(entries, list):
        raise EvaluationError("'quants' must be a list", path=path, field="quants")
    found: list[QuantResults] = []
    for i, entry in enumerate(entries, 1):
        where = f"quants[{i}]"
        entry = _object(entry, (*_QUANT_KEYS, "reference"), _QUANT_KEYS, where, path)
        if entry["type"] not in GGUF_TYPES:
            raise EvaluationError(f"'{where}.type' must be a GGUF type ({', '.join(GGUF_TYPES)}), found {entry['type']!r}",
                                  path=path, field=f"{where}.type")
        if any(q.type == entry["type"] for q in found):
            raise EvaluationError(f"'{where}.type' repeats {entry['type']}", path=path, field=f"{where}.type")
        if not isinstance(entry["metrics"], list) or not entry["metrics"]:
            raise EvaluationError(f"'{where}.metrics' must be a non-empty list", path=path, field=f"{where}.metrics")
        metrics = _metrics(entry["metrics"], path, f"{where}.")
        for j, m in enumerate(metrics, 1):
            if m.category is not None:
                raise EvaluationError(f"'{where}.metrics[{j}].category': a GGUF file's rows are overall rows only", path=path,
                                      field=f"{where}.metrics[{j}].category")
        reference = _reference(entry["reference"], f"{where}.reference", path) if "reference" in entry else None
        found.append(QuantResults(entry["type"], tuple(metrics), reference))
    return tuple(found)


def _reference(entry: Any, where: str, path: Path) -> Served:
    entry = _object(entry, _REFERENCE_KEYS, ("name",), where, path)
    for key in _REFERENCE_KEYS:
        if key in entry and (not isinstance(entry[key], str) or not entry[key].strip()):
            raise EvaluationError(f"'{where}.{key}' must be a non-empty string, found {entry[key]!r}", path=path, field=f"{where}.{key}")
    return Served(entry["name"].strip(), entry["engine"].strip() if "engine" in entry else None)


def _unparseable(entries: Any, quants: tuple[QuantResults, ...], path: Path) -> tuple[Unparseable, ...]:
    """The counts of unreadable judgements: each a known model side, a positive count, once."""
    if not isinstance(entries, list):
        raise EvaluationError("'unparseable' must be a list", path=path, field="unparseable")
    sides = ("before", "after", *(q.type for q in quants))
    found: list[Unparseable] = []
    for i, entry in enumerate(entries, 1):
        where = f"unparseable[{i}]"
        entry = _object(entry, _UNPARSEABLE_KEYS, _UNPARSEABLE_KEYS, where, path)

        def fail(key: str, message: str) -> EvaluationError:
            return EvaluationError(f"'{where}.{key}' {message}, found {entry[key]!r}", path=path, field=f"{where}.{key}")

        for key in ("benchmark", "judge"):
            if not isinstance(entry[key], str) or not entry[key].strip():
                raise fail(key, "must be a non-empty string")
        if entry["model"] not in sides:
            types = ", ".join(q.type for q in quants) or "none"
            raise fail("model", f"must be 'before', 'after' or a type of 'quants' ({types})")
        if not _count(entry["count"], 1):
            raise fail("count", "must be a positive integer")
        if not _count(entry["judgements"], entry["count"]):
            raise fail("judgements", f"must be an integer at least 'count' ({entry['count']})")
        u = Unparseable(entry["benchmark"].strip(), entry["model"], entry["judge"].strip(), entry["count"], entry["judgements"])
        if any((f.benchmark, f.model, f.judge) == (u.benchmark, u.model, u.judge) for f in found):
            raise EvaluationError(f"'{where}' repeats {u.benchmark} {u.model} {u.judge}", path=path, field=where)
        found.append(u)
    return tuple(found)


def load_evaluation(path: str | Path) -> Evaluation:
    """Read and check an evaluation results file.

    Raises:
        EvaluationError: the file is missing, not JSON, or not in format 1, or its chart is
            missing (the first problem, naming the file and the field).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise EvaluationError(
            "the evaluation results file does not exist", path=path,
            hint="write it, or remove 'evaluation' from the model in the manifest (the card then says results are not published yet)",
        ) from None
    except json.JSONDecodeError as exc:
        raise EvaluationError(f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"cannot read the evaluation results file: {exc}", path=path) from None
    evaluation = parse_evaluation(data, path)
    if evaluation.chart is not None and not evaluation.chart.is_file():
        raise EvaluationError(
            f"the chart '{data['chart']}' that the results name does not exist", path=path, field="chart",
            hint="run 'apto-release eval summarize' again, or remove 'chart' from the file",
        )
    return evaluation
