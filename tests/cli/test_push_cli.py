"""apto-release push: the CLI in a subprocess against LocalHub (HF_ENDPOINT / HF_TOKEN from the environment)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("datasets")
pytest.importorskip("huggingface_hub")

from apto_release.dataset.build import build_dataset  # noqa: E402
from apto_release.dataset.example import write_example_data  # noqa: E402
from apto_release.dataset.sample import SampleOptions, sample_file  # noqa: E402
from apto_release.dataset.validate import ValidateOptions, load_valid_records  # noqa: E402
from apto_release.testing.hub import LFS_THRESHOLD, LocalHub  # noqa: E402

MODEL = "Cli-Safety"
CARD = textwrap.dedent("""\
    ---
    base_model: Qwen/Qwen3.5-9B
    base_model_relation: {relation}
    library_name: transformers
    pipeline_tag: text-generation
    language:
    - ja
    license: apache-2.0
    tags:
    - safety
    ---
    # {MODEL}

    A test card.
    """)


BUILD_CHECKS = ValidateOptions(near_duplicates=False)  # what 'dataset build' checks

@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with LocalHub(tmp_path_factory.mktemp("hub")) as hub:
        yield hub


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("release")
    write_example_data(root / "all.jsonl", n=120, seed=5)
    sampled = sample_file(root / "all.jsonl", root / "sample", SampleOptions(n=20))
    sample = load_valid_records(root / "sample" / "sample.jsonl", BUILD_CHECKS, purpose="building")
    build_dataset(sample.values, root / "dataset-sample", distribution=sampled.report, marker=True, verify=False, source=sample)
    full = load_valid_records(root / "all.jsonl", BUILD_CHECKS, purpose="building")
    build_dataset(full.values, root / "dataset-full", marker=True, verify=False, source=full)
    merged, gguf = root / "merged", root / "gguf"
    merged.mkdir()
    gguf.mkdir()
    (merged / "config.json").write_text("{}\n")
    (merged / "model.safetensors").write_bytes(b"\7" * (LFS_THRESHOLD + 10))
    (merged / "README.md").write_text(CARD.format(relation="finetune", MODEL=MODEL))
    (gguf / f"{MODEL}-Q4_K_M.gguf").write_bytes(b"GGUF" + bytes(100))
    (gguf / "README.md").write_text(CARD.format(relation="quantized", MODEL=MODEL).replace("library_name: transformers\n", ""))
    (root / "release.toml").write_text(textwrap.dedent(f"""\
        organisation = "cli-org"
        version = "1.0.0"
        license = "apache-2.0"

        [dataset.sample]
        repo = "sample"
        folder = "dataset-sample"
        gated = "manual"
        max_rows = 20

        [dataset.full]
        repo = "full"
        folder = "dataset-full"

        [[model]]
        name = "{MODEL}"
        base_model = "Qwen/Qwen3.5-9B"
        preset = "tiny"
        adapter = "adapter"
        merged = "merged"
        gguf = ["Q4_K_M"]
        gguf_folder = "gguf"
        """))
    return root / "release.toml"


def run(hub, tmp_path, *args, env=None):
    environ = {k: v for k, v in os.environ.items() if k not in ("GITHUB_STEP_SUMMARY", "APTO_DEBUG")}
    environ.update(hub.client_env(tmp_path / "hf_home"), **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "apto_release", *map(str, args)], env=environ, capture_output=True,
                          text=True, timeout=300)
    assert hub.token not in proc.stdout and hub.token not in proc.stderr  # never, on any path
    return proc


def test_push_cli_end_to_end(hub, release, tmp_path):
    # dry run first: every repo is new, everything is "add", nothing is written
    hub.clear_requests()
    proc = run(hub, tmp_path, "push", "--manifest", release, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "dataset sample cli-org/sample (new repo): would commit" in proc.stdout
    assert "  add     data/" in proc.stdout and "Dry run: 4 of 4 repo(s) would get a commit; nothing was written." in proc.stdout
    assert {r.method for r in hub.requests} <= {"GET", "HEAD"}

    summary = tmp_path / "summary.md"
    proc = run(hub, tmp_path, "push", "--manifest", release, env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("dataset sample cli-org/sample: committed ") and lines[0].endswith("tag v1.0.0 created")
    assert lines[-1] == "Pushed v1.0.0: 4 commit(s), 0 repo(s) already up to date."
    text = summary.read_text()
    assert text.startswith("### apto-release push v1.0.0\n") and "| Repo | Status | Commit |" in text
    assert "| `cli-org/full` (dataset full) | committed |" in text
    state = hub.repo_state("cli-org/sample", "dataset")
    assert state["gated"] == "manual" and state["private"] is False
    assert hub.repo_state("cli-org/full", "dataset")["private"] is True

    hub.clear_requests()
    proc = run(hub, tmp_path, "push", "--manifest", release, "--only", MODEL)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].startswith(f"model cli-org/{MODEL}: unchanged at ")
    assert hub.log("POST", "/commit/") == [] and hub.log("PUT") == []


def test_push_cli_failure_is_one_line_without_the_token(hub, release, tmp_path):
    repo = f"cli-org/{MODEL}-GGUF"
    changed = release.parent / "gguf" / f"{MODEL}-Q4_K_M.gguf"
    old = changed.read_bytes()
    manifest = release.parent / "release-2.toml"
    manifest.write_text(release.read_text().replace('version = "1.0.0"', 'version = "1.0.1"'))
    try:
        changed.write_bytes(b"GGUF" + bytes(200))
        hub.inject("POST", f"^/api/models/{repo}/commit/", 403)
        summary = tmp_path / "summary.md"
        proc = run(hub, tmp_path, "push", "--manifest", manifest, "--only", MODEL, env={"GITHUB_STEP_SUMMARY": str(summary)})
    finally:
        changed.write_bytes(old)
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"Error: {repo}: the commit failed: ") and "403" in err[0]
    assert f"published: cli-org/{MODEL}; not published: {repo}" in err[0]
    assert "Traceback" not in proc.stderr
    assert "| failed |" in summary.read_text() and "**Push failed:**" in summary.read_text()


def test_push_cli_usage_errors(hub, release, tmp_path):
    proc = run(hub, tmp_path, "push", "--manifest", release, "--only", "nope")
    assert proc.returncode == 2 and "--only nope: not in the manifest" in proc.stderr
    guard = release.parent / "release-guard.toml"
    guard.write_text(release.read_text().replace('folder = "dataset-sample"', 'folder = "dataset-full"'))
    hub.clear_requests()
    proc = run(hub, tmp_path, "push", "--manifest", guard)
    assert proc.returncode == 2 and "built as the full set" in proc.stderr and "Hint:" in proc.stderr
    assert hub.requests == []
    proc = run(hub, tmp_path, "push", "--manifest", release, env={"HF_TOKEN": ""})
    assert proc.returncode == 2 and "no Hugging Face token" in proc.stderr


def test_push_cli_keeps_files_that_are_not_ours_unless_pruned(hub, release, tmp_path):
    proc = run(hub, tmp_path, "push", "--manifest", release, "--only", "dataset.full")
    assert proc.returncode == 0, proc.stderr
    hub.api().upload_file(path_or_fileobj=b"Read me first\n", path_in_repo="NOTICE.md", repo_id="cli-org/full",
                          repo_type="dataset", commit_message="a maintainer's notice")
    manifest = release.parent / "release-prune.toml"
    manifest.write_text(release.read_text().replace('version = "1.0.0"', 'version = "1.0.2"'))

    proc = run(hub, tmp_path, "push", "--manifest", manifest, "--only", "dataset.full", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].endswith("; kept: NOTICE.md, not ours")
    assert "  kept    NOTICE.md" in proc.stdout and "(not ours; --prune deletes it)" in proc.stdout

    proc = run(hub, tmp_path, "push", "--manifest", manifest, "--only", "dataset.full", "--prune")
    assert proc.returncode == 0, proc.stderr
    assert "(0 added, 0 changed, 1 deleted" in proc.stdout and "kept:" not in proc.stdout
    state = hub.repo_state("cli-org/full", "dataset")
    assert "NOTICE.md" not in state["commits"][state["branches"]["main"]]["tree"]


# --- the Hub's own rules at manifest load (issue 13): refused before any request ---------------


@pytest.mark.parametrize(("old", "new", "line"), [
    ('repo = "sample"', 'repo = "ja..safety-sft"',
     "dataset.sample.repo: 'cli-org/ja..safety-sft' is not a Hub repo id: the Hub forbids '--' and '..' in a name"),
    ('repo = "sample"', 'repo = "sample\\n"',
     "dataset.sample.repo: 'cli-org/sample\\n' is not a Hub repo id: '\\n' not allowed"),
    ('version = "1.0.0"', 'version = "1.0.0-x.lock"',
     "version: '1.0.0-x.lock' is not a version the release can tag (v<version> on every repo): the tag 'v1.0.0-x.lock' "
     "would not be a valid git tag: a git ref component does not end with '.lock'"),
    ('version = "1.0.0"', 'version = "01.0.0"', "version: '01.0.0' is not a version the release can tag"),
    ('repo = "full"', 'repo = "SAMPLE"', "dataset.full.repo: repo 'cli-org/SAMPLE' differs only in case from 'cli-org/sample'"),
])
def test_push_cli_refuses_what_the_hub_would_refuse_before_any_request(hub, release, tmp_path, old, new, line):
    manifest = release.parent / "release-bad.toml"
    assert old in release.read_text()
    manifest.write_text(release.read_text().replace(old, new, 1))
    hub.clear_requests()
    proc = run(hub, tmp_path, "push", "--manifest", manifest)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.splitlines()
    assert err[0].startswith(f"Error: {manifest}: {line}"), err
    assert [e for e in err if not e.startswith("Hint:")] == err[:1] and "Traceback" not in proc.stderr
    assert hub.requests == []


def test_push_cli_a_manifest_that_is_not_utf8_is_one_line(hub, release, tmp_path):
    manifest = release.parent / "release-latin1.toml"
    manifest.write_bytes(release.read_text().replace('license = "apache-2.0"', 'license = "licence-libre-é"').encode("latin-1"))
    hub.clear_requests()
    proc = run(hub, tmp_path, "push", "--manifest", manifest)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"Error: {manifest}: the release manifest is not UTF-8 text (byte 0xe9 on line 3)",
                                        "Hint: save it as UTF-8"]
    assert hub.requests == []


def _hub_errors():
    import httpx2
    from huggingface_hub.errors import HFValidationError, HfHubHTTPError, RepositoryNotFoundError

    response = httpx2.Response(403, request=httpx2.Request("POST", "https://hub.test/api/models/x/commit/main"))
    return [
        (HFValidationError("Cannot have -- or .. in repo_id: 'a/b..c'."), 2,
         "Error: the Hugging Face Hub client refused a value: Cannot have -- or .. in repo_id: 'a/b..c'."),
        (HfHubHTTPError("403 Forbidden for hf_SECRETSECRETSECRET\nRequest id: 1", response=response), 1,
         "Error: a Hugging Face Hub call failed (HfHubHTTPError): 403 Forbidden for hf_*** Request id: 1"),
        (RepositoryNotFoundError("404 Client Error.\n\nRepository Not Found for url: x", response=response), 1,
         "Error: a Hugging Face Hub call failed (RepositoryNotFoundError): 404 Client Error. Repository Not Found for url: x"),
    ]


@pytest.mark.parametrize("index", range(3))
def test_a_huggingface_hub_error_that_escapes_a_stage_is_one_line_without_the_token(run_cli, release, monkeypatch, index):
    """The CLI's error boundary: no stage should let one through, but if one does, no traceback and no token."""
    from apto_release.hub import push as push_module

    error, code, line = _hub_errors()[index]

    def push(*args, **kwargs):
        raise error

    monkeypatch.setattr(push_module, "push", push)
    code_, out, err = run_cli("push", "--manifest", release, env={"HF_TOKEN": "hf_SECRETSECRETSECRET"})
    assert code_ == code
    lines = err.splitlines()
    assert lines[0] == line and len(lines) == 2 and lines[1].startswith("Hint: ")
    assert "Traceback" not in err and "SECRET" not in err + out
