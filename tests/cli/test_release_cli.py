"""``release`` and ``demo`` from the command line: the README's main job end to end, the table,
the dry run, usage errors. (Stage skipping, invalidation and kills: tests/release/test_pipeline.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("llama_cpp")

from apto_release.dataset.build import load_offline  # noqa: E402
from apto_release.demo import DEMO_MODEL, DEMO_ORG, write_demo_release  # noqa: E402

DEMO = ("-n", "300", "--sample-size", "40", "--steps", "2", "--progress", "lines")


def test_demo_runs_end_to_end_then_everything_is_up_to_date(run_cli, tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    out_dir = tmp_path / "demo"
    code, out, err = run_cli("demo", "-o", out_dir, *DEMO)
    assert code == 0, err
    assert f"✓ GGUF convert + verify {DEMO_MODEL}: done" in out and "verified in llama.cpp" in out
    assert "push dataset.sample: done" in out and "tag v1.0.0 created" in out
    table = out[out.index("stage "):out.index("Where everything is:")]
    assert table.count(" done ") == 13 and f"✓ imatrix {DEMO_MODEL}: done" in out
    assert f"✓ eval {DEMO_MODEL}: done" in out and "before, after, Q8_0, Q4_K_M evaluated" in out
    card = (out_dir / "out" / "models" / DEMO_MODEL / "merged" / "README.md").read_text("utf-8")
    assert "| AnswerCarefully | AC 許容回答率 ↑ |" in card  # the card shows the evaluation table
    gguf_card = (out_dir / "out" / "models" / DEMO_MODEL / "gguf" / "README.md").read_text("utf-8")
    # the files are compared with the tuned model as the demo served it: its F16 GGUF file, not the checkpoint
    assert f"as the tuned model, served from `{DEMO_MODEL}-F16.gguf` by llama.cpp's server," in gguf_card
    assert "Where everything is:" in out and ("the GGUF files (F16, Q8_0, Q4_K_M), the vision projector, the importance matrix and its "
                                              "calibration text, Ollama's params and their card") in out
    assert "`calibration.txt`" in gguf_card and "`imatrix.gguf`" in gguf_card  # how they were made, with their SHA-256
    assert f"train {DEMO_MODEL}: 2/2 steps done in" in err  # progress lines, not bars, off a terminal
    assert f"push {DEMO_MODEL}: done in" in err and "convert Q8_0: " in err
    ds = load_offline(out_dir / "out" / "dataset-sample", "mid_refusal", cache_dir=tmp_path / "cache")
    assert 0 < ds.num_rows < 40
    assert "| train | Apto-Tiny-Qwen3.5-Safety | done |" in summary.read_text()
    _the_details_dataset_is_on_the_hub_private_and_loads(out_dir, tmp_path)

    code, out, err = run_cli("demo", "-o", out_dir, *DEMO)
    assert code == 0, err
    table = out[out.index("stage "):out.index("Where everything is:")]
    assert table.count("up to date") == 13 and " done " not in table
    assert "unchanged at" in out and "tag v1.0.0 kept" in out


def _the_details_dataset_is_on_the_hub_private_and_loads(out_dir, tmp_path):
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError

    from apto_release.testing.hub import LocalHub

    repo = f"{DEMO_ORG}/{DEMO_MODEL}-eval-details"
    models = out_dir / "out" / "models" / DEMO_MODEL
    for card in ("merged", "gguf"):  # both cards link it
        assert f"https://huggingface.co/datasets/{repo}" in (models / card / "README.md").read_text("utf-8")
    with LocalHub(out_dir / "hub", namespaces=[DEMO_ORG]) as hub:  # the demo's Hub, from its storage
        assert hub.api().dataset_info(repo).private is True
        with pytest.raises(RepositoryNotFoundError):
            hub.api(token=False).dataset_info(repo)  # not visible without a token
        gguf_repo = snapshot_download(f"{DEMO_ORG}/{DEMO_MODEL}-GGUF", revision="v1.0.0", endpoint=hub.url, token=hub.token,
                                      cache_dir=tmp_path / "hf")
        for name in ("imatrix.gguf", "calibration.txt"):  # published beside the files
            assert Path(gguf_repo, name).read_bytes() == (models / "gguf" / name).read_bytes()
        got = snapshot_download(repo, repo_type="dataset", revision="v1.0.0", endpoint=hub.url, token=hub.token,
                                cache_dir=tmp_path / "hf")
    for side in ("before", "after", "Q8_0", "Q4_K_M"):  # the 6 AnswerCarefully items, one judge
        ds = load_offline(got, side, cache_dir=tmp_path / "cache" / side)
        assert ds.num_rows == 6 and set(ds["label"]) == {side} and set(ds["judge"]) == {"scripted-judge"}
        assert set(ds["prompt"]) == {None}  # AnswerCarefully's questions are not redistributed


def test_release_dry_run_on_a_fresh_release_writes_nothing(run_cli, tmp_path):
    release = write_demo_release(tmp_path / "r", records=200, sample_size=20, steps=1)
    before = sorted(p.relative_to(release.folder) for p in release.folder.rglob("*"))
    code, out, err = run_cli("release", "--manifest", release.manifest, "--dry-run", "--stages", "validate,sample,dataset",
                             "--stages", "train,merge", "--only", "data", "--only", "dataset.sample", "--only", DEMO_MODEL)
    assert code == 0, err
    assert "dry run, nothing is written" in out
    assert "→ validate data: would run — not run before" in out
    assert f"→ merge {DEMO_MODEL}: would run — after train:{DEMO_MODEL}" in out
    assert "dataset.full" not in out
    assert sorted(p.relative_to(release.folder) for p in release.folder.rglob("*")) == before


@pytest.mark.parametrize(("args", "message"), [
    (("--stages", "quantize"), "--stages quantize: no such stage; the stages are validate, sample, dataset"),
    (("--only", "nobody"), "--only nobody: not in the manifest; choose from data, dataset.sample"),
])
def test_release_usage_errors(run_cli, tmp_path, args, message):
    release = write_demo_release(tmp_path / "r", records=200, sample_size=20, steps=1)
    code, _, err = run_cli("release", "--manifest", release.manifest, "--dry-run", *args)
    assert code == 2 and message in err and "Traceback" not in err


def test_release_without_a_data_table_says_what_is_missing(run_cli, tmp_path):
    release = write_demo_release(tmp_path / "r", records=200, sample_size=20, steps=1)
    text = release.manifest.read_text()
    start = text.index("[data]")
    release.manifest.write_text(text[:start] + text[text.index("[dataset.sample]"):])
    code, out, err = run_cli("release", "--manifest", release.manifest, "--stages", "validate")
    assert code == 2 and "the manifest has no [data] table" in err and "Traceback" not in err
    assert "validate  data" in out and "failed" in out  # the table is printed before the error


def test_release_refuses_max_rows_below_sample_size_before_any_stage(run_cli, tmp_path):
    """Caught at load, not by the push's guard after every stage (training included) has run."""
    release = write_demo_release(tmp_path / "r", records=200, sample_size=20, steps=1)
    release.manifest.write_text(release.manifest.read_text().replace("sample_size = 20", "sample_size = 30"))
    before = sorted(p.relative_to(release.folder) for p in release.folder.rglob("*"))
    code, out, err = run_cli("release", "--manifest", release.manifest)
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[0] == (f"Error: {release.manifest}: dataset.sample.max_rows: 20 is below data.sample_size (30): "
                                   "the push would refuse the sample after every stage had run; raise max_rows or lower sample_size")
    assert out == "" and sorted(p.relative_to(release.folder) for p in release.folder.rglob("*")) == before
