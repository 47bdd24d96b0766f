"""Rendering a ValidationReport: text for people, JSON for programs, annotations for GitHub; and the
findings a stage prints when it refuses its input."""

from __future__ import annotations

import functools
import json
import os

import click

from apto_release.dataset.findings import RULES, ValidationReport


def render_text(report: ValidationReport, *, max_findings: int = 20) -> str:
    lines = [
        f"{report.path}: {report.status} — {report.records:,} records, "
        f"{len(report.errors):,} errors, {len(report.warnings):,} warnings"
        + (" (--strict: warnings fail)" if report.strict and report.warnings else ""),
    ]
    counts = report.counts_by_rule()
    if counts:
        lines += ["", "Findings by rule:"]
        width = max(len(rule) for rule in counts)
        for rule, count in counts.items():
            r = RULES[rule]
            lines.append(f"  {r.severity:<8} {rule:<{width}} {count:>7,}  {r.description}")
    total = sum(report.category_counts.values())
    if total:
        lines += ["", "Categories:"]
        for category, count in report.category_counts.items():
            lines.append(f"  {category:<24} {count:>7,}  {count / total:6.1%}")
    clusters = report.near_duplicate_clusters()
    if clusters:
        members = sum(c.size for c in clusters.values())
        largest = max(clusters.values(), key=lambda c: c.size)
        lines += ["", f"Near-duplicate prompts: {len(clusters):,} cluster{'s' if len(clusters) != 1 else ''} holding {members:,} records; "
                      f"the largest has {largest.size:,} (cluster {largest.number}, first on line {largest.representative_line})"]
    if report.findings:
        shown = shown_findings(report, max_findings)
        lines += ["", "Findings:" if len(shown) == len(report.findings) else f"First {len(shown)} findings (errors first):"]
        for f in shown:
            where = f"{report.path}:{f.line}" if f.line is not None else report.path
            rid = f" (id {f.id!r})" if f.id else ""
            lines.append(f"  {where}: {f.severity} [{f.rule}] {f.message}{rid}")
        hidden = len(report.findings) - len(shown)
        if hidden:
            lines.append(f"  … and {hidden:,} more (use --max-findings 0 or --format json to see all)")
    return "\n".join(lines)


def shown_findings(report: ValidationReport, max_findings: int) -> list:
    """The findings a bounded listing shows (``max_findings`` of them; 0: all): errors before
    warnings, so that a cluster of thousands of near-duplicate warnings cannot hide an error,
    each kept in file order."""
    if max_findings <= 0 or len(report.findings) <= max_findings:
        return report.findings
    keep = set(sorted(range(len(report.findings)), key=lambda i: report.findings[i].severity != "error")[:max_findings])
    return [f for i, f in enumerate(report.findings) if i in keep]


def render_json(report: ValidationReport) -> str:
    return json.dumps(report.to_dict(), ensure_ascii=False, indent=2)


def _escape_data(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(value: str) -> str:
    return _escape_data(value).replace(":", "%3A").replace(",", "%2C")


def render_github(report: ValidationReport, *, max_findings: int = 0) -> str:
    """GitHub Actions workflow commands (``::error file=…,line=…::message``), at most
    ``max_findings`` of them (0: all; errors first), then a notice of what was left out."""
    out = []
    shown = shown_findings(report, max_findings)
    for f in shown:
        props = [f"file={_escape_property(report.path)}"]
        if f.line is not None:
            props.append(f"line={f.line}")
        props.append(f"title={_escape_property(f.rule)}")
        rid = f" (id {f.id})" if f.id else ""
        out.append(f"::{f.severity} {','.join(props)}::{_escape_data(f.message + rid)}")
    hidden = len(report.findings) - len(shown)
    if hidden:
        out.append(f"::notice title=validate::{hidden:,} more findings not shown (use --max-findings 0 or --format json to see all)")
    out.append(f"{report.path}: {report.status} — {report.records:,} records, {len(report.errors):,} errors, {len(report.warnings):,} warnings")
    return "\n".join(out)


def show_failed_validation(exc, fmt: str = "text") -> None:
    """Print the findings of a refused input (the first 20) to stderr."""
    click.echo(render_github(exc.report, max_findings=20) if fmt == "github" else render_text(exc.report, max_findings=20), err=True)


def with_validation_report(command):
    """Print the findings when a stage refuses its input because validation failed."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from apto_release.errors import ValidationFailed

        try:
            return command(*args, **kwargs)
        except ValidationFailed as exc:
            show_failed_validation(exc, "github" if os.environ.get("GITHUB_ACTIONS") == "true" else "text")
            raise

    return wrapper
