"""The demo's map of what it wrote agrees with the manifest it writes. (The demo run end to end:
tests/cli/test_release_cli.py and tests/release/test_pipeline.py.)"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from apto_release.demo import DEMO_MODEL, DemoResult, write_demo_release  # noqa: E402
from apto_release.release.manifest import load_manifest  # noqa: E402


def test_the_map_names_the_manifests_folders(tmp_path):
    release = write_demo_release(tmp_path / "demo", records=200, sample_size=20, steps=1, judge_port=0)
    demo = DemoResult(release, result=None, hub_url="", hub_folder=release.folder / "hub")
    manifest = load_manifest(release.manifest)
    (model,) = manifest.models
    sample, full = manifest.datasets["sample"], manifest.datasets["full"]
    places = [path.resolve() for path, _ in demo.contents()]
    assert places == [
        release.manifest.resolve(), manifest.data.records, release.base.resolve(), manifest.data.sample_folder,
        sample.folder, full.folder, model.adapter, model.merged, model.gguf_folder, model.evaluation.parent,
        model.details_folder, (release.folder / "hub").resolve(),
    ]
    assert demo.sample_dataset.resolve() == sample.folder
    assert model.name == DEMO_MODEL
    assert [what for _, what in demo.contents()][8] == ("the GGUF files (F16, Q8_0, Q4_K_M), the vision projector, "
                                                   "the importance matrix and its calibration text, Ollama's params and their card")
    assert model.gguf_imatrix is not None and model.gguf_imatrix.calibration == "auto"  # drawn from the demo's records


def test_the_demo_evaluates_its_gguf_files_with_its_scripted_judge(tmp_path):
    from apto_release.demo import BASE_GGUF, demo_judge
    from apto_release.evals.benchmarks import load_items
    from apto_release.evals.judging import parse_judgement_output

    release = write_demo_release(tmp_path / "demo", records=200, sample_size=20, steps=1, judge_port=8123)
    (model,) = load_manifest(release.manifest).models
    ev = model.eval
    assert ev.benchmarks == ("AnswerCarefully",) and ev.judges[0].url == "http://127.0.0.1:8123/v1"
    assert ev.base.path == release.base.parent / BASE_GGUF and ev.base.path.is_file()  # before: the base's F16 GGUF
    assert ev.tuned.path == model.gguf_folder / f"{model.name}-F16.gguf" and ev.gguf == ("Q8_0", "Q4_K_M")
    items = load_items("AnswerCarefully", ev.bench_dir / "answercarefully")  # the real loader reads the demo's copy
    assert len(items) == 6 and all(i.category for i in items)
    verdicts = [parse_judgement_output("AnswerCarefully", demo_judge([{"role": "user", "content": i.turns[0]}])) for i in items]
    assert all(v.ok for v in verdicts) and len({v.value for v in verdicts}) > 1  # parseable, and not all one score


def test_without_a_judge_the_demo_release_has_no_eval_stage(tmp_path):
    release = write_demo_release(tmp_path / "demo", records=200, sample_size=20, steps=1)
    (model,) = load_manifest(release.manifest).models
    assert model.eval is None and model.evaluation is None
