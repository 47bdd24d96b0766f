"""The release manifest, ``release.toml``: what a release publishes, and where.

Every release command (cards, push, release) reads it. The loader checks all of it and reports
every problem at once, each with its place in the file (``model[2].gguf``), before anything runs.

Example::

    organisation = "apto-ai"
    version = "1.0.0"                # the tag on every repo: v1.0.0
    license = "apache-2.0"           # the models' licence
    state = "out/release-state.json" # optional: the release command's record of what it built

    [dataset.sample]                 # the public, gated 500-record sample
    repo = "ja-safety-sft-500"       # a name in the organisation, or "org/name"
    folder = "out/dataset-sample"    # `apto-release dataset build` output
    private = false
    gated = "auto"                   # "auto", "manual" or false
    max_rows = 500                   # the public-repo guard: more rows than this never go public

    [dataset.full]                   # the whole set: private
    repo = "ja-safety-sft"
    folder = "out/dataset-full"
    private = true

    [[model]]
    name = "Apto-Qwen3.5-27B-Safety" # the repo's name; GGUF files are <name>-<TYPE>.gguf
    base_model = "Qwen/Qwen3.5-27B"
    variant = "instruct"             # or "base"
    preset = "qwen3.5-27b"
    adapter = "out/adapters/27b"
    merged = "out/merged/27b"
    gguf = ["Q4_K_M", "Q8_0", "F16"]
    gguf_folder = "out/gguf/27b"
    gguf_verify = true               # the release checks each file in llama.cpp against a float32 reference
    evaluation = "eval/27b.json"     # optional: the results table of the card
    push_adapter = false             # also publish the adapter as <name>-LoRA
    base = "models/Qwen3.5-27B"      # optional: the base checkpoint's local folder (default: base_model from the Hub cache)
    train = { max_steps = 2000, set = { "lora.r" = 32 } }   # optional: train options and preset overrides
    gguf_imatrix = { calibration = "auto", against = ["bench/ac.jsonl"], general = "ja-wiki.txt" }  # optional (docs/imatrix.md)
    gguf_mmproj = "F16"              # the vision projector's type: "F16" (default), "BF16", "Q8_0", or false for none

    [model.eval]                     # optional: what `eval run` and the release's eval stage evaluate (README)
    benchmarks = ["AnswerCarefully", "MT-Bench-ja"]
    judges = [{ url = "http://gpu01:8000/v1", model = "Qwen/Qwen3-235B-A22B", api_key_env = "JUDGE_KEY" }]
    gguf = ["Q4_K_M"]                # a subset of gguf; base and tuned default to { serve = true }
    details_repo = "27b-eval-details" # optional: per-item responses and judgements, a dataset repo that is always private

    [data]                           # what `apto-release release` cuts the release from
    records = "data/ja-safety-sft.jsonl"   # the full set (schema v1): validated, sampled, built, trained on
    sample_size = 500                # the public sample's size
    seed = 0                         # the sample's draw
    expected_count = 18000           # optional: validation warns when the count is far off
    license = "cc-by-nc-sa-4.0"      # the dataset's licence (the cards of both dataset repos)
    sample_folder = "out/sample"     # the drawn sample and its distribution report

Relative paths are relative to the manifest's folder. Repos default to ``<organisation>/<name>``,
``<organisation>/<name>-GGUF`` and ``<organisation>/<name>-LoRA``; ``repo``, ``gguf_repo`` and
``adapter_repo`` override them.

What the Hub or git would refuse midway is refused at load (issue 13): repo ids and names by the
Hub's rules (``repo_id_problem``), repos that differ only in case, a version that is not
Semantic Versioning 2.0.0 or whose tag ``v<version>`` is not a valid git ref (``version_problem``),
a public sample's ``max_rows`` below ``[data] sample_size``, and a file that is not UTF-8.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any

from apto_release.errors import UsageError
from apto_release.hub.targets import git_ref_problem, name_problem, repo_id_problem

# Semantic Versioning 2.0.0, the regex semver.org recommends (https://semver.org/#is-there-a-suggested-regular-expression-regex-to-check-a-semver-string),
# with [0-9] for \d so that no non-ASCII digit passes; always used with fullmatch (``$`` accepts a trailing newline).
SEMVER = re.compile(
    r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-((?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?"
)
VARIANTS = ("instruct", "base")
GATED = ("auto", "manual", False)
DEFAULT_MAX_PUBLIC_ROWS = 500


def version_problem(version: str) -> str | None:
    """Why ``version`` cannot be a release's version, or None.

    It must be Semantic Versioning 2.0.0 and ``v<version>`` a valid git tag: the push tags every
    repo with it, and a tag the Hub refuses would leave the release half-published.
    """
    if not SEMVER.fullmatch(version):
        why = "not semantic versioning 2.0.0 (MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD], e.g. 1.0.0, 1.0.0-rc.1, 2.1.3+build.5"
        if any(c.isspace() or not c.isprintable() for c in version):
            why += "; it holds a space, newline or control character"
        elif re.search(r"(?:^|[.-])0[0-9]", version.split("+")[0]):
            why += "; numbers have no leading zeros"
        elif re.search(r"\.\.|\.$|-$|\+$|\.\+|-\.|\+\.", version):
            why += "; an identifier is empty"
        return why + ")"
    problem = git_ref_problem(f"refs/tags/v{version}")
    if problem:
        return f"the tag 'v{version}' would not be a valid git tag: {problem}"
    return None


class ManifestError(UsageError):
    """The manifest cannot be used; ``problems`` lists every problem found."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        if len(problems) == 1:  # one line: "release.toml: version: '01.0.0' is not ..."
            message = problems[0]
        else:
            message = f"the release manifest has {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems)
        super().__init__(message, path=path)
        self.problems = problems


@dataclass(frozen=True)
class DatasetTarget:
    """One dataset repo: the folder ``dataset build`` wrote and where it goes."""

    key: str  # "sample" or "full"
    repo: str
    folder: Path
    private: bool
    gated: str | bool
    max_rows: int | None  # public-repo guard (sample); None for a private repo
    pretty_name: str | None = None  # the dataset card's title (default: from the repo's name)


@dataclass(frozen=True)
class DataSource:
    """The records a release is cut from, and how the public sample is drawn (``[data]``)."""

    records: Path
    sample_size: int
    seed: int
    expected_count: int | None
    license: str
    sample_folder: Path


@dataclass(frozen=True)
class TrainOptions:
    """How the release trains one model: the preset's overrides and the run's length (``train``)."""

    overrides: tuple[tuple[str, Any], ...] = ()  # preset keys (``lora.r``) and values, in file order
    max_steps: int | None = None
    save_steps: int = 200
    #: Train on a CUDA GPU without the fast Gated DeltaNet kernels (``train --allow-slow-kernels``).
    allow_slow_kernels: bool = False


@dataclass(frozen=True)
class ImatrixOptions:
    """A model's ``gguf_imatrix``: the K- and i-quants are made with an importance matrix computed
    over ``calibration`` ("auto": drawn from ``[data] records``; else a records file or a text),
    leaving out records close to ``against`` and mixing in ``general`` (``gguf calibration``)."""

    calibration: str | Path = "auto"
    against: tuple[Path, ...] = ()
    general: Path | None = None


@dataclass(frozen=True)
class EngineSpec:
    """Where a model answers: an OpenAI-compatible ``url`` (with the ``model`` it serves and the
    ``api_key_env`` holding its key), or ``serve``: a local ``path`` that ``eval run`` starts an
    engine for (llama.cpp's server for a ``.gguf``, vLLM for a folder)."""

    url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    path: Path | None = None  # with serve: None means the model's own checkpoint (base or merged)

    @property
    def serve(self) -> bool:
        return self.url is None


@dataclass(frozen=True)
class EvalConfig:
    """A model's ``[model.eval]`` table: benchmarks, judges, engines, the GGUF types evaluated."""

    benchmarks: tuple[str, ...]
    judges: tuple[EngineSpec, ...]
    base: EngineSpec = EngineSpec()
    tuned: EngineSpec = EngineSpec()
    gguf: tuple[str, ...] = ()
    bench_dir: Path | None = None
    limit: int | None = None
    max_tokens: int | None = None
    parallel: int = 4
    details_repo: str | None = None  # the private details dataset's repo (``evals.details``)


@dataclass(frozen=True)
class ModelTarget:
    """One tuned model: its adapter, merged checkpoint, GGUF files, and their repos."""

    name: str
    base_model: str
    variant: str
    preset: str
    adapter: Path
    merged: Path
    gguf: tuple[str, ...]
    gguf_folder: Path
    evaluation: Path | None
    repo: str
    gguf_repo: str
    adapter_repo: str | None  # None unless push_adapter
    private: bool
    base: str = ""  # the base checkpoint to train and merge on: a local folder, or the Hub id (base_model)
    train: TrainOptions = TrainOptions()
    gguf_verify: bool = True  # the release checks each GGUF file in llama.cpp (needs RAM for a float32 reference)
    eval: EvalConfig | None = None  # [model.eval]: what ``eval run`` and the release's eval stage do
    gguf_imatrix: ImatrixOptions | None = None  # the release's imatrix job (``release.pipeline``)
    gguf_mmproj: str | None = "F16"  # the vision projector's type (a checkpoint with a vision tower); None: none

    @property
    def details_folder(self) -> Path | None:
        """The details dataset's folder when ``[model.eval] details_repo`` is set: beside the
        evaluation file, named ``<its stem>-details`` (``eval/27b.json`` -> ``eval/27b-details``)."""
        if self.eval is None or self.eval.details_repo is None or self.evaluation is None:
            return None
        return self.evaluation.with_name(f"{self.evaluation.stem}-details")


@dataclass(frozen=True)
class Manifest:
    path: Path
    organisation: str
    version: str
    license: str
    datasets: dict[str, DatasetTarget] = field(default_factory=dict)
    models: tuple[ModelTarget, ...] = ()
    data: DataSource | None = None  # None: the manifest can publish, but not cut, a release
    state: Path | None = None  # the release command's state file (default beside the manifest)
    #: Files the push's credential scan skips (test fixtures holding fake keys): path -> reason.
    allow_secrets_in: dict[Path, str] = field(default_factory=dict)

    @property
    def state_file(self) -> Path:
        return self.state or self.path.resolve().parent / ".apto-release" / "state.json"

    @property
    def tag(self) -> str:
        return f"v{self.version}"

    def model(self, name: str) -> ModelTarget:
        for model in self.models:
            if model.name == name:
                return model
        raise UsageError(f"the manifest has no model '{name}'; it has {', '.join(m.name for m in self.models) or 'none'}", path=self.path)

    def target_names(self) -> list[str]:
        """Names that ``--only`` accepts: ``dataset.sample``, ``dataset.full`` and each model's name."""
        return [f"dataset.{key}" for key in self.datasets] + [m.name for m in self.models]


def gguf_types() -> tuple[str, ...]:
    from apto_release.gguf import GGUF_TYPES

    return GGUF_TYPES


# ---------------------------------------------------------------------------------------------
# Loading


_TOP = {"organisation", "version", "license", "dataset", "model", "data", "state", "allow_secrets_in"}
_DATASET = {"repo", "folder", "private", "gated", "max_rows", "pretty_name"}
_DATA = {"records", "sample_size", "seed", "expected_count", "license", "sample_folder"}
_MODEL = {
    "name", "base_model", "variant", "preset", "adapter", "merged", "gguf", "gguf_folder", "evaluation",
    "push_adapter", "private", "repo", "gguf_repo", "adapter_repo", "base", "train", "gguf_verify", "eval",
    "gguf_imatrix", "gguf_mmproj",
}
_IMATRIX = {"calibration", "against", "general"}
_EVAL = {"benchmarks", "bench_dir", "limit", "max_tokens", "judges", "base", "tuned", "gguf", "parallel", "details_repo"}
_ENGINE = {"url", "path", "serve", "model", "api_key_env"}
_TRAIN = {"max_steps", "save_steps", "set", "allow_slow_kernels"}
DEFAULT_DATASET_LICENSE = "cc-by-nc-sa-4.0"


_KIND_NAMES = {str: "a string", bool: "true/false", int: "an integer", list: "a list", dict: "a table"}


class _Checker:
    """Reads values out of the TOML tables, collecting a problem for each bad one."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.problems: list[str] = []
        self.targets: list[tuple[str, str]] = []  # (place, repo id) of every repo the manifest writes

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def keys(self, table: dict[str, Any], known: set[str], where: str) -> None:
        for key in table:
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                self.problem(f"{where}{key}", "unknown key" + (f" (did you mean '{close[0]}'?)" if close else ""))

    def get(self, table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, *, required: bool = True, default: Any = None) -> Any:
        if key not in table:
            if required:
                self.problem(f"{where}{key}", "missing")
            return default
        value = table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            expected = " or ".join(_KIND_NAMES[k] for k in kinds)
            self.problem(f"{where}{key}", f"expected {expected}, found {value!r}")
            return default
        return value

    def path(self, table: dict[str, Any], key: str, where: str, *, required: bool = True) -> Path | None:
        text = self.get(table, key, str, where, required=required)
        if not text:
            if text == "":
                self.problem(f"{where}{key}", "empty path")
            return None
        path = Path(text)
        return path if path.is_absolute() else self.root / path

    def gguf_types(self, table: dict[str, Any], where: str, known: Sequence[str], unknown: Callable[[Any], str]) -> list[str]:
        """The ``gguf`` list, upper-cased: each a type in ``known`` (else ``unknown(value)``), none twice."""
        types: list[str] = []
        for j, quant in enumerate(self.get(table, "gguf", list, where, required=False, default=[]) or [], 1):
            if not isinstance(quant, str) or quant.upper() not in known:
                self.problem(f"{where}gguf[{j}]", unknown(quant))
            elif quant.upper() in types:
                self.problem(f"{where}gguf[{j}]", f"{quant.upper()} is listed twice")
            else:
                types.append(quant.upper())
        return types

    def repo(self, value: str | None, organisation: str | None, where: str) -> str | None:
        """A repo the release writes: ``organisation/name``, checked with the Hub's rules."""
        if value is None:
            return None
        repo = value if "/" in value or organisation is None else f"{organisation}/{value}"
        problem = repo_id_problem(repo) or (None if "/" in repo else "a repo id is organisation/name")
        if problem:
            self.problem(where, f"{repr(repo)} is not a Hub repo id: {problem}")
            return None
        self.targets.append((where, repo))
        return repo


def load_manifest(path: str | Path) -> Manifest:
    """Read and check ``release.toml``.

    Raises:
        InputError / UsageError: the file cannot be read or is not TOML (with line and column).
        ManifestError: every problem found, listed.
    """
    from apto_release.train.presets import _toml  # the project's TOML reader (tomllib / tomli)

    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError("the release manifest does not exist", path=path, hint="pass --manifest release.toml") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UsageError(
            f"the release manifest is not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line})",
            path=path, hint="save it as UTF-8",
        ) from None
    try:
        data = _toml.loads(text)
    except _toml.TOMLDecodeError as exc:
        raise ManifestError(path, [f"not valid TOML: {exc}"]) from None  # the message gives line and column

    check = _Checker(path.resolve().parent)
    check.keys(data, _TOP, "")
    organisation = check.get(data, "organisation", str, "")
    if organisation is not None and (problem := repo_id_problem(organisation) if "/" not in organisation else "it holds a '/'"):
        check.problem("organisation", f"{repr(organisation)} is not a Hub user or organisation name: {problem}")
        organisation = None
    version = check.get(data, "version", str, "")
    if version is not None and (problem := version_problem(version)):
        check.problem("version", f"{repr(version)} is not a version the release can tag (v<version> on every repo): {problem}")
    license_ = check.get(data, "license", str, "")

    datasets = _datasets(check, data.get("dataset", {}), organisation)
    models = _models(check, data.get("model", []), organisation)
    source = _data(check, data["data"]) if "data" in data else None
    state = check.path(data, "state", "", required=False)
    allow_secrets = _allow_secrets(check, data.get("allow_secrets_in", {}))

    _check_unique_repos(check, models)
    sample = datasets.get("sample")
    if source is not None and sample is not None and sample.max_rows is not None and sample.max_rows < source.sample_size:
        check.problem(
            "dataset.sample.max_rows",
            f"{sample.max_rows} is below data.sample_size ({source.sample_size}): the push would refuse the sample "
            "after every stage had run; raise max_rows or lower sample_size",
        )

    if check.problems:
        raise ManifestError(path, check.problems)
    return Manifest(path, organisation, version, license_, datasets, tuple(models), source, state, allow_secrets)


def _allow_secrets(check: _Checker, value: Any) -> dict[Path, str]:
    """``allow_secrets_in``: a table ``"path" = "reason"`` or a list of ``{path, reason}`` tables;
    paths relative to the manifest's folder, a reason required."""
    where = "allow_secrets_in"
    if isinstance(value, dict):
        entries = [({"path": k, "reason": v}, f"{where}.{k}") for k, v in value.items()]
    elif isinstance(value, list):
        entries = [(v, f"{where}[{i}]") for i, v in enumerate(value)]
    else:
        check.problem(where, "expected a table (path = reason) or a list of {path, reason} tables")
        return {}
    allowed: dict[Path, str] = {}
    for entry, place in entries:
        if not isinstance(entry, dict):
            check.problem(place, "expected a table with path and reason")
            continue
        check.keys(entry, {"path", "reason"}, place + ".")
        reason = entry.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            check.problem(place, "a reason is required (why this file may hold something that looks like a credential)")
            continue
        path = check.path(entry, "path", place + ".")
        if path is not None:
            allowed[path] = reason
    return allowed


def _check_unique_repos(check: _Checker, models: list[ModelTarget]) -> None:
    """Every repo the release writes is its own, compared without case as the Hub compares ids."""
    seen: dict[str, tuple[str, str]] = {}
    for where, repo in check.targets:
        first = seen.get(repo.lower())
        if first is None:
            seen[repo.lower()] = (where, repo)
        elif first[1] == repo:
            check.problem(where, f"repo {repr(repo)} is also the target of {first[0]}")
        else:
            check.problem(where, f"repo {repr(repo)} differs only in case from {repr(first[1])}, the target of {first[0]} "
                                 "(the Hub treats them as one repo)")
    for model in models:
        first = seen.get(model.base_model.lower())
        if first is not None:
            check.problem(f"{first[0]}", f"repo {repr(first[1])} is the base model of '{model.name}': a release never writes its base model")


def _data(check: _Checker, table: Any) -> DataSource | None:
    if not isinstance(table, dict):
        check.problem("data", "expected a table [data]")
        return None
    where = "data."
    check.keys(table, _DATA, where)
    records = check.path(table, "records", where)
    size = check.get(table, "sample_size", int, where, required=False, default=DEFAULT_MAX_PUBLIC_ROWS)
    if isinstance(size, int) and size < 1:
        check.problem(f"{where}sample_size", "must be at least 1")
    seed = check.get(table, "seed", int, where, required=False, default=0)
    expected = check.get(table, "expected_count", int, where, required=False)
    if isinstance(expected, int) and expected < 1:
        check.problem(f"{where}expected_count", "must be at least 1")
    license_ = check.get(table, "license", str, where, required=False, default=DEFAULT_DATASET_LICENSE)
    sample_folder = check.path(table, "sample_folder", where, required=False) or check.root / "out" / "sample"
    if records is None:
        return None
    return DataSource(records, size, seed, expected, license_, sample_folder)


def _train_options(check: _Checker, table: Any, preset: str | None, where: str) -> TrainOptions:
    if not isinstance(table, dict):
        check.problem(where.rstrip("."), "expected a table, e.g. train = { max_steps = 100 }")
        return TrainOptions()
    check.keys(table, _TRAIN, where)
    max_steps = check.get(table, "max_steps", int, where, required=False)
    save_steps = check.get(table, "save_steps", int, where, required=False, default=200)
    for key, value in (("max_steps", max_steps), ("save_steps", save_steps)):
        if isinstance(value, int) and value < 1:
            check.problem(f"{where}{key}", "must be at least 1")
    slow = check.get(table, "allow_slow_kernels", bool, where, required=False, default=False)
    overrides = check.get(table, "set", dict, where, required=False, default={})
    if overrides and preset is not None:
        from apto_release.train.presets import load_preset

        try:
            load_preset(check.root / preset if preset.endswith(".toml") else preset, overrides)
        except UsageError as exc:  # an unknown key or a value of the wrong type, named by the preset loader
            check.problem(f"{where}set", exc.message)
    return TrainOptions(tuple(overrides.items()), max_steps, save_steps or 200, bool(slow))


def _datasets(check: _Checker, tables: Any, organisation: str | None) -> dict[str, DatasetTarget]:
    if not isinstance(tables, dict):
        check.problem("dataset", "expected tables [dataset.sample] and [dataset.full]")
        return {}
    out: dict[str, DatasetTarget] = {}
    for key, table in tables.items():
        where = f"dataset.{key}."
        if key not in ("sample", "full"):
            check.problem(f"dataset.{key}", "unknown dataset (expected 'sample' or 'full')")
            continue
        if not isinstance(table, dict):
            check.problem(f"dataset.{key}", "expected a table")
            continue
        check.keys(table, _DATASET, where)
        repo = check.repo(check.get(table, "repo", str, where), organisation, f"{where}repo")
        folder = check.path(table, "folder", where)
        private = check.get(table, "private", bool, where, required=False, default=key == "full")
        gated = check.get(table, "gated", (str, bool), where, required=False, default=False)
        if gated not in GATED:
            check.problem(f"{where}gated", f"expected \"auto\", \"manual\" or false, found {gated!r}")
        max_rows = check.get(table, "max_rows", int, where, required=False, default=DEFAULT_MAX_PUBLIC_ROWS)
        if isinstance(max_rows, int) and max_rows < 1:
            check.problem(f"{where}max_rows", "must be at least 1")
        if key == "full" and private is False:
            check.problem(f"{where}private", "the full dataset must stay private (only the sample is published)")
        pretty_name = check.get(table, "pretty_name", str, where, required=False)
        if repo and folder:
            out[key] = DatasetTarget(key, repo, folder, bool(private), gated, None if private else max_rows, pretty_name)
    return out


def _models(check: _Checker, tables: Any, organisation: str | None) -> list[ModelTarget]:
    if not isinstance(tables, list):
        check.problem("model", "expected [[model]] tables")
        return []
    known_presets = _preset_names()
    types = gguf_types()
    out: list[ModelTarget] = []
    names: dict[str, str] = {}  # lower-cased name -> the name as written
    for i, table in enumerate(tables, 1):
        where = f"model[{i}]."
        if not isinstance(table, dict):
            check.problem(f"model[{i}]", "expected a table")
            continue
        check.keys(table, _MODEL, where)
        name = check.get(table, "name", str, where)
        if name is not None:
            if problem := name_problem(name):
                check.problem(f"{where}name", f"{repr(name)} cannot be a repo or file name: {problem}")
                name = None
            elif name.lower() in names:
                twin = names[name.lower()]
                check.problem(f"{where}name", f"'{name}' names two models" + ("" if twin == name else f" (with '{twin}': names are compared without case, as the Hub compares repo ids)"))
            else:
                names[name.lower()] = name
        base_model = check.get(table, "base_model", str, where)
        if base_model is not None and (problem := repo_id_problem(base_model) or (None if "/" in base_model else "a repo id is organisation/name")):
            check.problem(f"{where}base_model", f"{repr(base_model)} is not a Hub repo id: {problem}")
            base_model = None
        variant = check.get(table, "variant", str, where, required=False, default="instruct")
        if variant not in VARIANTS:
            check.problem(f"{where}variant", f"expected 'instruct' or 'base', found {variant!r}")
        preset = check.get(table, "preset", str, where)
        if preset is not None and preset not in known_presets and not preset.endswith(".toml"):
            close = difflib.get_close_matches(preset, known_presets, n=1)
            check.problem(f"{where}preset", f"unknown preset '{preset}'" + (f" (did you mean '{close[0]}'?)" if close else f"; presets: {', '.join(known_presets)}"))
        adapter = check.path(table, "adapter", where)
        merged = check.path(table, "merged", where)
        cleaned = check.gguf_types(table, where, types, lambda q: f"unknown GGUF type {q!r}; choose from {', '.join(types)}")
        gguf_folder = check.path(table, "gguf_folder", where, required=bool(cleaned))
        gguf_verify = check.get(table, "gguf_verify", bool, where, required=False, default=True)
        evaluation = check.path(table, "evaluation", where, required=False)
        push_adapter = check.get(table, "push_adapter", bool, where, required=False, default=False)
        private = check.get(table, "private", bool, where, required=False, default=False)
        repo = check.repo(check.get(table, "repo", str, where, required=False, default=name), organisation, f"{where}repo")
        gguf_repo = check.repo(
            check.get(table, "gguf_repo", str, where, required=False, default=f"{name}-GGUF" if name else None), organisation, f"{where}gguf_repo"
        )
        adapter_repo = None
        if push_adapter:
            adapter_repo = check.repo(
                check.get(table, "adapter_repo", str, where, required=False, default=f"{name}-LoRA" if name else None), organisation, f"{where}adapter_repo"
            )
        elif "adapter_repo" in table:
            check.problem(f"{where}adapter_repo", "set, but push_adapter is false")
        base = check.path(table, "base", where, required=False)
        train = _train_options(check, table["train"], preset, f"{where}train.") if "train" in table else TrainOptions()
        evaluate = _eval(check, table["eval"], cleaned, f"{where}eval.", organisation) if "eval" in table else None
        if evaluate is not None and evaluation is None and "evaluation" not in table:
            check.problem(f"{where}evaluation", "missing: [model.eval] writes its results to the model's evaluation file")
        imatrix = _imatrix(check, table["gguf_imatrix"], cleaned, f"{where}gguf_imatrix.") if "gguf_imatrix" in table else None
        mmproj = _mmproj(check, table.get("gguf_mmproj", "F16"), f"{where}gguf_mmproj")
        if None not in (name, base_model, preset, adapter, merged, repo, gguf_repo):
            out.append(ModelTarget(
                name, base_model, variant, preset, adapter, merged, tuple(cleaned), gguf_folder or merged.parent / "gguf",
                evaluation, repo, gguf_repo, adapter_repo, bool(private), str(base) if base else base_model, train,
                gguf_verify is not False, evaluate, imatrix, mmproj,
            ))
    return out


def _mmproj(check, value: Any, where: str) -> str | None:
    """``gguf_mmproj``: a projector type (``gguf.mmproj``'s), or false for none."""
    from apto_release.gguf import DIRECT_TYPES

    if value is False:
        return None
    if isinstance(value, str) and value.upper() in DIRECT_TYPES:
        return value.upper()
    check.problem(where, f"must be one of {', '.join(f'{t!r}' for t in DIRECT_TYPES)}, or false for no vision projector, not {value!r}")
    return None


def _imatrix(check: _Checker, table: Any, types: Sequence[str], where: str) -> ImatrixOptions | None:
    """``gguf_imatrix = { calibration = "auto" | "PATH", against = [...], general = "PATH" }``."""
    from apto_release.gguf.quantize import K_QUANTS

    if not isinstance(table, dict):
        check.problem(where.rstrip("."), 'expected a table, e.g. { calibration = "auto" }')
        return None
    check.keys(table, _IMATRIX, where)
    if not any(t in K_QUANTS for t in types):
        check.problem(where.rstrip("."), "set, but the model's gguf list has no K- or i-quant to make with it")
    calibration = check.get(table, "calibration", str, where, required=False, default="auto")
    if calibration != "auto":
        calibration = check.path(table, "calibration", where)
    against = []
    for j, item in enumerate(check.get(table, "against", list, where, required=False, default=[]) or [], 1):
        if not isinstance(item, str) or not item:
            check.problem(f"{where}against[{j}]", f"expected a path, found {item!r}")
        else:
            against.append(Path(item) if Path(item).is_absolute() else check.root / item)
    general = check.path(table, "general", where, required=False)
    from apto_release.gguf.imatrix import RECORD_SUFFIXES

    if calibration and calibration != "auto" and not calibration.name.lower().endswith(RECORD_SUFFIXES) and (against or general):
        check.problem(where.rstrip("."), "against and general shape a draw from records; the calibration is a text, used as it is")
    return ImatrixOptions(calibration or "auto", tuple(against), general)


def _engine(check: _Checker, table: Any, where: str, *, default_path: bool) -> EngineSpec | None:
    """One engine table: ``{ url, model, api_key_env }`` or ``{ serve = true, path }``."""
    if not isinstance(table, dict):
        check.problem(where.rstrip("."), 'expected a table, e.g. { url = "http://host:8000/v1", model = "NAME" } or { serve = true }')
        return None
    check.keys(table, _ENGINE, where)
    url = check.get(table, "url", str, where, required=False)
    serve = check.get(table, "serve", bool, where, required=False, default=False)
    model = check.get(table, "model", str, where, required=False)
    key_env = check.get(table, "api_key_env", str, where, required=False)
    path = check.path(table, "path", where, required=False)
    if url is not None and not url.startswith(("http://", "https://")):
        check.problem(f"{where}url", f"{url!r} is not an http(s) URL")
        return None
    if url is not None and (serve or path is not None):
        check.problem(where.rstrip("."), "give either url (a running engine) or serve = true with a path, not both")
        return None
    if url is None:
        if not serve:
            check.problem(where.rstrip("."), "give url (a running engine) or serve = true (start one for a local path)")
            return None
        if path is None and not default_path:
            check.problem(f"{where}path", "missing: serve = true needs the .gguf file or checkpoint folder to serve")
            return None
        if key_env is not None:
            check.problem(f"{where}api_key_env", "for a url; an engine started with serve = true needs no key")
            return None
        return EngineSpec(model=model, path=path)
    if not model:
        check.problem(f"{where}model", "missing: the name of the model the engine at url serves")
        return None
    return EngineSpec(url=url, model=model, api_key_env=key_env)


def _eval(check: _Checker, table: Any, quants: list[str], where: str, organisation: str | None = None) -> EvalConfig | None:
    """``[model.eval]``; ``quants`` are the model's GGUF types (the evaluated ones are a subset);
    ``details_repo`` a repo of the release (always private), named as the other repos are."""
    from apto_release.evals.metrics import BENCHMARK_NAMES, find_benchmark

    if not isinstance(table, dict):
        check.problem(where.rstrip("."), "expected a table [model.eval]")
        return None
    before = len(check.problems)
    check.keys(table, _EVAL, where)
    names: list[str] = []
    for j, name in enumerate(check.get(table, "benchmarks", list, where) or [], 1):
        bench = find_benchmark(name) if isinstance(name, str) else None
        if bench is None:
            check.problem(f"{where}benchmarks[{j}]", f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARK_NAMES)}")
        elif bench.name in names:
            check.problem(f"{where}benchmarks[{j}]", f"{bench.name} is listed twice")
        else:
            names.append(bench.name)
    if "benchmarks" in table and not table["benchmarks"]:
        check.problem(f"{where}benchmarks", "empty: name at least one benchmark")
    judges = []
    raw_judges = check.get(table, "judges", list, where) or []
    for j, judge in enumerate(raw_judges, 1):
        spec = _engine(check, judge, f"{where}judges[{j}].", default_path=False)
        if spec is not None:
            judges.append(spec)
    if "judges" in table and not table["judges"] and any(find_benchmark(n).judged for n in names):
        check.problem(f"{where}judges", "empty: the benchmarks need at least one judge")
    base = _engine(check, table.get("base", {"serve": True}), f"{where}base.", default_path=True)
    tuned = _engine(check, table.get("tuned", {"serve": True}), f"{where}tuned.", default_path=True)
    types = check.gguf_types(table, where, quants, lambda q: f"{q!r} is not one of the model's GGUF types ({', '.join(quants) or 'none'})")
    bench_dir = check.path(table, "bench_dir", where, required=False)
    numbers = {}
    for key, default in (("limit", None), ("max_tokens", None), ("parallel", 4)):
        numbers[key] = check.get(table, key, int, where, required=False, default=default)
        if isinstance(numbers[key], int) and numbers[key] < 1:
            check.problem(f"{where}{key}", "must be at least 1")
    details = check.repo(check.get(table, "details_repo", str, where, required=False), organisation, f"{where}details_repo")
    if len(check.problems) > before or base is None or tuned is None:
        return None
    return EvalConfig(tuple(names), tuple(judges), base, tuned, tuple(types), bench_dir, numbers["limit"],
                      numbers["max_tokens"], numbers["parallel"], details)


def _preset_names() -> list[str]:
    from apto_release.train.presets import preset_names

    return preset_names()
