"""``eval generate``: ask a model every item of the benchmarks and write one response line per
item and turn, resumably (``evals.records``). The responses file's format: docs/eval-runs.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from apto_release.evals.benchmarks import Item, load_items, load_spec
from apto_release.evals.client import ChatClient, Completion, Sampling
from apto_release.evals.records import HASH_FIELD, ResumableOutput, natural, request_hash

Progress = Callable[[str], None]


@dataclass(frozen=True)
class RunResult:
    """What a generate or judge run did: lines ``written`` to ``dest``, how many were ``kept``
    from an earlier run, how many requests were ``asked``."""

    dest: Path
    written: int
    kept: int
    asked: int


def bench_folder(bench_dir: str | Path | None, name: str) -> Path | None:
    """The local copy of benchmark ``name`` under ``--bench-dir``: its subfolder named as its
    data file (``answercarefully``, ``mt-bench-ja``, ...) when there is one, else the folder itself."""
    if bench_dir is None:
        return None
    sub = Path(bench_dir) / name.lower()
    return sub if sub.is_dir() else Path(bench_dir)


def load_benchmarks(names: Sequence[str], bench_dir: str | Path | None = None, *, limit: int | None = None) -> list[Item]:
    """The items of each benchmark (the first ``limit`` of each, in file order), benchmarks in the order given.

    Raises:
        UsageError: an unknown benchmark. InputError: see ``benchmarks.load_items``.
    """
    items: list[Item] = []
    for name in dict.fromkeys(load_spec(n).name for n in names):
        found = load_items(name, bench_folder(bench_dir, name))
        items.extend(found[:limit] if limit is not None else found)
    return items


def response_order(line: dict[str, Any]) -> tuple:
    """The stable order of responses (and judgements): benchmark, item, turn."""
    return line["benchmark"], natural(line["item"]), line.get("turn") or 0


def response_key(line: dict[str, Any]) -> tuple:
    return line["benchmark"], str(line["item"]), line.get("turn") or 0


def response_line(item: Item, turn: int, completion: Completion, *, label: str, model: str, sampling: Sampling,
                  digest: str, engine: dict[str, Any]) -> dict[str, Any]:
    """One line of the responses file."""
    engine = dict(engine, served_model=completion.model) if completion.model else dict(engine)
    return {
        "benchmark": item.benchmark, "item": item.id, "turn": turn, "category": item.category, "label": label,
        "model": model, "answer": completion.text, "reasoning": completion.reasoning,
        "finish_reason": completion.finish_reason, "usage": completion.usage, "sampling": asdict(sampling),
        HASH_FIELD: digest, "prompt": item.turns[turn - 1], "engine": engine,
    }


def generate(client: ChatClient, items: Sequence[Item], dest: str | Path, *, model: str, label: str,
             engine: dict[str, Any] | None = None, parallel: int = 4, max_tokens: int | None = None,
             progress: Progress | None = None) -> RunResult:
    """Ask ``client`` every item (each turn of a multi-turn item after the earlier answers, in one
    conversation) and write the responses file ``dest``.

    Each answer is appended to ``<dest>.partial`` as it arrives; a rerun keeps the lines whose
    ``(benchmark, item, turn)`` and request hash (model, label, settings and messages) match and
    asks only for the rest; ``dest`` is written, in (benchmark, item, turn) order, once all are in.

    Args:
        client: the engine to ask (``ChatClient``).
        items: the benchmark items (``load_benchmarks``).
        dest: the responses file.
        model: the model's name, recorded (and hashed).
        label: the model side: "before", "after", or a GGUF type such as "Q4_K_M".
        engine: what to record about the engine (never a key).
        parallel: requests in flight at most.
        max_tokens: a cap on the benchmarks' ``max_tokens`` (recorded, so it changes the hash).
        progress: called with a line of text per round.

    Raises:
        EngineError: the engine failed; what was received stays in ``<dest>.partial``.
    """
    engine = engine or {}
    asked = kept = 0
    with ResumableOutput(dest, key=response_key, order=response_order) as out:
        answers: dict[tuple[str, str], list[str]] = {(i.benchmark, i.id): [] for i in items}
        for turn in range(1, max((len(i.turns) for i in items), default=0) + 1):
            pending = []
            for item in items:
                previous = answers[(item.benchmark, item.id)]
                if len(item.turns) < turn or len(previous) < turn - 1:
                    continue
                sampling = load_spec(item.benchmark).sampling.for_item(item)
                if max_tokens is not None and max_tokens < sampling.max_tokens:
                    sampling = replace(sampling, max_tokens=max_tokens)
                messages = item.messages_for_turn(turn, previous)
                digest = request_hash({"model": model, "label": label, "sampling": asdict(sampling), "messages": messages})
                line = out.kept((item.benchmark, item.id, turn), digest)
                if line is not None:
                    kept += 1
                    previous.append(line["answer"])
                else:
                    pending.append((item, messages, sampling, digest))
            if progress and pending:
                progress(f"turn {turn}: asking {len(pending)} of {len(pending) + kept} (the rest kept from an earlier run)"
                         if kept else f"turn {turn}: asking {len(pending)}")
            requests = [(messages, sampling) for _, messages, sampling, _ in pending]
            for index, completion in client.complete_many(requests, parallel=parallel):
                item, _, sampling, digest = pending[index]
                asked += 1
                out.add(response_line(item, turn, completion, label=label, model=model, sampling=sampling,
                                      digest=digest, engine=engine))
                answers[(item.benchmark, item.id)].append(completion.text)
        written = out.finish()
    return RunResult(Path(dest), written, kept, asked)
