"""release.push against LocalHub with the real huggingface_hub client: publish, idempotence, dry run,
the public-repo guard, faults around the commit, tags and the token."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("datasets")
pytest.importorskip("huggingface_hub")

from huggingface_hub import HfApi, snapshot_download  # noqa: E402

from apto_release.dataset.build import BUILD_MARKER, build_dataset  # noqa: E402
from apto_release.dataset.example import write_example_data  # noqa: E402
from apto_release.dataset.sample import SampleOptions, sample_file  # noqa: E402
from apto_release.dataset.validate import ValidateOptions, load_valid_records  # noqa: E402
from apto_release.errors import InputError, UsageError  # noqa: E402
from apto_release.io import sha256_file  # noqa: E402
from apto_release.release.manifest import load_manifest  # noqa: E402
from apto_release.hub.push import (  # noqa: E402
    PushError,
    append_step_summary,
    plan_lines,
    plan_push,
    push,
    step_summary,
    summary_line,
)
from apto_release.testing.hub import LFS_THRESHOLD, LocalHub  # noqa: E402

MODEL = "Tiny-Safety"
BIG = bytes(range(256)) * (LFS_THRESHOLD // 256 + 9)  # a little over 1 MiB: goes through LFS


def _card(kind: str) -> str:
    meta = {
        "model": "base_model_relation: finetune\nlibrary_name: transformers\n",
        "gguf": "base_model_relation: quantized\n",
        "adapter": "base_model_relation: adapter\nlibrary_name: peft\n",
    }[kind]
    return (
        "---\nbase_model: Qwen/Qwen3.5-9B\n" + meta
        + "pipeline_tag: text-generation\nlanguage:\n- ja\n- en\nlicense: apache-2.0\ntags:\n- safety\n---\n"
        + f"# {MODEL} ({kind})\n\nA test card.\n"
    )


BUILD_CHECKS = ValidateOptions(near_duplicates=False)  # what 'dataset build' checks

@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with LocalHub(tmp_path_factory.mktemp("hub")) as hub:
        yield hub


@pytest.fixture(autouse=True)
def _no_xet(hub, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    with hub.patch_client(monkeypatch):
        yield


@pytest.fixture
def api(hub) -> HfApi:
    return HfApi(endpoint=hub.url, token=hub.token)


@pytest.fixture(scope="module")
def datasets_src(tmp_path_factory) -> Path:
    """The sample (sampler + build with the distribution) and the full set (build without), built once."""
    root = tmp_path_factory.mktemp("datasets")
    data = root / "all.jsonl"
    write_example_data(data, n=240, seed=3)
    sampled = sample_file(data, root / "sample", SampleOptions(n=40, seed=1))
    sample = load_valid_records(root / "sample" / "sample.jsonl", BUILD_CHECKS, purpose="building")
    build_dataset(sample.values, root / "dataset-sample", distribution=sampled.report, marker=True, verify=False, source=sample)
    full = load_valid_records(data, BUILD_CHECKS, purpose="building")
    build_dataset(full.values, root / "dataset-full", marker=True, verify=False, source=full)
    return root


_orgs = itertools.count()


def make_release(root: Path, datasets_src: Path, *, adapter: bool = True, **dataset_overrides) -> Path:
    """A release in ``root``: both dataset folders, a merged model, its GGUF files and adapter; returns the manifest."""
    for name in ("dataset-sample", "dataset-full"):
        shutil.copytree(datasets_src / name, root / name)
    merged = root / "merged"
    merged.mkdir()
    (merged / "config.json").write_text('{"model_type": "qwen3"}\n')
    (merged / "model.safetensors").write_bytes(BIG)
    (merged / "README.md").write_text(_card("model"))
    (merged / ".cache").mkdir()  # hidden: never uploaded
    (merged / ".cache" / "x.lock").write_text("lock")
    (merged / "__pycache__").mkdir()
    (merged / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"\0")
    gguf = root / "gguf"
    gguf.mkdir()
    (gguf / f"{MODEL}-Q4_K_M.gguf").write_bytes(b"GGUF" + bytes(3000))
    (gguf / f"{MODEL}-Q8_0.gguf").write_bytes(b"GGUF" + bytes(range(256)) * 20)
    (gguf / f"{MODEL}-F16.gguf").write_bytes(b"GGUF not listed")  # not in the manifest: not uploaded
    (gguf / "README.md").write_text(_card("gguf"))
    lora = root / "adapter"
    lora.mkdir()
    (lora / "adapter_config.json").write_text('{"r": 8}\n')
    (lora / "adapter_model.safetensors").write_bytes(b"\1" * 5000)
    (lora / "README.md").write_text(_card("adapter"))
    org = f"org{next(_orgs)}"
    sample = {"repo": "ja-safety-sft-40", "folder": "dataset-sample", "private": False, "gated": "auto", "max_rows": 50}
    sample.update(dataset_overrides)
    table = "\n".join(f"{k} = {json.dumps(v)}" for k, v in sample.items())
    manifest = root / "release.toml"
    manifest.write_text(textwrap.dedent(f"""\
        organisation = "{org}"
        version = "1.0.0"
        license = "apache-2.0"

        [dataset.sample]
        {{sample}}

        [dataset.full]
        repo = "ja-safety-sft"
        folder = "dataset-full"
        private = true

        [[model]]
        name = "{MODEL}"
        base_model = "Qwen/Qwen3.5-9B"
        preset = "tiny"
        adapter = "adapter"
        merged = "merged"
        gguf = ["Q4_K_M", "Q8_0"]
        gguf_folder = "gguf"
        push_adapter = {"true" if adapter else "false"}
        """).replace("{sample}", table))
    return manifest


@pytest.fixture
def release(tmp_path, datasets_src):
    return load_manifest(make_release(tmp_path / "release", datasets_src))


def _local_tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(folder).parts)
    }


def _commits(hub, repo_id, repo_type="model") -> int:
    return len(hub.repo_state(repo_id, repo_type)["commits"])


WRITES = r"/commit/|/preupload/|/repos/create|/settings|/tag/|/branch/|/_lfs/|info/lfs"


def _writes(hub):
    return [r for r in hub.requests if r.method in ("PUT", "DELETE") or (r.method == "POST" and re.search(WRITES, r.path))]


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


def test_only_selects_targets_and_rejects_unknown_names(hub, api, release):
    results = push(release, api=api, only=["dataset.full"], backoff=0)
    assert [r.repo_id for r in results] == [f"{release.organisation}/ja-safety-sft"]
    with pytest.raises(UsageError, match=r"--only nope: not in the manifest; choose from dataset\.sample, dataset\.full, Tiny-Safety"):
        push(release, api=api, only=["nope"])


def test_a_model_card_with_bad_yaml_is_refused_before_any_request(hub, api, release):
    card = release.models[0].gguf_folder / "README.md"
    card.write_text("---\nlicense: [unclosed\n---\n# Card\n")
    hub.clear_requests()
    with pytest.raises(InputError, match="GGUF card is not valid"):
        push(release, api=api)
    assert hub.requests == []


# --- the public-repo guard --------------------------------------------------------------------


def test_the_full_set_is_never_pushed_to_a_public_repo(hub, api, tmp_path, datasets_src):
    manifest = load_manifest(make_release(tmp_path, datasets_src, folder="dataset-full", max_rows=100000))
    hub.clear_requests()
    with pytest.raises(UsageError, match=r"refusing to push .*dataset-full to the public dataset repo .*built as the full set"):
        push(manifest, api=api)
    with pytest.raises(UsageError, match="built as the full set"):
        plan_push(manifest, api=api)  # the dry run says so too
    assert hub.requests == []


def test_public_guard_row_limit_and_missing_marker(hub, api, tmp_path, datasets_src):
    manifest = load_manifest(make_release(tmp_path / "a", datasets_src, max_rows=10))
    with pytest.raises(UsageError, match=r"hold 40 rows, more than max_rows = 10"):
        push(manifest, api=api)
    manifest = load_manifest(make_release(tmp_path / "b", datasets_src))
    (manifest.datasets["sample"].folder / BUILD_MARKER).unlink()
    with pytest.raises(UsageError, match=f"has no {BUILD_MARKER}, so it is not a validated sample"):
        push(manifest, api=api)
    assert _writes(hub) == []


def test_build_marker_says_sample_or_full(datasets_src):
    sample = json.loads((datasets_src / "dataset-sample" / BUILD_MARKER).read_text())
    distribution = json.loads((datasets_src / "sample" / "distribution.json").read_text())
    assert sample["kind"] == "sample" and sample["rows"] == 40 and sample["sample_of"] == distribution["input_sha256"]
    full = json.loads((datasets_src / "dataset-full" / BUILD_MARKER).read_text())
    assert full["kind"] == "full" and full["rows"] == 240 and full["sample_of"] is None and full["toolkit"]
    # Each names the bytes it was built from, which passed validation.
    assert sample["records"] == {"file": "sample.jsonl", "sha256": sha256_file(datasets_src / "sample" / "sample.jsonl"),
                                 "validation": "PASSED"}
    assert full["records"]["sha256"] == sha256_file(datasets_src / "all.jsonl") == distribution["input_sha256"]
    assert full["records"]["validation"] in ("PASSED", "PASSED with warnings")


@pytest.mark.parametrize("key", ["full", "sample"])
@pytest.mark.parametrize("damage", ["no marker", "no records hash", "failed validation", "rows changed"])
def test_a_dataset_folder_whose_marker_names_no_validated_records_is_refused(hub, api, tmp_path, datasets_src, key, damage):
    """Every dataset repo, the private full set included, must come from records that passed validation."""
    manifest = load_manifest(make_release(tmp_path, datasets_src))
    folder = manifest.datasets[key].folder
    marker_path = folder / BUILD_MARKER
    marker = json.loads(marker_path.read_text())
    if damage == "no marker":
        marker_path.unlink()
        expected = f"has no {BUILD_MARKER}"
    else:
        if damage == "no records hash":  # a folder built by build_dataset without the loader, or by an older version
            marker["records"] = None
            expected = "names no records file SHA-256, so it was not built from validated records"
        elif damage == "failed validation":
            marker["records"]["validation"] = "FAILED"
            expected = "did not pass validation"
        else:
            marker["rows"] += 1
            expected = "the folder changed after it was built"
        marker_path.write_text(json.dumps(marker))
    hub.clear_requests()
    for attempt in (lambda: push(manifest, api=api, only=[f"dataset.{key}"]), lambda: plan_push(manifest, api=api)):
        with pytest.raises(UsageError, match=re.escape(expected)) as info:
            attempt()
        assert manifest.datasets[key].repo in str(info.value)
    assert hub.requests == []  # refused before any request


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
    summary = step_summary(exc.value.results, tag="v1.0.0", error=message)
    assert "| failed |" in summary and "**Push failed:**" in summary


def test_a_client_error_on_commit_is_not_retried(hub, api, release):
    repo = f"{release.organisation}/ja-safety-sft"
    api.create_repo(repo, repo_type="dataset", private=True)
    hub.inject("POST", f"^/api/datasets/{repo}/commit/", 403)
    with pytest.raises(PushError, match=f"^{repo}: the commit failed: .*403"):
        push(release, api=api, only=["dataset.full"], backoff=0)
    assert len(hub.log("POST", f"/api/datasets/{repo}/commit/")) == 1


# --- token, visibility, summary -----------------------------------------------------------------


def test_no_token_is_an_error_for_a_push_but_not_for_a_dry_run(hub, release, monkeypatch):
    anonymous = HfApi(endpoint=hub.url, token=False)
    with pytest.raises(UsageError, match="no Hugging Face token"):
        push(release, api=anonymous)
    results = push(release, api=anonymous, dry_run=True, only=["dataset.sample"])
    assert results[0].status == "planned"


def test_token_is_redacted_from_errors(hub, api, release, monkeypatch):
    from huggingface_hub.errors import HfHubHTTPError

    def leaky(self, *args, **kwargs):
        import httpx2

        response = httpx2.Response(400, request=httpx2.Request("POST", "http://x/commit/main"))
        raise HfHubHTTPError(f"bad request with Authorization: Bearer {hub.token}", response=response)

    monkeypatch.setattr(HfApi, "create_commit", leaky)
    with pytest.raises(PushError) as exc:
        push(release, api=api, only=["dataset.full"], backoff=0)
    assert hub.token not in str(exc.value) and "hf_***" in str(exc.value)


def test_a_public_repo_is_made_private_when_the_manifest_says_so(hub, api, release):
    repo = f"{release.organisation}/ja-safety-sft"
    api.create_repo(repo, repo_type="dataset", private=False)
    push(release, api=api, only=["dataset.full"], backoff=0)
    assert api.dataset_info(repo).private is True


def test_step_summary_is_a_markdown_table(hub, api, release, tmp_path):
    results = push(release, api=api, only=["dataset.sample"], backoff=0)
    path = tmp_path / "summary.md"
    assert append_step_summary(step_summary(results, tag="v1.0.0"), path)
    text = path.read_text()
    assert "| Repo | Status | Commit | Added | Changed | Deleted | Uploaded | Tag |" in text
    assert f"| `{results[0].repo_id}` (dataset sample) | committed | `{results[0].commit[:12]}` |" in text
    assert "v1.0.0 (created)" in text


# --- what a push deletes ------------------------------------------------------------------------


def _head_tree(hub, repo_id, repo_type="model") -> dict[str, dict]:
    state = hub.repo_state(repo_id, repo_type)
    return state["commits"][state["branches"]["main"]]["tree"]


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
    assert "kept `NOTICE.md` (not ours)" in step_summary([result], tag=v2.tag)

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


def _blobs(hub) -> set[str]:
    return {p.name for p in (hub.root / "blobs").rglob("*") if p.is_file()}


def _not_a_model(release, case):
    merged, adapter = release.models[0].merged, release.models[0].adapter
    if case == "no config.json":
        (merged / "config.json").unlink()
    elif case == "no weights":
        (merged / "model.safetensors").unlink()
    elif case == "a shard the index names is missing":
        (merged / "model.safetensors").rename(merged / "model-00001-of-00002.safetensors")
        (merged / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": {
            "a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors"}}))
    elif case == "only a card":
        for p in merged.iterdir():
            if p.is_file() and p.name != "README.md":
                p.unlink()
    elif case == "an adapter without weights":
        (adapter / "adapter_model.safetensors").unlink()
    elif case == "an adapter without its config":
        (adapter / "adapter_config.json").unlink()


@pytest.mark.parametrize("case, missing", [
    ("no config.json", "merged.*config.json missing"),
    ("no weights", r"merged.*model.safetensors \(or model.safetensors.index.json and its shards\) missing"),
    ("a shard the index names is missing", "merged.*model-00002-of-00002.safetensors missing"),
    ("only a card", "merged.*config.json, model.safetensors"),
    ("an adapter without weights", "adapter.*adapter_model.safetensors missing"),
    ("an adapter without its config", "adapter.*adapter_config.json missing"),
])
def test_a_model_folder_without_a_model_is_refused_before_any_request(hub, api, release, case, missing):
    _not_a_model(release, case)
    hub.clear_requests()
    before = _blobs(hub)
    with pytest.raises(InputError, match=missing) as exc:
        push(release, api=api, backoff=0)
    assert "\n" not in str(exc.value) and "holds no" in str(exc.value)
    assert hub.requests == [] and _blobs(hub) == before


def test_a_sharded_model_with_every_shard_is_pushed(hub, api, release):
    merged = release.models[0].merged
    (merged / "model.safetensors").rename(merged / "model-00001-of-00001.safetensors")
    (merged / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-00001-of-00001.safetensors"}}))
    [result] = [r for r in push(release, api=api, only=[MODEL], backoff=0) if r.plan.target.role == "model"]
    assert result.status == "committed" and "model-00001-of-00001.safetensors" in _head_tree(hub, result.repo_id)


def _assert_nothing_written(hub, release, before_blobs):
    org = release.organisation
    assert _writes(hub) == [] and _blobs(hub) == before_blobs
    for repo_id, repo_type in ((f"{org}/ja-safety-sft-40", "dataset"), (f"{org}/ja-safety-sft", "dataset"),
                               (f"{org}/{MODEL}", "model")):
        with pytest.raises(KeyError):
            hub.repo_state(repo_id, repo_type)  # the first three repos were never created


def _refused_writing_nothing(hub, api, release, match: str | None = None, *, manifest=None) -> UsageError:
    """Push ``manifest`` (default: ``release``): refused (with ``match``) before the first write."""
    hub.clear_requests()
    before = _blobs(hub)
    with pytest.raises(UsageError, match=match) as exc:
        push(manifest or release, api=api, backoff=0)
    _assert_nothing_written(hub, release, before)
    return exc.value


def test_a_release_whose_fourth_repo_has_a_tag_elsewhere_writes_nothing_to_the_first_three(hub, api, release):
    gguf = f"{release.organisation}/{MODEL}-GGUF"  # the fourth repo of the release
    api.create_repo(gguf)
    api.create_tag(gguf, tag="v1.0.0")
    _refused_writing_nothing(hub, api, release, f"{gguf}: tag v1.0.0 already points at commit")


def test_a_release_whose_fourth_repo_is_not_writable_writes_nothing_to_the_first_three(hub, api, release, monkeypatch):
    org = release.organisation
    gguf = f"{org}/{MODEL}-GGUF"
    scoped = [{"entity": {"type": "model" if "sft" not in r else "dataset", "name": f"{org}/{r}"}, "permissions": ["repo.write"]}
              for r in ("ja-safety-sft-40", "ja-safety-sft", MODEL, f"{MODEL}-LoRA")]
    scoped.append({"entity": {"type": "model", "name": gguf}, "permissions": ["repo.content.read"]})
    monkeypatch.setattr(hub, "token_role", "fineGrained")
    monkeypatch.setattr(hub, "fine_grained", scoped)
    error = _refused_writing_nothing(hub, api, release)
    assert str(error) == (f"the token of {hub.user} cannot write every repo of the release: "
                          f"{gguf}: the fine-grained token has no repo.write on it or on {org}")
    # the same token with write on the namespace publishes the whole release
    monkeypatch.setattr(hub, "fine_grained", [{"entity": {"type": "org", "name": org}, "permissions": ["repo.write"]}])
    assert {r.status for r in push(release, api=api, backoff=0)} == {"committed"}


def test_a_repo_in_an_org_where_the_user_only_reads_is_refused_before_any_write(hub, api, release, monkeypatch):
    org = release.organisation
    lora = f"{org}/{MODEL}-LoRA"
    api.create_repo(lora)  # it exists, made while the user could still write there
    monkeypatch.setattr(hub, "org_roles", {org: "read"})
    _refused_writing_nothing(hub, api, release, f"{lora}: {hub.user} has the role 'read' in {org}, which cannot write")


def test_a_read_only_token_is_refused_before_any_write(hub, api, release, monkeypatch):
    monkeypatch.setattr(hub, "token_role", "read")
    _refused_writing_nothing(hub, api, release, f"{release.organisation}/ja-safety-sft-40: the token is read-only")


def test_an_invalid_token_is_one_clear_error(hub, release):
    bad = HfApi(endpoint=hub.url, token="hf_" + "x" * 30)
    with pytest.raises(UsageError, match=r"the Hugging Face token is not valid \(whoami answered 401\)") as exc:
        push(release, api=bad, backoff=0)
    assert "hf_xxx" not in str(exc.value)


def test_a_release_across_namespaces_needs_membership_of_each(hub, api, release, monkeypatch):
    lora = f"elsewhere/{MODEL}-LoRA"
    text = release.path.read_text().replace("push_adapter = true", f'push_adapter = true\nadapter_repo = "{lora}"')
    release.path.write_text(text)
    moved = load_manifest(release.path)
    monkeypatch.setattr(hub, "namespaces", {release.organisation})  # a member of the release's org only
    _refused_writing_nothing(hub, api, release, f"{lora}: {hub.user} is not a member of elsewhere$", manifest=moved)


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

    from apto_release.hub.push import MAX_FILE_SIZE, hash_file

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


def _refused(hub, manifest, match: str, **kwargs) -> InputError:
    """The push (and its dry run) fail with ``match`` before any request."""
    for dry_run in (True, False):
        hub.clear_requests()
        with pytest.raises(InputError, match=match) as info:
            push(manifest, api=HfApi(endpoint=hub.url, token=hub.token), dry_run=dry_run, backoff=0, **kwargs)
        assert hub.requests == []  # no repo created, no byte uploaded: not even a read
    return info.value


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
    from apto_release.release.pipeline import merged_files

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
    from apto_release.release.pipeline import _files

    (model.merged / "linked-dir").unlink()
    (model.merged / "shared.bin").symlink_to(outside)
    assert model.merged / "shared.bin" in _files(model.merged, published=False)


def test_a_build_marker_that_is_a_fifo_is_refused_never_opened(hub, release):
    """The hidden marker is read, never published: it must still be a regular file, or the read would hang."""
    folder = release.datasets["full"].folder
    marker = folder / ".apto-build.json"
    marker.unlink()
    os.mkfifo(marker)
    _refused(hub, release, r"\.apto-build\.json: refusing to publish it: it is a FIFO")
