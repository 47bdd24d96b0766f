"""The push command: publish the release's folders to their Hub repos (one atomic commit each, then the tag)."""

from __future__ import annotations

import os

import click

from apto_release.cli.options import dry_run_option, manifest_option, only_option, trusted_publishing_option


@click.command("push", epilog="Example: apto-release push --manifest release.toml --only dataset.sample --dry-run")
@manifest_option
@only_option("Only this target: dataset.sample, dataset.full or a model's name (its model, GGUF and adapter repos). Repeatable.")
@dry_run_option("Compare with the remote repos and list what would change; write nothing.")
@click.option("--prune", is_flag=True,
              help="Also delete remote files that no release of ours published (by default they are kept and listed).")
@trusted_publishing_option
def push_command(manifest_path, only, dry_run, prune, trusted_publishing):
    """Publish the release: each repo gets one commit with all its changes, then the tag v<version>.

    Compares the local files' checksums with the remote's, so unchanged files are not uploaded and
    an unchanged release makes no commit. A remote file the folder lacks is deleted only when a
    release of ours published it (our commits list their files); anything else is kept and
    listed ("kept: NOTICE.md, not ours") unless --prune is given. Every dataset folder must come
    from validated records (the marker written by 'dataset build'); a public dataset repo only
    takes the sample (built with --report, at most max_rows rows). The token comes from
    HF_TOKEN or the local login, or with Trusted Publishing from one exchange per repo of the
    CI's OIDC id token (see --trusted-publishing); HF_ENDPOINT is honoured. A Markdown summary is appended to
    $GITHUB_STEP_SUMMARY when it is set. Exit 2 for a problem with the inputs, 1 when a push fails.
    """
    from apto_release.release.manifest import load_manifest
    from apto_release.cli.output import append_step_summary, echo_error, plan_lines, push_step_summary
    from apto_release.hub.client import PushError
    from apto_release.hub.push import push, summary_line

    manifest = load_manifest(manifest_path)

    def show(result):
        click.echo(summary_line(result))
        if dry_run:
            for line in plan_lines(result.plan):
                click.echo(line)

    try:
        results = push(manifest, only=only or None, dry_run=dry_run, on_result=show, prune=prune,
                       trusted_publishing=trusted_publishing)
    except PushError as exc:
        if os.environ.get("GITHUB_STEP_SUMMARY"):
            append_step_summary(push_step_summary(exc.results, tag=manifest.tag, error=str(exc)))
        raise
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        append_step_summary(push_step_summary(results, tag=manifest.tag, dry_run=dry_run))
    if dry_run:
        conflicts = [r for r in results if r.error]
        click.echo(f"Dry run: {sum(r.plan.changed for r in results)} of {len(results)} repo(s) would get a commit; nothing was written.")
        if conflicts:
            echo_error(f"{len(conflicts)} repo(s) already have tag {manifest.tag} elsewhere; bump the version.")
            return 1
        return 0
    committed = sum(r.status == "committed" for r in results)
    click.echo(f"Pushed {manifest.tag}: {committed} commit(s), {len(results) - committed} repo(s) already up to date.")
    return 0


def register(cli: click.Group) -> None:
    cli.add_command(push_command)
