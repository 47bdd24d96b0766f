"""Formatting of results and step summaries: the ``Error:``/``Hint:`` lines, the push's plan lines
and the push's and the release's Markdown tables, and the one place that appends to GitHub Actions' ``$GITHUB_STEP_SUMMARY``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from apto_release.hub.push import RepoPlan, RepoResult


def echo_error(message: str, hint: str | None = None) -> None:
    """``Error: <message>`` (and ``Hint: <hint>``) on standard error."""
    click.echo(f"Error: {message}", err=True)
    if hint:
        click.echo(f"Hint: {hint}", err=True)


def plan_lines(plan: RepoPlan) -> list[str]:
    """The dry run's file list of one repo: action, path, size."""
    from apto_release.io import human_size

    rows = [(action, f) for action, files in (("add", plan.add), ("change", plan.change), ("delete", plan.delete),
                                                ("keep", plan.keep)) for f in files]
    rows += [("kept", f) for f in plan.kept]
    width = max((len(f.path) for _, f in rows), default=0)
    return [f"  {action:<7} {f.path:<{width}}  {human_size(f.size)}" + (f"  ({f.reason}; --prune deletes it)" if f.reason else "")
            for action, f in rows]


def push_step_summary(results: Sequence[RepoResult], *, tag: str, error: str | None = None, dry_run: bool = False) -> str:
    """The push's Markdown summary for ``$GITHUB_STEP_SUMMARY``."""
    from apto_release.io import human_size

    title = f"### apto-release push {tag}" + (" (dry run)" if dry_run else "")
    lines = [title, "", "| Repo | Status | Commit | Added | Changed | Deleted | Uploaded | Tag |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for r in results:
        commit = f"`{r.commit[:12]}`" if r.commit else ""
        tag_cell = f"{r.plan.tag} ({r.tag_action})" if r.tag_action else ""
        lines.append(f"| `{r.repo_id}` ({r.plan.target.role}) | {r.status} | {commit} | {r.added} | {r.changed} | "
                     f"{r.deleted} | {human_size(r.bytes_uploaded)} | {tag_cell} |")
    kept = [f"- `{r.repo_id}`: kept `{f.path}` ({f.reason})" for r in results for f in r.plan.kept]
    if kept:
        lines += ["", "Remote files left in place (not published by a release of ours; `--prune` deletes them):", *kept]
    if error:
        lines += ["", f"**Push failed:** {error.replace(chr(10), ' ')}"]
    return "\n".join(lines) + "\n\n"


def release_step_summary(result) -> str:
    """The release's Markdown summary for ``$GITHUB_STEP_SUMMARY``: one row a job."""
    from apto_release.io import human_size
    from apto_release.progress import human_duration
    from apto_release.release.pipeline import STAGE_TITLES

    title = f"### apto-release release {result.manifest.tag}" + (" (dry run)" if result.dry_run else "")
    lines = [title, "", "| Stage | Target | Status | Time | Output | Note |", "|---|---|---|---:|---:|---|"]
    for r in result.reports:
        note = (r.summary or r.reason).replace("|", "\\|")
        time_ = human_duration(r.seconds) if r.status in ("done", "planned") else ""
        lines.append(f"| {STAGE_TITLES[r.stage]} | {r.target} | {r.status} | {time_} | "
                     f"{human_size(r.output_bytes) if r.output_bytes else ''} | {note} |")
    return "\n".join(lines) + "\n"


def append_step_summary(text: str, path: str | os.PathLike | None = None) -> bool:
    """Append to ``$GITHUB_STEP_SUMMARY`` (or ``path``); False when there is none."""
    path = path or os.environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return False
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
    return True
