"""release.toml: a good manifest loads with its defaults; a bad one lists every problem."""

from __future__ import annotations

import textwrap

import pytest

from apto_release.errors import UsageError
from apto_release.release.manifest import ManifestError, load_manifest

GOOD = """
organisation = "apto-ai"
version = "1.0.0"
license = "apache-2.0"

[dataset.sample]
repo = "ja-safety-sft-500"
folder = "out/dataset-sample"
gated = "auto"

[dataset.full]
repo = "apto-ai/ja-safety-sft"
folder = "out/dataset-full"

[[model]]
name = "Apto-Qwen3.5-27B-Safety"
base_model = "Qwen/Qwen3.5-27B"
preset = "qwen3.5-27b"
adapter = "out/adapters/27b"
merged = "/abs/merged/27b"
gguf = ["q4_k_m", "Q8_0"]
gguf_folder = "out/gguf/27b"
evaluation = "eval/27b.json"

[[model]]
name = "Apto-Qwen3.5-9B-Base-Safety"
base_model = "Qwen/Qwen3.5-9B-Base"
variant = "base"
preset = "qwen3.5-9b-base"
adapter = "out/adapters/9b-base"
merged = "out/merged/9b-base"
push_adapter = true
"""


def write(tmp_path, text):
    path = tmp_path / "release.toml"
    path.write_text(textwrap.dedent(text), "utf-8")
    return path


def test_a_good_manifest_loads_with_defaults(tmp_path):
    manifest = load_manifest(write(tmp_path, GOOD))

    assert manifest.tag == "v1.0.0"
    sample, full = manifest.datasets["sample"], manifest.datasets["full"]
    assert (sample.repo, sample.private, sample.gated, sample.max_rows) == ("apto-ai/ja-safety-sft-500", False, "auto", 500)
    assert (full.repo, full.private, full.max_rows) == ("apto-ai/ja-safety-sft", True, None)
    assert sample.folder == tmp_path / "out/dataset-sample"  # relative to the manifest

    big, base = manifest.models
    assert big.gguf == ("Q4_K_M", "Q8_0")
    assert (big.repo, big.gguf_repo, big.adapter_repo) == ("apto-ai/Apto-Qwen3.5-27B-Safety", "apto-ai/Apto-Qwen3.5-27B-Safety-GGUF", None)
    assert str(big.merged) == "/abs/merged/27b"
    assert big.evaluation == tmp_path / "eval/27b.json"
    assert (base.variant, base.adapter_repo, base.gguf, base.evaluation) == ("base", "apto-ai/Apto-Qwen3.5-9B-Base-Safety-LoRA", (), None)
    assert manifest.target_names() == ["dataset.sample", "dataset.full", "Apto-Qwen3.5-27B-Safety", "Apto-Qwen3.5-9B-Base-Safety"]
    assert manifest.model("Apto-Qwen3.5-27B-Safety") is big
    with pytest.raises(UsageError, match="no model 'nope'"):
        manifest.model("nope")


def test_every_problem_is_listed_with_its_place(tmp_path):
    bad = GOOD.replace('version = "1.0.0"', 'version = "one"').replace('gated = "auto"', 'gated = "yes"\nrows = 3')
    bad = bad.replace('gguf = ["q4_k_m", "Q8_0"]', 'gguf = ["Q4_K_M", "Q4_0", "Q4_K_M"]').replace('variant = "base"', 'variant = "chat"')
    bad = bad.replace('preset = "qwen3.5-27b"', 'preset = "qwen3.5-72b"').replace('[dataset.full]\nrepo = "apto-ai/ja-safety-sft"\n', '[dataset.full]\nrepo = "apto-ai/ja-safety-sft"\nprivate = false\n')
    bad = bad.replace('base_model = "Qwen/Qwen3.5-27B"', 'base_model = "Qwen3.5-27B"').replace('push_adapter = true', 'push_adapter = "yes"')

    with pytest.raises(ManifestError) as excinfo:
        load_manifest(write(tmp_path, bad))

    problems = excinfo.value.problems
    expected = [
        "version: 'one' is not a version",
        "dataset.sample.rows: unknown key",
        "dataset.sample.gated: expected \"auto\", \"manual\" or false, found 'yes'",
        "dataset.full.private: the full dataset must stay private",
        "model[1].base_model: 'Qwen3.5-27B' is not a Hub repo id",
        "model[1].preset: unknown preset 'qwen3.5-72b' (did you mean",
        "model[1].gguf[2]: unknown GGUF type 'Q4_0'",
        "model[1].gguf[3]: Q4_K_M is listed twice",
        "model[2].variant: expected 'instruct' or 'base', found 'chat'",
        "model[2].push_adapter: expected true/false, found 'yes'",
    ]
    for start in expected:
        assert any(p.startswith(start) for p in problems), (start, problems)
    assert len(problems) == len(expected), problems
    assert f"has {len(expected)} problems" in str(excinfo.value)


def test_missing_keys_duplicates_and_bad_toml(tmp_path):
    with pytest.raises(ManifestError) as excinfo:
        load_manifest(write(tmp_path, '[[model]]\nname = "A"\n\n[[model]]\nname = "A"\nrepo = "x/A"\n'))
    problems = excinfo.value.problems
    for start in ("organisation: missing", "version: missing", "license: missing", "model[1].base_model: missing", "model[2].name: 'A' names two models"):
        assert any(p.startswith(start) for p in problems), (start, problems)

    with pytest.raises(ManifestError, match=r"not valid TOML: .*line 2"):
        load_manifest(write(tmp_path, 'organisation = "a"\nversion = \n'))
    with pytest.raises(UsageError, match="does not exist"):
        load_manifest(tmp_path / "missing.toml")


def test_two_targets_on_one_repo_are_refused(tmp_path):
    text = GOOD.replace('repo = "ja-safety-sft-500"', 'repo = "Apto-Qwen3.5-27B-Safety-GGUF"')
    with pytest.raises(ManifestError, match="is also the target of dataset.sample.repo"):
        load_manifest(write(tmp_path, text))


RELEASE = 'state = "out/state.json"\n' + GOOD.replace('push_adapter = true', '''push_adapter = true
base = "models/Qwen3.5-9B-Base"
train = { max_steps = 50, set = { "lora.r" = 8, "train.learning_rate" = 5e-5 } }''') + '''
[data]
records = "data/all.jsonl"
sample_size = 300
expected_count = 18000
'''


def test_the_release_command_s_keys(tmp_path):
    manifest = load_manifest(write(tmp_path, RELEASE))

    data = manifest.data
    assert (data.records, data.sample_size, data.seed, data.expected_count) == (tmp_path / "data/all.jsonl", 300, 0, 18000)
    assert (data.license, data.sample_folder) == ("cc-by-nc-sa-4.0", tmp_path / "out" / "sample")
    assert manifest.state_file == tmp_path / "out/state.json"
    big, small = manifest.models
    assert big.base == "Qwen/Qwen3.5-27B" and big.train.overrides == () and big.train.max_steps is None
    assert small.base == str(tmp_path / "models/Qwen3.5-9B-Base")
    assert small.train.max_steps == 50 and dict(small.train.overrides) == {"lora.r": 8, "train.learning_rate": 5e-5}
    assert big.gguf_verify is True


def test_without_state_the_state_file_is_beside_the_manifest(tmp_path):
    manifest = load_manifest(write(tmp_path, GOOD))
    assert manifest.data is None
    assert manifest.state_file == tmp_path / ".apto-release" / "state.json"


def test_bad_release_keys_are_all_listed(tmp_path):
    text = RELEASE.replace("sample_size = 300", "sample_size = 0\nsede = 1").replace(
        '"lora.r" = 8', '"lora.rank" = 8').replace("max_steps = 50", "max_steps = -1")
    with pytest.raises(ManifestError) as info:
        load_manifest(write(tmp_path, text))
    problems = info.value.problems
    assert "data.sample_size: must be at least 1" in problems
    assert "data.sede: unknown key (did you mean 'seed'?)" in problems
    assert "model[2].train.max_steps: must be at least 1" in problems
    assert any(p.startswith("model[2].train.set: ") and "lora.rank" in p for p in problems), problems


def test_the_documented_example_loads(tmp_path):
    from apto_release.release import manifest

    example = manifest.__doc__.split("Example::")[1].split("Relative paths")[0]
    loaded = load_manifest(write(tmp_path, example))
    assert loaded.data.sample_size == 500 and loaded.models[0].train.max_steps == 2000
    assert loaded.state_file == tmp_path / "out/release-state.json"
