"""hub.push against LocalHub with the real huggingface_hub client: publish, idempotence, dry run,
faults around the commit, tags, what a push deletes, the pre-flight and what is published."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("datasets")
pytest.importorskip("huggingface_hub")

from huggingface_hub import HfApi, snapshot_download  # noqa: E402

from apto_release.cli.output import append_step_summary, plan_lines, push_step_summary  # noqa: E402
from apto_release.errors import InputError, UsageError  # noqa: E402
from apto_release.hub.client import PushError  # noqa: E402
from apto_release.hub.push import plan_push, push, summary_line  # noqa: E402
from apto_release.release.manifest import load_manifest  # noqa: E402
from tests.hub.releases import (  # noqa: E402
    BIG,
    MODEL,
    _assert_nothing_written,
    _blobs,
    _head_tree,
    _not_a_model,
    _refused,
    _refused_writing_nothing,
    _writes,
)

pytestmark = pytest.mark.usefixtures("_no_xet")


def _local_tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(folder).parts)
    }


def _commits(hub, repo_id, repo_type="model") -> int:
    return len(hub.repo_state(repo_id, repo_type)["commits"])


# --- publishing ---------------------------------------------------------------------------------


def test_push_publishes_every_repo_then_a_second_push_does_nothing(hub, api, release, tmp_path):
    org = release.organisation
    results = push(release, api=api, backoff=0)
    assert [(r.repo_id, r.status, r.tag_action) for r in results] == [
        (f"{org}/ja-safety-sft-40", "committed", "created"),
        (f"{org}/ja-safety-sft", "committed", "created"),
        (f"{org}/{MODEL}", "committed", "created"),
        (f"{org}/{MODEL}-GGUF", "committed", "created"),
        (f"{org}/{MODEL}-LoRA", "committed", "created"),
    ]
    model = results[2]
    assert model.added == 3 and model.changed == model.deleted == 0 and model.bytes_uploaded > len(BIG)

    # what v1.0.0 holds is byte for byte the local folders (hidden files and caches left out)
    for result in results:
        repo_type = result.plan.repo_type
        got = Path(snapshot_download(result.repo_id, repo_type=repo_type, revision="v1.0.0", endpoint=hub.url,
                                     token=hub.token, cache_dir=tmp_path / "cache"))
        want = _local_tree(result.plan.target.folder)
        if result.plan.target.role == "GGUF":
            want.pop(f"{MODEL}-F16.gguf")
        remote = _local_tree(got)
        assert remote == want, result.repo_id
        state = hub.repo_state(result.repo_id, repo_type)
        assert state["tags"]["v1.0.0"] == state["branches"]["main"] == result.commit
        assert state["commits"][result.commit]["title"] == "Release v1.0.0"
        assert len(state["commits"]) == 2  # the initial commit and the release's one
    assert "__pycache__/m.cpython-311.pyc" not in _local_tree(release.models[0].merged)

    sample = api.dataset_info(f"{org}/ja-safety-sft-40")
    assert sample.private is False and sample.gated == "auto"
    full = api.dataset_info(f"{org}/ja-safety-sft")
    assert full.private is True and full.gated is False

    # the sample loads with datasets, from the Hub, in a fresh process
    code = (f"import datasets; ds = datasets.load_dataset({org + '/ja-safety-sft-40'!r}, split='train'); "
            "print(ds.num_rows, sorted(ds.column_names))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **hub.client_env(tmp_path / "hf_home")},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[0] == "40" and "messages" in out.stdout

    # again: nothing to do, nothing uploaded, no commit
    hub.clear_requests()
    again = push(release, api=api, backoff=0)
    assert [(r.status, r.tag_action, r.commit) for r in again] == [("unchanged", "kept", r.commit) for r in results]
    assert hub.log("POST", r"/commit/") == [] and hub.log("PUT") == [] and hub.log("POST", r"/preupload/") == []
    assert _writes(hub) == []
    assert sum(r.received for r in hub.requests) < 2000  # only small JSON bodies (paths-info at most)
    assert "unchanged at" in summary_line(again[0]) and "tag v1.0.0 kept" in summary_line(again[0])


def test_dry_run_lists_changes_and_writes_nothing_then_push_commits_only_the_changed_repo(hub, api, release):
    org = release.organisation
    # a release whose repos do not exist yet: everything is "add", and nothing is created
    hub.clear_requests()
    plans = plan_push(release, api=api)
    assert all(not p.exists and p.add and not (p.change or p.delete or p.keep) for p in plans)
    assert _writes(hub) == []
    assert {r.method for r in hub.requests} <= {"GET", "HEAD", "POST"}

    (release.models[0].adapter / "notes.md").write_text("published by v1.0.0 only\n")
    first = push(release, api=api, backoff=0)
    merged = release.models[0].merged
    (merged / "config.json").write_text('{"model_type": "qwen3", "changed": true}\n')
    (merged / "generation_config.json").write_text("{}\n")
    (release.models[0].gguf_folder / f"{MODEL}-Q8_0.gguf").unlink()
    hub.clear_requests()
    with pytest.raises(InputError, match="no GGUF file for Q8_0"):
        plan_push(release, api=api)
    assert hub.requests == []  # local checks come before any request
    (release.models[0].gguf_folder / f"{MODEL}-Q8_0.gguf").write_bytes(b"GGUF" + bytes(range(256)) * 20)
    (release.models[0].adapter / "notes.md").unlink()  # an adapter without its config is refused: drop another file

    hub.clear_requests()
    results = push(release, api=api, dry_run=True)
    assert _writes(hub) == []
    assert {r.method for r in hub.requests} <= {"GET", "HEAD"}
    by_repo = {r.repo_id: r for r in results}
    model = by_repo[f"{org}/{MODEL}"].plan
    assert [f.path for f in model.change] == ["config.json"] and [f.path for f in model.add] == ["generation_config.json"]
    assert sorted(f.path for f in model.keep) == ["README.md", "model.safetensors"] and model.delete == []
    assert model.change[0].size == len('{"model_type": "qwen3", "changed": true}\n')
    lora = by_repo[f"{org}/{MODEL}-LoRA"].plan
    assert [f.path for f in lora.delete] == ["notes.md"] and not lora.add and not lora.change
    assert not by_repo[f"{org}/{MODEL}-GGUF"].plan.changed and not by_repo[f"{org}/ja-safety-sft"].plan.changed
    assert all(r.status == "planned" for r in results)
    line = summary_line(by_repo[f"{org}/{MODEL}"])
    assert "would commit 1 added, 1 changed, 0 deleted" in line and "tag v1.0.0: CONFLICT" in line  # same version
    assert "tag v1.0.0: kept" in summary_line(by_repo[f"{org}/{MODEL}-GGUF"])
    assert [line.split()[0] for line in plan_lines(model)] == ["add", "change", "keep", "keep"]

    # with the version bumped: exactly one commit per changed repo
    release.path.write_text(release.path.read_text().replace('version = "1.0.0"', 'version = "1.1.0"'))
    hub.clear_requests()
    pushed = push(load_manifest(release.path), api=api, backoff=0)
    assert [r.status for r in pushed] == ["unchanged", "unchanged", "committed", "unchanged", "committed"]
    assert len(hub.log("POST", r"/commit/")) == 2
    assert _commits(hub, f"{org}/{MODEL}") == 3 and _commits(hub, f"{org}/{MODEL}-GGUF") == 2
    assert hub.repo_state(f"{org}/{MODEL}-LoRA")["tags"]["v1.1.0"] == pushed[4].commit != first[4].commit
    assert hub.log("PUT") == []  # nothing big changed


def test_changed_files_with_the_same_version_are_refused_before_any_write(hub, api, release):
    push(release, api=api, only=[MODEL], backoff=0)
    (release.models[0].merged / "config.json").write_text('{"model_type": "qwen3", "v": 2}\n')
    hub.clear_requests()
    with pytest.raises(UsageError, match=r"already published differently: .*tag v1\.0\.0 already points at commit") as exc:
        push(release, api=api, only=[MODEL], backoff=0)
    assert "bump the version" in (exc.value.hint or "")
    assert _writes(hub) == []
    dry = {r.repo_id: r for r in push(release, api=api, only=[MODEL], dry_run=True)}
    assert dry[f"{release.organisation}/{MODEL}"].error.startswith("tag v1.0.0 already points at commit")


def test_a_new_version_commits_the_change_and_tags_it(hub, api, release, tmp_path):
    first = push(release, api=api, only=[MODEL], backoff=0)
    (release.models[0].merged / "config.json").write_text('{"model_type": "qwen3", "v": 2}\n')
    text = release.path.read_text().replace('version = "1.0.0"', 'version = "1.0.1"')
    release.path.write_text(text)
    manifest = load_manifest(release.path)
    hub.clear_requests()
    results = push(manifest, only=[MODEL], api=api, backoff=0)
    assert [r.status for r in results] == ["committed", "unchanged", "unchanged"]
    assert len(hub.log("POST", r"/commit/")) == 1
    assert results[0].changed == 1 and results[0].added == 0 and results[0].bytes_uploaded < 100
    state = hub.repo_state(results[0].repo_id)
    assert state["tags"] == {"v1.0.0": first[0].commit, "v1.0.1": results[0].commit}
    assert state["tags"]["v1.0.1"] != state["tags"]["v1.0.0"]
    assert hub.repo_state(results[1].repo_id)["tags"]["v1.0.1"] == first[1].commit  # unchanged repo: tag on its head
    assert hub.log("PUT") == []  # config.json is a regular file; the big safetensors was not sent again


def test_tag_pointing_elsewhere_is_an_error(hub, api, release):
    org = release.organisation
    repo = f"{org}/{MODEL}-LoRA"
    api.create_repo(repo)
    api.create_tag(repo, tag="v1.0.0")  # on the initial commit
    hub.clear_requests()
    with pytest.raises(UsageError, match=f"{repo}: tag v1.0.0 already points at commit"):
        push(release, api=api, only=[MODEL], backoff=0)
    assert _writes(hub) == []


def test_a_model_card_with_bad_yaml_is_refused_before_any_request(hub, api, release):
    card = release.models[0].gguf_folder / "README.md"
    card.write_text("---\nlicense: [unclosed\n---\n# Card\n")
    hub.clear_requests()
    with pytest.raises(InputError, match="GGUF card is not valid"):
        push(release, api=api)
    assert hub.requests == []


def test_a_dataset_card_s_size_category_is_checked_against_its_parquet_rows(hub, api, release):
    import re

    card = release.datasets["sample"].folder / "README.md"
    text = card.read_text("utf-8")
    assert "- n<1K" in text
    # a card that agrees with itself (its own row count moved too) but not with its Parquet files
    text = re.sub(r"num_examples: \d+", "num_examples: 5000", text.replace("- n<1K", "- 1K<n<10K"))
    card.write_text(text, "utf-8")
    hub.clear_requests()
    with pytest.raises(InputError, match=r"size_categories is \['1K<n<10K'\] but the dataset has \d+ rows: it must be \['n<1K'\]"):
        push(release, api=api, only=["dataset.sample"])
    assert hub.requests == []


# --- the public-repo guard --------------------------------------------------------------------


# --- faults -----------------------------------------------------------------------------------


def test_transient_faults_around_the_commit_end_in_exactly_one_commit(hub, api, release):
    repo = f"{release.organisation}/ja-safety-sft-40"
    api.create_repo(repo, repo_type="dataset")  # so that the injections only hit this repo's requests
    base = f"/api/datasets/{repo}"
    hub.inject("POST", f"^{base}/preupload/", 429)  # the client retries these itself (≥ 1 s each)
    hub.inject("POST", f"^{base}/preupload/", 503)
    hub.inject("PUT", f"^/_lfs/upload/dataset/{repo}/", 503)
    hub.inject("PUT", f"^/_lfs/upload/dataset/{repo}/", 429)
    hub.inject("POST", f"^{base}/commit/", 429)
    hub.inject("POST", f"^{base}/commit/", 412)
    hub.inject("POST", f"^{base}/commit/", 503)
    hub.clear_requests()
    results = push(release, api=api, only=["dataset.sample"], backoff=0)
    assert results[0].status == "committed" and results[0].attempts == 4 and results[0].tag_action == "created"
    commits = hub.log("POST", f"^{base}/commit/")
    assert [r.status for r in commits] == [429, 412, 503, 200]
    assert _commits(hub, repo, "dataset") == 2
    assert [r.status for r in hub.log("POST", f"^{base}/preupload/")][:3] == [429, 503, 200]
    assert [r.status for r in hub.log("PUT", "/_lfs/upload/")][:3] == [503, 429, 200]


def test_a_lost_commit_answer_is_not_committed_twice(hub, api, release, monkeypatch):
    """The commit goes through but its answer is lost (a 502 after the fact): the re-plan sees it, no second commit."""
    from huggingface_hub.errors import HfHubHTTPError

    real = HfApi.create_commit
    calls = []

    def flaky(self, *args, **kwargs):
        info = real(self, *args, **kwargs)
        calls.append(info.oid)
        if len(calls) == 1:
            import httpx2

            response = httpx2.Response(502, request=httpx2.Request("POST", "http://x/commit/main"))
            raise HfHubHTTPError("502 Bad Gateway", response=response)
        return info

    monkeypatch.setattr(HfApi, "create_commit", flaky)
    results = push(release, api=api, only=["dataset.full"], backoff=0)
    assert len(calls) == 1 and results[0].status == "committed" and results[0].commit == calls[0]
    assert _commits(hub, results[0].repo_id, "dataset") == 2
    assert results[0].added == len(results[0].plan.add) > 0


def test_someone_pushing_meanwhile_gives_412_then_a_rebased_commit(hub, api, release, monkeypatch):
    real = HfApi.create_commit
    state = {"raced": False}

    def racing(self, repo_id, operations, **kwargs):
        if not state["raced"]:
            state["raced"] = True  # another client commits the same card first
            from huggingface_hub import CommitOperationAdd

            card = release.models[0].merged / "README.md"
            real(self, repo_id, [CommitOperationAdd("README.md", str(card))], commit_message="someone else")
        return real(self, repo_id, operations, **kwargs)

    monkeypatch.setattr(HfApi, "create_commit", racing)
    results = push(release, api=api, only=[MODEL], backoff=0)
    model = results[0]
    assert model.status == "committed" and model.attempts == 2
    assert sorted(f.path for f in model.plan.add) == ["config.json", "model.safetensors"]  # README.md: kept
    state_ = hub.repo_state(model.repo_id)
    assert len(state_["commits"]) == 3 and state_["tags"]["v1.0.0"] == model.commit
    assert [r.status for r in hub.log("POST", f"/api/models/{model.repo_id}/commit/")] == [200, 412, 200]


def test_a_persistent_500_stops_cleanly_without_a_commit(hub, api, release):
    org = release.organisation
    push(release, api=api, only=["dataset.sample"], backoff=0)
    base = f"/api/datasets/{org}/ja-safety-sft"
    api.create_repo(f"{org}/ja-safety-sft", repo_type="dataset", private=True)
    hub.inject("POST", f"^{base}/commit/", 500, times=3)
    with pytest.raises(PushError) as exc:
        push(release, api=api, backoff=0, attempts=3)
    message = str(exc.value)
    assert message.startswith(f"{org}/ja-safety-sft: the commit failed (after 3 attempts): ")
    assert "500" in message and f"published: {org}/ja-safety-sft-40" in message
    assert f"not published: {org}/ja-safety-sft, {org}/{MODEL}" in message
    assert [r.status for r in exc.value.results] == ["unchanged", "failed", "not started", "not started", "not started"]
    assert _commits(hub, f"{org}/ja-safety-sft", "dataset") == 1
    assert hub.repo_state(f"{org}/ja-safety-sft", "dataset")["tags"] == {}
    assert hub.token not in message
    summary = push_step_summary(exc.value.results, tag="v1.0.0", error=message)
    assert "| failed |" in summary and "**Push failed:**" in summary


def test_a_client_error_on_commit_is_not_retried(hub, api, release):
    repo = f"{release.organisation}/ja-safety-sft"
    api.create_repo(repo, repo_type="dataset", private=True)
    hub.inject("POST", f"^/api/datasets/{repo}/commit/", 403)
    with pytest.raises(PushError, match=f"^{repo}: the commit failed: .*403"):
        push(release, api=api, only=["dataset.full"], backoff=0)
    assert len(hub.log("POST", f"/api/datasets/{repo}/commit/")) == 1


# --- token, visibility, summary -----------------------------------------------------------------


def test_a_public_repo_is_made_private_when_the_manifest_says_so(hub, api, release):
    repo = f"{release.organisation}/ja-safety-sft"
    api.create_repo(repo, repo_type="dataset", private=False)
    push(release, api=api, only=["dataset.full"], backoff=0)
    assert api.dataset_info(repo).private is True


def test_step_summary_is_a_markdown_table(hub, api, release, tmp_path):
    results = push(release, api=api, only=["dataset.sample"], backoff=0)
    path = tmp_path / "summary.md"
    assert append_step_summary(push_step_summary(results, tag="v1.0.0"), path)
    text = path.read_text()
    assert "| Repo | Status | Commit | Added | Changed | Deleted | Uploaded | Tag |" in text
    assert f"| `{results[0].repo_id}` (dataset sample) | committed | `{results[0].commit[:12]}` |" in text
    assert "v1.0.0 (created)" in text


# --- what a push deletes ------------------------------------------------------------------------


def _version(manifest, version: str):
    """The same release folders under another version (a new release of the same repos)."""
    text = manifest.path.read_text()
    manifest.path.write_text(re.sub(r'^version = ".*"$', f'version = "{version}"', text, flags=re.M))
    return load_manifest(manifest.path)


def test_a_file_another_writer_commits_between_plan_and_commit_is_kept_and_reported(hub, api, release):
    """The head moves between the plan and the commit (412): the re-plan keeps the newcomer's file."""
    repo = f"{release.organisation}/{MODEL}"

    def another_writer():  # a maintainer adds NOTICE.md on the Hub while our push is under way
        hub.api().upload_file(path_or_fileobj=b"Notice from a maintainer\n", path_in_repo="NOTICE.md", repo_id=repo,
                              commit_message="Add NOTICE.md")

    hub.before("POST", f"^/api/models/{repo}/commit/", another_writer)
    results = push(release, api=api, only=[MODEL], backoff=0)
    model = results[0]
    assert model.status == "committed" and model.attempts == 2  # 412, then the re-planned commit
    assert [r.status for r in hub.log("POST", f"^/api/models/{repo}/commit/")][-3:] == [200, 412, 200]
    assert "NOTICE.md" in _head_tree(hub, repo)  # not deleted
    assert [(f.path, f.reason) for f in model.plan.kept] == [("NOTICE.md", "not ours")]
    assert model.deleted == 0 and "; kept: NOTICE.md, not ours" in summary_line(model)
    assert hub.repo_state(repo)["tags"]["v1.0.0"] == model.commit


def test_a_hand_added_file_is_kept_and_reported_unless_pruned(hub, api, release):
    repo = f"{release.organisation}/{MODEL}"
    push(release, api=api, only=[MODEL], backoff=0)
    api.upload_file(path_or_fileobj=b"Licence notes\n", path_in_repo="NOTICE.md", repo_id=repo, commit_message="by hand")
    (release.models[0].merged / "config.json").write_text('{"model_type": "qwen3", "v": 2}\n')
    v2 = _version(release, "1.0.1")

    plan = next(p for p in plan_push(v2, api=api, only=[MODEL]) if p.repo_id == repo)  # the dry run says it first
    assert [(f.path, f.reason) for f in plan.kept] == [("NOTICE.md", "not ours")] and plan.delete == []
    assert any(re.fullmatch(r"  kept +NOTICE\.md +14 B  \(not ours; --prune deletes it\)", line) for line in plan_lines(plan))
    result = next(r for r in push(v2, api=api, only=[MODEL], dry_run=True) if r.repo_id == repo)
    assert summary_line(result).endswith("; kept: NOTICE.md, not ours")

    result = next(r for r in push(v2, api=api, only=[MODEL], backoff=0) if r.repo_id == repo)
    assert result.status == "committed" and result.changed == 1 and result.deleted == 0
    assert "NOTICE.md" in _head_tree(hub, repo) and "kept: NOTICE.md, not ours" in summary_line(result)
    assert "kept `NOTICE.md` (not ours)" in push_step_summary([result], tag=v2.tag)

    (release.models[0].merged / "config.json").write_text('{"model_type": "qwen3", "v": 3}\n')
    v3 = _version(release, "1.0.2")
    result = next(r for r in push(v3, api=api, only=[MODEL], backoff=0, prune=True) if r.repo_id == repo)
    assert result.status == "committed" and result.deleted == 1 and result.plan.kept == []
    assert "NOTICE.md" not in _head_tree(hub, repo)


def test_a_file_our_previous_release_published_and_this_one_drops_is_deleted(hub, api, release):
    repo = f"{release.organisation}/{MODEL}"
    merged = release.models[0].merged
    (merged / "old-notes.md").write_text("published by v1.0.0, dropped by v1.0.1\n")
    (merged / "edited.md").write_text("published by v1.0.0, then edited on the Hub\n")
    push(release, api=api, only=[MODEL], backoff=0)
    api.upload_file(path_or_fileobj=b"a maintainer's edit\n", path_in_repo="edited.md", repo_id=repo, commit_message="edit")
    for name in ("old-notes.md", "edited.md"):
        (merged / name).unlink()
    v2 = _version(release, "1.0.1")
    result = next(r for r in push(v2, api=api, only=[MODEL], backoff=0) if r.repo_id == repo)
    assert result.status == "committed" and [f.path for f in result.plan.delete] == ["old-notes.md"]
    assert [(f.path, f.reason) for f in result.plan.kept] == [("edited.md", "changed since our release")]
    tree = _head_tree(hub, repo)
    assert "old-notes.md" not in tree and "edited.md" in tree
    # Our commits say what they published: the history, not a local state file, decides.
    ours = [c for c in api.list_repo_commits(repo) if c.title.startswith("Release ")]
    assert len(ours) == 2 and all("apto-release files (sha256, git blob sha1, path):" in c.message for c in ours)
    assert "old-notes.md" in ours[-1].message and "old-notes.md" not in ours[0].message


# --- pre-flight: a model folder holds a model; the token can write every repo (issue 13) ----------


def test_a_release_whose_fourth_repo_has_a_tag_elsewhere_writes_nothing_to_the_first_three(hub, api, release):
    gguf = f"{release.organisation}/{MODEL}-GGUF"  # the fourth repo of the release
    api.create_repo(gguf)
    api.create_tag(gguf, tag="v1.0.0")
    _refused_writing_nothing(hub, api, release, f"{gguf}: tag v1.0.0 already points at commit")


def test_a_card_the_hub_rejects_is_found_before_the_first_commit(hub, api, release, monkeypatch):
    """The Hub's validator (which also judges each commit) may reject a card the local checks pass:
    every card is sent to it first, so the fourth repo's card cannot fail after three commits."""
    import apto_release.testing.hub.routes as hub_module

    real = hub_module.validate_card_yaml

    def stricter(content, repo_type="model"):
        errors, warnings, meta = real(content, repo_type)
        if "base_model_relation: quantized" in content:
            errors = [*errors, '"base_model_relation" is not accepted here']
        return errors, warnings, meta

    monkeypatch.setattr(hub_module, "validate_card_yaml", stricter)
    error = _refused_writing_nothing(hub, api, release)
    assert str(error) == (f"the Hub rejects a card of the release: {release.organisation}/{MODEL}-GGUF: "
                          '- "base_model_relation" is not accepted here')
    assert len(hub.log("POST", "validate-yaml")) == 5  # one per card, then nothing


@pytest.mark.parametrize("case", ["not a model", "no write access"])
def test_the_cli_refuses_a_failing_pre_flight_with_one_line_and_writes_nothing(hub, release, tmp_path, monkeypatch, case):
    if case == "not a model":
        _not_a_model(release, "only a card")
        want, code = f"refusing to push the model folder to {release.organisation}/{MODEL}: it holds no model, ", 2
    else:
        monkeypatch.setattr(hub, "org_roles", {release.organisation: "read"})
        want, code = f"the token of {hub.user} cannot write every repo of the release: ", 2
    hub.clear_requests()
    before = _blobs(hub)
    environ = {k: v for k, v in os.environ.items() if k not in ("GITHUB_STEP_SUMMARY", "APTO_DEBUG")}
    environ.update(hub.client_env(tmp_path / "hf_home"))
    proc = subprocess.run([sys.executable, "-m", "apto_release", "push", "--manifest", str(release.path)],
                          env=environ, capture_output=True, text=True, timeout=300)
    assert proc.returncode == code, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and want in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and hub.token not in proc.stderr + proc.stdout
    _assert_nothing_written(hub, release, before)


def test_a_file_larger_than_the_hub_takes_is_refused_before_any_request(hub, api, release):
    """The Hub refuses a file over 50 GB at upload time, i.e. after the earlier repos' commits."""
    import dataclasses

    from apto_release.hub.push import MAX_FILE_SIZE
    from apto_release.io import hash_file

    def hasher(path):  # the Q4_K_M file "is" 60 GB: writing one is not needed to test the rule
        info = hash_file(path)
        return dataclasses.replace(info, size=60 * 1000**3) if path.name.endswith("Q4_K_M.gguf") else info

    hub.clear_requests()
    with pytest.raises(InputError) as exc:
        push(release, api=api, backoff=0, hasher=hasher)
    assert MAX_FILE_SIZE == 50 * 1000**3
    assert str(exc.value).startswith("files larger than the Hub takes (") and \
        f"{release.organisation}/{MODEL}-GGUF: {MODEL}-Q4_K_M.gguf (" in str(exc.value)
    assert hub.requests == []
# --- what is published: regular files inside the folder; the credential scan ----------------------

# Fakes are built here by concatenation, so the repo holds no literal that looks like a key.
FAKE_PEM = ("-----BEGIN " + "OPENSSH PRIVATE KEY-----\n" + "b3BlbnNzaC1rZXktdjEAAAAA" * 3
            + "\n-----END " + "OPENSSH PRIVATE KEY-----\n")
FAKE_HF = "hf" + "_" + "Zq8rT3vLm0pXw9YbC2dE5fG7hJ1kN4sUaQ"


def _stored_anywhere(hub, needle: bytes) -> bool:
    """Whether the server holds ``needle`` in any file it stores (blobs, state)."""
    return any(needle in p.read_bytes() for p in Path(hub.root).rglob("*") if p.is_file())


def test_a_symlink_to_a_key_outside_the_folder_is_refused_and_its_bytes_never_reach_the_server(hub, release, tmp_path):
    key = tmp_path / "home" / ".ssh" / "id_rsa"
    key.parent.mkdir(parents=True)
    key.write_text(FAKE_PEM)
    link = release.models[0].merged / "notes.txt"
    link.symlink_to(key)  # absolute
    exc = _refused(hub, release, r"refusing to publish the symlink -> .*id_rsa: it points outside the folder")
    assert str(link) in str(exc) and "copy the file" in exc.hint
    # a relative link into the public sample folder, from the model folder's side too
    link.unlink()
    secret = tmp_path / "release" / "secret.txt"
    secret.write_text("not for the public\n" + FAKE_PEM)
    sample_link = release.datasets["sample"].folder / "notes.txt"
    sample_link.symlink_to(Path("..") / "secret.txt")
    exc = _refused(hub, release, r"refusing to publish the symlink -> \.\./secret\.txt: it points outside the folder")
    assert exc.path == str(sample_link)
    assert not _stored_anywhere(hub, b"b3BlbnNzaC1rZXktdjEAAAAA")


def test_a_symlink_inside_the_folder_is_published_with_its_targets_bytes(hub, api, release):
    merged = release.models[0].merged
    (merged / "docs").mkdir()
    (merged / "docs" / "notes.txt").write_text("the real notes\n")
    (merged / "notes.txt").symlink_to(Path("docs") / "notes.txt")
    push(release, api=api, only=[MODEL], backoff=0)
    repo = f"{release.organisation}/{MODEL}"
    assert api.hf_hub_download(repo, "notes.txt", revision="v1.0.0", cache_dir=str(merged.parent / "dl")) \
        and Path(api.hf_hub_download(repo, "notes.txt", cache_dir=str(merged.parent / "dl"))).read_text() == "the real notes\n"


def test_a_hugging_face_cache_snapshot_of_links_into_its_blobs_is_published(hub, api, release, tmp_path):
    """A snapshot folder is all links into the same repo's blobs/: those are allowed."""
    merged = release.models[0].merged
    repo_dir = tmp_path / "hf-cache" / f"models--org--{MODEL}"
    snapshot = repo_dir / "snapshots" / "0123abcd"
    (repo_dir / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for path in sorted(p for p in merged.iterdir() if p.is_file()):
        blob = repo_dir / "blobs" / hashlib_sha256(path.read_bytes())
        blob.write_bytes(path.read_bytes())
        (snapshot / path.name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    manifest = release.path.parent / "release-cache.toml"
    manifest.write_text(release.path.read_text().replace('merged = "merged"', f'merged = "{snapshot}"'))
    results = push(load_manifest(manifest), api=api, only=[MODEL], backoff=0)
    assert results[0].status == "committed"
    tree = _head_tree(hub, f"{release.organisation}/{MODEL}")
    assert {"config.json", "model.safetensors", "README.md"} <= set(tree)
    # a link from the snapshot into another cache repo's blobs is not
    other = tmp_path / "hf-cache" / "models--org--other" / "blobs"
    other.mkdir(parents=True)
    (other / "abc").write_text(FAKE_PEM)
    (snapshot / "extra.txt").symlink_to(other / "abc")
    _refused(hub, load_manifest(manifest), "extra.txt: refusing to publish the symlink .* points outside the folder", only=[MODEL])


def hashlib_sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("kind", ["folder link", "fifo", "socket", "broken link", "link to a fifo"])
def test_folder_links_fifos_sockets_and_broken_links_are_refused_with_their_names(hub, release, tmp_path, kind):
    import socket

    merged = release.models[0].merged
    name = merged / "odd"
    if kind == "folder link":
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / "key.pem").write_text(FAKE_PEM)
        name.symlink_to(tmp_path / "elsewhere")
        match = "odd: refusing to publish the symlink .* it points outside the folder"
    elif kind == "fifo":
        os.mkfifo(name)  # opening it would block the push forever
        match = r"odd: refusing to publish it: it is a FIFO \(named pipe\), not a regular file"
    elif kind == "socket":
        name = Path(tempfile_short()) / "odd.sock"  # AF_UNIX paths are short: bind elsewhere, link the folder to it
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(name))
        sock.close()
        shutil.move(str(name), merged / "odd")
        name = merged / "odd"
        match = "odd: refusing to publish it: it is a socket"
    elif kind == "broken link":
        name.symlink_to(tmp_path / "nothing-here")
        match = "odd: refusing to publish the symlink .*: its target does not exist"
    else:
        os.mkfifo(merged / "pipe")
        (merged / "sub").mkdir()
        (merged / "sub" / "odd").symlink_to(Path("..") / "pipe")
        match = r"pipe: refusing to publish it: it is a FIFO"  # the FIFO itself comes first in the walk
    _refused(hub, release, match)


def tempfile_short() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="s", dir="/tmp")


def test_a_folder_link_inside_the_folder_is_refused_too(hub, release):
    merged = release.models[0].merged
    (merged / "docs").mkdir()
    (merged / "docs" / "a.txt").write_text("a\n")
    (merged / "docs-link").symlink_to("docs")
    _refused(hub, release, "docs-link: refusing to publish the symlink -> docs: it links a folder")


def test_a_link_to_a_fifo_inside_the_folder_is_refused(hub, release):
    merged = release.models[0].merged
    os.mkfifo(merged / ".pipe")  # hidden: not published itself
    (merged / "data.txt").symlink_to(".pipe")
    _refused(hub, release, r"data.txt: refusing to publish the symlink -> \.pipe: its target is a FIFO")


def test_a_gguf_file_that_links_outside_is_refused(hub, release, tmp_path):
    model = release.models[0]
    outside = tmp_path / "outside.gguf"
    gguf = model.gguf_folder / f"{MODEL}-Q8_0.gguf"
    outside.write_bytes(gguf.read_bytes())
    gguf.unlink()
    gguf.symlink_to(outside)
    _refused(hub, release, f"{MODEL}-Q8_0.gguf: refusing to publish the symlink")


def test_a_token_in_a_model_folder_is_refused_naming_file_and_line_masked(hub, release):
    notes = release.models[0].merged / "notes.md"
    notes.write_text(f"# Notes\n\nlogin with\nHF_TOKEN={FAKE_HF}\n")
    exc = _refused(hub, release, r"refusing to push to the model repo .*: it holds what looks like a Hugging Face token: hf_Zq\*\*\*\* \(37 chars\)")
    assert (exc.path, exc.line) == (str(notes), 4)
    assert FAKE_HF not in str(exc) and FAKE_HF[3:] not in str(exc)


def test_a_pem_key_in_the_public_sample_is_refused(hub, release):
    key = release.datasets["sample"].folder / "deploy.pem"
    key.write_text(FAKE_PEM)
    exc = _refused(hub, release, r"dataset sample repo .* a private key \(PEM\): -----BEGIN OPENSSH PRIVATE KEY-----")
    assert (exc.path, exc.line) == (str(key), 1)


def test_allow_secrets_in_lets_a_listed_fixture_through(hub, api, release):
    fixture = release.models[0].merged / "fake_keys.json"
    fixture.write_text(json.dumps({"token": FAKE_HF}) + "\n")
    _refused(hub, release, "fake_keys.json:1: refusing to push")
    text = release.path.read_text()
    listed = release.path.with_name("release-allow.toml")
    listed.write_text(text.replace('license = "apache-2.0"\n', 'license = "apache-2.0"\n'
                                   'allow_secrets_in = [{path = "merged/fake_keys.json", reason = "fake keys for the tests"}]\n', 1))
    manifest = load_manifest(listed)
    assert manifest.allow_secrets_in == {release.path.parent.resolve() / "merged" / "fake_keys.json": "fake keys for the tests"}
    results = push(manifest, api=api, only=[MODEL], backoff=0)
    assert results[0].status == "committed"


@pytest.mark.parametrize("entry, problem", [
    ('allow_secrets_in = [{path = "merged/x.json"}]', r"allow_secrets_in\[0\]: a reason is required"),
    ('allow_secrets_in = [{path = "merged/x.json", reason = " "}]', r"allow_secrets_in\[0\]: a reason is required"),
    ('allow_secrets_in = {"merged/x.json" = ""}', r"allow_secrets_in.merged/x.json: a reason is required"),
    ('allow_secrets_in = ["merged/x.json"]', r"allow_secrets_in\[0\]: expected a table with path and reason"),
    ('allow_secrets_in = [{path = "merged/x.json", reason = "r", why = 1}]', r"allow_secrets_in\[0\]\.why: unknown key"),
    ('allow_secrets_in = "merged/x.json"', r"allow_secrets_in: expected a table"),
])
def test_allow_secrets_in_needs_a_reason(release, entry, problem):
    from apto_release.release.manifest import ManifestError

    bad = release.path.with_name("release-bad.toml")
    bad.write_text(release.path.read_text().replace('license = "apache-2.0"\n', f'license = "apache-2.0"\n{entry}\n', 1))
    with pytest.raises(ManifestError, match=problem):
        load_manifest(bad)


def test_allow_secrets_in_as_a_table(release):
    listed = release.path.with_name("release-table.toml")
    listed.write_text(release.path.read_text().replace('license = "apache-2.0"\n', 'license = "apache-2.0"\n'
                                                       'allow_secrets_in = {"merged/k.json" = "fake"}\n', 1))
    assert load_manifest(listed).allow_secrets_in == {release.path.parent.resolve() / "merged" / "k.json": "fake"}


@pytest.mark.parametrize("case", ["symlinked key", "token", "fifo"])
def test_the_cli_refuses_in_one_line_and_creates_no_repo(hub, release, tmp_path, case):
    import secrets

    merged = release.models[0].merged
    key = tmp_path / "id_rsa"
    key.write_text(FAKE_PEM)
    token = "hf" + "_" + "Cli" + secrets.token_hex(16)  # its own: another test publishes FAKE_HF on purpose
    if case == "symlinked key":
        (merged / "notes.txt").symlink_to(key)
        expected = f"notes.txt: refusing to publish the symlink -> {key}: it points outside the folder"
    elif case == "token":
        (merged / "notes.txt").write_text(f"x\n{token}\n")
        expected = "notes.txt:2: refusing to push to the model repo"
    else:
        os.mkfifo(merged / "notes.txt")
        expected = "notes.txt: refusing to publish it: it is a FIFO (named pipe), not a regular file"
    environ = {k: v for k, v in os.environ.items() if k not in ("GITHUB_STEP_SUMMARY", "APTO_DEBUG")}
    environ.update(hub.client_env(tmp_path / "hf_home"))
    hub.clear_requests()
    for args in ([], ["--dry-run"]):
        proc = subprocess.run([sys.executable, "-m", "apto_release", "push", "--manifest", str(release.path), *args],
                              env=environ, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2
        errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and expected in errors[0], proc.stderr
        assert "Traceback" not in proc.stderr and token not in proc.stderr + proc.stdout
    assert hub.requests == []
    assert not _stored_anywhere(hub, b"b3BlbnNzaC1rZXktdjEAAAAA") and not _stored_anywhere(hub, token.encode())


def test_the_cards_gguf_table_and_the_release_digests_follow_the_same_rule(release, tmp_path):
    from apto_release.cards.model import find_gguf_outputs
    from apto_release.release.artifacts import merged_files

    model = release.models[0]
    gguf = model.gguf_folder / f"{MODEL}-Q8_0.gguf"
    outside = tmp_path / "outside.gguf"
    outside.write_bytes(gguf.read_bytes())
    gguf.unlink()
    gguf.symlink_to(outside)
    with pytest.raises(InputError, match=r"Q8_0\.gguf: refusing to publish the symlink -> .*outside\.gguf: it points outside"):
        find_gguf_outputs(model)
    os.mkfifo(model.merged / "pipe")
    with pytest.raises(InputError, match=r"pipe: refusing to publish it: it is a FIFO"):
        merged_files(model)  # the release's digest of the folder: never opens the FIFO
    (model.merged / "pipe").unlink()
    (model.merged / "linked-dir").symlink_to(tmp_path)
    with pytest.raises(InputError, match=r"linked-dir: refusing to publish the symlink .* points outside"):
        merged_files(model)
    # a folder that is only read, never published (the base checkpoint), may link anywhere
    from apto_release.release.artifacts import target_files

    (model.merged / "linked-dir").unlink()
    (model.merged / "shared.bin").symlink_to(outside)
    assert model.merged / "shared.bin" in target_files(model.merged, published=False)


