"""The kernel check: which Gated DeltaNet / causal-conv1d kernels a run uses, and what is refused.

"Absent" is made sure of (``None`` in ``sys.modules``, as if not installed, so the tests hold on a
machine with the [gpu] extra too); "present" is faked by tiny ``fla`` / ``causal_conv1d`` /
``liger_kernel`` packages, with dist-info metadata, on ``sys.path``, and CUDA by patching
``torch.cuda.is_available``. One test checks in a fresh interpreter that transformers' own
Qwen3.5 takes the same fakes, so the check and transformers agree.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from apto_release.cli import main  # noqa: E402
from apto_release.errors import UsageError  # noqa: E402
from apto_release.train import kernels as K  # noqa: E402
from apto_release.train.presets import load_preset  # noqa: E402
from apto_release.train.summary import TrainingSummary  # noqa: E402
from apto_release.testing import build_japanese_tokenizer  # noqa: E402
from tests.conftest import make_records, write_jsonl  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FAKES = ("fla", "causal_conv1d", "liger_kernel")

_FLA_OPS = '''
def chunk_gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
                           use_qk_l2norm_in_kernel=False, cu_seqlens=None, **kwargs):
    return "fake-fla-chunk", cu_seqlens

def fused_recurrent_gated_delta_rule(q, k, v, g, beta, **kwargs):
    return "fake-fla-recurrent", None
'''
_CONV = '''
__version__ = "1.7.0"

def causal_conv1d_fn(x, weight, bias=None, activation=None, seq_idx=None, **kwargs):
    return "fake-causal-conv1d"

def causal_conv1d_update(x, conv_state, weight, bias=None, activation=None):
    return "fake-causal-conv1d-update"
'''


def _dist_info(root: Path, name: str, version: str) -> None:
    folder = root / f"{name.replace('-', '_')}-{version}.dist-info"
    folder.mkdir()
    (folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", "utf-8")


def write_fakes(root: Path, *, fla: bool | str = True, conv: bool = True, liger: bool = False) -> Path:
    """Fake packages laid out as the real ones (fla's ops in ``fla.ops.gated_delta_rule``, not at
    its root, as in fla-core 0.6.0). ``fla="broken"``: the ops fail to import (no triton)."""
    root.mkdir(parents=True, exist_ok=True)
    if fla:
        ops = root / "fla" / "ops" / "gated_delta_rule"
        ops.mkdir(parents=True)
        (root / "fla" / "__init__.py").write_text('__version__ = "0.6.0"\n', "utf-8")
        (root / "fla" / "ops" / "__init__.py").write_text("", "utf-8")
        body = "import triton_that_is_not_there\n" if fla == "broken" else _FLA_OPS
        (ops / "__init__.py").write_text(body, "utf-8")
        _dist_info(root, "fla-core", "0.6.0")
    if conv:
        (root / "causal_conv1d").mkdir()
        (root / "causal_conv1d" / "__init__.py").write_text(_CONV, "utf-8")
        _dist_info(root, "causal-conv1d", "1.7.0")
    if liger:
        (root / "liger_kernel").mkdir()
        (root / "liger_kernel" / "__init__.py").write_text("", "utf-8")
        _dist_info(root, "liger-kernel", "0.8.5")
    return root


def _forget_fakes() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in FAKES:
            del sys.modules[name]


@pytest.fixture(autouse=True)
def absent(monkeypatch):
    """The kernel packages do not import, whatever this machine has installed."""
    for name in FAKES:
        monkeypatch.setitem(sys.modules, name, None)


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    """``fakes(**which)`` puts fake kernel packages on ``sys.path`` for this test."""

    def install(**which) -> Path:
        root = write_fakes(tmp_path / "site", **which)
        for name in FAKES:
            monkeypatch.delitem(sys.modules, name, raising=False)
        monkeypatch.syspath_prepend(str(root))
        importlib.invalidate_caches()
        return root

    yield install
    _forget_fakes()


@pytest.fixture
def cuda(monkeypatch):
    """torch sees a GPU (nothing here touches one: the checks only ask)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def run(*args) -> int:
    """``apto-release ARGS`` through ``main``: its exit code (the caller reads the output with capsys)."""
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    return info.value.code or 0


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer"
    build_japanese_tokenizer(path)
    return path


# -- what transformers checks -----------------------------------------------------------------


def test_the_ops_are_those_transformers_qwen35_routes_to_packages():
    """FAST_OPS is read off transformers' own source: the decorated ops and where it looks for them."""
    from transformers.integrations import hub_kernels
    from transformers.models.qwen3_5 import modeling_qwen3_5

    source = Path(modeling_qwen3_5.__file__).read_text("utf-8")
    routed = set(re.findall(r'use_kernel_func_from_hub_with_fallback\("(\w+)", "(\w+)"\)', source))
    assert routed == {(op, package) for op, package, _ in K.FAST_OPS}
    for op, _, internal in K.FAST_OPS:
        assert hub_kernels._KERNELS_INTERNAL_PATH_MAPPINGS.get(op) == internal
    assert hub_kernels._PACKAGE_TO_DISTRIBUTION["fla"] == K.DISTRIBUTIONS["fla"][0]


def test_absent_the_fallback_is_reported_and_cpu_refuses_nothing():
    report = K.kernel_report()
    assert report.device == "cpu" and not report.fast
    assert report.missing == ["flash-linear-attention", "causal-conv1d"]
    assert report.record() == {"device": "cpu", "gated_deltanet": "torch", "causal_conv1d": "torch", "liger_kernel": None}
    assert report.describe() == (
        "on cpu: Gated DeltaNet: PyTorch fallback (flash-linear-attention not installed); "
        "causal conv1d: PyTorch fallback (causal-conv1d not installed)"
    )
    assert K.preflight(load_preset("tiny")) == report  # CPU: the fallback is the only path


_AGREEMENT = """
import importlib, json, sys, torch
from apto_release.train.kernels import kernel_report

# Without the packages: transformers' fallback refuses the boundaries of packed samples.
sys.modules["fla"] = sys.modules["causal_conv1d"] = None
from transformers.models.qwen3_5 import modeling_qwen3_5 as m
q, g = torch.zeros(1, 4, 1, 8), torch.zeros(1, 4, 1)
try:
    m.torch_chunk_gated_delta_rule(q, q, q, g=g, beta=g, cu_seqlens=torch.tensor([0, 2, 4]))
    packed = "accepted"
except ValueError as exc:
    packed = str(exc)
absent = kernel_report().record()

# With the fakes (on PYTHONPATH): transformers decides again when the module is loaded again.
del sys.modules["fla"], sys.modules["causal_conv1d"]
m = importlib.reload(m)
x = torch.zeros(1, 2, 3)
print(json.dumps({"packed": packed, "absent": absent,
                  "chunk": m.torch_chunk_gated_delta_rule(x, x, x, g=x, beta=x)[0],
                  "recurrent": m.torch_recurrent_gated_delta_rule(x, x, x, g=x, beta=x)[0],
                  "conv": m.causal_conv1d_fn(x, x), "update": m.causal_conv1d_update(x, x, x),
                  "report": kernel_report().record()}))
"""


def test_transformers_qwen35_uses_what_the_report_finds(tmp_path):
    """In a fresh interpreter (transformers decides when it loads Qwen3.5): without the packages its
    fallback refuses packed-sample boundaries (the packing refusal's reason); with the fakes on the
    path its four ops call them, and kernel_report says so both times."""
    root = write_fakes(tmp_path / "site")
    script = _AGREEMENT
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(root), str(ROOT)])}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen.pop("packed").startswith("`chunk_gated_delta_rule` can't keep packed sequences apart without `flash-linear-attention`")
    assert seen.pop("absent") == {"device": "cpu", "gated_deltanet": "torch", "causal_conv1d": "torch", "liger_kernel": None}
    assert seen == {"chunk": "fake-fla-chunk", "recurrent": "fake-fla-recurrent", "conv": "fake-causal-conv1d",
                    "update": "fake-causal-conv1d-update",
                    "report": {"device": "cpu", "gated_deltanet": "flash-linear-attention 0.6.0",
                               "causal_conv1d": "causal-conv1d 1.7.0", "liger_kernel": None}}


# -- the refusal on CUDA ----------------------------------------------------------------------


def test_cuda_without_the_kernels_is_refused_in_one_line_saying_how_to_install(cuda):
    report = K.kernel_report()
    assert report.device == "cuda" and report.missing == ["flash-linear-attention", "causal-conv1d"]
    with pytest.raises(UsageError) as info:
        K.check_kernels(report)
    message = str(info.value)
    assert "\n" not in message and info.value.exit_code == 2
    assert message == (
        "Qwen3.5's Gated DeltaNet layers would run on transformers' PyTorch fallback on this CUDA machine "
        "(flash-linear-attention not installed; causal-conv1d not installed), several times slower and "
        "with more memory; install the kernels with pip install -c constraints.txt '.[gpu]'"
    )
    assert "--allow-slow-kernels" in info.value.hint
    K.check_kernels(report, allow_slow=True)  # the override
    assert K.preflight(load_preset("qwen3.5-9b"), allow_slow=True).device == "cuda"


def test_cuda_with_the_kernels_faked_present_runs_and_records_them(fakes, cuda):
    fakes()
    report = K.preflight(load_preset("qwen3.5-9b"))
    assert report.fast and report.missing == []
    assert report.record() == {"device": "cuda", "gated_deltanet": "flash-linear-attention 0.6.0",
                               "causal_conv1d": "causal-conv1d 1.7.0", "liger_kernel": None}
    assert report.describe() == "on cuda: Gated DeltaNet: flash-linear-attention 0.6.0; causal conv1d: causal-conv1d 1.7.0"


def test_one_package_missing_or_broken_names_just_that(fakes, cuda):
    fakes(conv=False)
    with pytest.raises(UsageError, match=r"\(causal-conv1d not installed\)"):
        K.check_kernels(K.kernel_report())


def test_fla_that_does_not_import_is_the_fallback_with_its_error(fakes, cuda):
    fakes(fla="broken")
    report = K.kernel_report()
    assert report.implementation("fla") == "torch" and report.implementation("causal_conv1d") == "causal-conv1d 1.7.0"
    with pytest.raises(UsageError) as info:
        K.check_kernels(report)
    assert "(fla.ops.gated_delta_rule does not import: ModuleNotFoundError: No module named 'triton_that_is_not_there')" in str(info.value)


# -- the command ------------------------------------------------------------------------------


def test_train_on_cuda_without_kernels_exits_2_and_the_override_goes_on(cuda, tokenizer_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("APTO_DEBUG", raising=False)
    data = write_jsonl(tmp_path / "data.jsonl", make_records(8))
    args = ("train", "--preset", "tiny", "--base", tokenizer_dir, "--data", data, "-o", tmp_path / "out")
    assert run(*args) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("Error: Qwen3.5's Gated DeltaNet layers would run on transformers' PyTorch fallback")
    assert err[0].endswith("install the kernels with pip install -c constraints.txt '.[gpu]'")
    assert err[1] == "Hint: or pass --allow-slow-kernels to train on the fallback anyway" and len(err) == 2
    # With the override the run passes the check and goes on to its training arguments, stopped
    # there (the GPU is faked: nothing may touch it): proof that the kernels were not what stopped it.
    from apto_release.errors import UsageError
    from apto_release.train import trainer

    def stop(*_, **__):
        raise UsageError("stopped after the kernel check")

    monkeypatch.setattr(trainer, "_training_arguments", stop)
    assert run(*args, "--allow-slow-kernels") == 2
    assert "stopped after the kernel check" in capsys.readouterr().err


def test_dry_run_says_which_kernels_the_run_would_use(fakes, tokenizer_dir, tmp_path, capsys, monkeypatch):
    data = write_jsonl(tmp_path / "data.jsonl", make_records(8))
    args = ("train", "--preset", "tiny", "--base", tokenizer_dir, "--data", data, "-o", tmp_path / "out", "--dry-run")
    assert run(*args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == ("Kernels on cpu: Gated DeltaNet: PyTorch fallback (flash-linear-attention not installed); "
                        "causal conv1d: PyTorch fallback (causal-conv1d not installed)")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert run(*args) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith(
        "; train refuses this without --allow-slow-kernels (install: pip install -c constraints.txt '.[gpu]')")
    assert run(*args, "--allow-slow-kernels") == 0
    assert capsys.readouterr().out.splitlines()[1].endswith("; --allow-slow-kernels: train runs on the fallback")
    # Liger depends on the machine: the dry run (perhaps on a laptop, for a GPU run) reports, train refuses.
    assert run(*args, "--allow-slow-kernels", "--set", "train.liger_kernel=true") == 0
    assert capsys.readouterr().out.splitlines()[1].endswith(
        "; train would refuse: train.liger_kernel = true needs liger-kernel >= 0.3.0, which is not installed; "
        "install it with pip install -c constraints.txt '.[gpu]' on a CUDA machine")
    fakes(liger=True)
    assert run(*args, "--set", "train.liger_kernel=true") == 0
    assert capsys.readouterr().out.splitlines()[1] == (
        "Kernels on cuda: Gated DeltaNet: flash-linear-attention 0.6.0; causal conv1d: causal-conv1d 1.7.0; "
        "Liger: liger-kernel 0.8.5")


# -- packing and Liger ------------------------------------------------------------------------


def test_packing_is_refused_without_fla_for_the_state_leak(tokenizer_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "data.jsonl", make_records(4))
    code = run("train", "--preset", "tiny", "--base", tokenizer_dir, "--data", data, "-o", tmp_path / "out",
               "--dry-run", "--set", "data.packing=true")
    assert code == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (
        "Error: data.packing = true is refused for Qwen3.5: without flash-linear-attention, Qwen3.5's Gated "
        "DeltaNet runs on transformers' PyTorch fallback, which cannot take cu_seqlens: the recurrent state "
        "(and the causal conv's window) would carry from one packed sample into the next"
    )
    assert err[1].startswith("Hint: --set data.packing=false")


def test_packing_is_refused_with_fla_too_as_not_implemented(fakes, cuda):
    fakes()
    config = load_preset("qwen3.5-9b", ["data.packing=true"])
    with pytest.raises(UsageError, match=r"^data.packing = true is refused for Qwen3.5: apto-release does not implement it"):
        K.preflight(config)


def test_liger_is_refused_when_absent_and_passed_to_the_trainer_when_present(fakes, cuda, tmp_path):
    from apto_release.train.trainer import _training_arguments

    config = load_preset("tiny", ["train.liger_kernel=true"])
    with pytest.raises(UsageError) as info:
        K.preflight(config, allow_slow=True)
    assert str(info.value) == ("train.liger_kernel = true needs liger-kernel >= 0.3.0, which is not installed; "
                               "install it with pip install -c constraints.txt '.[gpu]' on a CUDA machine")
    assert info.value.hint == "or --set train.liger_kernel=false"

    fakes(liger=True)
    report = K.preflight(config)
    assert report.record(liger=True)["liger_kernel"] == "liger-kernel 0.8.5"
    assert report.record(liger=False)["liger_kernel"] is None
    with pytest.MonkeyPatch.context() as mp:  # Liger's kernels are GPU kernels
        mp.setattr(torch.cuda, "is_available", lambda: False)
        with pytest.raises(UsageError, match="needs a CUDA GPU"):
            K.preflight(config)
        # transformers' Trainer is what applies Liger: the setting travels in its arguments.
        args = _training_arguments(config, tmp_path / "ckpt", max_steps=1, save_steps=1)
        assert args.use_liger_kernel is True
        assert _training_arguments(load_preset("tiny"), tmp_path / "ckpt", max_steps=1, save_steps=1).use_liger_kernel is False


# -- the summary and the packaging ------------------------------------------------------------


def test_the_summary_keeps_the_kernels_and_refuses_a_bad_record():
    from tests.cards.test_cards import training_summary

    raw = training_summary() | {"kernels": {"device": "cpu", "gated_deltanet": "torch", "causal_conv1d": "torch", "liger_kernel": None}}
    assert TrainingSummary.from_dict(raw).kernels["gated_deltanet"] == "torch"
    assert TrainingSummary.from_dict(training_summary()).kernels is None  # written before kernels were recorded
    with pytest.raises(Exception, match="'kernels' is 'fast'"):
        TrainingSummary.from_dict(training_summary() | {"kernels": "fast"})


def test_the_gpu_extra_is_pinned_and_ci_never_installs_it():
    from apto_release.train.presets import _toml

    project = _toml.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    assert project["optional-dependencies"]["gpu"] == [
        "flash-linear-attention[cuda]==0.6.0", "causal-conv1d==1.7.0", "liger-kernel==0.8.5",
    ]
    constraints = (ROOT / "constraints.txt").read_text("utf-8").splitlines()
    for pin in ("flash-linear-attention==0.6.0", "fla-core==0.6.0", "causal-conv1d==1.7.0", "liger-kernel==0.8.5"):
        assert pin in constraints
    ci = (ROOT / ".ci" / "run").read_text("utf-8")
    readme = (ROOT / "README.md").read_text("utf-8")
    test_command = next(line for line in readme.splitlines() if "pytest -n 2" in line)
    for text in (ci, test_command):
        extras = re.findall(r"-e '\.\[([\w,]+)\]'", text)
        assert extras and all("gpu" not in e.split(",") for e in extras)
