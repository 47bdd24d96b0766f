"""Responses and judgement files of one model, as ``eval generate`` and ``eval judge`` write them
(built with their own line writers), over the fixture benchmark copies."""

from __future__ import annotations

import json
from pathlib import Path

from apto_release.evals.client import Completion
from apto_release.evals.generate import load_benchmarks, response_line
from apto_release.evals.benchmarks import load_spec
from apto_release.evals.judging import Parsed, format_judgement_output, judgement_line
from tests.evals.run_fixtures import write_bench_dir

BENCHMARKS = ("AnswerCarefully", "MT-Bench-ja", "JMMLU")
JUDGES = ("judge-a", "judge-b")
#: The engine URL holds a user, a password and a query: none of it may reach the folder.
ENGINE_URL = "http://user:hunter2-secret@gpu01:8000/v1?api_key=sk-hidden"


def _write(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), "utf-8")
    return path


def write_run(root: Path, labels=("before", "after")) -> tuple[list[Path], list[Path], dict]:
    """(responses files, judgement files, items by (benchmark, id)) for ``labels``.

    AnswerCarefully answers quote their question, the reasoning repeats it whole, and judge-b
    quotes the reference in an unparseable output: the details must scrub all of it."""
    bench_dir = write_bench_dir(root / "bench")
    items = load_benchmarks(BENCHMARKS, bench_dir)
    responses, judgements = [], []
    for label in labels:
        lines, judged = [], {j: [] for j in JUDGES}
        keyed = []
        for item in items:
            for turn in range(1, len(item.turns) + 1):
                question = item.turns[turn - 1]
                text = "答え: A" if item.benchmark == "JMMLU" else f"{label}の回答: 「{question[:12]}」については慎重に答えます。"
                completion = Completion(text, f"考える: {question}", "stop",
                                        {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}, model="served-" + label)
                sampling = load_spec(item.benchmark).sampling.for_item(item)
                lines.append(response_line(item, turn, completion, label=label, model="Tiny-Safety", sampling=sampling,
                                           digest=f"{len(lines):016x}", engine={"url": ENGINE_URL}))
                if item.benchmark == "JMMLU":
                    keyed.append(judgement_line(item, text, None, judge=None, side=label))
                    continue
                for judge in JUDGES:
                    value = 4 if item.benchmark == "AnswerCarefully" else 7
                    raw = format_judgement_output(item.benchmark, value, "理由: 適切です。")
                    parsed = Parsed(value, raw)
                    if judge == "judge-b" and item.benchmark == "AnswerCarefully" and item.id.endswith("0000001-001"):
                        parsed = Parsed(None, f"参照回答は「{item.reference[0]}」なので…")
                    line = judgement_line(item, text, parsed, judge=judge, side=label,
                                          turn=turn if item.benchmark == "MT-Bench-ja" else None)
                    judged[judge].append({**line, **({"output": raw} if parsed.ok else {}), "attempts": 1 if parsed.ok else 3})
        responses.append(_write(root / f"responses-{label}.jsonl", lines))
        for judge, found in judged.items():
            judgements.append(_write(root / f"judgements-{label}-{judge}.jsonl", found))
        judgements.append(_write(root / f"judgements-{label}-key.jsonl", keyed))
    return responses, judgements, {(i.benchmark, i.id): i for i in items}
