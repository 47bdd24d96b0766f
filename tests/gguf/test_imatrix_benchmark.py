"""The imatrix benchmark (``benchmarks/bench_imatrix.py``, run by hand): its roff reader, and a
smoke run end to end (a few training steps, one type), so that the script keeps working."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("gguf")
pytest.importorskip("torch")
pytest.importorskip("llama_cpp")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_imatrix  # noqa: E402


def test_man_text_keeps_the_japanese_text_lines_of_roff(tmp_path):
    page = (
        '.\\" a comment\n.TH LS "1" "2021年5月"\n.SH 名前\nls \\- ディレクトリの内容をリスト表示する\n'
        ".TP\n\\fB\\-a\\fR, \\fB\\-\\-all\\fR\n\\&. で始まる要素を無視しない\nshort\nplain English text line here\n"
    )
    (tmp_path / "man1").mkdir()
    (tmp_path / "man1" / "ls.1.gz").write_bytes(gzip.compress(page.encode()))
    (tmp_path / "man1" / "cp.1").write_text("コピーする対象のファイルを指定します。\n", "utf-8")
    assert bench_imatrix.man_text(tmp_path) == [
        "コピーする対象のファイルを指定します。",  # files in sorted order: cp.1 before ls.1.gz
        "ls - ディレクトリの内容をリスト表示する",
        ". で始まる要素を無視しない",
    ]


def test_general_lines_are_split_by_a_hash_of_each_line(tmp_path):
    text = tmp_path / "general.txt"
    lines = [f"これは一般的な日本語の文、その{i}番目です。" for i in range(400)]
    text.write_text("\n".join(lines + lines[:10]) + "\n", "utf-8")  # repeats counted once
    split = bench_imatrix.general_lines(text)
    assert sorted(sum(split.values(), [])) == sorted(lines)
    assert 0 < len(split["heldout"]) < 60 and 0 < len(split["calibration"]) < 60
    assert bench_imatrix.general_lines(text) == split


def test_the_benchmark_runs_end_to_end_on_a_few_steps(tmp_path):
    from apto_release.dataset.example import generate_records

    general = tmp_path / "general.txt"
    general.write_text("\n".join(m["content"].replace("\n", " ") for r in generate_records(300, seed=7)
                                 for m in r["messages"]) + "\n", "utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args = ["--work", str(tmp_path / "work"), "--general", str(general), "--steps", "2", "--records", "60",
            "--calib-tokens", "4000", "--quants", "Q4_K_M"]
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_imatrix.py"), *args],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for text in ("**heldout_ja.txt**", "**records (seed 1)**", "**general (held out)**"):
        assert text in out
    rows = [line for line in out.splitlines() if line.startswith("| Q4_K_M |")]
    assert len(rows) == 3 and "(x" in rows[1]  # an interval where there are several windows
    assert "trained 2 steps" in out and "gguf verify --against-f16" in out
