"""``sample``: draw the public subset whose distribution matches the full set, deterministically.

Allocation: each stratum gets the largest-remainder rounding (Hamilton's method) of its quota
``n * share``, so every stratum is within one record of its exact quota and the counts sum to n.
With several ``--by`` fields the strata nest: categories first, then each category's count is
split over the next field's values the same way, and so on.

Selection: inside a stratum, records are ranked by a keyed BLAKE2b hash of their id (the key is
the seed) and the lowest ranks are taken. The sample therefore depends only on the seed and the
set of records, not on the order of the file or on the machine, and a different seed gives a
different sample.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from apto_release import schema
from apto_release.dataset.findings import PERSONAL_DATA_RULES
from apto_release.dataset.validate import ValidateOptions, load_valid_records
from apto_release.errors import UsageError

#: Fields a sample can be stratified by (and ``metadata.KEY``).
STRATIFIABLE = ("category", "has_jailbreak", "harm_category", "judge_score", "harmful_prefix")
Key = tuple[Any, ...]

#: The files of a sample folder, in the order ``SampleResult.files`` lists them.
SAMPLE_JSONL = "sample.jsonl"
SAMPLE_PARQUET = "sample.parquet"
DISTRIBUTION_JSON = "distribution.json"
DISTRIBUTION_MD = "distribution.md"
SAMPLE_FILES = (SAMPLE_JSONL, SAMPLE_PARQUET, DISTRIBUTION_JSON, DISTRIBUTION_MD)


@dataclass(frozen=True)
class SampleOptions:
    n: int = 500
    seed: int = 0
    by: tuple[str, ...] = ("category",)
    allow_personal_data: bool = False


@dataclass(frozen=True)
class StratumRow:
    """One row of the distribution report: a stratum's count and share in the full set and sample."""

    values: dict[str, Any]  # the stratum's value of each --by field, by field name
    stratum: str
    full_count: int
    full_share: float
    sample_count: int
    sample_share: float
    quota: float
    diff_points: float

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.values,
            "stratum": self.stratum,
            "full_count": self.full_count,
            "full_share": self.full_share,
            "sample_count": self.sample_count,
            "sample_share": self.sample_share,
            "quota": self.quota,
            "diff_points": self.diff_points,
        }


@dataclass(frozen=True)
class Spread:
    """How far the sample's shares are from the full set's over some rows."""

    max_abs_diff_points: float
    total_variation_distance: float


@dataclass(frozen=True)
class SampleReport:
    """The sample's distribution against the pool's: what ``distribution.json`` holds.

    ``draw`` leaves the input fields and ``excluded_personal_data`` unset (None); ``sample_file``
    sets them. ``to_dict`` is the published JSON, keys in their published order.
    """

    n: int
    seed: int
    by: tuple[str, ...]
    full_count: int
    sample_count: int
    categories: tuple[StratumRow, ...]
    summary: Spread  # over the categories (flat in the JSON)
    strata: tuple[StratumRow, ...]
    strata_summary: Spread
    schema_version: int = schema.SCHEMA_VERSION
    input: str | None = None  # the file's name, not the machine's path: the hash says which file
    input_sha256: str | None = None  # of the bytes that validated
    input_count: int | None = None
    excluded_personal_data: list[dict[str, Any]] | None = None

    @property
    def max_abs_diff_points(self) -> float:
        return self.summary.max_abs_diff_points

    @property
    def total_variation_distance(self) -> float:
        return self.summary.total_variation_distance

    def to_dict(self) -> dict[str, Any]:
        head = {}
        if self.input_count is not None:
            head = {"input": self.input, "input_sha256": self.input_sha256, "input_count": self.input_count}
        tail = {} if self.excluded_personal_data is None else {"excluded_personal_data": self.excluded_personal_data}
        return {
            **head,
            "schema_version": self.schema_version,
            "n": self.n,
            "seed": self.seed,
            "by": list(self.by),
            "full_count": self.full_count,
            "sample_count": self.sample_count,
            "categories": [row.to_dict() for row in self.categories],
            **asdict(self.summary),
            "strata": [row.to_dict() for row in self.strata],
            "strata_summary": asdict(self.strata_summary),
            **tail,
        }


@dataclass
class SampleResult:
    """The drawn records (in output order), the distribution report and what was left out."""

    records: list[dict[str, Any]]
    report: SampleReport
    excluded: list[dict[str, Any]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def check_by(by: Sequence[str]) -> tuple[str, ...]:
    """The ``--by`` fields, checked; ``category`` is always the outermost level."""
    fields = tuple(dict.fromkeys(by or ("category",)))
    for name in fields:
        if name not in STRATIFIABLE and not (name.startswith("metadata.") and len(name) > len("metadata.")):
            raise UsageError(
                f"cannot stratify by {name!r}",
                field=name,
                hint=f"use one of {', '.join(STRATIFIABLE)} or metadata.KEY",
            )
    if fields[0] != "category":
        fields = ("category",) + tuple(f for f in fields if f != "category")
    return fields


def stratum_value(record: dict[str, Any], name: str) -> Any:
    if name.startswith("metadata."):
        value = (record.get("metadata") or {}).get(name[len("metadata."):])
    elif name == "harmful_prefix":  # stratify by presence, not by text
        value = bool(record.get("harmful_prefix"))
    else:
        value = record.get(name)
    return value


def _sort_key(name: str, value: Any) -> tuple:
    if name == "category" and value in schema.CATEGORIES:
        return (0, schema.CATEGORIES.index(value), "")
    return (1 if value is not None else 2, 0, str(value))


def largest_remainder(counts: dict[Key, int], n: int, order: Sequence[Key]) -> dict[Key, int]:
    """Split ``n`` over strata in proportion to ``counts`` (Hamilton's method).

    Each stratum gets ``floor(n * c / total)``; the records left over go to the largest
    remainders, ties to the larger stratum, then to the earlier stratum in ``order``. Exact
    integer arithmetic, so the result is the same on every machine.
    """
    total = sum(counts.values())
    if total == 0:
        return dict.fromkeys(counts, 0)
    alloc = {k: n * c // total for k, c in counts.items()}
    left = n - sum(alloc.values())
    position = {k: i for i, k in enumerate(order)}
    by_remainder = sorted(counts, key=lambda k: (-(n * counts[k] % total), -counts[k], position[k]))
    for k in by_remainder[:left]:
        alloc[k] += 1
    return alloc


def allocate(pool: Sequence[dict[str, Any]], n: int, by: Sequence[str]) -> tuple[dict[Key, int], dict[Key, int]]:
    """(leaf stratum → pool count, leaf stratum → sample count) for nested strata ``by``."""
    leaf_counts: dict[Key, int] = defaultdict(int)
    for record in pool:
        leaf_counts[tuple(stratum_value(record, name) for name in by)] += 1

    def split(prefix: Key, budget: int, level: int) -> dict[Key, int]:
        children: dict[Key, int] = defaultdict(int)
        for key, count in leaf_counts.items():
            if key[:level] == prefix:
                children[key[: level + 1]] += count
        order = sorted(children, key=lambda k: _sort_key(by[level], k[level]))
        alloc = largest_remainder(children, budget, order)
        if level + 1 == len(by):
            return alloc
        out: dict[Key, int] = {}
        for child in order:
            out.update(split(child, alloc[child], level + 1))
        return out

    alloc = split((), n, 0)
    return dict(leaf_counts), alloc


def rank_key(seed: int, record_id: str) -> bytes:
    """The keyed hash that orders records inside a stratum."""
    return hashlib.blake2b(record_id.encode("utf-8"), key=str(seed).encode("utf-8"), digest_size=16).digest()


def draw(pool: Sequence[dict[str, Any]], options: SampleOptions) -> tuple[list[dict[str, Any]], SampleReport]:
    """Draw the sample from eligible records; return it (sorted by category, then id) and its report.

    Raises:
        UsageError: n is larger than the pool, smaller than the number of strata, or not positive.
    """
    by = check_by(options.by)
    n = options.n
    if n <= 0:
        raise UsageError(f"-n must be positive, not {n}")
    if n > len(pool):
        raise UsageError(f"-n {n} is larger than the {len(pool):,} eligible records", hint="lower -n")
    full, alloc = allocate(pool, n, by)
    if n < len(full):
        empty = [_label(by, k) for k, v in sorted(alloc.items(), key=lambda kv: _key_order(by, kv[0])) if v == 0]
        raise UsageError(
            f"-n {n} is smaller than the {len(full)} strata of --by {' --by '.join(by)}; "
            f"these strata would get no record: {', '.join(empty)}",
            hint="raise -n or stratify by fewer fields",
        )
    members: dict[Key, list[dict[str, Any]]] = defaultdict(list)
    for record in pool:
        members[tuple(stratum_value(record, name) for name in by)].append(record)
    sample: list[dict[str, Any]] = []
    for key, records in members.items():
        records.sort(key=lambda r: rank_key(options.seed, r["id"]))
        sample.extend(records[: alloc[key]])
    sample.sort(key=lambda r: (schema.CATEGORIES.index(r["category"]), r["id"]))
    return sample, distribution_report(pool, sample, full, alloc, by, options)


def _key_order(by: Sequence[str], key: Key) -> tuple:
    return tuple(_sort_key(name, value) for name, value in zip(by, key))


def _label(by: Sequence[str], key: Key) -> str:
    if len(by) == 1:
        return str(key[0])
    return "/".join(f"{name}={value}" for name, value in zip(by, key))


def _rows(full: dict[Key, int], got: dict[Key, int], n_full: int, n_sample: int, by: Sequence[str]) -> tuple[StratumRow, ...]:
    rows = []
    for key in sorted(full, key=lambda k: _key_order(by, k)):
        full_share = full[key] / n_full
        sample_share = got.get(key, 0) / n_sample
        rows.append(StratumRow(
            values=dict(zip(by, key)),
            stratum=_label(by, key),
            full_count=full[key],
            full_share=full_share,
            sample_count=got.get(key, 0),
            sample_share=sample_share,
            quota=n_sample * full_share,
            diff_points=round((sample_share - full_share) * 100, 6),
        ))
    return tuple(rows)


def _spread(rows: Sequence[StratumRow]) -> Spread:
    return Spread(
        max_abs_diff_points=max((abs(r.diff_points) for r in rows), default=0.0),
        total_variation_distance=round(0.5 * sum(abs(r.sample_share - r.full_share) for r in rows), 9),
    )


def distribution_report(pool, sample, full, alloc, by, options: SampleOptions) -> SampleReport:
    """The sample's distribution against the pool's, per category and per (nested) stratum."""
    n_full, n_sample = len(pool), len(sample)
    cat_full: dict[Key, int] = defaultdict(int)
    cat_sample: dict[Key, int] = defaultdict(int)
    for key, count in full.items():
        cat_full[key[:1]] += count
    for key, count in alloc.items():
        cat_sample[key[:1]] += count
    categories = _rows(cat_full, cat_sample, n_full, n_sample, ("category",))
    strata = _rows(full, alloc, n_full, n_sample, by)
    return SampleReport(
        n=options.n,
        seed=options.seed,
        by=tuple(by),
        full_count=n_full,
        sample_count=n_sample,
        categories=categories,
        summary=_spread(categories),
        strata=strata,
        strata_summary=_spread(strata),
    )


def render_markdown(report: SampleReport) -> str:
    """The distribution report as a Markdown document."""
    lines = [
        "# Sample distribution",
        "",
        f"{report.sample_count:,} of {report.full_count:,} eligible records, seed {report.seed}, "
        f"stratified by {', '.join(report.by)}.",
        "",
    ]

    def table(rows: Sequence[StratumRow], title: str, summary: Spread) -> None:
        lines.extend([
            f"## {title}",
            "",
            "| stratum | full set | full % | sample | sample % | diff (points) |",
            "|---|---:|---:|---:|---:|---:|",
        ])
        for r in rows:
            lines.append(
                f"| {r.stratum} | {r.full_count:,} | {r.full_share * 100:.2f} | {r.sample_count:,} "
                f"| {r.sample_share * 100:.2f} | {r.diff_points:+.2f} |"
            )
        lines.extend([
            "",
            f"Largest difference: {summary.max_abs_diff_points:.2f} points; "
            f"total variation distance: {summary.total_variation_distance:.4f}.",
            "",
        ])

    table(report.categories, "By category", report.summary)
    if report.by != ("category",):
        table(report.strata, "By stratum (" + " / ".join(report.by) + ")", report.strata_summary)
    excluded = report.excluded_personal_data or []
    if excluded:
        lines.extend([f"{len(excluded)} records were left out for personal-data findings: {', '.join(e['id'] for e in excluded)}.", ""])
    return "\n".join(lines)


def sample_file(
    path: str | Path,
    out_dir: str | Path,
    options: SampleOptions = SampleOptions(),
    validate_options: ValidateOptions = ValidateOptions(),
    *,
    overwrite: bool = False,
) -> SampleResult:
    """Validate ``path``, draw the sample and write it to ``out_dir``.

    Writes ``SAMPLE_FILES`` (``sample.jsonl``, ``sample.parquet``, ``distribution.json`` and
    ``distribution.md``) into a folder beside ``out_dir`` that is renamed into place when complete.

    Raises:
        ValidationFailed: the input has validation errors (the report is attached).
        UsageError: see ``draw``; or ``out_dir`` exists and ``overwrite`` is not set.
    """
    from apto_release.dataset.parquet import write_records_parquet
    from apto_release.io import atomic_dir, dump_jsonl_line, write_json, write_text

    check_by(options.by)
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise UsageError("the output folder already exists", path=out_dir, hint="choose another -o or pass --overwrite")
    # Near-duplicate prompts are warnings and do not decide eligibility, so the sampler skips them.
    validation = load_valid_records(path, replace(validate_options, near_duplicates=False), purpose="sampling")
    report = validation.report
    personal = {}
    for finding in report.findings:
        if finding.rule in PERSONAL_DATA_RULES and finding.line is not None:
            personal.setdefault(finding.line, set()).add(finding.rule)
    excluded = []
    pool = []
    for line, record in validation.records:
        if line in personal and not options.allow_personal_data:
            excluded.append({"id": record["id"], "line": line, "rules": sorted(personal[line])})
        else:
            pool.append(record)
    sample, distribution = draw(pool, options)
    distribution = replace(
        distribution,
        input=Path(path).name,
        input_sha256=validation.sha256,
        input_count=report.records,
        excluded_personal_data=excluded,
    )
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        with open(tmp / SAMPLE_JSONL, "w", encoding="utf-8") as f:
            f.writelines(dump_jsonl_line(r) for r in sample)
        write_records_parquet(sample, tmp / SAMPLE_PARQUET)
        write_json(tmp / DISTRIBUTION_JSON, distribution.to_dict())
        write_text(tmp / DISTRIBUTION_MD, render_markdown(distribution))
    return SampleResult(sample, distribution, excluded, [out_dir / name for name in SAMPLE_FILES])
