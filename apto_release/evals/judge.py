"""``eval judge``: judge a responses file with an LLM judge and write the judgement file that
``eval summarize`` reads, resumably (``evals.records``). The rules: docs/eval-runs.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from apto_release.errors import InputError
from apto_release.evals.benchmarks import Item, load_items
from apto_release.evals.client import ChatClient, Sampling
from apto_release.evals.generate import Progress, RunResult, bench_folder, response_key, response_order
from apto_release.evals.judging import JUDGE_ATTEMPTS, judge_messages, judgement_line, parse_judgement_output
from apto_release.evals.metrics import find_benchmark
from apto_release.evals.records import HASH_FIELD, ResumableOutput, numbered_lines, read_lines, request_hash

REQUIRED = ("benchmark", "item", "turn", "label", "answer")
#: The judge's first attempt decodes greedily; a retry of an unparseable answer samples (seed = attempt - 1).
RETRY_TEMPERATURE = 0.7
JUDGE_MAX_TOKENS = 2048


def judge_sampling(attempt: int, max_tokens: int = JUDGE_MAX_TOKENS) -> Sampling:
    """The judge's settings for attempt 1, 2, ... (greedy first, then sampled with a fixed seed)."""
    return Sampling(temperature=0.0 if attempt == 1 else RETRY_TEMPERATURE, top_p=1.0, max_tokens=max_tokens,
                    seed=attempt - 1)


def judgement_key(line: dict[str, Any]) -> tuple:
    return line["benchmark"], str(line["item"]), line.get("turn") or 0, line["model"]


def judgement_order(line: dict[str, Any]) -> tuple:
    return (*response_order(line), line["model"])


def read_responses(path: str | Path) -> list[dict[str, Any]]:
    """The lines of a responses file (``eval generate``), checked for the fields judging needs.

    Raises:
        InputError: missing file, malformed line, missing field, an unknown benchmark, or a
            response repeated (the same benchmark, item, turn and label: both lines named).
    """
    return [line for _, line in _numbered_responses(path)]


def _numbered_responses(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """``read_responses`` with each line's number in the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such responses file", path=path, hint="write it with apto-release eval generate")
    numbered = numbered_lines(path)
    seen: dict[tuple, int] = {}
    for number, line in numbered:
        for name in REQUIRED:
            if name not in line:
                raise InputError(f"a response line needs '{name}'", path=path, line=number, field=name)
        bench = find_benchmark(str(line["benchmark"]))
        if bench is None:
            raise InputError(f"unknown benchmark '{line['benchmark']}'", path=path, line=number, field="benchmark")
        line["benchmark"] = bench.name
        key = (*response_key(line), str(line["label"]))
        if key in seen:  # never a silent choice between two answers to one request
            raise InputError(f"{bench.name} item {line['item']} turn {line['turn']} ({line['label']}) repeats line {seen[key]}",
                             path=path, line=number, hint="keep one response per benchmark, item, turn and label")
        seen[key] = number
    if not numbered:
        raise InputError("the responses file has no response", path=path)
    return numbered


def judge(client: ChatClient | None, responses: str | Path, dest: str | Path, *, judge_name: str | None,
          bench_dir: str | Path | None = None, parallel: int = 4, max_tokens: int = JUDGE_MAX_TOKENS,
          progress: Progress | None = None) -> RunResult:
    """Judge every response of ``responses`` and write the judgement file ``dest``.

    Each request is built with ``judging.judge_messages`` (items from the benchmark loader, for
    the references); the answer is parsed with ``parse_judgement_output``; an unparseable one is
    asked again, up to ``JUDGE_ATTEMPTS`` in all, then written with ``"unparseable": raw text``.
    JMMLU lines are scored against the key (``extract_answer``), without the judge. Resume and
    partial-file rules as ``generate.generate``.

    Args:
        client: the judge (None only when every response is JMMLU's).
        judge_name: the judge's name written in each line.

    Raises:
        InputError: a malformed responses file, or a response whose item the benchmark lacks.
        EngineError: the judge failed; what was judged stays in ``<dest>.partial``.
    """
    numbered = _numbered_responses(responses)
    lines = [line for _, line in numbered]
    items = _items(numbered, bench_dir, Path(responses))
    answers: dict[tuple[str, str, str], dict[int, str]] = {}
    for line in lines:
        answers.setdefault((line["benchmark"], str(line["item"]), line["label"]), {})[int(line["turn"])] = line["answer"]
    kept = asked = 0
    pending: list[tuple[Item, dict[str, Any], list[dict[str, str]], str]] = []
    with ResumableOutput(dest, key=judgement_key, order=judgement_order) as out:
        for line in sorted(lines, key=response_order):
            item = items[(line["benchmark"], str(line["item"]))]
            turn = int(line["turn"])
            if not find_benchmark(item.benchmark).judged:
                digest = request_hash({"answer": line["answer"]})
                if out.kept(judgement_key(_side(line)), digest) is None:
                    out.add({**judgement_line(item, line["answer"], None, judge=None, side=line["label"]),
                             "served": served(line), HASH_FIELD: digest})
                else:
                    kept += 1
                continue
            given = answers[(line["benchmark"], str(line["item"]), line["label"])]
            so_far = [given.get(t, "") for t in range(1, turn + 1)]
            messages = judge_messages(item, so_far, turn=turn)
            digest = request_hash({"judge": judge_name, "messages": messages, "max_tokens": max_tokens})
            if out.kept(judgement_key(_side(line)), digest) is not None:
                kept += 1
            else:
                pending.append((item, line, messages, digest))
        if pending and client is None:
            raise InputError("the responses need a judge and none was given", path=Path(responses))
        if progress and pending:
            progress(f"judging {len(pending)} responses" + (f" ({kept} kept from an earlier run)" if kept else ""))
        for attempt in range(1, JUDGE_ATTEMPTS + 1):
            if not pending:
                break
            sampling = judge_sampling(attempt, max_tokens)
            again = []
            for index, completion in client.complete_many([(m, sampling) for _, _, m, _ in pending], parallel=parallel):
                item, line, messages, digest = pending[index]
                asked += 1
                parsed = parse_judgement_output(item.benchmark, completion.text)
                if parsed.ok or attempt == JUDGE_ATTEMPTS:
                    judged = judgement_line(item, line["answer"], parsed, judge=judge_name, side=line["label"],
                                            turn=int(line["turn"]))
                    raw = {"output": parsed.raw} if parsed.ok else {}  # unparseable: the line's own field holds it
                    out.add({**judged, **raw, "served": served(line), "attempts": attempt, HASH_FIELD: digest})
                else:
                    again.append(pending[index])
            pending = again
            if progress and pending and attempt < JUDGE_ATTEMPTS:
                progress(f"asking again for {len(pending)} unparseable judgement(s) (attempt {attempt + 1} of {JUDGE_ATTEMPTS})")
        written = out.finish()
    return RunResult(Path(dest), written, kept, asked)


def served(response: dict[str, Any]) -> dict[str, str]:
    """What served a response, as its judgement records it (``served``): the file or folder an
    engine was started for and the engine, or the model name asked of an engine given by URL
    (never the URL: it may name a private host)."""
    engine = response.get("engine") if isinstance(response.get("engine"), dict) else {}
    if engine.get("path"):
        record = {"name": str(engine["path"])}
        if engine.get("engine"):
            record["engine"] = str(engine["engine"])
        return record
    return {"name": str(response.get("model") or response["label"])}


def count_unparseable(path: str | Path) -> int:
    """How many lines of a judgement file are unparseable."""
    return sum("unparseable" in line for line in read_lines(Path(path)))


def _side(line: dict[str, Any]) -> dict[str, Any]:
    """A response line as a judgement key's fields (``model`` is the label; ``turn`` only for MT-Bench)."""
    bench = find_benchmark(str(line["benchmark"]))
    return {"benchmark": bench.name, "item": line["item"], "turn": line["turn"] if bench.turns else None,
            "model": line["label"]}


def _items(numbered: Sequence[tuple[int, dict[str, Any]]], bench_dir: str | Path | None, path: Path) -> dict[tuple[str, str], Item]:
    """The benchmark items the responses answer (all of each benchmark named)."""
    items: dict[tuple[str, str], Item] = {}
    for name in dict.fromkeys(line["benchmark"] for _, line in numbered):
        for item in load_items(name, bench_folder(bench_dir, name)):
            items[(item.benchmark, item.id)] = item
    for number, line in numbered:
        if (line["benchmark"], str(line["item"])) not in items:
            raise InputError(f"{line['benchmark']} has no item '{line['item']}'", path=path, line=number, field="item",
                             hint="give the --bench-dir the responses were generated from")
    return items
