"""apto-release eval summarize: the table, the files, exit codes 0, 1 and 2, one-line errors."""

from __future__ import annotations

import json

from tests.evals.judgement_fixtures import HAND, judgement, write_hand, write_jsonl

MODEL = "Apto-Tiny-Safety"


def test_summarize_writes_the_results_and_the_chart(run_cli, tmp_path):
    before, after = write_hand(tmp_path / "judgements")
    out = tmp_path / "eval" / "tiny.json"
    code, stdout, stderr = run_cli("eval", "summarize", "-j", before, "--judgements", after, "--model", MODEL, "-o", out,
                                   "--bootstrap", "500")
    assert code == 0, stderr
    assert stderr == ""
    lines = stdout.splitlines()
    assert lines[0] == "Read 50 judgements from 2 file(s)."
    assert lines[1].split() == ["metric", "n", "before", "after", "change", "95%", "CI", "p"]
    assert lines[2].split()[:8] == ["AC", "acceptable", "rate", "(%)", "6", "33.3", "66.7", "+33.4"]
    assert any(line.split()[:6] == ["MT-Bench-ja", "score", "2", "6.00", "7.50", "+1.50*"] for line in lines)
    assert "Agreement of 2 judges on SORRY-Bench (Krippendorff's alpha, nominal): 0.500" in lines
    assert lines[-1] == f"Wrote {out} and {out.parent / 'eval_chart.png'}"
    results = json.loads(out.read_text())
    assert results["model"] == MODEL and results["chart"] == "eval_chart.png"
    assert (out.parent / "eval_chart.png").read_bytes().startswith(b"\x89PNG")
    assert not list(out.parent.glob(".*"))  # no temporary file left


def test_model_ids_and_no_chart(run_cli, tmp_path):
    lines = [{**line, "model": {"before": "Qwen/Qwen3.5-9B", "after": "apto/Tuned"}[line["model"]]} for line in HAND]
    path = write_jsonl(tmp_path / "j.jsonl", lines)
    out = tmp_path / "r.json"
    code, _, stderr = run_cli("eval", "summarize", "-j", path, "--model", MODEL, "-o", out, "--no-chart")
    assert code == 2 and stderr.startswith(f"Error: {path}:1: 'model' is 'Qwen/Qwen3.5-9B', neither before nor after")
    assert "Hint: write 'before' or 'after', or map model ids with --before MODEL_ID and --after MODEL_ID" in stderr
    code, _, stderr = run_cli("eval", "summarize", "-j", path, "--model", MODEL, "-o", out, "--no-chart",
                              "--before", "Qwen/Qwen3.5-9B", "--after", "apto/Tuned", "--bootstrap", "200")
    assert code == 0, stderr
    assert "chart" not in json.loads(out.read_text()) and not list(tmp_path.glob("*.png"))


def test_errors_in_the_judgements_exit_1_and_write_nothing(run_cli, tmp_path):
    lines = [judgement("AnswerCarefully", "1", "before", score=4), judgement("AnswerCarefully", "1", "after", score=4),
             judgement("AnswerCarefully", "1", "after", score=2), judgement("AnswerCarefully", "2", "before", score=1)]
    path = write_jsonl(tmp_path / "j.jsonl", lines)
    code, _, stderr = run_cli("eval", "summarize", "-j", path, "--model", MODEL, "-o", tmp_path / "r.json")
    assert code == 1
    assert stderr.splitlines() == [
        f"error: AnswerCarefully item 1 (after, judge j1) is judged twice differently: 4 at {path}:2, 2 at {path}:3",
        "warning: AnswerCarefully: 1 item judged for one model only is left out of the results: 2 (before only)",
        "Error: the judgements have 1 error(s); nothing was written.",
    ]
    assert not (tmp_path / "r.json").exists()


def test_warnings_still_write(run_cli, tmp_path):
    before, after = write_hand(tmp_path)
    extra = write_jsonl(tmp_path / "extra.jsonl", [judgement("AnswerCarefully", "ac-99", "after", score=5)])
    code, _, stderr = run_cli("eval", "summarize", "-j", before, "-j", after, "-j", extra, "--model", MODEL,
                              "-o", tmp_path / "r.json", "--no-chart", "--bootstrap", "200")
    assert code == 0
    assert stderr == "warning: AnswerCarefully: 1 item judged for one model only is left out of the results: ac-99 (after only)\n"


def test_usage_and_input_errors_exit_2_in_one_line(run_cli, tmp_path):
    path = write_jsonl(tmp_path / "j.jsonl", [judgement("HarmBench", "1", "before", score=4)])
    code, _, stderr = run_cli("eval", "summarize", "-j", path, "--model", MODEL, "-o", tmp_path / "r.json")
    assert code == 2
    assert stderr == f"Error: {path}:1: unknown benchmark 'HarmBench'; known: AnswerCarefully, SORRY-Bench, MultiJail, MT-Bench-ja, JMMLU (field 'benchmark')\n"
    code, _, stderr = run_cli("eval", "summarize", "-j", tmp_path / "missing.jsonl", "--model", MODEL, "-o", tmp_path / "r.json")
    assert code == 2 and "the judgement file does not exist" in stderr and "Traceback" not in stderr
    code, _, stderr = run_cli("eval", "summarize", "-j", path, "--model", MODEL, "-o", tmp_path / "r.json", "--chart", "c.png",
                              "--no-chart")
    assert code == 2 and "--chart and --no-chart contradict each other" in stderr
    code, _, stderr = run_cli("eval", "summarize", "-j", path, "--model", MODEL, "-o", tmp_path / "r.json", "--bootstrap", "5")
    assert code == 2 and "--bootstrap" in stderr
