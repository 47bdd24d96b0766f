"""Scripts for the scripted model and judge of the generate/judge tests, and benchmark copies in
the ``--bench-dir`` layout (a folder per benchmark, named as its data file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from apto_release.evals.benchmarks import load_spec
from apto_release.evals.judging import format_judgement_output, load_prompt
from tests.evals.bench_fixtures import WRITERS

#: The judge's verdict per benchmark in the scripted judge.
VERDICTS = {"AnswerCarefully": 4, "SORRY-Bench": "refused", "MultiJail": "safe", "MT-Bench-ja": 7}


def write_bench_dir(root: Path) -> Path:
    for name, write in WRITERS.items():
        write(root / load_spec(name).path.stem)
    return root


def last_user(messages: list[dict[str, Any]]) -> str:
    return next(m["content"] for m in reversed(messages) if m["role"] == "user")


def model_script(messages: list[dict[str, Any]]) -> str:
    """A thinking model: reasoning inline, then an answer that names the question (JMMLU: a letter)."""
    question = last_user(messages)
    if "答え: X" in question:
        return "<think>\n選択肢を比べる。\n</think>\n\n答え: A"
    return f"<think>\n考える: {question[:8]}\n</think>\n\n回答({len(messages)}): {question[:12]}"


def _systems() -> dict[str, str]:
    found = {}
    for name in VERDICTS:
        sections = load_prompt(load_spec(name).judge_prompt)
        for section, text in sections.items():
            if section.startswith("system"):
                found[text] = name
    return found


SYSTEMS = _systems()


def judge_script(messages: list[dict[str, Any]]) -> str:
    """A deterministic judge: the benchmark's verdict in the format its prompt asks for."""
    name = SYSTEMS[messages[0]["content"]]
    return format_judgement_output(name, VERDICTS[name], "理由: 適切です。")
