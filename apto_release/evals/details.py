"""The private "details" dataset: one model's per-item responses and judgements as a Hub folder.

One Parquet file and one config per model side (``before``, ``after``, each GGUF type), one row
per (benchmark, item, turn, side, judge), typed ``datasets.Features``; a bilingual card whose
``configs`` let ``datasets.load_dataset(folder, side)`` read it as it is. Benchmark text (prompts,
references) is carried only for benchmarks whose licence allows redistribution (their data
file's ``redistribute``); the others carry the item id. Layout and columns: docs/eval-runs.md.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from apto_release.errors import InputError, UsageError
from apto_release.evals.benchmarks import Item, load_spec
from apto_release.evals.generate import response_order
from apto_release.evals.metrics import find_benchmark
from apto_release.evals.records import read_lines
from apto_release.io import atomic_dir

README = "README.md"
SPLIT = "train"
#: The provenance marker of a details folder (hidden: never uploaded); the push's details guard reads it.
DETAILS_MARKER = ".apto-details.json"
#: What stands in for benchmark text found verbatim in an answer, reasoning or judge output.
REMOVED = "[…]"
#: A quote of benchmark text this long (characters) or longer is scrubbed; shorter runs are ordinary words.
MIN_SCRUB = 8


@dataclass(frozen=True)
class DetailsResult:
    """What ``build_details`` wrote: the folder, its rows per side (config), and its files."""

    folder: Path
    rows: dict[str, int]
    files: list[Path]


def data_file(label: str) -> Path:
    """The Parquet file of the side ``label``, relative to the folder."""
    return Path("data") / f"{label}.parquet"


def side_order(labels: Sequence[str]) -> list[str]:
    """``before``, ``after``, then the GGUF types as sorted."""
    first = [s for s in ("before", "after") if s in labels]
    return first + sorted(set(labels) - set(first))


def details_features():
    """The ``datasets.Features`` of every config."""
    from datasets import Features, Value

    string = Value("string")
    return Features({
        "benchmark": string, "item": string, "turn": Value("int8"), "category": string, "label": string,
        "model": string,
        "engine": {"engine": string, "path": string, "url": string, "served_model": string},
        "sampling": {"temperature": Value("float64"), "top_p": Value("float64"), "max_tokens": Value("int32"),
                     "seed": Value("int64"), "enable_thinking": Value("bool")},
        "prompt": string, "reference": string,
        "answer": string, "reasoning": string, "finish_reason": string,
        "usage": {"prompt_tokens": Value("int64"), "completion_tokens": Value("int64"), "total_tokens": Value("int64")},
        "response_hash": string,
        "judge": string, "score": Value("float64"), "verdict": string, "chosen": string, "correct": string,
        "judge_output": string, "unparseable": Value("bool"), "judge_attempts": Value("int8"),
    })


# ---------------------------------------------------------------------------------------------
# Rows


def _public_url(url: str | None) -> str | None:
    """An engine URL without user, password, query or fragment (a key never travels in the folder)."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _windows(texts: Sequence[str | None]) -> frozenset[str]:
    """Every run of ``MIN_SCRUB`` characters of ``texts``: what a verbatim quote of them contains."""
    return frozenset(t[i:i + MIN_SCRUB] for t in texts if t for i in range(len(t) - MIN_SCRUB + 1))


def _scrub(text: str | None, windows: frozenset[str]) -> str | None:
    """``text`` with every stretch quoted from the windows' texts (``MIN_SCRUB`` characters or more) replaced by ``REMOVED``."""
    if not text or not windows:
        return text
    covered = [False] * len(text)
    for i in range(len(text) - MIN_SCRUB + 1):
        if text[i:i + MIN_SCRUB] in windows:
            covered[i:i + MIN_SCRUB] = [True] * MIN_SCRUB
    out, i = [], 0
    while i < len(text):
        if covered[i]:
            while i < len(text) and covered[i]:
                i += 1
            out.append(REMOVED)
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _judged_rows(response: dict[str, Any], judgements: list[dict[str, Any]], item: Item | None,
                 carry: bool) -> list[dict[str, Any]]:
    turn = int(response["turn"])
    prompt = response.get("prompt")
    reference = item.reference[turn - 1] if item and item.reference and turn <= len(item.reference) else None
    # A non-redistributable benchmark's text must not come back through a quote in an answer or a judge's output.
    windows = frozenset() if carry else _windows([prompt, *(item.turns if item else ()), *(item.reference or () if item else ())])
    engine = response.get("engine") or {}
    sampling = response.get("sampling") or {}
    usage = response.get("usage") or {}
    base = {
        "benchmark": response["benchmark"], "item": str(response["item"]), "turn": turn,
        "category": response.get("category"), "label": response["label"], "model": response.get("model"),
        "engine": {"engine": engine.get("engine"), "path": engine.get("path"), "url": _public_url(engine.get("url")),
                   "served_model": engine.get("served_model")},
        "sampling": {k: sampling.get(k) for k in ("temperature", "top_p", "max_tokens", "seed", "enable_thinking")},
        "prompt": prompt if carry else None, "reference": reference if carry else None,
        "answer": _scrub(response.get("answer"), windows), "reasoning": _scrub(response.get("reasoning"), windows),
        "finish_reason": response.get("finish_reason"),
        "usage": {k: usage.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")},
        "response_hash": response.get("request_hash"),
    }
    rows = []
    for j in judgements or [None]:
        j = j or {}
        score = j.get("score")
        rows.append({
            **base, "judge": j.get("judge"), "score": None if score is None else float(score),
            "verdict": j.get("verdict"), "chosen": j.get("chosen"),
            "correct": j.get("correct") if carry else None,  # JMMLU's answer key is the benchmark's data too
            "judge_output": _scrub(j.get("unparseable", j.get("output")), windows),
            "unparseable": "unparseable" in j if j else None, "judge_attempts": j.get("attempts"),
        })
    return rows


def _value(line: dict[str, Any]) -> tuple:
    return tuple(line.get(k) for k in ("score", "verdict", "chosen", "correct", "unparseable"))


def _read(path: Path, what: str) -> list[dict[str, Any]]:
    if not path.is_file():
        raise InputError(f"no such {what} file", path=path, hint="run apto-release eval run (or the release's eval stage) first")
    return read_lines(path)


def details_rows(responses: Sequence[str | Path], judgements: Sequence[str | Path],
                 items: Mapping[tuple[str, str], Item] | None = None) -> dict[str, list[dict[str, Any]]]:
    """The rows of each side (config), in (benchmark, item, turn, judge) order.

    Args:
        responses: the responses files (``eval generate``), one per side.
        judgements: the judgement files (``eval judge``) of those sides, any number of judges.
        items: the benchmark items by (benchmark, id), for the references of redistributable
            benchmarks and to scrub the others' questions and references; None: no references,
            and only the questions the responses recorded are scrubbed.

    Raises:
        InputError: a missing or malformed file, a side answered twice, a judgement without its response.
    """
    by_key: dict[tuple, dict[str, Any]] = {}
    for path in map(Path, responses):
        for number, line in enumerate(_read(path, "responses"), 1):
            bench = find_benchmark(str(line.get("benchmark")))
            if bench is None or not {"item", "turn", "label"} <= line.keys():
                raise InputError("not a response line of eval generate", path=path, line=number)
            line = dict(line, benchmark=bench.name)
            key = (bench.name, str(line["item"]), int(line["turn"]), str(line["label"]))
            if key in by_key:
                raise InputError(f"{bench.name} item {key[1]} turn {key[2]} of {key[3]} is answered twice", path=path, line=number)
            by_key[key] = line
    judged: dict[tuple, dict[str | None, dict[str, Any]]] = {}
    for path in map(Path, judgements):
        for number, line in enumerate(_read(path, "judgement"), 1):
            bench = find_benchmark(str(line.get("benchmark")))
            key = (bench.name if bench else None, str(line.get("item")), int(line.get("turn") or 1), str(line.get("model")))
            if key not in by_key:
                raise InputError(f"a judgement of {key[0]} item {key[1]} ({key[3]}) has no response", path=path, line=number,
                                 hint="give the responses files the judgements were made from")
            found = judged.setdefault(key, {})
            judge = line.get("judge")
            if judge in found and _value(found[judge]) != _value(line):
                raise InputError(f"{key[0]} item {key[1]} ({key[3]}) is judged twice by {judge or 'the answer key'}, differently",
                                 path=path, line=number)
            found.setdefault(judge, line)  # JMMLU's key lines repeat in every judge's file: one row
    carry = {name: load_spec(name).redistribute for name in {k[0] for k in by_key}}
    sides: dict[str, list[dict[str, Any]]] = {}
    for key, line in sorted(by_key.items(), key=lambda kv: response_order(kv[1])):
        found = sorted(judged.get(key, {}).values(), key=lambda j: str(j.get("judge") or ""))
        item = (items or {}).get(key[:2])
        sides.setdefault(key[3], []).extend(_judged_rows(line, found, item, carry[key[0]]))
    return {label: sides[label] for label in side_order(list(sides))}


# ---------------------------------------------------------------------------------------------
# The folder


def configs_metadata(labels: Sequence[str]) -> list[dict[str, Any]]:
    """The card's ``configs``: one per side; ``after`` (else the first) is the default."""
    default = "after" if "after" in labels else labels[0]
    return [{"config_name": label, **({"default": True} if label == default else {}),
             "data_files": [{"split": SPLIT, "path": data_file(label).as_posix()}]} for label in labels]


def _benchmark_rows(names: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for name in names:
        spec = load_spec(name)
        rows.append({"name": name, "redistribute": spec.redistribute, "license": spec.source.get("license", ""),
                     "source": spec.hub_id or spec.source.get("github", ""), "id": str(spec.columns.get("id", ""))})
    return rows


def render_details_card(model: str, rows: Mapping[str, list[dict[str, Any]]], *, repo_id: str | None = None,
                        model_repo: str | None = None) -> str:
    """The details folder's README.md: YAML (configs, tags) and a short bilingual body."""
    from huggingface_hub import DatasetCardData

    from apto_release.cards.templates import render

    labels = list(rows)
    benchmarks = list(dict.fromkeys(r["benchmark"] for side in rows.values() for r in side))
    data = DatasetCardData(language=["ja", "en"], pretty_name=f"{model} evaluation details",
                           tags=["apto-release", "evaluation", "llm-safety", "japanese"], configs=configs_metadata(labels))
    judges = sorted({r["judge"] for side in rows.values() for r in side if r["judge"]})
    sides = [{"label": label, "rows": len(side), "models": ", ".join(sorted({r["model"] or "" for r in side}))}
             for label, side in rows.items()]
    default = next(c["config_name"] for c in data.configs if c.get("default"))
    return render("dataset_cards", "details.md.j2", {
        "card_data": data.to_yaml(), "model": model, "repo_id": repo_id or "ORG/NAME", "model_repo": model_repo,
        "sides": sides, "benchmarks": _benchmark_rows(benchmarks), "judges": judges, "default": default,
    })


def _write_parquet(rows: list[dict[str, Any]], features, dest: Path) -> None:
    import datasets

    from apto_release.dataset.build import offline_and_quiet

    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        ds = datasets.Dataset.from_list(rows, features=features)
    except (TypeError, ValueError, OverflowError, KeyError) as exc:
        raise InputError(f"a responses or judgement line does not fit the details columns: {exc}") from exc
    with offline_and_quiet():
        ds.to_parquet(str(dest))


def _verify(folder: Path, rows: Mapping[str, list[dict[str, Any]]], features, shown: Path) -> None:
    """Each config loads offline with ``datasets`` with the features and row count written."""
    from apto_release.dataset.build import load_offline
    from apto_release.errors import BuildError

    with tempfile.TemporaryDirectory(prefix="apto-release-details-") as cache:
        for label, side in rows.items():
            try:
                ds = load_offline(folder, label, cache_dir=Path(cache) / label)
            except Exception as exc:  # noqa: BLE001 - any failure to load is the finding
                raise BuildError(f"config {label!r} does not load with datasets: {type(exc).__name__}: {exc}", path=shown) from exc
            if ds.features != features or ds.num_rows != len(side):
                raise BuildError(f"config {label!r} reads back with other features or {ds.num_rows} rows, not {len(side)}", path=shown)


def build_details(model: str, responses: Sequence[str | Path], judgements: Sequence[str | Path], out_dir: str | Path, *,
                  items: Mapping[tuple[str, str], Item] | None = None, repo_id: str | None = None,
                  model_repo: str | None = None, verify: bool = True) -> DetailsResult:
    """Write the details folder of ``model`` to ``out_dir`` (replacing it), beside it first and renamed into place.

    Args:
        model: the evaluated model's name (the card and the marker say it).
        responses, judgements, items: see ``details_rows``.
        repo_id: the details repo (the card's loading example); model_repo: the model's repo (a link).
        verify: load every config back with ``datasets`` before the folder is put in place.

    Raises:
        InputError: see ``details_rows``. UsageError: no response at all.
        BuildError: the folder does not read back (nothing is put in place).
    """
    from apto_release import __version__

    out_dir = Path(out_dir)
    rows = details_rows(responses, judgements, items)
    if not rows:
        raise UsageError("there are no responses to build the details dataset from", path=out_dir)
    features = details_features()
    text = render_details_card(model, rows, repo_id=repo_id, model_repo=model_repo)
    files = [Path(README)] + [data_file(label) for label in rows]
    with atomic_dir(out_dir, overwrite=True) as tmp:
        for label, side in rows.items():
            _write_parquet(side, features, tmp / data_file(label))
        (tmp / README).write_text(text, encoding="utf-8")
        if verify:
            _verify(tmp, rows, features, out_dir)
        marker = {"kind": "details", "model": model, "rows": sum(len(s) for s in rows.values()),
                  "configs": {label: len(side) for label, side in rows.items()}, "toolkit": __version__}
        (tmp / DETAILS_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    return DetailsResult(out_dir, {label: len(side) for label, side in rows.items()}, files)
