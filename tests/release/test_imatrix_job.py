"""The release's imatrix job on the demo release (which turns it on): its own entry in the state
file, up to date on a re-run, rerun (with the quants after it, not the merge) when the calibration
changes, and a kill in the middle that a re-run completes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("llama_cpp")

from apto_release.demo import DEMO_MODEL, write_demo_release  # noqa: E402
from apto_release.release.manifest import load_manifest  # noqa: E402
from apto_release.release.pipeline import run_release  # noqa: E402

STAGES = ["validate", "train", "merge", "imatrix", "gguf"]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    demo = write_demo_release(tmp_path_factory.mktemp("imjob"), records=600, sample_size=60, steps=4)
    # llama.cpp's check of each file is tests/release/test_pipeline.py's; here, the jobs' order and reruns.
    demo.manifest.write_text(demo.manifest.read_text().replace("push_adapter = true", "push_adapter = true\ngguf_verify = false"))
    first = run_release(load_manifest(demo.manifest), stages=STAGES)
    return demo, first


def statuses(result) -> dict[str, str]:
    return {r.key: r.status for r in result.reports}


def test_the_imatrix_is_a_job_whose_files_the_gguf_folder_publishes(release):
    demo, first = release
    assert [r.key for r in first.reports][-2:] == [f"imatrix:{DEMO_MODEL}", f"gguf:{DEMO_MODEL}"]
    state = json.loads((demo.folder / "state" / "release-state.json").read_text())
    job = state["stages"][f"imatrix:{DEMO_MODEL}"]
    assert set(job["inputs"]) >= {"merged", "calibration"} and job["inputs"]["calibration"]["file"].endswith(".jsonl")
    assert sorted(Path(p).name for p in job["outputs"]) == ["calibration.txt", "imatrix.gguf", "imatrix.json"]
    gguf = demo.folder / "out" / "models" / DEMO_MODEL / "gguf"
    made = demo.folder / "state" / "imatrix" / DEMO_MODEL
    for name in ("imatrix.gguf", "calibration.txt"):
        assert (gguf / name).read_bytes() == (made / name).read_bytes()
    record = json.loads((gguf / ".gguf-build.json").read_text())
    q4 = next(v for k, v in record["files"].items() if k.endswith("Q4_K_M.gguf")) if "files" in record else None
    text = json.dumps(record)
    assert q4 is None or q4["imatrix"]["calibration"]["records"].endswith(".jsonl")
    assert "records_drawn" in text and "given" not in text  # the card says how it was made, not "given"


def test_a_second_run_is_up_to_date(release):
    demo, _ = release
    again = run_release(load_manifest(demo.manifest), stages=STAGES)
    assert set(statuses(again).values()) == {"up to date"}


def test_a_kill_in_the_imatrix_job_leaves_it_to_the_re_run(release):
    demo, _ = release
    made = demo.folder / "state" / "imatrix" / DEMO_MODEL
    (made / "imatrix.gguf").write_bytes(b"damaged")  # the output changed: the job runs again
    killer = textwrap.dedent(f"""
        import os, signal
        import apto_release.gguf.imatrix as m
        def compute(*a, **k):
            os.kill(os.getpid(), signal.SIGKILL)  # the calibration text drawn, the imatrix not yet
        m.compute_imatrix = compute
        from apto_release.release.manifest import load_manifest
        from apto_release.release.pipeline import run_release
        run_release(load_manifest({str(demo.manifest)!r}), stages={STAGES!r})
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-c", killer], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr[-2000:]
    state = json.loads((demo.folder / "state" / "release-state.json").read_text())
    assert f"imatrix:{DEMO_MODEL}" in state.get("running", {})
    rerun = run_release(load_manifest(demo.manifest), stages=STAGES)
    assert statuses(rerun)[f"imatrix:{DEMO_MODEL}"] == "done"
    assert {r.reason for r in rerun.reports if r.key == f"imatrix:{DEMO_MODEL}"} == {"did not finish last time"}
    assert not [p for p in made.parent.rglob("*") if ".tmp" in p.name]
    assert set(statuses(run_release(load_manifest(demo.manifest), stages=STAGES)).values()) == {"up to date"}


def test_a_changed_calibration_reruns_the_imatrix_and_the_quants_not_the_merge(release):
    demo, _ = release
    general = demo.folder / "general.txt"
    general.write_text("日本語の一般的な文章です。" * 400, encoding="utf-8")
    manifest = demo.manifest.read_text()
    demo.manifest.write_text(manifest.replace('gguf_imatrix = { calibration = "auto" }',
                                              'gguf_imatrix = { calibration = "auto", general = "general.txt" }'))
    before = (demo.folder / "out" / "models" / DEMO_MODEL / "gguf" / "calibration.txt").read_bytes()
    result = run_release(load_manifest(demo.manifest), stages=STAGES)
    status = statuses(result)
    assert status[f"merge:{DEMO_MODEL}"] == status[f"train:{DEMO_MODEL}"] == "up to date"
    assert status[f"imatrix:{DEMO_MODEL}"] == status[f"gguf:{DEMO_MODEL}"] == "done"
    why = {r.key: r.reason for r in result.reports}
    assert why[f"imatrix:{DEMO_MODEL}"] == "input changed: general" and why[f"gguf:{DEMO_MODEL}"] == "input changed: imatrix"
    after = (demo.folder / "out" / "models" / DEMO_MODEL / "gguf" / "calibration.txt").read_text("utf-8")
    assert after.encode() != before and "日本語の一般的な文章です。" in after
