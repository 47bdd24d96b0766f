"""validate, sample and schema from the command line: exit codes, formats, error lines."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import make_record, make_records, write_jsonl


def test_help_is_light():
    """Every command's --help, each ending with an example, without importing anything heavy."""
    code = (
        "import sys\nfrom apto_release.cli import cli, main\n"
        "commands = [[name] for name in cli.commands if name not in ('dataset', 'gguf', 'eval')]\n"
        "commands += [['dataset', 'build'], ['gguf', 'convert'], ['gguf', 'verify'], ['eval', 'summarize']]\n"
        "for args in [[]] + commands:\n"
        "    try:\n        main(args + ['--help'])\n    except SystemExit as e:\n        assert not e.code, (args, e.code)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'peft', 'tokenizers', 'gguf', 'numpy', 'pyarrow') if m in sys.modules), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stderr.strip() == "[]"
    for command in ("validate", "sample", "dataset build", "train", "merge", "gguf convert", "gguf verify", "cards", "example-data", "demo",
                    "schema", "release", "push", "eval summarize"):
        assert f"Example: apto-release {command}" in proc.stdout


def test_the_release_s_dataset_stages_do_not_import_torch(tmp_path):
    """A release without models (or with --stages validate,sample,dataset) stays on the light core."""
    write_jsonl(tmp_path / "records.jsonl", make_records(60))
    (tmp_path / "release.toml").write_text(
        'organisation = "org"\nversion = "1.0.0"\nlicense = "apache-2.0"\n'
        '[data]\nrecords = "records.jsonl"\nsample_size = 10\n'
        '[dataset.sample]\nrepo = "s"\nfolder = "out/s"\ngated = "auto"\nmax_rows = 10\n'
        '[dataset.full]\nrepo = "f"\nfolder = "out/f"\n'
    )
    code = (
        "import sys\nfrom apto_release.cli import main\n"
        "try:\n    main(['release', '--manifest', sys.argv[1], '--stages', 'validate,sample,dataset'])\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'gguf', 'llama_cpp') if m in sys.modules), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "release.toml")], capture_output=True, text=True, check=True)
    assert proc.stderr.strip().splitlines()[-1] == "[]", proc.stderr
    assert (tmp_path / "out" / "s" / "README.md").is_file()


def test_module_entry_point_and_version():
    proc = subprocess.run([sys.executable, "-m", "apto_release", "--version"], capture_output=True, text=True, check=True)
    assert proc.stdout.startswith("apto-release, version ")


def test_validate_pass(run_cli, tmp_path):
    path = write_jsonl(tmp_path / "ok.jsonl", make_records(20))
    code, out, err = run_cli("validate", path)
    assert code == 0, err
    assert out.startswith(f"{path}: PASSED — 20 records, 0 errors, 0 warnings")
    assert "safety_refusal" in out


def test_validate_errors_exit_1_with_lines(run_cli, tmp_path):
    records = make_records(5) + [make_record(9, category="unknown")]
    path = write_jsonl(tmp_path / "bad.jsonl", records, raw_lines=[b"{not json"])
    code, out, _ = run_cli("validate", path)
    assert code == 1
    assert f"{path}:6: error [unknown_category] unknown category 'unknown'" in out
    assert f"{path}:7: error [invalid_json]" in out
    assert "FAILED" in out.splitlines()[0]


def test_validate_json_and_github_formats(run_cli, tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [make_record(0), make_record(1, judge_score=3, extra="x")])
    code, out, _ = run_cli("validate", path, "--format", "json")
    assert code == 1
    data = json.loads(out)
    assert data["status"] == "FAILED" and data["errors"] == 1 and data["warnings"] == 1
    assert {(f["rule"], f["severity"], f["line"], f["id"], f["field"]) for f in data["findings"]} == {
        ("judge_score_below_gate", "error", 2, "rec-00001", "judge_score"),
        ("unknown_field", "warning", 2, "rec-00001", "extra"),
    }
    code, out, _ = run_cli("validate", path, env={"GITHUB_ACTIONS": "true"})
    assert code == 1
    assert f"::error file={path},line=2,title=judge_score_below_gate::judge_score 3 is below the release gate of 4 (id rec-00001)" in out
    assert f"::warning file={path},line=2,title=unknown_field::" in out


def test_strict_and_report_file(run_cli, tmp_path):
    path = write_jsonl(tmp_path / "warn.jsonl", [make_record(0, extra="x")])
    assert run_cli("validate", path)[0] == 0
    code, out, _ = run_cli("validate", path, "--strict", "-o", tmp_path / "report.json")
    assert code == 1 and "--strict: warnings fail" in out
    assert json.loads((tmp_path / "report.json").read_text())["status"] == "FAILED"


def test_usage_errors_exit_2_without_traceback(run_cli, tmp_path):
    code, _, err = run_cli("validate", tmp_path / "missing.jsonl")
    assert code == 2
    assert err.strip() == f"Error: {tmp_path / 'missing.jsonl'}: no such file"
    code, _, err = run_cli("validate", tmp_path / "x.jsonl", "--min-judge-score", "9")
    assert code == 2 and "Invalid value for '--min-judge-score'" in err
    (tmp_path / "t.json").write_text("{", encoding="utf-8")
    path = write_jsonl(tmp_path / "ok.jsonl", [make_record(0)])
    code, _, err = run_cli("validate", path, "--taxonomy", tmp_path / "t.json")
    assert code == 2 and err.startswith(f"Error: {tmp_path / 't.json'}:1: invalid JSON")
    assert "Traceback" not in err


def test_sample_cli(run_cli, tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", make_records(100))
    code, out, err = run_cli("sample", path, "-n", "20", "--seed", "3", "-o", tmp_path / "s")
    assert code == 0, err
    assert out.startswith(f"Drew 20 of 100 eligible records (seed 3, by category) into {tmp_path / 's'}/")
    assert (tmp_path / "s" / "sample.parquet").is_file()
    code, _, err = run_cli("sample", path, "-n", "20", "-o", tmp_path / "s")
    assert code == 2 and "already exists" in err and "Hint: choose another -o or pass --overwrite" in err
    code, _, err = run_cli("sample", path, "-n", "20", "--by", "messages", "-o", tmp_path / "s2")
    assert code == 2 and "cannot stratify by 'messages'" in err


def test_sample_cli_refuses_invalid_input_with_findings(run_cli, tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", make_records(10) + [make_record(50, messages=[])])
    code, _, err = run_cli("sample", path, "-n", "5", "-o", tmp_path / "s")
    assert code == 1
    assert f"{path}:11: error [bad_role_order]" in err
    assert err.rstrip().endswith(f"Error: {path}: 1 validation error; fix them (see 'apto-release validate') before sampling")
    assert not (tmp_path / "s").exists()


def test_schema_cli(run_cli, tmp_path):
    code, out, _ = run_cli("schema")
    assert code == 0 and json.loads(out)["title"].startswith("apto-release")


def test_a_missing_extra_is_a_clear_error(run_cli, monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("No module named 'torch'", name="torch")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    code, _, err = run_cli("train", "--preset", "tiny", "--base", tmp_path, "--data", tmp_path / "d.jsonl", "-o", tmp_path / "out")
    assert code == 2
    assert err.splitlines()[0] == "Error: this command needs torch, from the [train] extra"
    assert "pip install torch==2.13.0" in err and "Traceback" not in err


def _template_records(n):
    """``n`` records whose first prompts share one long preamble: one near-duplicate cluster."""
    preamble = "".join(f"設定{k}：あなたは第{k}章の語り手で、規則{k * 7}を守ります。" for k in range(20))
    return [make_record(i, messages=[{"role": "user", "content": f"{preamble}質問{i}について教えて。"},
                                     {"role": "assistant", "content": f"回答{i}です。"}]) for i in range(n)]


def test_validate_reports_clusters_bounded_in_every_format(run_cli, tmp_path):
    records = _template_records(120)
    records[100]["judge_score"] = 2  # one error among 119 near-duplicate warnings
    path = write_jsonl(tmp_path / "t.jsonl", records)
    code, out, _ = run_cli("validate", path, "--max-findings", "5")
    assert code == 1
    assert "Near-duplicate prompts: 1 cluster holding 120 records; the largest has 120 (cluster 1, first on line 1)" in out
    assert "First 5 findings (errors first):" in out
    assert f"{path}:101: error [judge_score_below_gate]" in out  # not hidden behind the warnings
    assert out.count("[near_duplicate_prompt]") == 4
    assert "… and 115 more (use --max-findings 0 or --format json to see all)" in out
    assert "near-duplicate cluster 1 (120 records, first on line 1, id 'rec-00000')" in out

    code, out, _ = run_cli("validate", path, "--format", "github", "--max-findings", "5")
    lines = out.splitlines()
    assert code == 1 and len(lines) == 7
    assert lines[0].startswith(f"::warning file={path},line=2,title=near_duplicate_prompt::the first user prompt is ")
    assert lines[4].startswith(f"::error file={path},line=101,title=judge_score_below_gate::")  # in file order
    assert lines[5] == "::notice title=validate::115 more findings not shown (use --max-findings 0 or --format json to see all)"

    code, out, _ = run_cli("validate", path, "--format", "json")
    near = [f for f in json.loads(out)["findings"] if f["rule"] == "near_duplicate_prompt"]
    assert len(near) == 119  # one per record but the first: linear in the records, not in the pairs
    assert {json.dumps(f["cluster"], sort_keys=True) for f in near} == {
        json.dumps({"number": 1, "size": 120, "representative": "rec-00000", "representative_line": 1}, sort_keys=True)}
    assert all(f["related"][0] == "rec-00000" for f in near)
