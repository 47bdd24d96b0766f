"""``dataset build``: the release folder that the Hub and ``datasets.load_dataset(DIR)`` read as is.

Layout::

    README.md                                     dataset card (YAML metadata + bilingual body)
    data/<category>/train-00000-of-00001.parquet  one file per category present, rows sorted by id

Every Parquet file carries the same explicit ``datasets.Features`` (embedded in the file's
``huggingface`` schema metadata, and repeated in the card's ``dataset_info``):

- ``id``: string; ``category``: ``ClassLabel(names=CATEGORIES)`` in the fixed order;
- ``messages``: ``List({"role": string, "content": string})`` (TRL's conversational format);
- ``harmful_prefix``: string (null when absent); ``has_jailbreak``: bool;
  ``harm_category``: string (null when absent); ``judge_score``: int8;
- ``metadata``: a struct of strings over the sorted union of the metadata keys of *all* records
  (a key a record lacks is null). When no record has metadata the column is left out.

Fields outside schema v1 are not written.

The folder is written beside ``out_dir`` and renamed into place only after it has been checked
(``verify=True``): it is loaded offline with ``datasets.load_dataset`` (default config and each
category config) into a temporary cache, compared with the records, and its card is parsed back
with ``huggingface_hub``. Any difference raises ``BuildError`` and nothing is put in place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apto_release import schema
from apto_release.cards.dataset import CardOptions, config_names, configs_metadata, render_dataset_card
from apto_release.dataset.parquet import metadata_keys, write_table
from apto_release.errors import BuildError, InputError, UsageError
from apto_release.io import atomic_dir

if TYPE_CHECKING:
    from apto_release.dataset.sample import SampleReport
    from apto_release.dataset.validate import ValidateOptions, ValidRecords

SPLIT = "train"
SHARD_NAME = "train-00000-of-00001.parquet"
README = "README.md"
#: The local provenance marker (hidden: never uploaded); ``hub.targets`` reads it for its guards.
BUILD_MARKER = ".apto-build.json"


@dataclass(frozen=True)
class BuildResult:
    out_dir: Path
    rows: int
    #: Rows per category, in ``CATEGORIES`` order (0 for a category with no record).
    rows_per_category: dict[str, int]
    #: Files written, relative to ``out_dir``: ``README.md`` then the Parquet files.
    files: list[Path]
    #: ``default`` and the categories present, in ``CATEGORIES`` order.
    configs: list[str]


def data_file(category: str) -> Path:
    """The Parquet file of ``category``, relative to the release folder."""
    return Path("data") / category / SHARD_NAME


def dataset_features(keys: Sequence[str] = ()):
    """The ``datasets.Features`` of a release whose metadata has ``keys`` (none: no column)."""
    from datasets import ClassLabel, Features, List, Value

    features = {
        "id": Value("string"),
        "category": ClassLabel(names=list(schema.CATEGORIES)),
        "messages": List({"role": Value("string"), "content": Value("string")}),
        "harmful_prefix": Value("string"),
        "has_jailbreak": Value("bool"),
        "harm_category": Value("string"),
        "judge_score": Value("int8"),
    }
    if keys:
        features["metadata"] = {k: Value("string") for k in keys}
    return Features(features)


def release_row(record: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """One record as a row of the release (category still a name; metadata over ``keys``)."""
    row = {
        "id": record["id"],
        "category": record["category"],
        "messages": [{"role": m["role"], "content": m["content"]} for m in record["messages"]],
        "harmful_prefix": record.get("harmful_prefix"),
        "has_jailbreak": record["has_jailbreak"],
        "harm_category": record.get("harm_category"),
        "judge_score": record["judge_score"],
    }
    if keys:
        meta = record.get("metadata") or {}
        row["metadata"] = {k: meta.get(k) for k in keys}
    return row


# --- loading a folder offline -----------------------------------------------------------------


@contextlib.contextmanager
def offline_and_quiet() -> Iterator[None]:
    """Make ``datasets`` and ``huggingface_hub`` stay off the network, and hide progress bars.

    ``datasets.config.HF_HUB_OFFLINE`` and ``huggingface_hub.constants.HF_HUB_OFFLINE`` are read
    when used, so they are switched here and restored afterwards: nothing leaks into the rest of
    the process (the environment is not touched). Not thread-safe.
    """
    import datasets
    import datasets.config as dconfig
    from huggingface_hub import constants as hconstants

    saved = (dconfig.HF_HUB_OFFLINE, dconfig.HF_DATASETS_OFFLINE, hconstants.HF_HUB_OFFLINE)
    bars_were_on = not datasets.are_progress_bars_disabled()
    dconfig.HF_HUB_OFFLINE = dconfig.HF_DATASETS_OFFLINE = hconstants.HF_HUB_OFFLINE = True
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        dconfig.HF_HUB_OFFLINE, dconfig.HF_DATASETS_OFFLINE, hconstants.HF_HUB_OFFLINE = saved
        if bars_were_on:
            datasets.enable_progress_bars()


def load_offline(path: str | Path, name: str | None = None, *, cache_dir: str | Path, **kwargs):
    """``datasets.load_dataset(path, name, split="train")`` offline, in memory, into ``cache_dir``."""
    import datasets

    with offline_and_quiet():
        return datasets.load_dataset(
            str(path), name, split=SPLIT, cache_dir=str(cache_dir), keep_in_memory=True, **kwargs
        )


# --- writing ----------------------------------------------------------------------------------


def _write_parquet(rows: list[dict[str, Any]], features, dest: Path) -> None:
    import datasets

    try:
        ds = datasets.Dataset.from_list(rows, features=features)
    except (TypeError, ValueError, OverflowError, KeyError) as e:  # pyarrow errors are ValueErrors
        raise InputError(
            f"the records do not fit record schema v1: {e}", hint="check them with 'apto-release validate'"
        ) from e
    dest.parent.mkdir(parents=True, exist_ok=True)
    # datasets' features ride along in the schema's "huggingface" metadata, as to_parquet writes them
    write_table(ds.data.table.cast(features.arrow_schema), dest)


def _split_sizes(tmp: Path, present: Sequence[str], features, cache_dir: Path) -> dict[str, dict[str, int]]:
    """Per config: rows, Arrow bytes and Parquet bytes, as ``datasets`` counts them when loading."""
    import datasets

    sizes: dict[str, dict[str, int]] = {}
    for name in config_names(present):
        files = sorted(str(tmp / data_file(c)) for c in (present if name == "default" else [name]))
        with offline_and_quiet():
            ds = datasets.load_dataset(
                "parquet",
                data_files={SPLIT: files},
                split=SPLIT,
                features=features,
                cache_dir=str(cache_dir / name),
                keep_in_memory=True,
            )
        split = ds.info.splits[SPLIT]
        sizes[name] = {
            "num_examples": int(split.num_examples),
            "num_bytes": int(split.num_bytes),
            "download_size": sum(os.path.getsize(f) for f in files),
        }
    return sizes


# --- checking ---------------------------------------------------------------------------------


def _feature_diff(got, want) -> str:
    """The columns whose features differ, for an error message."""
    parts = []
    for column in dict.fromkeys([*want, *got]):
        if got.get(column) != want.get(column):
            parts.append(f"{column}: {got.get(column, 'missing')!r} instead of {want.get(column, 'nothing')!r}")
    return "; ".join(parts) or "column order differs"


def _comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (r["id"], r["category"]))


def verify_release(
    path: str | Path,
    expected: Mapping[str, list[dict[str, Any]]],
    features,
    options: CardOptions,
    *,
    shown_as: str | Path | None = None,
) -> None:
    """Check a release folder: every config loads offline with the rows and features expected,
    and the card's metadata parses back with what it should say.

    ``expected`` maps each category present to its rows (``release_row``, category as a name).
    ``shown_as`` is the path named in errors (the final folder, when ``path`` is a temporary one).

    Raises:
        BuildError: on the first difference.
    """
    from huggingface_hub import DatasetCard

    path = Path(path)
    shown = Path(shown_as) if shown_as is not None else path
    present = [c for c in schema.CATEGORIES if expected.get(c)]
    names = config_names(present)
    label = features["category"]
    if list(label.names) != list(schema.CATEGORIES):  # pragma: no cover - a bug, not a user error
        raise BuildError("the category ClassLabel is not in the fixed order", path=shown)

    # The card first: a broken card would make every load below fail less clearly.
    try:
        data = DatasetCard.load(path / README).data
    except Exception as e:
        raise BuildError(f"the dataset card does not parse: {e}", path=shown / README) from e
    problems = []
    if data.get("language") != ["ja"]:
        problems.append(f"language is {data.get('language')!r}, not ['ja']")
    if data.get("license") != options.license:
        problems.append(f"license is {data.get('license')!r}, not {options.license!r}")
    if data.get("configs") != configs_metadata(present):
        problems.append(f"configs are {data.get('configs')!r}")
    if options.gated_prompt and data.get("extra_gated_prompt") != options.gated_prompt:
        problems.append("extra_gated_prompt differs from the options")
    if options.gated_fields and data.get("extra_gated_fields") != dict(options.gated_fields):
        problems.append("extra_gated_fields differs from the options")
    infos = data.get("dataset_info")
    info_names = [i.get("config_name") for i in infos] if isinstance(infos, list) else None
    if info_names is None or sorted(info_names) != sorted(names):
        problems.append(f"dataset_info covers configs {info_names}, not {names}")
    if problems:
        raise BuildError("the dataset card is wrong: " + "; ".join(problems), path=shown / README)

    with tempfile.TemporaryDirectory(prefix="apto-release-verify-") as cache:
        for name in names:
            try:
                ds = load_offline(path, name, cache_dir=Path(cache) / name)
            except Exception as e:
                raise BuildError(
                    f"config {name!r} does not load with datasets: {type(e).__name__}: {e}", path=shown
                ) from e
            if ds.features != features:
                diff = _feature_diff(ds.features, features)
                raise BuildError(f"config {name!r} loads with other features: {diff}", path=shown)
            if list(ds.features["category"].names) != list(schema.CATEGORIES):
                raise BuildError(f"config {name!r}: category names are {ds.features['category'].names}", path=shown)
            cats = present if name == "default" else [name]
            want = [dict(r, category=label.str2int(r["category"])) for c in cats for r in expected[c]]
            if ds.num_rows != len(want):
                raise BuildError(f"config {name!r} has {ds.num_rows} rows, expected {len(want)}", path=shown)
            got = ds.to_list()
            if _comparable(got) != _comparable(want):
                bad = next((w["id"] for g, w in zip(_comparable(got), _comparable(want)) if g != w), "?")
                raise BuildError(
                    f"config {name!r}: the rows read back differ from the records (first at id {bad!r})", path=shown
                )
            del ds, got


# --- the stage --------------------------------------------------------------------------------


def build_dataset(
    records: Sequence[dict[str, Any]],
    out_dir: str | Path,
    *,
    options: CardOptions = CardOptions(),
    distribution: SampleReport | Mapping[str, Any] | None = None,
    overwrite: bool = False,
    verify: bool = True,
    marker: bool = False,
    source: ValidRecords | None = None,
) -> BuildResult:
    """Write the Hub release folder of ``records`` (already validated schema-v1 records) to ``out_dir``.

    ``distribution`` is the sampler's report (``distribution.json``, as read or as ``sample_file``
    returned it); the card shows its full-set vs sample table. Without it the card shows the
    records' own distribution.

    ``marker`` also writes ``BUILD_MARKER`` (hidden, so never uploaded): ``{"kind": "sample" when
    built with a distribution report else "full", "rows", "sample_of": the report's input_sha256
    or null, "toolkit": version, "records": {"file", "sha256", "validation"}}``. The ``records``
    entry comes only from ``source``, the ``load_valid_records`` result the records were taken
    from (the SHA-256 of the bytes that passed, and the verdict); without one it is null.
    ``apto-release push`` refuses a dataset folder whose marker does not name a records file
    that validated, and a public dataset repo without a sample marker.

    Raises:
        UsageError: ``out_dir`` exists and ``overwrite`` is not set; no records; the
            distribution report does not describe these records.
        InputError: a record does not fit the schema's types.
        BuildError: the folder written does not read back as expected (nothing is put in place).
    """
    from apto_release.dataset.sample import SampleReport

    out_dir = Path(out_dir)
    _refuse_existing(out_dir, overwrite)
    if isinstance(distribution, SampleReport):
        distribution = distribution.to_dict()
    if not records:
        raise UsageError("there are no records to build a dataset from")
    unknown = sorted({str(r.get("category")) for r in records} - set(schema.CATEGORIES))
    if unknown:
        raise InputError(
            f"unknown categories: {', '.join(unknown)}", hint="check the records with 'apto-release validate'"
        )

    keys = metadata_keys(records)
    by_category: dict[str, list[dict[str, Any]]] = {c: [] for c in schema.CATEGORIES}
    for record in records:
        by_category[record["category"]].append(release_row(record, keys))
    for rows in by_category.values():
        rows.sort(key=lambda r: r["id"])
    counts = {c: len(rows) for c, rows in by_category.items()}
    present = [c for c in schema.CATEGORIES if counts[c]]
    # Render once without sizes first: a bad distribution report is a UsageError before any write.
    render_dataset_card(counts, options=options, distribution=distribution, metadata_keys=keys)

    features = dataset_features(keys)
    files = [Path(README)] + [data_file(c) for c in present]
    try:
        with atomic_dir(out_dir, overwrite=overwrite) as tmp:
            for category in present:
                _write_parquet(by_category[category], features, tmp / data_file(category))
            with tempfile.TemporaryDirectory(prefix="apto-release-sizes-") as cache:
                sizes = _split_sizes(tmp, present, features, Path(cache))
            text = render_dataset_card(
                counts,
                options=options,
                distribution=distribution,
                metadata_keys=keys,
                features=features,
                split_sizes=sizes,
            )
            (tmp / README).write_text(text, encoding="utf-8")
            if verify:
                verify_release(tmp, {c: by_category[c] for c in present}, features, options, shown_as=out_dir)
            if marker:
                import json

                from apto_release import __version__

                sample_of = distribution.get("input_sha256") if distribution else None
                validated = None if source is None else {
                    "file": source.path.name, "sha256": source.sha256, "validation": source.report.status}
                provenance = {"kind": "sample" if distribution else "full", "rows": sum(counts.values()),
                              "sample_of": sample_of, "toolkit": __version__, "records": validated}
                (tmp / BUILD_MARKER).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    except FileExistsError as e:
        if e.args != (out_dir,):
            raise
        # Another writer created out_dir between the check above and atomic_dir's own check.
        raise UsageError(
            "the output folder already exists", path=out_dir, hint="choose another -o or pass --overwrite"
        ) from e
    return BuildResult(
        out_dir=out_dir,
        rows=sum(counts.values()),
        rows_per_category=counts,
        files=files,
        configs=config_names(present),
    )


def build_from_file(
    input_path: str | Path,
    out_dir: str | Path,
    *,
    validate_options: ValidateOptions | Callable[[], ValidateOptions],
    card: Mapping[str, Any] = {},
    gated_fields: Sequence[str] = (),
    report: str | Path | None = None,
    overwrite: bool = False,
    verify: bool = True,
) -> BuildResult:
    """``dataset build``: the Hub folder of the records file ``input_path``, if it validates, with a marker.

    ``card`` holds ``CardOptions`` fields (a None value keeps the default); ``gated_fields`` are
    access-request fields as ``NAME=TYPE`` that replace the defaults; ``report`` is the sampler's
    ``distribution.json``. ``validate_options`` may be a callable, called once the cheap checks
    (output folder, card options, report) have passed, so that its option files (benchmarks,
    taxonomy) are read only then. Near duplicates are not checked: they are warnings, reported by
    ``validate``, and do not decide what is built.

    Raises:
        UsageError: ``out_dir`` exists and ``overwrite`` is not set; a gated field is not
            ``NAME=TYPE``; see ``build_dataset``.
        InputError: ``report`` cannot be read or is not a distribution report.
        ValidationFailed: the records do not pass validation (see ``load_valid_records``).
    """
    from apto_release.dataset.validate import load_valid_records

    out_dir = Path(out_dir)
    _refuse_existing(out_dir, overwrite)
    options = CardOptions(**{k: v for k, v in card.items() if v is not None})
    if gated_fields:
        options = dataclasses.replace(options, gated_fields=_parse_gated_fields(gated_fields))
    distribution = None if report is None else _read_distribution(Path(report))
    if callable(validate_options):
        validate_options = validate_options()
    valid = load_valid_records(input_path, dataclasses.replace(validate_options, near_duplicates=False), purpose="building")
    return build_dataset(
        valid.values, out_dir, options=options, distribution=distribution, overwrite=overwrite, verify=verify, marker=True,
        source=valid,
    )


def _refuse_existing(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not overwrite:
        raise UsageError("the output folder already exists", path=out_dir, hint="choose another -o or pass --overwrite")


def _parse_gated_fields(items: Sequence[str]) -> dict[str, str]:
    """``NAME=TYPE`` items (``--gated-field``) as the card's ``gated_fields``."""
    parsed = {}
    for item in items:
        name, sep, kind = item.partition("=")
        if not sep or not name.strip() or not kind.strip():
            raise UsageError(f"--gated-field {item!r} is not NAME=TYPE", hint="for example --gated-field Affiliation=text")
        parsed[name.strip()] = kind.strip()
    return parsed


def _read_distribution(path: Path) -> dict[str, Any]:
    """The sampler's ``distribution.json`` at ``path``, as read (the card checks its rows)."""
    import json

    try:
        distribution = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read the sample report: {exc}", path=path) from exc
    if not isinstance(distribution, dict) or "categories" not in distribution:
        raise InputError("not a distribution report from 'apto-release sample'", path=path, field="categories")
    return distribution
