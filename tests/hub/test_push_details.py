"""The details dataset's repo: always private, its own guard (the details marker), and a push that
refuses, before any upload, a details repo that is public on the Hub."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from huggingface_hub import snapshot_download

from apto_release.errors import UsageError
from apto_release.evals.details import DETAILS_MARKER, build_details
from apto_release.hub.push import push, summary_line
from apto_release.hub.targets import targets
from apto_release.release.manifest import load_manifest
from tests.evals.details_fixtures import write_run
from tests.hub.releases import MODEL, _writes, make_release

pytestmark = pytest.mark.usefixtures("_no_xet")

EVAL = f"""evaluation = "eval/results.json"

[model.eval]
benchmarks = ["AnswerCarefully", "MT-Bench-ja", "JMMLU"]
judges = [{{ url = "http://judge:8000/v1", model = "judge-a" }}]
details_repo = "{MODEL}-eval-details"
"""


@pytest.fixture(scope="module")
def details_src(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("details")
    responses, judgements, items = write_run(root)
    build_details(MODEL, responses, judgements, root / "details", items=items, verify=False)
    return root / "details"


@pytest.fixture
def release(tmp_path, datasets_src, details_src):
    path = make_release(tmp_path / "release", datasets_src)
    path.write_text(path.read_text() + EVAL)
    manifest = load_manifest(path)
    shutil.copytree(details_src, manifest.models[0].details_folder)
    return manifest


def test_the_details_repo_is_a_private_dataset_target_even_for_a_public_model(release):
    model = release.models[0]
    assert model.private is False
    found = [t for t in targets(release) if t.card_kind == "details"]
    assert [(t.repo_id, t.repo_type, t.private, t.folder) for t in found] == [
        (f"{release.organisation}/{MODEL}-eval-details", "dataset", True, model.details_folder)]


def test_push_creates_it_private_with_the_folder_but_not_the_marker(hub, api, release, tmp_path):
    repo = f"{release.organisation}/{MODEL}-eval-details"
    results = push(release, api=api, only=[MODEL], backoff=0)
    details = next(r for r in results if r.repo_id == repo)
    assert details.status == "committed" and api.dataset_info(repo).private is True
    got = Path(snapshot_download(repo, repo_type="dataset", revision="v1.0.0", endpoint=hub.url, token=hub.token,
                                 cache_dir=tmp_path / "cache"))
    names = sorted(p.relative_to(got).as_posix() for p in got.rglob("*") if p.is_file())
    assert names == [".gitattributes", "README.md", "data/after.parquet", "data/before.parquet"]  # the Hub's own .gitattributes
    assert (got / "data/after.parquet").read_bytes() == (release.models[0].details_folder / "data/after.parquet").read_bytes()


def test_a_details_repo_that_is_public_on_the_hub_is_refused_before_any_upload(hub, api, release):
    repo = f"{release.organisation}/{MODEL}-eval-details"
    api.create_repo(repo, repo_type="dataset", private=False)
    hub.clear_requests()
    with pytest.raises(UsageError, match="is public on the Hub"):
        push(release, api=api, only=[MODEL], backoff=0)
    assert _writes(hub) == [] and api.dataset_info(repo).private is False
    plan = next(r for r in push(release, api=api, only=[MODEL], dry_run=True) if r.repo_id == repo)
    assert "REFUSED: the details repo" in summary_line(plan) and "public" in plan.error


@pytest.mark.parametrize("case", ["no marker", "a record-built dataset folder", "another model's details"])
def test_a_folder_that_is_not_this_models_details_is_refused(hub, api, release, datasets_src, case):
    folder = release.models[0].details_folder
    if case == "no marker":
        (folder / DETAILS_MARKER).unlink()
    elif case == "a record-built dataset folder":
        shutil.rmtree(folder)
        shutil.copytree(datasets_src / "dataset-full", folder)
    else:
        marker = folder / DETAILS_MARKER
        marker.write_text(marker.read_text().replace(f'"model": "{MODEL}"', '"model": "Other"'))
    hub.clear_requests()
    with pytest.raises(UsageError, match=f"refusing to push {folder} to the details repo"):
        push(release, api=api, only=[MODEL], backoff=0)
    assert _writes(hub) == []


def test_a_details_folder_is_no_dataset_release_for_the_dataset_repos(hub, api, release):
    full = release.datasets["full"].folder
    shutil.rmtree(full)
    shutil.copytree(release.models[0].details_folder, full)
    with pytest.raises(UsageError, match="has no .apto-build.json"):
        push(release, api=api, only=["dataset.full"], backoff=0)
