"""hub.targets through the push against LocalHub: the repos a manifest names (``--only``), the public-repo
guard, the build marker every dataset folder needs, and a model folder that must hold a model."""

from __future__ import annotations

import json
import os
import re

import pytest

pytest.importorskip("datasets")
pytest.importorskip("huggingface_hub")

from apto_release.dataset.build import BUILD_MARKER  # noqa: E402
from apto_release.errors import InputError, UsageError  # noqa: E402
from apto_release.hub.push import plan_push, push  # noqa: E402
from apto_release.io import sha256_file  # noqa: E402
from apto_release.release.manifest import load_manifest  # noqa: E402
from tests.hub.releases import MODEL, _blobs, _head_tree, _not_a_model, _refused, _writes, make_release  # noqa: E402

pytestmark = pytest.mark.usefixtures("_no_xet")


def test_only_selects_targets_and_rejects_unknown_names(hub, api, release):
    results = push(release, api=api, only=["dataset.full"], backoff=0)
    assert [r.repo_id for r in results] == [f"{release.organisation}/ja-safety-sft"]
    with pytest.raises(UsageError, match=r"--only nope: not in the manifest; choose from dataset\.sample, dataset\.full, Tiny-Safety"):
        push(release, api=api, only=["nope"])


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


def test_a_build_marker_that_is_a_fifo_is_refused_never_opened(hub, release):
    """The hidden marker is read, never published: it must still be a regular file, or the read would hang."""
    folder = release.datasets["full"].folder
    marker = folder / ".apto-build.json"
    marker.unlink()
    os.mkfifo(marker)
    _refused(hub, release, r"\.apto-build\.json: refusing to publish it: it is a FIFO")


# --- a model folder holds a model (issue 13) --------------------------------------------------


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
