"""``apto-release release`` on records that fail validation: every ``--stages`` / ``--only`` choice
that reads the records is refused, with one clear line naming the file, and writes nothing.

(Issue 12, part 3: ``--stages dataset --only dataset.full`` used to build the private full set from
such a file, and the next push would have published it.)
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("datasets")

from apto_release.demo import DEMO_MODEL, write_demo_release  # noqa: E402
from apto_release.release.manifest import load_manifest  # noqa: E402
from apto_release.release.pipeline import STAGES, _Plan, select_jobs  # noqa: E402
from apto_release.release.state import ReleaseState  # noqa: E402

#: The jobs that read the records file (``dataset.sample`` reads the sample, which the sample job
#: writes from validated records; on a fresh release it does not exist yet).
READERS = ("validate:data", "sample:data", "dataset:dataset.full", f"train:{DEMO_MODEL}")


@pytest.fixture(scope="module")
def invalid_release(tmp_path_factory):
    """A demo release whose records hold a judge_score of 1 and a duplicated id (validate: FAILED)."""
    demo = write_demo_release(tmp_path_factory.mktemp("invalid"), records=200, sample_size=20, steps=1)
    lines = demo.records.read_text("utf-8").splitlines()
    low = json.loads(lines[3])
    low["judge_score"] = 1
    lines[3] = json.dumps(low, ensure_ascii=False)
    twin = json.loads(lines[8])
    twin["id"] = json.loads(lines[7])["id"]
    lines[8] = json.dumps(twin, ensure_ascii=False)
    demo.records.write_text("\n".join(lines) + "\n", "utf-8")
    return demo


def _choices() -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """Every --stages subset (empty: all) with every --only subset of the targets (empty: all)."""
    targets = ("data", "dataset.sample", "dataset.full", DEMO_MODEL)
    subsets = lambda items: [c for n in range(len(items) + 1) for c in itertools.combinations(items, n)]  # noqa: E731
    return [(stages, only) for stages in subsets(STAGES) for only in subsets(targets)]


def _snapshot(folder: Path) -> dict[str, int]:
    """Every path under the release but the state folder (whose file records the failure)."""
    return {p.relative_to(folder).as_posix(): p.stat().st_size if p.is_file() else -1
            for p in folder.rglob("*") if not p.relative_to(folder).as_posix().startswith("state")}


def test_every_choice_of_stages_and_targets_that_reads_the_records_is_refused(invalid_release, run_cli):
    """Jobs run in a fixed order and a release stops at its first failure, so a choice's outcome is
    decided by its jobs up to the first one that reads the records; every distinct such prefix is
    run once through the CLI, and every one of the 4,096 choices maps to one of those runs."""
    manifest = load_manifest(invalid_release.manifest)
    jobs = _Plan(manifest, ReleaseState(invalid_release.folder / "unused.json")).jobs()
    runs: dict[tuple[str, ...], tuple[int, tuple[str, ...], tuple[str, ...]]] = {}
    reading = 0
    for stages, only in _choices():
        keys = [j.key for j in select_jobs(jobs, manifest, stages=stages, only=only)]
        first = next((i for i, k in enumerate(keys) if k in READERS), None)
        if first is None:
            continue
        reading += 1
        # The narrowest choice stands for its prefix: a broken refusal must not go on to train or push.
        prefix = tuple(keys[: first + 1])
        if prefix not in runs or len(keys) < runs[prefix][0]:
            runs[prefix] = (len(keys), stages, only)
    assert reading > 1000 and len(runs) >= 6  # the enumeration is the point: it must not come out empty
    assert ("dataset:dataset.full",) in runs  # the issue's own case: --stages dataset --only dataset.full
    assert {prefix[-1] for prefix in runs} == set(READERS)

    before = _snapshot(invalid_release.folder)
    for prefix, (_, stages, only) in sorted(runs.items()):
        args = [a for s in stages for a in ("--stages", s)] + [a for o in only for a in ("--only", o)]
        code, out, err = run_cli("release", "--manifest", invalid_release.manifest, "--progress", "off", *args)
        errors = [line for line in err.splitlines() if line.startswith("Error:")]
        assert code != 0, (prefix, out)
        assert len(errors) == 1 and "Traceback" not in err, (prefix, err)
        last = prefix[-1]
        if last == "dataset:dataset.sample":  # pragma: no cover - never last: it is not a reader
            raise AssertionError(prefix)
        if prefix[0] == "dataset:dataset.sample":
            # The sample is refused first: it does not exist, because the sample job refused the records.
            assert "sample.jsonl does not exist yet" in errors[0], (prefix, err)
        else:
            assert str(invalid_release.records) in errors[0] or invalid_release.records.name in errors[0], (prefix, err)
            assert "validation error" in errors[0], (prefix, err)
        # Nothing written: no dataset folder, no sample, no adapter, no hidden temporary folder.
        assert _snapshot(invalid_release.folder) == before, prefix
    state = invalid_release.folder / "state"
    assert {p.name for p in state.iterdir()} <= {"release-state.json", "validation.json"}
    assert not list(invalid_release.folder.rglob("*.tmp"))


def test_the_issue_s_case_names_the_file_and_the_findings(invalid_release, run_cli):
    code, out, err = run_cli("release", "--manifest", invalid_release.manifest, "--progress", "off",
                             "--stages", "dataset", "--only", "dataset.full")
    assert code == 1
    error = next(line for line in err.splitlines() if line.startswith("Error:"))
    assert error.startswith(f"Error: {invalid_release.records}: dataset build of dataset.full failed: 2 validation errors")
    assert not (invalid_release.folder / "out" / "dataset-full").exists()
