"""The benchmarks ``eval generate`` asks: their source, column layout, sampling settings and items.

Each benchmark is a data file, ``apto_release/evals/benchmark_data/<name>.toml``, that cites where
every value comes from (see the README's table). ``load_items`` reads a benchmark's items from a
local copy in the source repository's layout (``--bench-dir``) or downloads that layout from the
Hub (``huggingface_hub.snapshot_download`` at the file's revision); both go through one reader.
"""

from __future__ import annotations

import ast
import csv
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from apto_release.errors import InputError, UsageError
from apto_release.evals.client import Sampling
from apto_release.evals.metrics import ANSWER_CHOICES, BENCHMARK_NAMES, Benchmark, find_benchmark

try:  # Python 3.11+
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as _toml  # type: ignore[no-redef]

DATA_PACKAGE = "apto_release.evals"
DATA_FOLDER = "benchmark_data"
FORMATS = (".json", ".jsonl", ".csv", ".parquet")
_FIELD = re.compile(r"\{(file|row)\}")


@dataclass(frozen=True)
class BenchmarkSampling:
    """A benchmark's generation settings from its data file (``[sampling]``): the request
    settings, and MT-Bench's temperature per category."""

    temperature: float
    top_p: float
    max_tokens: int
    seed: int | None
    enable_thinking: bool
    temperature_by_category: Mapping[str, float] = field(default_factory=dict)

    def for_item(self, item: Item) -> Sampling:
        """The request settings of one item (the one type sent, and recorded with the response)."""
        temperature = self.temperature_by_category.get(item.category or "", self.temperature)
        return Sampling(temperature=temperature, top_p=self.top_p, max_tokens=self.max_tokens,
                        seed=self.seed, enable_thinking=self.enable_thinking)


@dataclass(frozen=True)
class BenchmarkSpec:
    """One benchmark's data file: where its items come from and how they are read."""

    benchmark: Benchmark
    language: str
    source: Mapping[str, Any]
    columns: Mapping[str, Any]
    sampling: BenchmarkSampling
    judge_prompt: str | None
    filter: Mapping[str, str] = field(default_factory=dict)
    reference_file: Mapping[str, Any] | None = None
    prompt_template: str | None = None
    path: Path | None = None
    readme: Mapping[str, str] = field(default_factory=dict)  # the README table's notes: source, sampling, judge

    @property
    def name(self) -> str:
        return self.benchmark.name

    @property
    def hub_id(self) -> str | None:
        return self.source.get("hub_id")

    @property
    def revision(self) -> str:
        return self.source["revision"]

    @property
    def pinned(self) -> bool:
        return bool(self.source.get("pinned"))

    @property
    def redistribute(self) -> bool:
        """Whether the licence lets a details dataset carry the items' text (``[source] redistribute``)."""
        return self.source.get("redistribute") is True


@dataclass(frozen=True)
class Item:
    """One benchmark item: the user turns to send, and what a judge or the key compares against.

    ``turns`` holds the user messages (MT-Bench-ja: two; the second is sent after the model's
    first answer); ``reference`` the reference answers per turn, where the benchmark has them;
    ``answer`` JMMLU's correct letter.
    """

    benchmark: str
    id: str
    category: str | None
    turns: tuple[str, ...]
    reference: tuple[str, ...] | None = None
    answer: str | None = None

    @property
    def messages(self) -> list[dict[str, str]]:
        """The chat messages of the first turn."""
        return self.messages_for_turn(1, ())

    def messages_for_turn(self, turn: int, answers: tuple[str, ...] | list[str]) -> list[dict[str, str]]:
        """The conversation up to user turn ``turn`` (1-based), with the model's ``answers`` to the earlier turns."""
        if not 1 <= turn <= len(self.turns) or len(answers) < turn - 1:
            raise ValueError(f"{self.benchmark} item {self.id}: turn {turn} needs {turn - 1} earlier answers")
        messages = []
        for number, text in enumerate(self.turns[:turn], 1):
            messages.append({"role": "user", "content": text})
            if number < turn:
                messages.append({"role": "assistant", "content": answers[number - 1]})
        return messages


# ---------------------------------------------------------------------------------------------
# The data files


def spec_names() -> tuple[str, ...]:
    """The benchmarks that have a data file, in ``metrics.BENCHMARKS`` order."""
    return tuple(name for name in BENCHMARK_NAMES if _data_file(name).is_file())


def _data_file(name: str):
    return resources.files(DATA_PACKAGE).joinpath(DATA_FOLDER, f"{name.lower()}.toml")


def load_spec(name: str) -> BenchmarkSpec:
    """The data file of the benchmark ``name`` (matched like judgement files: ``mt_bench_ja``, ``AC``).

    Raises:
        UsageError: no such benchmark.
    """
    benchmark = find_benchmark(name)
    if benchmark is None:
        raise UsageError(f"unknown benchmark '{name}'", hint=f"known: {', '.join(BENCHMARK_NAMES)}")
    resource = _data_file(benchmark.name)
    data = _toml.loads(resource.read_text("utf-8"))
    if data.get("benchmark") != benchmark.name:  # a packaging slip, not the user's
        raise ValueError(f"{resource}: 'benchmark' is {data.get('benchmark')!r}, expected {benchmark.name!r}")
    sampling = dict(data["sampling"])
    return BenchmarkSpec(
        benchmark=benchmark,
        language=data["language"],
        source=data["source"],
        columns=data["columns"],
        sampling=BenchmarkSampling(temperature_by_category=sampling.pop("temperature_by_category", {}), **sampling),
        judge_prompt=data.get("judge", {}).get("prompt"),
        filter=data.get("filter", {}),
        reference_file=data.get("reference_file"),
        prompt_template=data.get("prompt", {}).get("template"),
        path=Path(str(resource)),
        readme=data.get("readme", {}),
    )


# ---------------------------------------------------------------------------------------------
# Items


def load_items(benchmark: str | BenchmarkSpec, bench_dir: str | Path | None = None, *,
               endpoint: str | None = None, token: str | bool | None = None, cache_dir: str | Path | None = None) -> list[Item]:
    """The benchmark's items, from ``bench_dir`` (a local copy in the source's layout) or the Hub.

    Args:
        benchmark: a benchmark name or a loaded spec.
        bench_dir: a folder holding the files of the source repository (``--bench-dir``); None
            downloads them from the Hub at the data file's revision.
        endpoint, token, cache_dir: the Hub to download from and where to cache it (defaults:
            huggingface.co, the stored login, huggingface_hub's cache).

    Raises:
        InputError: a missing file, column or malformed row (file, row and column named); a gated,
            missing or unreachable Hub dataset (with how to get access or to use ``--bench-dir``).
        UsageError: an unknown benchmark.
    """
    spec = benchmark if isinstance(benchmark, BenchmarkSpec) else load_spec(benchmark)
    root = Path(bench_dir) if bench_dir is not None else download(spec, endpoint=endpoint, token=token, cache_dir=cache_dir)
    if not root.is_dir():
        raise InputError("the benchmark folder does not exist", path=root, hint="--bench-dir takes a folder in the source repository's layout")
    references = _references(spec, root)
    items: list[Item] = []
    seen: dict[str, str] = {}
    for path, row, number, record in _records(root, spec.source["files"], spec):
        if any(str(_get(record, key, path, row)) != value for key, value in spec.filter.items()):
            continue
        try:
            item = _item(spec, record, path, row, number, references)
        except InputError as exc:
            if exc.hint is None:  # MultiJail: the released file has no Japanese column
                exc.hint = spec.source.get("column_hint")
            raise
        where = f"{path}:{row}"
        if item.id in seen:
            raise InputError(f"item id '{item.id}' repeats {seen[item.id]}", path=path, line=row, field=str(spec.columns.get("id")))
        seen[item.id] = where
        items.append(item)
    if not items:
        raise InputError(f"no {spec.name} item found" + (f" with {dict(spec.filter)}" if spec.filter else ""), path=root)
    return items


def download(spec: BenchmarkSpec, *, endpoint: str | None = None, token: str | bool | None = None,
             cache_dir: str | Path | None = None) -> Path:
    """The benchmark's files from the Hub at the spec's revision (cached by huggingface_hub); their folder.

    Raises:
        InputError: not a Hub dataset, gated without access, missing, or unreachable.
    """
    if spec.hub_id is None:
        raise InputError(f"{spec.name} is not a Hub dataset", hint=f"download {spec.source.get('github')} and pass --bench-dir; {spec.source['access']}")
    from huggingface_hub import snapshot_download  # lazy: the Hub client is not needed to read a local copy
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    patterns = list(spec.source["files"]) + list((spec.reference_file or {}).get("files", []))
    where = f"{spec.hub_id}@{spec.revision}"
    try:
        return Path(snapshot_download(spec.hub_id, repo_type="dataset", revision=spec.revision, allow_patterns=patterns,
                                      endpoint=endpoint, token=token, cache_dir=cache_dir))
    except GatedRepoError:
        raise InputError(f"{where} is gated and this account has no access", repo=spec.hub_id,
                         hint=f"{spec.source['access']}; or pass --bench-dir with a local copy") from None
    except RevisionNotFoundError:
        raise InputError(f"{where}: no such revision", repo=spec.hub_id, hint="pass --bench-dir with a local copy") from None
    except RepositoryNotFoundError:
        raise InputError(f"{where} does not exist or needs a login", repo=spec.hub_id,
                         hint=f"{spec.source['access']}; or pass --bench-dir with a local copy") from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise InputError(f"cannot download {where}: {type(exc).__name__}", repo=spec.hub_id,
                         hint="check the network (or HF_HUB_OFFLINE), or pass --bench-dir with a local copy") from None


def _references(spec: BenchmarkSpec, root: Path) -> dict[str, tuple[str, ...]]:
    """MT-Bench's reference answers per question id (empty when the benchmark has none)."""
    ref = spec.reference_file
    if ref is None:
        return {}
    found = {}
    for path, row, _, record in _records(root, ref["files"], spec):
        found[_text(_get(record, ref["id"], path, row), path, row, ref["id"])] = _texts(_get(record, ref["turns"], path, row), path, row, ref["turns"])
    return found


def _item(spec: BenchmarkSpec, record: dict, path: Path, row: int, number: int, references: dict[str, tuple[str, ...]]) -> Item:
    """One item; ``row`` is the line errors name, ``number`` the record's place in its file (1-based)."""
    columns = spec.columns
    item_id = _field(columns["id"], record, path, row, number)
    category = _field(columns["category"], record, path, row, number, optional=True) if "category" in columns else None
    if category is not None and columns.get("category_is_list"):
        category = _first_tag(category, path, row, columns["category"])
    if "turns" in columns:
        turns = _texts(_get(record, columns["turns"], path, row), path, row, columns["turns"])
    else:
        turns = (_prompt(spec, record, path, row),)
    reference = None
    if "reference" in columns:
        reference = (_text(_get(record, columns["reference"], path, row), path, row, columns["reference"]),)
    elif spec.reference_file is not None and category in spec.reference_file.get("categories", ()):
        reference = references.get(item_id)
        if reference is None:
            raise InputError(f"{spec.name} item {item_id} ({category}) has no reference answer in {spec.reference_file['files']}",
                             path=path, line=row, field=columns["id"])
    answer = None
    if "answer" in columns:
        answer = _text(_get(record, columns["answer"], path, row), path, row, columns["answer"]).strip().upper()
        if answer not in ANSWER_CHOICES:
            raise InputError(f"the answer key is {answer!r}, not one of {', '.join(ANSWER_CHOICES)}", path=path, line=row, field=columns["answer"])
    return Item(spec.name, item_id, category, turns, reference, answer)


def _prompt(spec: BenchmarkSpec, record: dict, path: Path, row: int) -> str:
    """The single user message: the prompt column, or (JMMLU) the template filled with the columns."""
    prompt = _text(_get(record, spec.columns["prompt"], path, row), path, row, spec.columns["prompt"])
    if spec.prompt_template is None:
        return prompt
    values = {"question": prompt}
    for column in spec.columns.get("choices", ()):
        values[column] = _text(_get(record, column, path, row), path, row, column)
    return spec.prompt_template.format(**values)


def _first_tag(text: str, path: Path, row: int, column: str) -> str:
    """The first tag of a list written as text (MultiJail's ``tags``: ``"['violence', 'hate']"``)."""
    try:
        tags = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        tags = None
    if not isinstance(tags, (list, tuple)) or not tags or not all(isinstance(t, str) and t.strip() for t in tags):
        raise InputError(f"'{column}' must be a list of tags like ['violence'], found {text!r}", path=path, line=row, field=column)
    return tags[0].strip()


def _field(template: str, record: dict, path: Path, row: int, number: int, *, optional: bool = False) -> str | None:
    """A column's value as text, or a ``{file}``/``{row}`` template (files without an id column: the
    file name and the record's number, 1 for the first record after any header)."""
    if _FIELD.search(template):
        return _FIELD.sub(lambda m: path.stem if m.group(1) == "file" else str(number), template)
    value = _get(record, template, path, row, optional=optional)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise InputError(f"'{template}' must be a non-empty string or an integer, found {value!r}", path=path, line=row, field=template)
    return str(value).strip()


def _get(record: dict, column: str, path: Path, row: int, *, optional: bool = False) -> Any:
    """The value at a dotted column path (``meta.harm-type``, ``choices.0.turns``)."""
    value: Any = record
    for part in column.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif optional:
            return None
        else:
            raise InputError(f"column '{column}' is missing", path=path, line=row, field=column)
    return value


def _text(value: Any, path: Path, row: int, column: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise InputError(f"'{column}' must be non-empty text, found {value!r}", path=path, line=row, field=column)
    return str(value)


def _texts(value: Any, path: Path, row: int, column: str) -> tuple[str, ...]:
    if hasattr(value, "tolist"):  # a Parquet list column read as a numpy array
        value = value.tolist()
    if not isinstance(value, list) or not value:
        raise InputError(f"'{column}' must be a non-empty list of texts, found {value!r}", path=path, line=row, field=column)
    return tuple(_text(v, path, row, column) for v in value)


# ---------------------------------------------------------------------------------------------
# Files: JSON (a list of objects), JSON Lines, CSV and Parquet, each row with its file and number


def _records(root: Path, patterns: list[str], spec: BenchmarkSpec) -> Iterator[tuple[Path, int, int, dict]]:
    """Every record of the matching files: its file, the line errors name, its number in the file, the record."""
    paths = sorted({p for pattern in patterns for p in root.glob(pattern) if p.is_file()})
    if not paths:
        raise InputError(f"no {spec.name} file matches {', '.join(patterns)}", path=root,
                         hint=f"the folder must hold the files of {spec.hub_id or spec.source.get('github')} in its layout")
    for path in paths:
        if path.suffix not in FORMATS:
            raise InputError(f"unsupported file type '{path.suffix}'", path=path, hint=f"expected one of {', '.join(FORMATS)}")
        yield from _READERS[path.suffix](path, spec)


def _read_json(path: Path, spec: BenchmarkSpec) -> Iterator[tuple[Path, int, int, dict]]:
    try:
        data = json.loads(path.read_text("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"not valid JSON: {exc}", path=path) from None
    if not isinstance(data, list):
        raise InputError(f"expected a JSON list of objects, found {type(data).__name__}", path=path)
    for number, record in enumerate(data, 1):
        yield path, number, number, _object(record, path, number)


def _read_jsonl(path: Path, spec: BenchmarkSpec) -> Iterator[tuple[Path, int, int, dict]]:
    count = 0
    for number, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            if not text.strip():
                continue
            record = json.loads(text)
        except UnicodeDecodeError:
            raise InputError("the line is not valid UTF-8", path=path, line=number) from None
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON: {exc.msg} at column {exc.colno}", path=path, line=number) from None
        count += 1
        yield path, number, count, _object(record, path, number)


def _read_csv(path: Path, spec: BenchmarkSpec) -> Iterator[tuple[Path, int, int, dict]]:
    """CSV records, named in errors by the file's line (where the record ends; the header is line 1)."""
    header = spec.source.get("csv_header", True)
    names = None if header else list(spec.source["csv_columns"])
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            if header:
                names = next(reader, None)
                if not names:
                    raise InputError("the CSV file has no header row", path=path)
            count = 0
            for values in reader:
                if not values:
                    continue
                if len(values) != len(names):
                    raise InputError(f"expected {len(names)} columns ({', '.join(names)}), found {len(values)}", path=path, line=reader.line_num)
                count += 1
                yield path, reader.line_num, count, dict(zip(names, values))
    except UnicodeDecodeError:
        raise InputError("the CSV file is not valid UTF-8", path=path) from None
    except csv.Error as exc:
        raise InputError(f"not valid CSV: {exc}", path=path) from None


def _read_parquet(path: Path, spec: BenchmarkSpec) -> Iterator[tuple[Path, int, int, dict]]:
    """Parquet rows; errors name the row (1-based) as the line."""
    import pyarrow as pa  # lazy: only Parquet copies need it
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"not a readable Parquet file: {exc}", path=path) from None
    for number, record in enumerate(table.to_pylist(), 1):
        yield path, number, number, record


def _object(record: Any, path: Path, number: int) -> dict:
    if not isinstance(record, dict):
        raise InputError(f"a row must be a JSON object, found {type(record).__name__}", path=path, line=number)
    return record


_READERS = {".json": _read_json, ".jsonl": _read_jsonl, ".csv": _read_csv, ".parquet": _read_parquet}

