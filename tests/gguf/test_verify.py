"""``gguf verify``: llama.cpp (in a subprocess) against the tiny Qwen3 it was converted from.

Everything is built once per module: the tiny Qwen3 (seed 0) in F16, BF16 and Q8_0, the same
architecture and tokenizer with other weights (seed 1), and a copy whose chat template differs;
for the K-quants, the tiny Qwen3 widened to hidden size 256. llama.cpp runs on one thread.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")
pytest.importorskip("torch")

from apto_release.cli import main
from apto_release.errors import InputError
from apto_release.gguf import verify as verify_module
from apto_release.gguf.convert import convert
from apto_release.gguf.verify import CONVERSATIONS, LOGIT_BOUNDS, TEXTS, load_reference, logit_stats, verify
from apto_release.testing.models import build_tiny_qwen3
from apto_release.testing.tokenizer import build_japanese_tokenizer

QUANTS = ("F16", "BF16", "Q8_0")
CHECKS = ["tokenizer", "chat template", "logits", "end-of-turn token", "generation stops", "sampling defaults"]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("verify")
    model = build_tiny_qwen3(root / "TinyQwen3")
    # Same tokenizer and architecture, other weights.
    other = build_tiny_qwen3(root / "OtherQwen3", seed=1, tokenizer=build_japanese_tokenizer(seed=0))
    # Same weights and tokenizer, a chat template that puts a space, not a newline, after the role.
    templated = root / "TemplatedQwen3"
    shutil.copytree(model, templated)
    template = templated / "chat_template.jinja"
    text = template.read_text("utf-8")
    assert "message['role'] + '\\n'" in text
    template.write_text(text.replace("message['role'] + '\\n'", "message['role'] + ' '"), "utf-8")

    out = root / "gguf"
    files = {q: convert(model, out, quant=q).path for q in QUANTS}
    files["other"] = convert(other, out, quant="F16").path
    files["templated"] = convert(templated, out, quant="F16").path
    return {"model": model, **files}


@pytest.fixture(scope="module")
def reference(models):
    return load_reference(models["model"], threads=1)


@pytest.fixture
def run_cli(capsys, monkeypatch):
    monkeypatch.delenv("APTO_DEBUG", raising=False)

    def run(*args):
        with pytest.raises(SystemExit) as exit_info:
            main([str(a) for a in args])
        out, err = capsys.readouterr()
        return (exit_info.value.code or 0), out, err

    return run


def by_name(report) -> dict:
    return {c.name: c for c in report.checks}


def test_reference_prompts(reference):
    assert reference.texts[: len(TEXTS)] == list(TEXTS)
    assert len(reference.prompt_ids) == len(CONVERSATIONS) >= 3
    assert max(len(ids) for ids in reference.prompt_ids) >= 60  # one long prompt
    assert CONVERSATIONS[0][0]["role"] == "system" and len(CONVERSATIONS[0]) >= 4  # multi-turn with a system message
    assert all(r.endswith("<|im_start|>assistant\n") for r in reference.rendered)  # add_generation_prompt
    assert reference.logits[0].shape == (len(reference.prompt_ids[0]), reference.vocab_size)


@pytest.mark.parametrize("quant", QUANTS)
def test_conversions_pass(models, reference, quant):
    report = verify(models[quant], reference, threads=1)

    assert report.file_type == quant
    assert [c.name for c in report.checks] == CHECKS
    assert report.ok, report.to_text()
    checks = by_name(report)
    assert checks["tokenizer"].measured["identical"] == len(reference.texts)
    logits = checks["logits"].measured
    assert logits["positions"] == sum(len(ids) for ids in reference.prompt_ids)
    assert logits["decisive_disagreements"] == 0
    if quant == "F16":
        assert logits["max_abs_diff"] < 1e-2 and logits["nmse"] < 1e-5
        assert logits["top1_agreement"] == 1.0
    assert logits["nmse"] <= LOGIT_BOUNDS[quant].nmse / 4  # well inside the documented bound
    assert checks["end-of-turn token"].measured["eos"] == checks["end-of-turn token"].measured["eot"] == reference.eot_id
    assert checks["generation stops"].measured == {"finish_reason": "stop", "text": "", "completion_tokens": 0}


@pytest.fixture(scope="module")
def wide(tmp_path_factory) -> Path:
    """The tiny Qwen3 widened to hidden size 256, so that K-quants are real Q4_K/Q6_K tensors."""
    root = tmp_path_factory.mktemp("wide")
    return build_tiny_qwen3(root / "WideQwen3", config={"hidden_size": 256, "intermediate_size": 512, "head_dim": 64})


@pytest.mark.parametrize("quant", ["Q4_K_M", "Q6_K"])
def test_k_quants_pass(wide, tmp_path, quant):
    from apto_release.gguf.quantize import quantize

    f16 = convert(wide, tmp_path, quant="F16").path
    path = quantize(f16, tmp_path, f"WideQwen3-{quant}", quant, threads=1).path
    report = verify(path, wide, threads=1)

    assert report.file_type == quant  # from general.file_type
    assert report.ok, report.to_text()
    logits = by_name(report)["logits"].measured
    assert 0 < logits["nmse"] <= LOGIT_BOUNDS[quant].nmse / 4
    assert logits["mean_kl"] <= LOGIT_BOUNDS[quant].mean_kl / 4


def test_other_weights_fail_the_logits_check(models, reference):
    report = verify(models["other"], reference, threads=1)

    checks = by_name(report)
    assert not report.ok and [c.name for c in report.failed] == ["logits"]
    assert checks["logits"].measured["nmse"] > 0.5
    assert "NMSE" in checks["logits"].detail
    assert checks["tokenizer"].passed and checks["chat template"].passed


def test_changed_chat_template_fails_the_template_check(models, reference):
    report = verify(models["templated"], reference, threads=1)

    assert [c.name for c in report.failed] == ["chat template"]
    check = by_name(report)["chat template"]
    assert check.measured["identical"] == 0
    assert "conversation 0: from character" in check.detail


def test_qwen2(models, tmp_path):
    """A tiny Qwen2ForCausalLM (attention biases, no QK norm) with the same tokenizer passes too."""
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen2Config, Qwen2ForCausalLM

    model_dir = tmp_path / "TinyQwen2"
    model_dir.mkdir()
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(models["model"] / f, model_dir / f)
    config = Qwen2Config(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=3000, max_position_embeddings=2048, rms_norm_eps=1e-6, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, initializer_range=1 / 8,  # 1/sqrt(hidden)
    )
    config.architectures = ["Qwen2ForCausalLM"]
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():  # biases are zero at initialisation: make them count
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0.0, 0.5)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, model_dir / "model.safetensors")
    config.to_json_file(model_dir / "config.json")

    report = verify(convert(model_dir, tmp_path / "out", quant="F16").path, model_dir, threads=1)
    assert report.ok, report.to_text()
    assert by_name(report)["logits"].measured["sigma"] > 0.5  # logits of a size that tests something


def test_worker_loads_without_extra_buffer_types(models):
    """The AMX buffer type crashes Q8_0 and K-quant evaluation in GCC 12 builds: the worker turns extra buffer types off."""
    import llama_cpp.llama_cpp as lib

    from apto_release.gguf._llama_worker import load_model

    default = lib.llama_model_default_params
    llm = load_model(str(models["Q8_0"]), n_ctx=256, threads=1)
    try:
        assert llm.model_params.use_extra_bufts is False
        assert lib.llama_model_default_params is default  # restored
        assert lib.llama_model_default_params().use_extra_bufts is True  # llama.cpp's default
    finally:
        llm.close()


def test_logit_stats_decisive_positions():
    import numpy as np

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(20, 500)).astype(np.float32)
    ref[0, 7] = 10.0  # a clear winner at position 0
    ref[1, :2] = [6.0, 5.999]  # a close call at position 1
    got = ref + rng.normal(scale=1e-3, size=ref.shape).astype(np.float32)
    got[1, :2] = [5.999, 6.0]  # the close call flips: not decisive
    stats = logit_stats([ref], [got])
    assert stats["top1_agreement"] == 19 / 20
    assert stats["decisive_disagreements"] == 0 and 2 <= stats["decisive_positions"] < 20
    assert stats["max_abs_diff"] < 0.01 and stats["nmse"] < 1e-5 and stats["mean_kl"] < 1e-4

    got[0, 3] = 10.5  # the clear winner loses
    stats = logit_stats([ref], [got])
    assert stats["decisive_disagreements"] == 1


def _crashing_worker(monkeypatch, code: str) -> None:
    """Run the real worker with ``code`` executed first (to make llama.cpp's evaluation crash)."""

    def command(request_path):
        script = f"{code}\nimport runpy, sys\nsys.argv = ['worker', {str(request_path)!r}]\nrunpy.run_module('apto_release.gguf._llama_worker', run_name='__main__')"
        return [sys.executable, "-c", script]

    monkeypatch.setattr(verify_module, "_worker_command", command)


def test_a_crash_fails_the_interrupted_checks(models, reference, monkeypatch):
    _crashing_worker(
        monkeypatch,
        "import os, sys, llama_cpp\n"
        "def crash(self, tokens):\n"
        "    print('ggml.c:1234: GGML_ASSERT(ne0 % 32 == 0) failed', file=sys.stderr, flush=True)\n"
        "    os.abort()\n"
        "llama_cpp.Llama.eval = crash",
    )
    report = verify(models["F16"], reference, threads=1)

    checks = by_name(report)
    assert [c.name for c in report.failed] == ["logits", "generation stops"]
    detail = checks["logits"].detail
    assert "crashed with SIGABRT" in detail and "during the logits stage" in detail
    assert "GGML_ASSERT(ne0 % 32 == 0) failed" in detail
    assert checks["logits"].summary == "not run"
    assert checks["tokenizer"].passed and checks["chat template"].passed and checks["end-of-turn token"].passed
    text = report.to_text()
    assert "Traceback" not in text
    assert text.count("crashed with SIGABRT") == 1  # one crash, said once for both checks


def test_a_segfault_at_load_fails_every_check(models, reference, monkeypatch):
    _crashing_worker(monkeypatch, "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)")
    report = verify(models["F16"], reference, threads=1)

    assert len(report.failed) == len(CHECKS)
    assert all("crashed with SIGSEGV" in c.detail for c in report.checks)


def test_a_file_llama_cpp_cannot_load_fails_every_check_with_its_reason(models, reference, tmp_path):
    bad = tmp_path / "Bad-F16.gguf"
    bad.write_bytes(models["F16"].read_bytes().replace(b"qwen3", b"qwenX"))  # an architecture llama.cpp does not know
    report = verify(bad, reference, threads=1)

    assert len(report.failed) == len(CHECKS)
    assert len({c.detail for c in report.checks}) == 1
    assert "could not load the file" in report.checks[0].detail
    assert "unknown model architecture: 'qwenX'" in report.checks[0].detail


def test_timeout(models, reference, monkeypatch):
    monkeypatch.setattr(verify_module, "_worker_command", lambda request_path: [sys.executable, "-c", "import time; time.sleep(60)"])
    report = verify(models["F16"], reference, threads=1, timeout=1)

    assert len(report.failed) == len(CHECKS)
    assert "timed out" in report.checks[0].detail


def test_missing_file_and_bad_reference_are_input_errors(models, reference, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        verify(tmp_path / "missing.gguf", reference)
    (tmp_path / "not.gguf").write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(InputError, match="GGUF"):
        verify(tmp_path / "not.gguf", reference)
    with pytest.raises(InputError, match="config.json"):
        load_reference(tmp_path)


def test_cli_table_and_exit_codes(models, run_cli):
    code, out, err = run_cli("gguf", "verify", models["F16"], models["other"], "--reference", models["model"], "--threads", "1")

    assert code == 1, err
    for name in CHECKS:
        assert name in out
    assert "TinyQwen3-F16.gguf (F16)" in out and "all 6 checks passed" in out
    assert "OtherQwen3-F16.gguf (F16)" in out and "1 of 6 checks FAILED" in out
    assert "1 of 2 files passed; failed: OtherQwen3-F16.gguf" in out

    code, out, _ = run_cli("gguf", "verify", models["Q8_0"], "-r", models["model"], "--threads", "1")
    assert code == 0 and "FAIL" not in out


def test_cli_json(models, run_cli):
    code, out, _ = run_cli("gguf", "verify", models["templated"], "-r", models["model"], "--threads", "1", "--json")

    assert code == 1
    data = json.loads(out)
    assert data["ok"] is False
    [report] = data["files"]
    assert report["file_type"] == "F16" and report["path"].endswith("TemplatedQwen3-F16.gguf")
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) == set(CHECKS)
    assert checks["chat template"]["passed"] is False and checks["logits"]["passed"] is True
    assert {"name", "passed", "measured", "bound", "summary", "detail"} <= set(checks["logits"])


def test_cli_user_errors_exit_2(models, run_cli, tmp_path):
    code, out, err = run_cli("gguf", "verify", tmp_path / "missing.gguf", "-r", models["model"])
    assert code == 2 and out == ""
    assert err.splitlines()[0] == f"Error: {tmp_path / 'missing.gguf'}: the GGUF file does not exist"
    assert "Traceback" not in err

    code, _, err = run_cli("gguf", "verify", models["F16"], "-r", tmp_path / "no-model")
    assert code == 2 and "reference model folder does not exist" in err.splitlines()[0]

    # every file is looked at before the (slow) reference: a missing second file is named first
    code, _, err = run_cli("gguf", "verify", models["F16"], tmp_path / "missing.gguf", "-r", tmp_path / "no-model")
    assert code == 2 and err.splitlines()[0] == f"Error: {tmp_path / 'missing.gguf'}: the GGUF file does not exist"


# -- the official Qwen3.5 template: multi-turn conversations rendered by llama.cpp's side too -----


@pytest.fixture(scope="module")
def qwen35_templated(models, tmp_path_factory):
    """The tiny Qwen3 with the official Qwen3.5 template, and with a copy of it that gives every
    answer a think block (the earlier ones too), each converted to F16."""
    from tests.conftest import official_qwen35_template

    root = tmp_path_factory.mktemp("qwen35-template")
    official = official_qwen35_template()
    branch = "{%- if loop.index0 > ns.last_query_index %}"
    assert official.count(branch) == 1
    out = {}
    for name, text in (("official", official), ("always-think", official.replace(branch, "{%- if true %}"))):
        folder = root / name
        shutil.copytree(models["model"], folder)
        (folder / "chat_template.jinja").write_text(text, "utf-8")
        out[name] = folder
        out[name + ".gguf"] = convert(folder, root / "gguf" / name, quant="F16").path
    return out


def test_the_template_check_renders_multi_turn_conversations_with_the_official_template(qwen35_templated):
    from apto_release.gguf.verify import COMPLETE_CONVERSATIONS, TEMPLATE_CONVERSATIONS

    reference = load_reference(qwen35_templated["official"], threads=1)
    assert any(m["role"] == "assistant" for m in CONVERSATIONS[0]) and CONVERSATIONS[0][-1]["role"] == "user"
    whole = reference.rendered_complete[0]
    assert len(COMPLETE_CONVERSATIONS[0]) == 7 and whole.count("<|im_start|>user") == 3
    # The official template, as transformers renders it: no think block before the last user
    # turn, the reasoning in the final one.
    assert "<|im_start|>assistant\n富士山です。" in whole
    assert whole.endswith("<|im_start|>assistant\n<think>\n高山病と天候の急変が代表的。一つに絞るなら天候。\n</think>\n\n天候の急変に備えて、雨具と防寒着を必ず持っていきましょう。<|im_end|>\n")
    assert reference.rendered[0].endswith("<|im_start|>assistant\n<think>\n")

    # llama-cpp-python's Jinja renders the official template identically.
    report = verify(qwen35_templated["official.gguf"], reference, threads=1)
    check = by_name(report)["chat template"]
    assert check.passed, check.detail
    assert check.measured["conversations"] == TEMPLATE_CONVERSATIONS + len(COMPLETE_CONVERSATIONS) == 3

    # A template that differs only in multi-turn conversations is caught there, and only there.
    report = verify(qwen35_templated["always-think.gguf"], reference, threads=1)
    check = by_name(report)["chat template"]
    assert [c.name for c in report.failed] == ["chat template"]
    assert check.measured["differing"] == [0, 2]  # the single-turn conversation 1 renders the same
    assert "conversation 2 (whole, as trained): from character" in check.detail
