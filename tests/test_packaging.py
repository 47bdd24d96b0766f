"""The wheel carries the card templates and the JSON Schema, and works outside the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("apto_release-*.whl")
    return path


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "apto_release/_templates/dataset_cards/README.md.j2" in names
    assert "apto_release/schemas/record-v1.schema.json" in names
    assert "apto_release/dataset/example_pools/prompts.json" in names
    from apto_release.evals.metrics import BENCHMARK_NAMES

    for name in BENCHMARK_NAMES:  # the benchmarks' data files and the judge prompts (JMMLU has none)
        assert f"apto_release/evals/benchmark_data/{name.lower()}.toml" in names
    assert {n for n in names if n.startswith("apto_release/evals/prompts/")} == {
        f"apto_release/evals/prompts/{p}.md" for p in ("answercarefully", "sorry-bench", "multijail", "mt-bench-ja")}
    assert any(n.endswith("entry_points.txt") for n in names)
    from apto_release.train.distributed import CONFIGS  # the accelerate configs the README launches with

    assert {f"apto_release/train/accelerate/{p.name}" for p in CONFIGS.values()} <= names


def test_installed_wheel_renders_the_card_away_from_the_checkout(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    code = (
        "import apto_release, apto_release.cards.templates as t\n"
        "from apto_release.cards.dataset import render_dataset_card\n"
        "from apto_release.schema import published_schema\n"
        "print(apto_release.__file__)\n"
        "print(t.template_dir('dataset_cards'))\n"
        "text = render_dataset_card({'safety_refusal': 3, 'overrefusal_prevention': 2, 'mid_refusal': 1, 'anti_hallucination': 1})\n"
        "assert text.startswith('---') and 'mid_refusal' in text\n"
        "assert published_schema()['title']\n"
        "from apto_release.dataset.example import generate_records\n"
        "assert next(generate_records(1))['id'] == 'synth-000001'\n"
        "from apto_release.evals.benchmarks import load_spec\n"
        "from apto_release.evals.judging import load_prompt\n"
        "assert load_spec('JMMLU').hub_id == 'nlp-waseda/JMMLU'\n"
        "assert '[[' in load_prompt(load_spec('AC').judge_prompt)['user']\n"
    )
    env = dict(os.environ, PYTHONPATH=str(target))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    package_file, templates = proc.stdout.split()
    assert package_file.startswith(str(target))
    assert templates == str(target / "apto_release" / "_templates" / "dataset_cards")
