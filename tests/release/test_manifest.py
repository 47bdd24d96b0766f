"""release.toml: a good manifest loads with its defaults; a bad one lists every problem."""

from __future__ import annotations

import shutil
import subprocess
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
train = { max_steps = 50, allow_slow_kernels = true, set = { "lora.r" = 8, "train.learning_rate" = 5e-5 } }''') + '''
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
    assert (small.train.allow_slow_kernels, big.train.allow_slow_kernels) == (True, False)
    assert big.gguf_verify is True


def test_without_state_the_state_file_is_beside_the_manifest(tmp_path):
    manifest = load_manifest(write(tmp_path, GOOD))
    assert manifest.data is None
    assert manifest.state_file == tmp_path / ".apto-release" / "state.json"


def test_bad_release_keys_are_all_listed(tmp_path):
    text = RELEASE.replace("sample_size = 300", "sample_size = 0\nsede = 1").replace(
        '"lora.r" = 8', '"lora.rank" = 8').replace("max_steps = 50", "max_steps = -1").replace(
        "allow_slow_kernels = true", 'allow_slow_kernels = "yes"')
    with pytest.raises(ManifestError) as info:
        load_manifest(write(tmp_path, text))
    problems = info.value.problems
    assert "data.sample_size: must be at least 1" in problems
    assert "data.sede: unknown key (did you mean 'seed'?)" in problems
    assert "model[2].train.max_steps: must be at least 1" in problems
    assert "model[2].train.allow_slow_kernels: expected true/false, found 'yes'" in problems, problems
    assert any(p.startswith("model[2].train.set: ") and "lora.rank" in p for p in problems), problems


def test_the_documented_example_loads(tmp_path):
    from apto_release.release import manifest

    example = manifest.__doc__.split("Example::")[1].split("Relative paths")[0]
    loaded = load_manifest(write(tmp_path, example))
    assert loaded.data.sample_size == 500 and loaded.models[0].train.max_steps == 2000
    assert loaded.state_file == tmp_path / "out/release-state.json"


# ---------------------------------------------------------------------------------------------
# The Hub's own rules, at load (issue 13): a release that the Hub or git would refuse midway
# is refused before anything runs, each problem one line with its place.


def problems_of(tmp_path, text) -> list[str]:
    with pytest.raises(ManifestError) as excinfo:
        load_manifest(write(tmp_path, text))
    assert all("\n" not in p for p in excinfo.value.problems), excinfo.value.problems  # one line each
    return excinfo.value.problems


@pytest.mark.parametrize(("old", "new", "where", "reason"), [
    ('repo = "ja-safety-sft-500"', 'repo = "ja..safety-sft"', "dataset.sample.repo", "'--' and '..'"),
    ('repo = "ja-safety-sft-500"', 'repo = "ja--safety-sft"', "dataset.sample.repo", "'--' and '..'"),
    ('repo = "ja-safety-sft-500"', 'repo = "ja-safety-sft-"', "dataset.sample.repo", "starts or ends with '-' or '.'"),
    ('repo = "ja-safety-sft-500"', 'repo = "ja-safety-sft."', "dataset.sample.repo", "starts or ends with '-' or '.'"),
    ('repo = "ja-safety-sft-500"', 'repo = ".ja-safety-sft"', "dataset.sample.repo", "starts or ends with '-' or '.'"),
    ('repo = "ja-safety-sft-500"', 'repo = "ja-safety-sft\\n"', "dataset.sample.repo", "'\\n' not allowed"),
    ('repo = "ja-safety-sft-500"', 'repo = "ja safety"', "dataset.sample.repo", "' ' not allowed"),
    ('repo = "ja-safety-sft-500"', 'repo = "データ"', "dataset.sample.repo", "not allowed (only ASCII"),
    ('repo = "ja-safety-sft-500"', 'repo = "ja-safety.git"', "dataset.sample.repo", "ending in '.git'"),
    ('repo = "ja-safety-sft-500"', 'repo = "a/b/c"', "dataset.sample.repo", "one '/'"),
    ('repo = "ja-safety-sft-500"', f'repo = "{"x" * 97}"', "dataset.sample.repo", "97 characters; the Hub allows 96"),
    ('repo = "apto-ai/ja-safety-sft"', 'repo = "apto-ai/"', "dataset.full.repo", "the name is empty"),
    ('organisation = "apto-ai"', 'organisation = "apto--ai"', "organisation", "'--' and '..'"),
    ('organisation = "apto-ai"', 'organisation = "apto-ai\\n"', "organisation", "'\\n' not allowed"),
    ('organisation = "apto-ai"', 'organisation = "apto/ai"', "organisation", "holds a '/'"),
    ('name = "Apto-Qwen3.5-27B-Safety"', 'name = "Apto-Qwen3.5-27B-Safety."', "model[1].name", "starts or ends with '-' or '.'"),
    ('name = "Apto-Qwen3.5-27B-Safety"', 'name = "Apto..Qwen"', "model[1].name", "'--' and '..'"),
    ('base_model = "Qwen/Qwen3.5-27B"', 'base_model = "Qwen/Qwen3.5--27B"', "model[1].base_model", "'--' and '..'"),
    ('base_model = "Qwen/Qwen3.5-27B"', 'base_model = "Qwen/Qwen3.5-27B\\n"', "model[1].base_model", "'\\n' not allowed"),
    ('merged = "/abs/merged/27b"', 'merged = "/abs/merged/27b"\nrepo = "-x"', "model[1].repo", "starts or ends with '-' or '.'"),
    ('merged = "/abs/merged/27b"', 'merged = "/abs/merged/27b"\ngguf_repo = "x..GGUF"', "model[1].gguf_repo", "'--' and '..'"),
    ('push_adapter = true', 'push_adapter = true\nadapter_repo = "x_"', None, None),  # a trailing '_' is allowed
    ('push_adapter = true', 'push_adapter = true\nadapter_repo = "x.-LoRA."', "model[2].adapter_repo", "starts or ends with '-' or '.'"),
])
def test_repo_ids_and_names_follow_the_hub_s_rules(tmp_path, old, new, where, reason):
    text = GOOD.replace(old, new)
    assert text != GOOD
    if where is None:
        load_manifest(write(tmp_path, text))
        return
    problems = problems_of(tmp_path, text)
    assert any(p.startswith(f"{where}: ") and reason in p for p in problems), problems


@pytest.mark.parametrize("repo", ["ja..safety-sft", "ja--safety-sft", "-ja", "ja.", "ja\n", "a/b/c", "x" * 97, "ja.git", "ja/"])
def test_what_huggingface_hub_refuses_we_refuse_on_our_own(repo, monkeypatch):
    """Each id huggingface_hub's validator refuses is refused by our own rules too (with a reason of ours)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    from apto_release.hub.targets import repo_id_problem

    with pytest.raises(HFValidationError):
        validate_repo_id(repo)
    monkeypatch.setattr("huggingface_hub.utils.validate_repo_id", lambda repo_id: None)
    assert repo_id_problem(repo) is not None


def test_repos_that_differ_only_in_case_collide(tmp_path):
    text = GOOD.replace('name = "Apto-Qwen3.5-9B-Base-Safety"', 'name = "apto-qwen3.5-27b-safety"')
    problems = problems_of(tmp_path, text)
    assert any(p.startswith("model[2].name: 'apto-qwen3.5-27b-safety' names two models (with 'Apto-Qwen3.5-27B-Safety'") for p in problems), problems
    assert any(p.startswith("model[2].repo: repo 'apto-ai/apto-qwen3.5-27b-safety' differs only in case from "
                            "'apto-ai/Apto-Qwen3.5-27B-Safety', the target of model[1].repo") for p in problems), problems

    text = GOOD.replace('repo = "ja-safety-sft-500"', 'repo = "APTO-AI/JA-SAFETY-SFT"')
    assert any(p.startswith("dataset.full.repo: repo 'apto-ai/ja-safety-sft' differs only in case from 'APTO-AI/JA-SAFETY-SFT'")
               for p in problems_of(tmp_path, text))

    text = GOOD.replace('push_adapter = true', 'push_adapter = true\nadapter_repo = "Apto-Qwen3.5-27B-Safety-gguf"')
    assert any(p.startswith("model[2].adapter_repo: repo 'apto-ai/Apto-Qwen3.5-27B-Safety-gguf' differs only in case")
               for p in problems_of(tmp_path, text))


def test_a_target_is_never_a_base_model(tmp_path):
    text = GOOD.replace('base_model = "Qwen/Qwen3.5-9B-Base"', 'base_model = "Apto-AI/apto-qwen3.5-27b-safety"')
    problems = problems_of(tmp_path, text)
    assert problems == ["model[1].repo: repo 'apto-ai/Apto-Qwen3.5-27B-Safety' is the base model of "
                        "'Apto-Qwen3.5-9B-Base-Safety': a release never writes its base model"]


REFUSED_VERSIONS = {
    "1.0.0-rc..1": "an identifier is empty",
    "1.0.0-x.lock": "'.lock'",
    "01.0.0": "no leading zeros",
    "1.00.0": "no leading zeros",
    "1.0.0-rc.01": "no leading zeros",
    "1.0.0\n": "newline",
    "1.0.0 ": "space",
    "1.0": "not semantic versioning",
    "v1.0.0": "not semantic versioning",
    "1.0.0-": "an identifier is empty",
    "1.0.0+": "an identifier is empty",
    "1.0.0-rc.1.": "an identifier is empty",
    "1.0.0-x~1": "not semantic versioning",
    "1.0.0-a@{b": "not semantic versioning",
    "١.0.0": "not semantic versioning",  # an Arabic-Indic digit: \d would take it
}
ACCEPTED_VERSIONS = ["1.0.0", "0.1.0", "10.20.30", "1.0.0-rc.1", "1.0.0-alpha-a.b-c-d", "2.1.3+build.5",
                     "1.0.0-0.3.7", "1.0.0-x.7.z.92+exp.sha.5114f85", "1.0.0-lock", "1.0.0+lock"]


@pytest.mark.parametrize(("version", "reason"), REFUSED_VERSIONS.items())
def test_versions_that_are_not_semver_or_not_a_git_tag_are_refused(tmp_path, version, reason):
    text = GOOD.replace('version = "1.0.0"', f"version = {version!r}".replace("'", '"').replace("\n", "\\n"))
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1 and problems[0].startswith("version: ") and reason in problems[0], problems


@pytest.mark.parametrize("version", ACCEPTED_VERSIONS)
def test_semver_versions_that_are_git_tags_load(tmp_path, version):
    manifest = load_manifest(write(tmp_path, GOOD.replace('version = "1.0.0"', f'version = "{version}"')))
    assert manifest.tag == f"v{version}"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
@pytest.mark.parametrize("ref", ["v1.0.0", "v2.1.3+build.5", "v1.0.0-x.lock", "v1.0.0-rc..1", "v1.0.0.", "v1.0.0 x",
                                 "v1.0.0~1", "v1:0", "v1^0", "v1?0", "v1*0", "v1[0", "v1\\0", "v1@{0", "v1//0", "v1/.x",
                                 "v1/", "v1.lock/x", "v1\x7f", "v1\t", "v@", "v1@0", "v-1", "v1/x.lock2"])
def test_our_git_ref_rules_agree_with_git(ref):
    from apto_release.hub.targets import git_ref_problem

    git = subprocess.run(["git", "check-ref-format", f"refs/tags/{ref}"], capture_output=True)
    assert (git_ref_problem(f"refs/tags/{ref}") is None) == (git.returncode == 0), (ref, git_ref_problem(f"refs/tags/{ref}"))


def test_max_rows_below_sample_size_is_refused_at_load(tmp_path):
    problems = problems_of(tmp_path, RELEASE.replace("sample_size = 300", "sample_size = 600"))
    assert problems == ["dataset.sample.max_rows: 500 is below data.sample_size (600): the push would refuse the sample "
                        "after every stage had run; raise max_rows or lower sample_size"]
    text = RELEASE.replace("sample_size = 300", "sample_size = 600").replace('gated = "auto"', 'gated = "auto"\nmax_rows = 600')
    assert load_manifest(write(tmp_path, text)).data.sample_size == 600
    # a private sample has no public-rows guard
    text = RELEASE.replace("sample_size = 300", "sample_size = 600").replace('gated = "auto"', 'private = true')
    assert load_manifest(write(tmp_path, text)).datasets["sample"].max_rows is None


@pytest.mark.parametrize("encoding", ["shift_jis", "utf-16", "latin-1"])
def test_a_manifest_that_is_not_utf8_names_the_file(tmp_path, encoding):
    path = tmp_path / "release.toml"
    path.write_bytes(GOOD.replace("ja-safety-sft-500", "日本語-é").encode(encoding, errors="replace")
                     if encoding != "latin-1" else GOOD.replace("ja-safety-sft-500", "sûreté").encode(encoding))
    with pytest.raises(UsageError) as excinfo:
        load_manifest(path)
    message = str(excinfo.value)
    assert message.startswith(f"{path}: the release manifest is not UTF-8 text (byte 0x") and "\n" not in message
    assert excinfo.value.hint == "save it as UTF-8"


def test_one_problem_is_one_line_several_are_a_list(tmp_path):
    with pytest.raises(ManifestError) as one:
        load_manifest(write(tmp_path, GOOD.replace('version = "1.0.0"', 'version = "1.0.0-rc..1"')))
    assert str(one.value).startswith(f"{tmp_path / 'release.toml'}: version: '1.0.0-rc..1' is not a version") and "\n" not in str(one.value)
    with pytest.raises(ManifestError) as two:
        load_manifest(write(tmp_path, GOOD.replace('version = "1.0.0"', 'version = "01.0.0"').replace("ja-safety-sft-500", "a..b")))
    assert str(two.value).splitlines()[0].endswith("the release manifest has 2 problems:")


def test_a_rule_only_huggingface_hub_knows_is_enforced_with_its_message(tmp_path, monkeypatch):
    """huggingface_hub's validator runs after ours: a rule it adds later reaches the manifest's line."""
    import huggingface_hub.utils
    from huggingface_hub.errors import HFValidationError

    def validate_repo_id(repo_id):
        if "sample" in repo_id:
            raise HFValidationError(f"A future rule refuses\n'{repo_id}'.")

    monkeypatch.setattr(huggingface_hub.utils, "validate_repo_id", validate_repo_id)
    problems = problems_of(tmp_path, GOOD.replace('repo = "ja-safety-sft-500"', 'repo = "sample-500"'))
    assert problems == ["dataset.sample.repo: 'apto-ai/sample-500' is not a Hub repo id: A future rule refuses 'apto-ai/sample-500'."]


def test_gguf_imatrix_loads_with_paths_relative_to_the_manifest(tmp_path):
    text = GOOD.replace('gguf_folder = "out/gguf/27b"', 'gguf_folder = "out/gguf/27b"\n'
                        'gguf_imatrix = { calibration = "auto", against = ["bench/ac.jsonl"], general = "ja.txt" }')
    big, base = load_manifest(write(tmp_path, text)).models
    assert big.gguf_imatrix.calibration == "auto" and big.gguf_imatrix.against == (tmp_path / "bench/ac.jsonl",)
    assert big.gguf_imatrix.general == tmp_path / "ja.txt" and base.gguf_imatrix is None
    given = load_manifest(write(tmp_path, GOOD.replace('gguf_folder = "out/gguf/27b"', 'gguf_folder = "out/gguf/27b"\n'
                                                       'gguf_imatrix = { calibration = "calib.txt" }'))).models[0]
    assert given.gguf_imatrix.calibration == tmp_path / "calib.txt"


def test_bad_gguf_imatrix_tables_are_listed_with_their_place(tmp_path):
    text = GOOD.replace('gguf_folder = "out/gguf/27b"', 'gguf_folder = "out/gguf/27b"\n'
                        'gguf_imatrix = { calibraton = "auto", against = [3] }')
    text = text.replace('push_adapter = true', 'push_adapter = true\ngguf_imatrix = { calibration = "auto" }')
    problems = problems_of(tmp_path, text)
    assert "model[1].gguf_imatrix.calibraton: unknown key (did you mean 'calibration'?)" in problems
    assert "model[1].gguf_imatrix.against[1]: expected a path, found 3" in problems
    assert any(p.startswith("model[2].gguf_imatrix: set, but the model's gguf list has no K- or i-quant") for p in problems), problems
    assert "model[1].gguf_imatrix: expected a table" in " ".join(problems_of(tmp_path, GOOD.replace(
        'gguf_folder = "out/gguf/27b"', 'gguf_folder = "out/gguf/27b"\ngguf_imatrix = "auto"')))
    text_with_general = GOOD.replace('gguf_folder = "out/gguf/27b"', 'gguf_folder = "out/gguf/27b"\n'
                                     'gguf_imatrix = { calibration = "calib.txt", general = "ja.txt" }')
    assert any("the calibration is a text" in p for p in problems_of(tmp_path, text_with_general))


def test_gguf_mmproj_names_the_projector_s_type_or_none(tmp_path):
    default = load_manifest(write(tmp_path, GOOD)).models[0]
    assert default.gguf_mmproj == "F16"
    text = GOOD.replace('gguf_folder = "out/gguf/27b"', 'gguf_folder = "out/gguf/27b"\ngguf_mmproj = "q8_0"')
    text = text.replace('push_adapter = true', 'push_adapter = true\ngguf_mmproj = false')
    first, second = load_manifest(write(tmp_path, text)).models
    assert (first.gguf_mmproj, second.gguf_mmproj) == ("Q8_0", None)
    for bad in ('"Q4_K_M"', "true", "16"):
        problems = problems_of(tmp_path, GOOD.replace('gguf_folder = "out/gguf/27b"', f'gguf_folder = "out/gguf/27b"\ngguf_mmproj = {bad}'))
        assert any(p.startswith("model[1].gguf_mmproj: must be one of 'F16', 'BF16', 'Q8_0', or false") for p in problems), problems
