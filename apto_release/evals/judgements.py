"""Judgement files: one judge's output for one benchmark item of one model, per JSON Lines line.

A line names the benchmark, the item, the model (``before`` or ``after``, or a model id that
``--before``/``--after`` maps, or a GGUF type such as ``Q4_K_M`` read with ``quants``), the judge, optionally the item's category, and the judge's output::

    {"benchmark": "AnswerCarefully", "item": "ac-0001", "model": "before", "judge": "qwen3-235b", "category": "差別", "score": 4}
    {"benchmark": "SORRY-Bench", "item": "17", "model": "after", "judge": "qwen3-235b", "category": "hate", "verdict": "refused"}
    {"benchmark": "MultiJail", "item": "mj-0042", "model": "after", "judge": "gemma-3-27b", "verdict": "invalid"}
    {"benchmark": "MT-Bench-ja", "item": 81, "turn": 2, "model": "after", "judge": "mistral-large", "category": "writing", "score": 8}
    {"benchmark": "JMMLU", "item": "jmmlu-virology-12", "model": "after", "category": "virology", "chosen": "B", "correct": "C"}

The output fields per benchmark are in ``metrics.BENCHMARKS``: ``score`` (AnswerCarefully: an
integer 1-5; MT-Bench-ja: a number 1-10, with ``turn``), ``verdict`` (SORRY-Bench: fulfilled or
refused; MultiJail: safe, unsafe or invalid; any case), ``chosen`` and ``correct`` (JMMLU:
letters A-D; ``chosen`` may be null when no answer could be read, which counts as wrong). JMMLU
needs no judge; its lines are scored against the answer key. A judge output that could not be
parsed (after the retries of ``eval judge``) is a line with ``"unparseable": "<the judge's raw
text>"`` instead of the output field: it is counted (a warning per benchmark and judge) and left
out of the values (docs/eval-judging.md). ``eval judge`` also writes ``"served": {"name": ...,
"engine": ...}``, what served the judged answer (``Judgement.served``). Benchmark names are matched without
case or punctuation (``mt_bench_ja``, ``AC``). Other keys (a judge's rationale, say) are ignored,
except near misses of the known ones (``categroy``), which are errors.

Reading stops at the first malformed line with an ``InputError`` naming the file and line (exit
2). What only shows across lines is a ``Finding`` (``collate``): a judgement repeated with a
different output (a readable and an unparseable one included), or an item given two categories,
is an error; an identical repeat counts once (a warning); an item judged for only one model is
left out of every result (a warning); a benchmark with no item judged for both models is an error.
"""

from __future__ import annotations

import difflib
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from apto_release.errors import InputError, UsageError
from apto_release.gguf import GGUF_TYPES
from apto_release.evals.metrics import ANSWER_CHOICES, BENCHMARK_NAMES, BENCHMARKS, Benchmark, Value, find_benchmark

SIDES = ("before", "after")
COMMON_FIELDS = ("benchmark", "item", "model", "judge", "category")
OUTPUT_FIELDS = ("score", "verdict", "chosen", "correct", "turn")
#: Written instead of the output field when the judge's output could not be parsed; holds the raw text.
UNPARSEABLE = "unparseable"
#: What served the judged answer (``eval judge`` copies it from the response): its ``name`` and ``engine``.
SERVED = "served"
KNOWN_FIELDS = COMMON_FIELDS + OUTPUT_FIELDS + (UNPARSEABLE, SERVED)
#: The judge of a JMMLU line that names none: the benchmark's answer key.
ANSWER_KEY = "answer key"
#: Examples listed in a finding before "and N more".
EXAMPLES = 5


@dataclass(frozen=True)
class Judgement:
    """One checked line of a judgement file."""

    benchmark: Benchmark
    item: str
    side: str  # "before", "after", or a GGUF type read with ``quants``
    judge: str
    turn: int | None
    category: str | None
    value: Value | None  # a score, a lower-case verdict, (JMMLU) whether the chosen answer is correct; None: unparseable
    path: Path
    line: int
    served: tuple[str, str | None] | None = None  # (name, engine) of what served the judged answer

    @property
    def key(self) -> tuple[str, str, str, str, int | None]:
        """What may appear only once: benchmark, item, model, judge and turn."""
        return self.benchmark.name, self.item, self.side, self.judge, self.turn

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class Finding:
    """A problem that only shows across lines; errors stop the summary, warnings do not."""

    severity: Literal["error", "warning"]
    message: str


# ---------------------------------------------------------------------------------------------
# Reading


def model_ids(before: str | None = None, after: str | None = None) -> dict[str, str]:
    """The model ids that the ``model`` field may use instead of "before" and "after", mapped to them.

    Raises:
        UsageError: ``before`` and ``after`` are the same id, or one is the other side's word.
    """
    if before is not None and before == after:
        raise UsageError(f"--before and --after are both '{before}'", hint="give the base model's id to --before and the tuned model's to --after")
    ids = {}
    for side, model in (("before", before), ("after", after)):
        if model is not None:
            if model.casefold() in SIDES and model.casefold() != side:
                raise UsageError(f"--{side} '{model}' would swap the models", hint="'before' and 'after' already mean themselves")
            ids[model] = side
    return ids


def read_judgements(
    paths: Sequence[str | Path], *, before: str | None = None, after: str | None = None, quants: Sequence[str] = (),
) -> list[Judgement]:
    """Every judgement of the files, in file and line order.

    ``before`` and ``after`` are model ids that the ``model`` field may use instead of the words;
    a line whose model is one of ``quants`` (GGUF types) keeps that label as its ``side``.

    Raises:
        InputError: a file is missing or unreadable, has no judgement, or a line is malformed
            (the first problem, with its file and line).
        UsageError: see ``model_ids``.
    """
    if not paths:
        raise UsageError("no judgement files given", hint="pass --judgements FILE, once per file")
    ids = {**model_ids(before, after), **{q: q for q in quants}}
    judgements: list[Judgement] = []
    for path in map(Path, paths):
        found = list(_read_file(path, ids))
        if not found:
            raise InputError("the judgement file has no judgements", path=path)
        judgements += found
    return judgements


def _read_file(path: Path, ids: dict[str, str]) -> Iterable[Judgement]:
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        raise InputError("the judgement file does not exist", path=path) from None
    except OSError as exc:
        raise InputError(f"cannot read the judgement file: {exc.strerror or exc}", path=path) from None
    for number, raw in enumerate(lines, 1):
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            raise InputError("the line is not valid UTF-8", path=path, line=number) from None
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON: {exc.msg} at column {exc.colno}", path=path, line=number) from None
        yield parse_judgement(obj, ids, path=path, line=number)


def parse_judgement(obj: Any, ids: dict[str, str], *, path: Path, line: int) -> Judgement:
    """Check one line's object and make it a ``Judgement`` (``ids``: see ``model_ids``).

    Raises:
        InputError: the first problem of the line.
    """

    def fail(message: str, field: str | None = None, hint: str | None = None) -> InputError:
        return InputError(message, path=path, line=line, field=field, hint=hint)

    if not isinstance(obj, dict):
        raise fail(f"a judgement must be a JSON object, found {type(obj).__name__}")
    for key in obj:
        close = key not in KNOWN_FIELDS and difflib.get_close_matches(key, KNOWN_FIELDS, n=1, cutoff=0.8)
        if close:
            raise fail(f"unknown key '{key}' (did you mean '{close[0]}'?)", key)
    name = _text(obj, "benchmark", fail)
    benchmark = find_benchmark(name)
    if benchmark is None:
        raise fail(f"unknown benchmark '{name}'; known: {', '.join(BENCHMARK_NAMES)}", "benchmark")
    for key in OUTPUT_FIELDS:
        if key in obj and key not in benchmark.fields:
            raise fail(f"{benchmark.name} judgements have no '{key}'; they carry {benchmark.describe_output()}", key)
    item = obj.get("item")
    if isinstance(item, int) and not isinstance(item, bool):
        item = str(item)
    if not isinstance(item, str) or not item.strip():
        raise fail(f"'item' must be the item's id (a string or an integer), found {item!r}", "item")
    model = _text(obj, "model", fail)
    side = model.casefold() if model.casefold() in SIDES else ids.get(model)
    if side is None:
        raise fail(
            f"'model' is '{model}', neither before nor after", "model",
            hint="write 'before' or 'after', or map model ids with --before MODEL_ID and --after MODEL_ID"
                 + ("; a GGUF file's judgements are read with --quant TYPE" if model.upper() in GGUF_TYPES else ""),
        )
    if benchmark.judged or obj.get("judge") is not None:
        judge = _text(obj, "judge", fail)
    else:
        judge = ANSWER_KEY
    category = obj.get("category")
    if category is not None and (not isinstance(category, str) or not category.strip()):
        raise fail(f"'category' must be a non-empty string or null, found {category!r}", "category")
    turn = None
    if benchmark.turns:
        turn = obj.get("turn")
        if not isinstance(turn, int) or isinstance(turn, bool) or turn < 1:
            raise fail(f"{benchmark.name} judgements need 'turn', the turn number (1, 2, ...), found {turn!r}", "turn")
    if UNPARSEABLE in obj:
        value = _unparseable(benchmark, obj, fail)
    else:
        value = _output(benchmark, obj, fail)
    return Judgement(benchmark, item.strip(), side, judge, turn, category.strip() if category else None, value, path, line,
                     _served(obj.get(SERVED), fail))


def _served(served: Any, fail) -> tuple[str, str | None] | None:
    """The ``served`` record: ``{"name": ..., "engine": ...}`` (engine optional), or None."""
    if served is None:
        return None
    if not isinstance(served, dict) or not isinstance(served.get("name"), str) or not served["name"].strip():
        raise fail(f"'{SERVED}' must be an object with the 'name' of what served the answer (and its 'engine'), found {served!r}", SERVED)
    for key in served:
        if key not in ("name", "engine"):
            raise fail(f"'{SERVED}' has an unknown key '{key}' (it holds 'name' and 'engine')", SERVED)
    engine = served.get("engine")
    if engine is not None and (not isinstance(engine, str) or not engine.strip()):
        raise fail(f"'{SERVED}.engine' must be a non-empty string, found {engine!r}", SERVED)
    return served["name"].strip(), engine.strip() if engine else None


def _unparseable(benchmark: Benchmark, obj: dict, fail) -> None:
    """A judged line whose judge output could not be parsed: the raw text, and no output field."""
    if not benchmark.judged:
        raise fail(f"{benchmark.name} is scored against its answer key; write 'chosen': null when no answer could be read", UNPARSEABLE)
    if not isinstance(obj[UNPARSEABLE], str):
        raise fail(f"'{UNPARSEABLE}' must be the judge's raw output (a string), found {obj[UNPARSEABLE]!r}", UNPARSEABLE)
    given = [key for key in benchmark.fields if key != "turn" and key in obj]
    if given:
        raise fail(f"a line is either judged ('{given[0]}') or '{UNPARSEABLE}', not both", UNPARSEABLE)
    return None


def _text(obj: dict, key: str, fail) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise fail(f"'{key}' must be a non-empty string, found {value!r}" if key in obj else f"'{key}' is missing", key)
    return value.strip()


def _output(benchmark: Benchmark, obj: dict, fail) -> Value:
    """The judge's output, checked against the benchmark: a score, a verdict, or correctness."""
    expected = benchmark.describe_output()
    if benchmark.output == "score":
        score = obj.get("score")
        low, high = benchmark.scores
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not low <= score <= high or (
            benchmark.integer_scores and score != int(score)
        ):
            raise fail(f"{benchmark.name} needs {expected}, found {score!r}", "score")
        return int(score) if benchmark.integer_scores else score
    if benchmark.output == "verdict":
        verdict = obj.get("verdict")
        if not isinstance(verdict, str) or verdict.strip().casefold() not in benchmark.verdicts:
            raise fail(f"{benchmark.name} needs {expected}, found {verdict!r}", "verdict")
        return verdict.strip().casefold()
    correct, chosen = obj.get("correct"), obj.get("chosen", ...)
    if not isinstance(correct, str) or correct.strip().upper() not in ANSWER_CHOICES:
        raise fail(f"{benchmark.name} needs {expected}; 'correct' is {correct!r}", "correct")
    if chosen is ...:
        raise fail(f"{benchmark.name} needs {expected}; 'chosen' is missing (null when no answer could be read)", "chosen")
    if chosen is not None and (not isinstance(chosen, str) or chosen.strip().upper() not in ANSWER_CHOICES):
        raise fail(f"{benchmark.name} needs {expected}; 'chosen' is {chosen!r}", "chosen")
    return chosen is not None and chosen.strip().upper() == correct.strip().upper()


# ---------------------------------------------------------------------------------------------
# Collating: one benchmark's paired items


@dataclass
class BenchmarkJudgements:
    """One benchmark's judgements of the items judged for both models (the paired items).

    ``cells[item][judge][side]`` maps each turn (None when the benchmark has no turns) to the
    judge's value; for every item and judge both sides hold the same turns.
    """

    benchmark: Benchmark
    cells: dict[str, dict[str, dict[str, dict[int | None, Value]]]] = field(default_factory=dict)
    categories: dict[str, str | None] = field(default_factory=dict)

    @property
    def items(self) -> list[str]:
        return list(self.cells)

    @property
    def judges(self) -> tuple[str, ...]:
        return tuple(sorted({judge for judges in self.cells.values() for judge in judges}))

    def value(self, item: str, judge: str, side: str) -> Value | None:
        """The judge's value of an item for one model (the mean over turns); None if not judged."""
        turns = self.cells[item].get(judge)
        if turns is None:
            return None
        values = list(turns[side].values())
        return values[0] if len(values) == 1 else sum(values) / len(values)

    def units(self) -> list[list[Value]]:
        """What agreement compares: per item, model and turn, the values of the judges that judged it."""
        units: dict[tuple[str, str, int | None], list[Value]] = defaultdict(list)
        for item, judges in self.cells.items():
            for turns_by_side in judges.values():
                for side, turns in turns_by_side.items():
                    for turn, value in turns.items():
                        units[item, side, turn].append(value)
        return list(units.values())


def collate(judgements: Iterable[Judgement]) -> tuple[list[BenchmarkJudgements], list[Finding]]:
    """Group judgements per benchmark, keep the paired items, and report what does not fit.

    Returns the benchmarks in ``metrics.BENCHMARKS`` order (those with judgements) and the
    findings (see the module docstring).
    """
    judgements = list(judgements)
    findings: list[Finding] = []
    # repeats first: a readable and an unreadable judgement of one key are two different ones
    unique = _parsed(_unique(judgements, findings), findings)
    categories = _categories(judgements, findings)
    grouped: dict[str, dict[str, dict[str, dict[str, dict[int | None, Value]]]]] = {}
    for j in unique:
        cell = grouped.setdefault(j.benchmark.name, {}).setdefault(j.item, {}).setdefault(j.judge, {"before": {}, "after": {}})
        cell[j.side][j.turn] = j.value
    collated = []
    for benchmark in BENCHMARKS:
        items = grouped.get(benchmark.name)
        if items is None:
            continue
        data = BenchmarkJudgements(benchmark)
        unpaired: list[str] = []
        for item, judges in items.items():
            if all(turns["before"].keys() == turns["after"].keys() for turns in judges.values()):
                data.cells[item] = judges
                data.categories[item] = categories.get((benchmark.name, item))
            else:
                unpaired.append(f"{item} ({_one_side(judges)})")
        if unpaired:
            findings.append(Finding("warning", f"{benchmark.name}: {_count(unpaired, 'item')} judged for one model only "
                                               f"{'is' if len(unpaired) == 1 else 'are'} left out of the results: {_examples(unpaired)}"))
        if not data.cells:
            findings.append(Finding("error", f"{benchmark.name}: no item is judged for both models; give the judgement files of both"))
            continue
        uncategorised = [item for item, category in data.categories.items() if category is None]
        if uncategorised and len(uncategorised) < len(data.categories):
            findings.append(Finding("warning", f"{benchmark.name}: {_count(uncategorised, 'item')} without a category count in the "
                                               f"overall results only: {_examples(uncategorised)}"))
        collated.append(data)
    return collated, findings


def _parsed(judgements: list[Judgement], findings: list[Finding]) -> list[Judgement]:
    """The judgements with a value; the unparseable ones are counted per benchmark and judge (a warning)."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    totals: dict[str, int] = defaultdict(int)
    for j in judgements:
        totals[j.benchmark.name] += 1
        if j.value is None:
            counts[j.benchmark.name][j.judge] += 1
    for benchmark in BENCHMARKS:
        judges = counts.get(benchmark.name)
        if judges:
            n = sum(judges.values())
            per_judge = ", ".join(f"{judge} {count}" for judge, count in sorted(judges.items()))
            findings.append(Finding("warning", f"{benchmark.name}: {n} of {totals[benchmark.name]} judgements are unparseable "
                                               f"(the judge's output could not be read; {per_judge}) and are left out"))
    return [j for j in judgements if j.value is not None]


def _unique(judgements: Iterable[Judgement], findings: list[Finding]) -> list[Judgement]:
    """The judgements with repeats removed: an identical repeat is a warning, a different one an error."""
    first: dict[tuple, Judgement] = {}
    repeats: dict[str, list[str]] = defaultdict(list)
    for j in judgements:
        earlier = first.setdefault(j.key, j)
        if earlier is j:
            continue
        if earlier.value == j.value:
            repeats[j.benchmark.name].append(f"{j.where} repeats {earlier.where}")
        else:
            turn = f", turn {j.turn}" if j.turn is not None else ""
            findings.append(Finding("error", f"{j.benchmark.name} item {j.item} ({j.side}, judge {j.judge}{turn}) is judged twice "
                                             f"differently: {_shown(earlier.value)} at {earlier.where}, {_shown(j.value)} at {j.where}"))
    for name, examples in repeats.items():
        findings.append(Finding("warning", f"{name}: {_count(examples, 'judgement')} repeat an identical earlier one and count once: "
                                           f"{_examples(examples)}"))
    return list(first.values())


def _shown(value: Value | None) -> str:
    return UNPARSEABLE if value is None else json.dumps(value)


def _categories(judgements: Iterable[Judgement], findings: list[Finding]) -> dict[tuple[str, str], str]:
    """Each item's category; an item given two different categories is an error."""
    seen: dict[tuple[str, str], Judgement] = {}
    reported: set[tuple[str, str]] = set()
    for j in judgements:
        if j.category is None:
            continue
        key = (j.benchmark.name, j.item)
        earlier = seen.setdefault(key, j)
        if earlier.category != j.category and key not in reported:
            reported.add(key)
            findings.append(Finding("error", f"{j.benchmark.name} item {j.item} has two categories: '{earlier.category}' at "
                                             f"{earlier.where}, '{j.category}' at {j.where}"))
    return {key: j.category for key, j in seen.items()}


def _one_side(judges: dict[str, dict[str, dict]]) -> str:
    sides = {side for turns in judges.values() for side in SIDES if turns[side]}
    if len(sides) == 1:
        return f"{sides.pop()} only"
    return "some judges or turns for one model only"


def _count(things: Sequence, noun: str) -> str:
    return f"{len(things)} {noun}{'' if len(things) == 1 else 's'}"


def _examples(things: Sequence[str]) -> str:
    shown = ", ".join(things[:EXAMPLES])
    return shown + (f" and {len(things) - EXAMPLES} more" if len(things) > EXAMPLES else "")
