"""The README's table of the benchmarks is the one generated from their data files, and the README
says how to run the judges on vLLM (the issue's "Done when")."""

from __future__ import annotations

import re
from pathlib import Path

from apto_release.evals.benchmarks import load_spec, spec_names
from apto_release.evals.judging import BENCHMARK_TABLE_END, BENCHMARK_TABLE_START, benchmark_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_table_is_generated_from_the_data_files():
    text = README.read_text("utf-8")
    start, end = text.index(BENCHMARK_TABLE_START), text.index(BENCHMARK_TABLE_END)
    shown = text[start + len(BENCHMARK_TABLE_START):end].strip("\n")
    assert shown == benchmark_table(), (
        "README's benchmark table differs from the data files: regenerate it with\n"
        "python -c 'from apto_release.evals.judging import benchmark_table; print(benchmark_table())'")


def test_each_row_names_source_version_licence_sampling_and_judge():
    rows = benchmark_table().splitlines()[2:]
    assert [row.split(" | ")[0].lstrip("| ") for row in rows] == list(spec_names())
    for name, row in zip(spec_names(), rows):
        spec = load_spec(name)
        cells = row.strip("|").split(" | ")
        assert len(cells) == 5, row
        assert spec.source["license"] in cells[2] and spec.source["access"] in cells[2]
        revision = spec.revision[:7] if spec.pinned else spec.revision
        assert f"`{revision}`" in cells[1] and ("unpinned" in cells[1]) != spec.pinned
        assert f"/ {spec.sampling.max_tokens} /" in cells[3] and ("on" if spec.sampling.enable_thinking else "off") in cells[3]
        if spec.judge_prompt:
            assert f"(apto_release/evals/prompts/{spec.judge_prompt})" in cells[4] and "[[" in cells[4]
    mt = rows[list(spec_names()).index("MT-Bench-ja")]
    assert "math 0.1" in mt and "writing 0.5" in mt and "others 0.7" in mt  # the temperature per category


def test_the_readme_says_how_to_run_the_judges_on_vllm():
    text = README.read_text("utf-8")
    assert re.search(r"vllm serve \S+ --tensor-parallel-size \d", text)
    assert re.search(r"eval judge [^\n]*--judge http://[\w.-]+:8000/v1 [^\n]*--judge-model", text.replace("\\\n", " "))
    assert re.search(r'judges = \[[^\]]*url = "http://[\w.-]+:8000/v1"', text)
