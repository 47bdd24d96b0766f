"""The demo's map of what it wrote agrees with the manifest it writes. (The demo run end to end:
tests/cli/test_release_cli.py and tests/release/test_pipeline.py.)"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from apto_release.demo import DEMO_MODEL, DemoResult, write_demo_release  # noqa: E402
from apto_release.release.manifest import load_manifest  # noqa: E402


def test_the_map_names_the_manifests_folders(tmp_path):
    release = write_demo_release(tmp_path / "demo", records=200, sample_size=20, steps=1)
    demo = DemoResult(release, result=None, hub_url="", hub_folder=release.folder / "hub")
    manifest = load_manifest(release.manifest)
    (model,) = manifest.models
    sample, full = manifest.datasets["sample"], manifest.datasets["full"]
    places = [path.resolve() for path, _ in demo.contents()]
    assert places == [
        release.manifest.resolve(), manifest.data.records, release.base.resolve(), manifest.data.sample_folder,
        sample.folder, full.folder, model.adapter, model.merged, model.gguf_folder, (release.folder / "hub").resolve(),
    ]
    assert demo.sample_dataset.resolve() == sample.folder
    assert model.name == DEMO_MODEL
    assert [what for _, what in demo.contents()][8] == "the GGUF files (F16, Q8_0, Q4_K_M) and their card"
