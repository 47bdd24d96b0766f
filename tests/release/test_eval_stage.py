"""``eval run`` and the release's eval stage on a tiny release whose engines are scripted servers:
generate for before and after, judge with two judges, summarize to the evaluation file; a rerun is
up to date and starts nothing; a changed [model.eval] runs again, asking only for what is new."""

from __future__ import annotations

import json
import textwrap

import pytest

from apto_release.evals.records import read_lines
from apto_release.release.manifest import load_manifest
from apto_release.release.pipeline import run_release
from apto_release.testing.openai_server import ScriptedServer
from tests.cli import conftest as cli_fixtures
from tests.evals.run_fixtures import judge_script, model_script, write_bench_dir

run_cli = cli_fixtures.run_cli

pytest.importorskip("openai")  # the eval client's library (a dependency of the package)

MANIFEST = """
organisation = "apto-test"
version = "1.0.0"
license = "apache-2.0"
state = "state/state.json"

[[model]]
name = "Tiny-Safety"
base_model = "apto-test/tiny"
preset = "tiny"
adapter = "out/adapter"
merged = "out/merged"
evaluation = "eval/tiny.json"

[model.eval]
benchmarks = ["AnswerCarefully", "MT-Bench-ja", "JMMLU"]
bench_dir = "bench"
limit = {limit}
judges = [{{ url = "{judge_a}", model = "judge-a" }}, {{ url = "{judge_b}", model = "judge-b" }}]
base = {{ url = "{model}", model = "tiny" }}
tuned = {{ url = "{model}", model = "tiny" }}
parallel = 2
"""


@pytest.fixture
def release(tmp_path):
    write_bench_dir(tmp_path / "bench")
    merged = tmp_path / "out" / "merged"
    merged.mkdir(parents=True)
    (merged / "config.json").write_text("{}", "utf-8")  # what the URL engine serves: its digest is an input
    with ScriptedServer(model_script, model="tiny") as model, ScriptedServer(judge_script, model="judge-a") as a, \
            ScriptedServer(judge_script, model="judge-b") as b:
        def write(limit=2):
            path = tmp_path / "release.toml"
            path.write_text(textwrap.dedent(MANIFEST.format(limit=limit, model=model.url, judge_a=a.url, judge_b=b.url)), "utf-8")
            return path
        yield write, (model, a, b)


def test_eval_run_writes_the_evaluation_and_a_rerun_is_up_to_date(run_cli, release, tmp_path):
    write, servers = release
    manifest = write()
    code, out, err = run_cli("eval", "run", "--manifest", manifest, "--progress", "off")
    assert code == 0, err
    assert "✓ eval Tiny-Safety: done" in out and "before, after evaluated" in out
    evaluation = json.loads((tmp_path / "eval" / "tiny.json").read_text("utf-8"))
    assert evaluation["model"] == "Tiny-Safety" and evaluation["judges"] == ["judge-a", "judge-b"]
    assert {m["benchmark"] for m in evaluation["metrics"]} == {"AnswerCarefully", "MT-Bench-ja", "JMMLU"}
    assert (tmp_path / "eval" / "eval_chart.png").is_file()
    work = tmp_path / "state" / "eval" / "Tiny-Safety"
    assert sorted(p.name for p in work.iterdir()) == [
        "judgements-after-judge-a.jsonl", "judgements-after-judge-b.jsonl", "judgements-before-judge-a.jsonl",
        "judgements-before-judge-b.jsonl", "responses-after.jsonl", "responses-before.jsonl"]
    # 2 AnswerCarefully + 2 MT-Bench-ja items (2 turns each) + 2 JMMLU: 8 answers per side
    assert len(read_lines(work / "responses-before.jsonl")) == 8
    assert {line["model"] for line in read_lines(work / "judgements-after-judge-b.jsonl")} == {"after"}
    asked = [len(s.completions) for s in servers]

    code, out, _ = run_cli("eval", "run", "--manifest", manifest, "--progress", "off")
    assert code == 0 and "= eval Tiny-Safety: up to date" in out
    assert [len(s.completions) for s in servers] == asked  # nothing asked again


def test_a_changed_eval_table_runs_again_asking_only_for_the_new_items(release, tmp_path):
    write, (model, a, b) = release
    run_release(load_manifest(write(limit=1)), stages=["eval"])
    before = len(model.completions)
    result = run_release(load_manifest(write(limit=2)), stages=["eval"])
    [report] = result.reports
    assert report.status == "done" and "eval" in report.reason  # the changed input is named
    assert "kept" in report.summary
    # the second item of AnswerCarefully and JMMLU, and both turns of MT-Bench-ja's second, per side
    assert len(model.completions) - before == 2 * 4
    again = run_release(load_manifest(write(limit=2)), stages=["eval"], only=["Tiny-Safety"], dry_run=True)
    assert [(r.stage, r.status) for r in again.reports] == [("eval", "up to date")]


def test_an_engine_that_moves_is_no_change_but_a_new_judge_model_is(release, tmp_path):
    write, (model, a, b) = release
    manifest = write()
    run_release(load_manifest(manifest), stages=["eval"])
    with ScriptedServer(judge_script, model="judge-a") as moved:  # judge-a, now on another port
        manifest.write_text(manifest.read_text("utf-8").replace(a.url, moved.url), "utf-8")
        [report] = run_release(load_manifest(manifest), stages=["eval"]).reports
        assert report.status == "up to date" and not moved.completions
        manifest.write_text(manifest.read_text("utf-8").replace('model = "judge-a"', 'model = "judge-c"'), "utf-8")
        moved.model = "judge-c"
        [report] = run_release(load_manifest(manifest), stages=["eval"]).reports
    assert report.status == "done" and "input changed: eval" in report.reason
    assert moved.completions and json.loads((tmp_path / "eval" / "tiny.json").read_text("utf-8"))["judges"] == ["judge-b", "judge-c"]


def test_eval_run_without_any_eval_table_is_a_usage_error(run_cli, tmp_path):
    text = MANIFEST.split("[model.eval]")[0]
    (tmp_path / "release.toml").write_text(textwrap.dedent(text), "utf-8")
    code, _, err = run_cli("eval", "run", "--manifest", tmp_path / "release.toml")
    assert code == 2 and "no model of the manifest has a [model.eval] table" in err


def test_a_judge_dying_mid_run_fails_the_stage_and_the_rerun_asks_only_for_the_rest(release, tmp_path):
    from apto_release.release.pipeline import ReleaseError

    write, (model, a, b) = release
    manifest, old_url = write(), a.url
    a.die_after(3)  # judge-a answers 3 of before's 8 answers' judgements (JMMLU needs none), then dies
    with pytest.raises(ReleaseError, match="eval of Tiny-Safety failed: the engine at"):
        run_release(load_manifest(manifest), stages=["eval"])
    assert not (tmp_path / "eval" / "tiny.json").exists()  # nothing written half
    partial = tmp_path / "state" / "eval" / "Tiny-Safety" / "judgements-before-judge-a.jsonl.partial"
    received = sum(line["benchmark"] != "JMMLU" for line in read_lines(partial))  # JMMLU is scored by its key
    assert received == 3
    with ScriptedServer(judge_script, model="judge-a") as revived:  # the same judge, restarted elsewhere
        manifest.write_text(manifest.read_text("utf-8").replace(old_url, revived.url), "utf-8")
        [report] = run_release(load_manifest(manifest), stages=["eval"]).reports
        assert report.status == "done" and report.reason == "did not finish last time"
        # before: 6 judged lines (2 AC + 2x2 MT-Bench turns), minus those received; after: all 6
        assert len(revived.completions) == 6 - received + 6
    assert (tmp_path / "eval" / "tiny.json").is_file()


def test_eval_run_only_a_model_without_eval_is_a_usage_error(run_cli, release):
    write, _ = release
    code, _, err = run_cli("eval", "run", "--manifest", write(), "--only", "Other")
    assert code == 2 and "--only Other: no such model with [model.eval]; choose from Tiny-Safety" in err


def test_the_gguf_sides_are_found_as_the_cards_and_the_push_find_them(tmp_path):
    from apto_release.errors import InputError, UsageError
    from apto_release.gguf.output import split_names
    from apto_release.release.evaluate import eval_sides

    manifest = MANIFEST.replace('evaluation = "eval/tiny.json"', 'evaluation = "eval/tiny.json"\ngguf = ["Q8_0", "Q4_K_M"]\ngguf_folder = "out/gguf"')
    manifest = manifest.replace("parallel = 2", 'parallel = 2\ngguf = ["Q4_K_M"]')
    path = tmp_path / "release.toml"
    url = "http://127.0.0.1:9/v1"
    path.write_text(textwrap.dedent(manifest.format(limit=1, model=url, judge_a=url, judge_b=url)), "utf-8")
    model = load_manifest(path).models[0]
    with pytest.raises(UsageError, match="has no Q4_K_M GGUF file to evaluate"):
        eval_sides(model, None)
    model.gguf_folder.mkdir(parents=True)
    parts = split_names(f"{model.name}-Q4_K_M", 2)
    for name in parts:
        (model.gguf_folder / name).write_bytes(b"GGUF")
    assert [(label, spec.path) for label, spec in eval_sides(model, None)][2:] == [("Q4_K_M", model.gguf_folder / parts[0])]
    (model.gguf_folder / f"{model.name}-Q4_K_M.gguf").write_bytes(b"GGUF")  # a stale single file beside the set
    with pytest.raises(InputError, match="more than one output for Q4_K_M"):
        eval_sides(model, None)


def test_with_details_repo_the_stage_builds_the_details_folder_as_one_of_its_outputs(release, tmp_path):
    write, (model, a, b) = release
    manifest = write()
    manifest.write_text(manifest.read_text("utf-8") + 'details_repo = "Tiny-Safety-eval-details"\n', "utf-8")
    [report] = run_release(load_manifest(manifest), stages=["eval"]).reports
    assert report.status == "done"
    folder = tmp_path / "eval" / "tiny-details"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        ".apto-details.json", "README.md", "data/after.parquet", "data/before.parquet"]
    # one row per (benchmark, item, turn, side, judge): 2 AC x 2 judges, 2 MT x 2 turns x 2 judges, 2 JMMLU (the key)
    assert json.loads((folder / ".apto-details.json").read_text())["configs"] == {"before": 14, "after": 14}
    assert "apto-test/Tiny-Safety-eval-details" in (folder / "README.md").read_text("utf-8")
    # the folder is an output: removed, the stage runs again (asking nothing) and puts it back
    (folder / "data" / "after.parquet").unlink()
    asked = len(model.completions)
    [report] = run_release(load_manifest(manifest), stages=["eval"]).reports
    assert report.status == "done" and (folder / "data" / "after.parquet").is_file() and len(model.completions) == asked
    [report] = run_release(load_manifest(manifest), stages=["eval"]).reports
    assert report.status == "up to date"
