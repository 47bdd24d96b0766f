"""apto-release merge: plan output, the summary line, exit codes 1 and 2, nothing written on failure."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from apto_release.cli import cli
from apto_release.cli.merge import register
from apto_release.testing import build_tiny_qwen35
from tests.merge.test_merge import assert_nothing_written

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def merge_wired():
    """Register the command on the real group unless apto_release.cli already does."""
    added = "merge" not in cli.commands
    if added:
        register(cli)
    yield
    if added:
        cli.commands.pop("merge", None)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    work = tmp_path_factory.mktemp("merge-cli")
    base = build_tiny_qwen35(work / "base", num_shards=3, vision=False, mtp=True)
    adapter, _, _ = make_adapter_text_only(base, work / "adapter")
    return base, adapter


def make_adapter_text_only(base: Path, out: Path):
    """A random LoRA on the text-only checkpoint (Qwen3_5ForCausalLM: keys model.layers.*)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, init_lora_weights=False, target_modules=["q_proj", "down_proj", "in_proj_qkv"]))
    peft_model.save_pretrained(out)
    return out, None, None


def test_dry_run_prints_the_plan_and_writes_nothing(run_cli, models, tmp_path):
    base, adapter = models
    code, out, err = run_cli("merge", "--base", base, "--adapter", adapter, "-o", tmp_path / "merged", "--dry-run")
    assert code == 0, err
    assert out.startswith(f"Merge plan: {base} + {adapter} → {tmp_path / 'merged'}/\n")
    assert "Adapter: LoRA r=2 alpha=4; 8 weights get a LoRA delta" in out  # down_proj x4, in_proj_qkv x3, q_proj x1
    assert "model-00001-of-00003.safetensors  merge  2 of 13 tensors merged" in out
    assert "model-00003-of-00003.safetensors  copy   15 tensors, copied as a file" in out  # the mtp shard
    assert "Generation stops at eos_token_id" in out
    assert out.rstrip().endswith("Dry run: nothing was written.")
    assert not (tmp_path / "merged").exists()


def test_merge_writes_and_summarises(run_cli, models, tmp_path):
    base, adapter = models
    code, out, err = run_cli("merge", "--base", base, "--adapter", adapter, "-o", tmp_path / "merged")
    assert code == 0, err
    assert "  model-00001-of-00003.safetensors  2 tensors merged\n  model-00002-of-00003.safetensors  6 tensors merged\n  model-00003-of-00003.safetensors  copied\n" in out
    assert f"Merged 8 tensors into {tmp_path / 'merged'}/: 3 shards (2 rewritten, 1 copied as files)" in out
    assert (tmp_path / "merged" / "model.safetensors.index.json").exists()
    code, _, err = run_cli("merge", "--base", base, "--adapter", adapter, "-o", tmp_path / "merged")
    assert code == 2 and "already exists" in err and "Hint: choose another -o or pass --overwrite" in err
    assert run_cli("merge", "--base", base, "--adapter", adapter, "-o", tmp_path / "merged", "--overwrite")[0] == 0


def adapter_with(adapter, dest, **settings):
    """A copy of ``adapter`` at ``dest`` whose adapter_config.json has ``settings`` changed."""
    shutil.copytree(adapter, dest)
    config = json.loads((dest / "adapter_config.json").read_text())
    config.update(settings)
    (dest / "adapter_config.json").write_text(json.dumps(config))
    return dest


def test_output_is_required_without_dry_run(run_cli, models):
    base, adapter = models
    code, _, err = run_cli("merge", "--base", base, "--adapter", adapter)
    assert code == 2 and "Error: give the output folder with -o" in err


def test_wrong_base_name_exits_1_unless_forced(run_cli, models, tmp_path):
    base, adapter = models
    other = adapter_with(adapter, tmp_path / "adapter", base_model_name_or_path="Qwen/Qwen3.5-27B")
    code, _, err = run_cli("merge", "--base", base, "--adapter", other, "-o", tmp_path / "merged")
    assert code == 1
    assert err.startswith(f"Error: {other / 'adapter_config.json'}: the adapter was trained on 'Qwen/Qwen3.5-27B', not on this base")
    assert "--force" in err
    assert_nothing_written(tmp_path / "merged")
    code, _, err = run_cli("merge", "--base", base, "--adapter", other, "-o", tmp_path / "merged", "--force")
    assert code == 0 and "Warning: the adapter names its base 'Qwen/Qwen3.5-27B'" in err


def test_dora_exits_1_and_says_so(run_cli, models, tmp_path):
    base, adapter = models
    dora = adapter_with(adapter, tmp_path / "dora", use_dora=True)
    code, _, err = run_cli("merge", "--base", base, "--adapter", dora, "-o", tmp_path / "merged")
    assert code == 1 and "cannot merge this LoRA variant: DoRA (use_dora)" in err and "(field 'use_dora')" in err
    assert_nothing_written(tmp_path / "merged")


def test_quantized_base_exits_1(run_cli, models, tmp_path):
    base, adapter = models
    quantized = tmp_path / "base"
    shutil.copytree(base, quantized)
    config = json.loads((quantized / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (quantized / "config.json").write_text(json.dumps(config))
    code, _, err = run_cli("merge", "--base", quantized, "--adapter", adapter, "-o", tmp_path / "merged", "--dry-run")
    assert code == 1 and "the base checkpoint is quantized (bitsandbytes 4-bit" in err


def test_truncated_shard_exits_2(run_cli, models, tmp_path):
    base, adapter = models
    broken = tmp_path / "base"
    shutil.copytree(base, broken)
    shard = broken / "model-00002-of-00003.safetensors"
    shard.write_bytes(shard.read_bytes()[:-64])
    code, _, err = run_cli("merge", "--base", broken, "--adapter", adapter, "-o", tmp_path / "merged", "--force")
    assert code == 2
    assert err.startswith(f"Error: {shard}: not a valid safetensors shard: truncated")
    assert "Hint: download or copy the file again" in err
    assert_nothing_written(tmp_path / "merged")


def test_missing_adapter_folder_exits_2(run_cli, models, tmp_path):
    base, _ = models
    code, _, err = run_cli("merge", "--base", base, "--adapter", tmp_path / "nope", "-o", tmp_path / "merged")
    assert code == 2 and "the adapter folder does not exist" in err


def test_on_bytes_counts_the_base_shards_bytes(models, tmp_path):
    from apto_release.merge.merge import merge

    base, adapter = models
    calls = []
    merge(base, adapter, tmp_path / "merged", on_bytes=lambda done, total: calls.append((done, total)))
    total = sum(p.stat().st_size for p in base.glob("*.safetensors"))
    assert {t for _, t in calls} == {total} and calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and len(calls) > 3  # within shards too


def test_a_terminal_gets_a_bar_instead_of_a_line_per_shard(run_cli, models, tmp_path):
    base, adapter = models
    code, out, err = run_cli("merge", "--base", base, "--adapter", adapter, "-o", tmp_path / "merged", env={"APTO_PROGRESS": "bars"})
    assert code == 0, err
    assert "safetensors" not in out and out.startswith("Merged 8 tensors into")
    assert err.startswith("\r") and "merge" in err and err.endswith("\r")  # drawn with tqdm, cleared at the end
