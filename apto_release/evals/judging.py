"""Judge prompts, the strict parsing of a judge's output, JMMLU's answer letter, and judgement lines.

The prompts are data files (``apto_release/evals/prompts/<benchmark>.md``, one ``## section`` per
message); ``judge_messages`` fills them for one item and response. ``parse_judgement_output``
reads the judge's verdict by the rule in docs/eval-judging.md and never guesses: anything else is
``unparseable``. ``judgement_line`` writes exactly what ``evals.judgements`` reads.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from apto_release.evals.benchmarks import BenchmarkSpec, Item, load_spec, spec_names
from apto_release.evals.client import split_reasoning
from apto_release.evals.metrics import Benchmark, find_benchmark

PROMPT_FOLDER = "prompts"
#: How many times ``eval judge`` asks a judge before it records the output as unparseable.
JUDGE_ATTEMPTS = 3
_SECTION = re.compile(r"^## ([a-z0-9-]+)[ \t]*$", re.MULTILINE)
_PLACEHOLDER = re.compile(r"\{([a-z0-9_]+)\}")
# The verdict: the text in double square brackets ([[4]], [[8.5]], [[refused]]), FastChat's format.
_BRACKETS = re.compile(r"\[\[\s*([^\[\]\n]{1,20}?)\s*\]\]")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
# JMMLU: a letter A-D with no ASCII letter or digit next to it.
_LETTER = r"(?<![A-Za-z0-9])([A-D])(?![A-Za-z0-9])"
_MARKED = re.compile(r"(?:答え|解答|回答|正解|answer)\s*(?:は|:|：|=|is)?\s*[「『(（\[【*]*\s*" + _LETTER, re.IGNORECASE)
_STANDALONE = re.compile(_LETTER)


# ---------------------------------------------------------------------------------------------
# Prompts


@lru_cache(maxsize=None)
def load_prompt(name: str) -> dict[str, str]:
    """The sections of a judge prompt file (``answercarefully.md``): section name -> text."""
    text = resources.files("apto_release.evals").joinpath(PROMPT_FOLDER, name).read_text("utf-8")
    parts = _SECTION.split(text)
    sections = {parts[i]: parts[i + 1].strip("\n") for i in range(1, len(parts), 2)}
    if "system" not in sections or "user" not in sections:
        raise ValueError(f"{name}: a judge prompt needs '## system' and '## user' sections")
    return sections


def judge_messages(item: Item, answers: str | Sequence[str], *, turn: int = 1) -> list[dict[str, str]]:
    """The judge's chat messages for one item and the model's answer(s).

    Args:
        item: the benchmark item.
        answers: the model's response (or, MT-Bench-ja, its responses to each turn so far);
            reasoning (``</think>``) is removed before the judge sees it.
        turn: the turn judged (MT-Bench-ja's second turn is judged with the whole conversation).

    Raises:
        ValueError: the benchmark needs no judge (JMMLU), or too few answers for ``turn``.
    """
    spec = load_spec(item.benchmark)
    if spec.judge_prompt is None:
        raise ValueError(f"{item.benchmark} is scored against its answer key, not judged")
    answers = [answers] if isinstance(answers, str) else list(answers)
    if not 1 <= turn <= len(item.turns) or len(answers) < turn:
        raise ValueError(f"{item.benchmark} item {item.id}: judging turn {turn} needs {turn} answers, got {len(answers)}")
    answers = [split_reasoning(a)[0] for a in answers]
    values = {"question": item.turns[0], "answer": answers[0], "reference": (item.reference or ("",))[0]}
    for number in range(1, turn + 1):
        values[f"question_{number}"] = item.turns[number - 1]
        values[f"answer_{number}"] = answers[number - 1]
        if item.reference:
            values[f"ref_answer_{number}"] = item.reference[number - 1]
    sections = load_prompt(spec.judge_prompt)
    suffix = ("-turn2" if turn > 1 else "") + ("-reference" if item.reference and "system-reference" in sections else "")
    return [
        {"role": "system", "content": fill(sections["system" + suffix], values)},
        {"role": "user", "content": fill(sections["user" + suffix], values)},
    ]


def fill(template: str, values: dict[str, str]) -> str:
    """``template`` with each ``{name}`` replaced, in one pass (a response's own braces stay as they are).

    Raises:
        KeyError: a placeholder without a value.
    """
    missing = sorted(set(_PLACEHOLDER.findall(template)) - set(values))
    if missing:
        raise KeyError(f"no value for {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


# ---------------------------------------------------------------------------------------------
# Parsing the judge


@dataclass(frozen=True)
class Parsed:
    """A judge's output read by the rule: ``value`` (a score or a lower-case verdict), or None when unparseable."""

    value: int | float | str | None
    raw: str

    @property
    def ok(self) -> bool:
        return self.value is not None


def parse_judgement_output(benchmark: str | Benchmark, text: str) -> Parsed:
    """The judge's verdict by the documented rule (docs/eval-judging.md), or unparseable.

    The judge's own reasoning (before ``</think>``) is dropped; every ``[[…]]`` in the rest must
    hold the same value, and that value must be on the benchmark's scale (an integer 1-5 for
    AnswerCarefully, a number 1-10 for MT-Bench-ja, one of the verdict words otherwise).
    """
    bench = _benchmark(benchmark)
    answer, _ = split_reasoning(text)
    found = {_value(bench, m) for m in _BRACKETS.findall(answer)}
    if len(found) != 1 or None in found:
        return Parsed(None, text)
    return Parsed(found.pop(), text)


def _value(bench: Benchmark, token: str) -> int | float | str | None:
    token = unicodedata.normalize("NFKC", token).strip()
    if bench.output == "verdict":
        word = token.casefold()
        return word if word in bench.verdicts else None
    if bench.output != "score" or not _NUMBER.fullmatch(token):
        return None
    number = float(token)
    low, high = bench.scores
    if not low <= number <= high:
        return None
    if bench.integer_scores:
        return int(number) if "." not in token else None
    return int(number) if number == int(number) else number


def format_judgement_output(benchmark: str | Benchmark, value: int | float | str, reason: str = "") -> str:
    """A judge output that the rule reads as ``value`` (the format the prompts ask for; tests and the scripted judge)."""
    bench = _benchmark(benchmark)
    label = "Verdict" if bench.name == "SORRY-Bench" else "判定" if bench.output == "verdict" else "評価"
    return f"{reason}\n{label}: [[{value}]]".lstrip("\n")


def extract_answer(text: str) -> str | None:
    """JMMLU: the letter a model chose, by the rule in docs/eval-judging.md, or None.

    After dropping the reasoning and folding full-width letters: the letter after the last
    「答え」/「解答」/「回答」/「正解」/"Answer" marker; else the only distinct standalone A-D
    in the answer; else None (counted as wrong).
    """
    answer = unicodedata.normalize("NFKC", split_reasoning(text)[0])
    marked = _MARKED.findall(answer)
    if marked:
        return marked[-1].upper()
    letters = set(_STANDALONE.findall(answer))
    return letters.pop() if len(letters) == 1 else None


def _benchmark(benchmark: str | Benchmark) -> Benchmark:
    bench = benchmark if isinstance(benchmark, Benchmark) else find_benchmark(benchmark)
    if bench is None:
        raise ValueError(f"unknown benchmark {benchmark!r}")
    return bench


# ---------------------------------------------------------------------------------------------
# Judgement lines


def judgement_line(item: Item, response: str | Sequence[str], parsed: Parsed | None, *, judge: str | None,
                   side: str, turn: int | None = None) -> dict[str, Any]:
    """The judgement-file line (``evals.judgements``) for one item, response and judgement.

    Args:
        item: the benchmark item.
        response: the model's response (JMMLU: read for the chosen letter; otherwise not written,
            the responses file keeps it).
        parsed: the judge's parsed output; unparseable after the retries: written as
            ``"unparseable": raw text``, which ``eval summarize`` counts and leaves out. None for JMMLU.
        judge: the judge's name (None for JMMLU, scored against its key).
        side: "before", "after", or a model id that ``--before``/``--after`` maps.
        turn: MT-Bench-ja's turn (1 or 2).
    """
    bench = _benchmark(item.benchmark)
    line: dict[str, Any] = {"benchmark": bench.name, "item": item.id, "model": side}
    if judge is not None:
        line["judge"] = judge
    if item.category is not None:
        line["category"] = item.category
    if bench.turns:
        if turn is None:
            raise ValueError(f"{bench.name} judgements need the turn")
        line["turn"] = turn
    if not bench.judged:
        text = response if isinstance(response, str) else response[-1]
        line["chosen"] = extract_answer(text)
        line["correct"] = item.answer
        return line
    if parsed is None:
        raise ValueError(f"{bench.name} needs the judge's parsed output")
    if parsed.ok:
        line[bench.output] = parsed.value
    else:
        line["unparseable"] = parsed.raw
    return line



# ---------------------------------------------------------------------------------------------
# The README's table of the benchmarks and their judges

BENCHMARK_TABLE_START = "<!-- the benchmark table: apto_release.evals.judging.benchmark_table() -->"
BENCHMARK_TABLE_END = "<!-- end of the benchmark table -->"


def benchmark_table() -> str:
    """The README's Markdown table of every benchmark: source and version, licence and access,
    sampling settings and judge, from the data files (a test keeps the README equal to it)."""
    lines = ["| benchmark | source (version) | licence and access | sampling (T / top_p / max_tokens / seed / thinking) | judge |",
             "|---|---|---|---|---|"]
    for name in spec_names():
        spec = load_spec(name)
        cells = [spec.name, _source_cell(spec), f"{spec.source['license']}; {spec.source['access']}", _sampling_cell(spec),
                 _judge_cell(spec)]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def _source_cell(spec: BenchmarkSpec) -> str:
    if spec.hub_id:
        link = f"[`{spec.hub_id}`](https://huggingface.co/datasets/{spec.hub_id})"
    else:  # "owner/repo@branch:folder"
        repo, _, rest = spec.source["github"].partition("@")
        branch, _, folder = rest.partition(":")
        link = f"[{repo} `{branch}`](https://github.com/{repo}/tree/{branch}/{folder})"
    files = ", ".join(f"`{f}`" for f in (*spec.source["files"], *(spec.reference_file or {}).get("files", ())))
    version = f"commit `{spec.revision[:7]}`" if spec.pinned else f"revision `{spec.revision}`, unpinned"
    note = spec.readme.get("source")
    return f"{link}: {files}" + (f", {note}" if note else "") + f" ({version})"


def _number(value: float) -> str:
    return f"{value:g}" if value != int(value) else f"{value:.1f}"


def _sampling_cell(spec: BenchmarkSpec) -> str:
    s = spec.sampling
    temperature = _number(s.temperature)
    if s.temperature_by_category:
        per = ", ".join(f"{c} {_number(t)}" for c, t in s.temperature_by_category.items())
        temperature = f"per category: {per}, others {temperature}"
    seed = "none" if s.seed is None else str(s.seed)
    values = f"{temperature} / {_number(s.top_p)} / {s.max_tokens} / {seed} / {'on' if s.enable_thinking else 'off'}"
    note = spec.readme.get("sampling")
    return values + (f" ({note})" if note else "")


def _judge_cell(spec: BenchmarkSpec) -> str:
    note = spec.readme.get("judge", "")
    if not spec.judge_prompt:
        return note
    bench = spec.benchmark
    scale = f"{bench.scores[0]}-{bench.scores[1]}" if bench.output == "score" else "/".join(bench.verdicts)
    return f"[{note or spec.judge_prompt}](apto_release/evals/prompts/{spec.judge_prompt}): `{format_judgement_output(bench, scale)}`"
