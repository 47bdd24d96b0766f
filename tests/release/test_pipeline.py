"""The release command end to end on the demo release (synthetic records, tiny Qwen3.5, LocalHub):
a first run, an up-to-date re-run, invalidation after input changes, byte-identical rebuilds,
kills in the middle of train, merge, convert and push, and the published repos read back."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("llama_cpp")

from huggingface_hub import snapshot_download  # noqa: E402

from apto_release.demo import DEMO_MODEL, DEMO_ORG, write_demo_release  # noqa: E402
from apto_release.release.manifest import load_manifest  # noqa: E402
from apto_release.release.pipeline import ReleaseError, run_release  # noqa: E402
from apto_release.release.state import ReleaseState  # noqa: E402
from apto_release.testing.hub import LocalHub  # noqa: E402

SIZE = {"records": 600, "sample_size": 60, "steps": 4}
SAMPLE_REPO = f"{DEMO_ORG}/ja-safety-sft-demo-60"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with LocalHub(tmp_path_factory.mktemp("hub"), namespaces=[DEMO_ORG]) as hub, hub.xet_off():
        yield hub


def statuses(result) -> dict[str, str]:
    return {r.key: r.status for r in result.reports}


def reasons(result) -> dict[str, str]:
    return {r.key: r.reason for r in result.reports}


def commits(hub) -> int:
    return len(hub.log("POST", r"/api/.*/commit/"))


def release_files(folder: Path) -> dict[str, bytes]:
    """Every output of a release folder (paths relative to it), the state file, the training's
    local run log and the GGUF build record (times, host: never published) left out."""
    from apto_release.gguf.provenance import RECORD_NAME

    out = folder / "out"
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and not p.name.endswith(".run-log.json") and p.name != RECORD_NAME}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, hub):
    """The demo release, cut once: (folder, first result, second result, commits made by the second)."""
    demo = write_demo_release(tmp_path_factory.mktemp("release"), **SIZE)
    manifest = load_manifest(demo.manifest)
    first = run_release(manifest, api=hub.api())
    before = commits(hub)
    second = run_release(manifest, api=hub.api())
    return demo, first, second, commits(hub) - before


def test_the_first_run_does_every_job_in_order(baseline):
    _, first, _, _ = baseline
    model = DEMO_MODEL
    assert list(statuses(first)) == [
        "validate:data", "sample:data", "dataset:dataset.sample", "dataset:dataset.full",
        f"train:{model}", f"merge:{model}", f"imatrix:{model}", f"gguf:{model}", f"cards:{model}",
        "push:dataset.sample", "push:dataset.full", f"push:{model}",
    ]
    assert set(statuses(first).values()) == {"done"}
    assert all(r.reason == "not run before" for r in first.reports if r.stage != "push")
    assert "verified in llama.cpp" in next(r.summary for r in first.reports if r.stage == "gguf")


def test_a_second_run_is_up_to_date_and_commits_nothing(baseline):
    _, _, second, new_commits = baseline
    assert set(statuses(second).values()) == {"up to date"}
    assert new_commits == 0


def test_the_state_file_records_inputs_and_outputs(baseline):
    demo, *_ = baseline
    state = json.loads((demo.folder / "state" / "release-state.json").read_text())
    train = state["stages"][f"train:{DEMO_MODEL}"]
    assert set(train["inputs"]) == {"records", "base", "base_model", "config", "max_steps"}
    assert f"out/models/{DEMO_MODEL}/adapter/adapter_model.safetensors" in train["outputs"]
    assert state["running"] == {}
    assert all(len(sha) == 64 for rec in state["stages"].values() for sha in rec["outputs"].values())


def test_cards_name_the_hashes_of_what_they_describe(baseline):
    demo, *_ = baseline
    models = demo.folder / "out" / "models" / DEMO_MODEL
    card = (models / "merged" / "README.md").read_text()
    hashes = ReleaseState(demo.folder / "unused.json")
    for row in ("training data SHA-256", "adapter SHA-256", "merged checkpoint SHA-256", "manifest (release.toml) SHA-256",
                "manifest git commit | `none (not in a git repository)`", "A folder digest is the SHA-256"):
        assert row in card, row
    assert hashes.sha256(demo.records) in card
    dataset_card = (demo.folder / "out" / "dataset-sample" / "README.md").read_text()
    assert f"| records file SHA-256 | `{hashes.sha256(demo.records)}` |" in dataset_card and "manifest git commit" in dataset_card
    gguf = hashes.sha256(models / "gguf" / f"{DEMO_MODEL}-Q8_0.gguf")
    assert gguf in card and gguf in (models / "gguf" / "README.md").read_text()


def test_the_pushed_release_reads_back_at_its_tag(baseline, hub, tmp_path):
    """The published repos hold exactly the local files (cards rendered by the release), at v1.0.0."""
    demo, *_ = baseline
    models = demo.folder / "out" / "models" / DEMO_MODEL
    for repo, folder, repo_type in [
        (f"{DEMO_ORG}/{DEMO_MODEL}", models / "merged", "model"),
        (f"{DEMO_ORG}/{DEMO_MODEL}-LoRA", models / "adapter", "model"),
        (SAMPLE_REPO, demo.folder / "out" / "dataset-sample", "dataset"),
    ]:
        got = Path(snapshot_download(repo, repo_type=repo_type, revision="v1.0.0", endpoint=hub.url, token=hub.token,
                                     cache_dir=tmp_path / "cache"))
        remote = {p.relative_to(got).as_posix(): p.read_bytes() for p in got.rglob("*") if p.is_file() and p.name != ".gitattributes"}
        local = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
                 if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)}
        assert remote == local, repo
    gguf = Path(snapshot_download(f"{DEMO_ORG}/{DEMO_MODEL}-GGUF", revision="v1.0.0", endpoint=hub.url, token=hub.token,
                                  cache_dir=tmp_path / "cache"))
    # the demo's tiny Qwen3.5 has a vision tower: its projector is published beside the files, as is
    # its card's listing of it, and it is the file the gguf stage wrote
    assert sorted(p.name for p in gguf.glob("*.gguf")) == sorted(
        [*(f"{DEMO_MODEL}-{t}.gguf" for t in ("F16", "Q8_0", "Q4_K_M")), f"mmproj-{DEMO_MODEL}-F16.gguf", "imatrix.gguf"])
    assert (gguf / "calibration.txt").is_file() and "calibration.txt" in (gguf / "README.md").read_text("utf-8")
    projector = gguf / f"mmproj-{DEMO_MODEL}-F16.gguf"
    assert projector.read_bytes() == (models / "gguf" / projector.name).read_bytes()
    assert f"[{projector.name}](" in (gguf / "README.md").read_text("utf-8")
    code = (f"import datasets; ds = datasets.load_dataset({SAMPLE_REPO!r}, 'mid_refusal', split='train', revision='v1.0.0'); "
            "print(len(ds), ds.features['messages'])")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, **hub.client_env(tmp_path / "hf_home")},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[0]) > 0


def test_a_rebuild_elsewhere_is_byte_identical_and_pushes_nothing(baseline, tmp_path, hub):
    """The publish workflow re-run from scratch on a fresh machine: the same bytes in every
    published file (the training summary and loss curve included), so the push finds nothing to
    commit over the first build's repos and tags."""
    demo, *_ = baseline
    again = write_demo_release(tmp_path / "again", **SIZE)
    result = run_release(load_manifest(again.manifest), stages=["validate", "sample", "dataset", "train", "merge", "imatrix", "gguf", "cards"])
    assert set(statuses(result).values()) == {"done"}
    first, second = release_files(demo.folder), release_files(again.folder)
    assert sorted(first) == sorted(second)
    assert sorted(name for name in first if first[name] != second[name]) == []
    before = commits(hub)
    pushed = run_release(load_manifest(again.manifest), stages=["push"], api=hub.api())
    assert set(statuses(pushed).values()) == {"up to date"}, [(r.key, r.summary) for r in pushed.reports]
    assert commits(hub) == before


@pytest.fixture
def own_release(baseline, tmp_path):
    """A copy of the baseline release (outputs and state) to change without touching the baseline."""
    demo, *_ = baseline
    folder = tmp_path / "copy"
    shutil.copytree(demo.folder, folder, symlinks=True)
    state = folder / "state" / "release-state.json"
    data = json.loads(state.read_text())
    data["hashes"] = {}  # the cache is keyed by absolute path; the copy starts cold
    state.write_text(json.dumps(data))
    return folder


def test_a_changed_input_reruns_its_stage_and_what_follows(own_release, hub):
    manifest_path = own_release / "release.toml"
    text = manifest_path.read_text()
    manifest_path.write_text(text.replace("sample_size = 60", "sample_size = 50").replace("max_rows = 60", "max_rows = 60"))
    result = run_release(load_manifest(manifest_path), stages=["validate", "sample", "dataset", "train", "merge", "gguf"])
    status, why = statuses(result), reasons(result)
    assert status["sample:data"] == "done" and why["sample:data"] == "input changed: sample_size"
    assert status["dataset:dataset.sample"] == "done" and why["dataset:dataset.sample"].startswith("input changed: sample, distribution")
    # The full set's card names the manifest's hash: rebuilt too, with the same Parquet files.
    assert status["dataset:dataset.full"] == "done" and why["dataset:dataset.full"] == "input changed: card"
    for key in ("validate:data", f"train:{DEMO_MODEL}", f"merge:{DEMO_MODEL}", f"gguf:{DEMO_MODEL}"):
        assert status[key] == "up to date", key
    assert len(json.loads((own_release / "out" / "sample" / "distribution.json").read_text())["categories"]) == 4


def test_a_damaged_output_is_rebuilt_and_an_identical_rebuild_stops_there(own_release):
    shard = sorted((own_release / "out" / "models" / DEMO_MODEL / "merged").glob("*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:-10] + b"\0" * 10)
    result = run_release(load_manifest(own_release / "release.toml"), stages=["merge", "gguf", "cards"])
    status, why = statuses(result), reasons(result)
    assert status[f"merge:{DEMO_MODEL}"] == "done" and why[f"merge:{DEMO_MODEL}"] == f"out/models/{DEMO_MODEL}/merged/{shard.name} changed since it was written"
    # The merge is exact and deterministic: the same bytes again, so the GGUF files are up to date;
    # the new merged folder has no card yet, so the cards run again.
    assert status[f"gguf:{DEMO_MODEL}"] == "up to date"
    assert status[f"cards:{DEMO_MODEL}"] == "done" and why[f"cards:{DEMO_MODEL}"] == f"out/models/{DEMO_MODEL}/merged/README.md is missing"


def test_a_new_evaluation_file_reruns_the_cards_only(own_release):
    manifest_path = own_release / "release.toml"
    (own_release / "eval.json").write_text(json.dumps({"format": 1, "model": DEMO_MODEL, "metrics": [
        {"benchmark": "AnswerCarefully", "metric": "acceptable_rate", "label": "AC acceptable rate", "unit": "%",
         "higher_is_better": True, "before": 80.0, "after": 85.0}]}))
    manifest_path.write_text(manifest_path.read_text().replace("push_adapter = true", 'push_adapter = true\nevaluation = "eval.json"'))
    result = run_release(load_manifest(manifest_path), stages=["train", "merge", "gguf", "cards"], only=[DEMO_MODEL])
    assert statuses(result) == {f"train:{DEMO_MODEL}": "up to date", f"merge:{DEMO_MODEL}": "up to date",
                                f"gguf:{DEMO_MODEL}": "up to date", f"cards:{DEMO_MODEL}": "done"}
    assert reasons(result)[f"cards:{DEMO_MODEL}"] == "input changed: evaluation, manifest"
    assert "AC acceptable rate" in (own_release / "out" / "models" / DEMO_MODEL / "merged" / "README.md").read_text()


def test_gguf_verify_false_converts_without_llama_cpp_s_check(own_release):
    manifest_path = own_release / "release.toml"
    manifest_path.write_text(manifest_path.read_text().replace("push_adapter = true", "push_adapter = true\ngguf_verify = false"))
    gguf = own_release / "out" / "models" / DEMO_MODEL / "gguf" / f"{DEMO_MODEL}-Q8_0.gguf"
    before = gguf.read_bytes()
    result = run_release(load_manifest(manifest_path), stages=["gguf"])
    report = result.reports[0]
    assert (report.status, report.reason) == ("done", "input changed: verify")
    assert report.summary.endswith("written (gguf_verify = false)")
    assert gguf.read_bytes() == before


def test_gguf_mmproj_false_publishes_no_vision_projector(own_release):
    manifest_path = own_release / "release.toml"
    gguf = own_release / "out" / "models" / DEMO_MODEL / "gguf"
    assert (gguf / f"mmproj-{DEMO_MODEL}-F16.gguf").is_file()
    manifest_path.write_text(manifest_path.read_text().replace("push_adapter = true", "push_adapter = true\ngguf_mmproj = false\ngguf_verify = false"))
    report = run_release(load_manifest(manifest_path), stages=["gguf"]).reports[0]
    assert (report.status, report.reason) == ("done", "input changed: verify, mmproj")
    assert not list(gguf.glob("mmproj-*")) and (gguf / f"{DEMO_MODEL}-Q8_0.gguf").is_file()


def test_dry_run_writes_nothing_and_says_what_would_run(own_release, hub):
    manifest_path = own_release / "release.toml"
    (own_release / "out" / "models" / DEMO_MODEL / "adapter" / "adapter_config.json").write_text("{}")
    state = own_release / "state" / "release-state.json"
    before = state.read_bytes()
    result = run_release(load_manifest(manifest_path), api=hub.api(), dry_run=True)
    status, why = statuses(result), reasons(result)
    assert status[f"train:{DEMO_MODEL}"] == "would run"
    assert why[f"train:{DEMO_MODEL}"] == f"out/models/{DEMO_MODEL}/adapter/adapter_config.json changed since it was written"
    assert status[f"merge:{DEMO_MODEL}"] == "would run" and why[f"merge:{DEMO_MODEL}"] == f"after train:{DEMO_MODEL}"
    assert status[f"push:{DEMO_MODEL}"] == "would run"
    assert status["sample:data"] == "up to date" and status["push:dataset.sample"] == "up to date"
    assert state.read_bytes() == before


# ---------------------------------------------------------------------------------------------
# Kills: a subprocess runs the release CLI with one function patched to SIGKILL the process


# Kill at the end of the atomic write of the output named NAME (a file or a folder), its
# content complete, before it is renamed into place: the moment a temporary looks most finished.
IN_ATOMIC_WRITE = textwrap.dedent("""
    import contextlib
    from pathlib import Path
    import apto_release.io as io
    def killing(real, name):
        @contextlib.contextmanager
        def write(dest, *a, **k):
            with real(dest, *a, **k) as tmp:
                yield tmp
                if Path(dest).name == name:
                    os.kill(os.getpid(), signal.SIGKILL)
        return write
""")

MODEL_DIR = f"out/models/{DEMO_MODEL}"

# In the order the release meets them: (name, patch, the job it kills, what it leaves behind).
# Each re-run goes one kill further; the last run completes the release.
KILLS = [
    ("validation report", IN_ATOMIC_WRITE + 'io.atomic_path = killing(io.atomic_path, "validation.json")',
     "validate data", "state/.validation.json.*.tmp"),
    ("sample", IN_ATOMIC_WRITE + 'io.atomic_dir = killing(io.atomic_dir, "sample")', "sample data", "out/.sample.*.tmp"),
    ("full dataset", IN_ATOMIC_WRITE + 'io.atomic_dir = killing(io.atomic_dir, "dataset-full")',
     "dataset build dataset.full", "out/.dataset-full.*.tmp"),
    # While the Trainer writes checkpoint-4 (of 4; one every 2 steps): its adapter weights and
    # optimizer are written, its RNG state and trainer_state.json are not.
    ("checkpoint", """
        import transformers
        real = transformers.Trainer._save_rng_state
        def save_rng_state(self, output_dir):
            if self.state.global_step == 4:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(self, output_dir)
        transformers.Trainer._save_rng_state = save_rng_state
    """, f"train {DEMO_MODEL}", f"{MODEL_DIR}/adapter.checkpoints/checkpoint-4/adapter_model.safetensors"),
    # After the last checkpoint, while the adapter is written.
    ("adapter", IN_ATOMIC_WRITE + 'io.atomic_dir = killing(io.atomic_dir, "adapter")', f"train {DEMO_MODEL}",
     f"{MODEL_DIR}/.adapter.*.tmp"),
    # After the first shard of the merged checkpoint is written.
    ("merge", """
        import apto_release.merge.merge as m
        real = m.merge
        def merge(*a, on_shard=None, **k):
            def hook(shard):
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*a, on_shard=hook, **k)
        m.merge = merge
    """, f"merge {DEMO_MODEL}", f"{MODEL_DIR}/.merged.*.tmp"),
    # With the tensor data of the second GGUF file written, before it is moved into place.
    ("gguf", """
        import apto_release.gguf.output as o
        real = o.publish
        calls = []
        def publish(*a, **k):
            calls.append(1)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*a, **k)
        o.publish = publish
    """, f"GGUF convert + verify {DEMO_MODEL}", f"{MODEL_DIR}/gguf/.{DEMO_MODEL}-*.tmp"),
    ("model card", IN_ATOMIC_WRITE + 'io.atomic_path = killing(io.atomic_path, "README.md")', f"cards {DEMO_MODEL}",
     f"{MODEL_DIR}/*/.README.md.*.tmp"),
    # While the state file records the finished cards.
    ("state file", IN_ATOMIC_WRITE + textwrap.dedent("""
        import apto_release.release.state as st
        real_finish = st.ReleaseState.finish
        def finish(self, key, *a, **k):
            if key.startswith("cards:"):
                io.atomic_path = killing(io.atomic_path, "release-state.json")
            return real_finish(self, key, *a, **k)
        st.ReleaseState.finish = finish
    """), f"cards {DEMO_MODEL}", "state/.release-state.json.*.tmp"),
    # After the first model repo's commit, before its tag and the other repos.
    ("push", """
        import apto_release.hub.push as p
        real = p._verify
        def verify(*a, **k):
            real(*a, **k)
            os.kill(os.getpid(), signal.SIGKILL)
        p._verify = verify
    """, "push dataset.sample", None),
]


def run_killed(folder: Path, killer: str, hub, tmp_path: Path) -> subprocess.CompletedProcess:
    script = "import os, signal\n" + textwrap.dedent(killer) + textwrap.dedent(f"""
        from apto_release.cli import main
        main(["release", "--manifest", {str(folder / "release.toml")!r}, "--progress", "off"])
    """)
    env = {**os.environ, **hub.client_env(tmp_path / "hf_home"), "PYTHONUNBUFFERED": "1"}
    # A process group of its own, killed whole as a CI runner or a preempted node kills it.
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_kills_in_every_stage_then_a_rerun_completes_the_same_release(baseline, tmp_path):
    """A kill inside each stage's atomic write, while a checkpoint is written, after the last
    checkpoint, in the merge, the conversion and the push: each kill leaves no finished-looking
    output, each re-run resumes, and the end is the uninterrupted release, byte for byte, with
    nothing left of the killed runs' temporaries."""
    demo, *_ = baseline
    with LocalHub(tmp_path / "hub", namespaces=[DEMO_ORG]) as hub:
        folder = write_demo_release(tmp_path / "release", **SIZE).folder
        killed = None
        for name, killer, job, leftover in KILLS:
            done = run_killed(folder, killer, hub, tmp_path)
            assert done.returncode == -9, (name, done.stdout[-3000:], done.stderr[-3000:])
            assert f"→ {job}: " in done.stdout, (name, done.stdout)
            if killed:  # the job killed last time runs again first, and says why
                assert f"→ {killed}: did not finish last time" in done.stdout, (name, done.stdout)
            killed = job if name != "push" else None
            if leftover:  # the kill came where it was meant to: its temporary (or checkpoint) is there
                assert list(folder.glob(leftover)), (name, leftover)
            checkpoint_4 = folder / MODEL_DIR / "adapter.checkpoints" / "checkpoint-4"
            if name == "checkpoint":  # half-written: the Trainer's state, written last, is missing
                assert not (checkpoint_4 / "trainer_state.json").exists()
            if name == "adapter":  # the half-written checkpoint-4 was dropped, and written again from checkpoint-2
                assert (checkpoint_4 / "trainer_state.json").is_file()
            if name == "merge":  # the adapter came from the last checkpoint, with no step past it
                assert f"✓ train {DEMO_MODEL}: done" in done.stdout and "4 steps (resumed from step 4)" in done.stdout, done.stdout
        state = ReleaseState.load(folder / "state" / "release-state.json")
        assert f"push:{DEMO_MODEL}" not in state.stages  # push keeps no record
        # What differs from the uninterrupted run is in the training's local run log, not in a published file.
        runs = json.loads((folder / MODEL_DIR / "adapter.run-log.json").read_text())["runs"]
        assert [(r["resumed_from"], r.get("steps_trained")) for r in runs] == [(None, None), ("checkpoint-2", None), ("checkpoint-4", 0)]
        # The last run: everything before push is up to date; the push finishes the model repos and the tags.
        result = run_release(load_manifest(folder / "release.toml"), api=hub.api())
        status = statuses(result)
        assert all(status[k] == "up to date" for k in status if not k.startswith("push:")), status
        assert status[f"push:{DEMO_MODEL}"] == "done"
        # Nothing of the killed runs is left: no temporary file or folder, no checkpoint.
        left = [p.relative_to(folder).as_posix() for p in folder.rglob("*")
                if p.name.endswith((".tmp", ".old")) or p.name.endswith(".checkpoints")]
        assert left == []
        tags = {repo: hub.api().list_repo_refs(repo).tags for repo in (f"{DEMO_ORG}/{DEMO_MODEL}", f"{DEMO_ORG}/{DEMO_MODEL}-GGUF")}
        assert all(t and t[0].name == "v1.0.0" for t in tags.values())
    first, again = release_files(demo.folder), release_files(folder)
    assert sorted(first) == sorted(again)
    assert sorted(name for name in first if first[name] != again[name]) == []


def test_a_failing_stage_stops_the_release_and_is_rerun(own_release):
    records = own_release / "data" / "example-600-0.jsonl"
    lines = records.read_text().splitlines()
    records.write_text("\n".join(lines[:-1] + ["{not json"]) + "\n")
    with pytest.raises(ReleaseError) as info:
        run_release(load_manifest(own_release / "release.toml"), stages=["validate", "sample"])
    assert "validate of data failed" in info.value.message and "1 validation error" in info.value.message
    assert [r.status for r in info.value.result.reports] == ["failed"]


def test_the_train_stage_passes_the_manifest_s_allow_slow_kernels(own_release, monkeypatch):
    """The demo's manifest lets its tiny model train on a GPU without the [gpu] kernels: the train
    stage hands that to `train` (a real run on CUDA would otherwise be refused)."""
    from apto_release.errors import UsageError
    from apto_release.train import trainer

    seen = {}

    def fake_train(*args, **kwargs):
        seen.update(kwargs)
        raise UsageError("stopped before training")

    manifest = own_release / "release.toml"
    manifest.write_text(manifest.read_text("utf-8").replace('"data.max_length" = 512', '"data.max_length" = 500'), "utf-8")
    monkeypatch.setattr(trainer, "train", fake_train)
    with pytest.raises(ReleaseError, match="stopped before training"):
        run_release(load_manifest(manifest), stages=["train"])
    assert seen["allow_slow_kernels"] is True
