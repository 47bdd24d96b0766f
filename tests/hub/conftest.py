"""Fixtures of the hub tests: a LocalHub per test module, a client for it, the dataset folders
(built once per module) and a release made of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from apto_release.dataset.build import build_dataset
from apto_release.dataset.example import write_example_data
from apto_release.dataset.sample import SampleOptions, sample_file
from apto_release.dataset.validate import load_valid_records
from apto_release.release.manifest import load_manifest
from apto_release.testing.hub import LocalHub
from tests.hub.releases import BUILD_CHECKS, make_release


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with LocalHub(tmp_path_factory.mktemp("hub")) as hub:
        yield hub


@pytest.fixture
def _no_xet(hub, monkeypatch):
    """The client patched to talk to ``hub`` (test modules that push use it for every test)."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    with hub.patch_client(monkeypatch):
        yield


@pytest.fixture
def api(hub):
    from huggingface_hub import HfApi

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


@pytest.fixture
def release(tmp_path, datasets_src):
    return load_manifest(make_release(tmp_path / "release", datasets_src))
