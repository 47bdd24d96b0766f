"""Training the tiny Qwen3.5: outputs, the loss masks in action, two processes, resuming."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from apto_release.dataset.example import write_example_data  # noqa: E402
from apto_release.errors import UsageError  # noqa: E402
from apto_release.train.presets import load_preset  # noqa: E402
from apto_release.train.trainer import checkpoint_dir, train  # noqa: E402


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from apto_release.testing import build_japanese_tokenizer, build_tiny_qwen35

    root = tmp_path_factory.mktemp("train")
    base = build_tiny_qwen35(root / "base", tokenizer=build_japanese_tokenizer())
    data = root / "data.jsonl"
    write_example_data(data, n=16)
    return root, base, data


def _lora_tensors(adapter: Path):
    from safetensors.torch import load_file

    return load_file(str(adapter / "adapter_model.safetensors"))


def test_single_process_run_writes_adapter_summary_and_curve(workspace):
    root, base, data = workspace
    out = root / "single"
    result = train(load_preset("tiny"), base=str(base), data=data, out_dir=out, max_steps=3, base_model_id="org/tiny-qwen3.5")
    assert result.steps == 3 and result.is_main_process
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "chat_template.jinja", "loss_curve.png", "training_summary.json",
    ]
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "org/tiny-qwen3.5"
    assert adapter_config["peft_type"] == "LORA" and adapter_config["r"] == 4

    tensors = _lora_tensors(out)
    assert tensors and not any("visual" in k or k.startswith("mtp") for k in tensors)
    kinds = {k.split(".")[-3] for k in tensors}
    assert {"q_proj", "in_proj_qkv", "out_proj", "down_proj"} <= kinds
    # LoRA's B starts at zero; trained, it is not.
    assert any(t.abs().sum() > 0 for k, t in tensors.items() if "lora_B" in k)

    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["preset"] == "tiny" and summary["config"]["lora.r"] == 4
    assert len(summary["data"]["sha256"]) == 64 and summary["data"]["records"] == 16
    assert [h["step"] for h in summary["training"]["loss_history"]] == [1, 2, 3]
    assert summary["training"]["world_size"] == 1
    assert set(summary["tokens"]["per_category"]) >= {"safety_refusal", "mid_refusal"}
    assert {"torch", "transformers", "peft"} <= set(summary["versions"])
    assert (out / "loss_curve.png").read_bytes().startswith(b"\x89PNG")
    assert not checkpoint_dir(out).exists()


def test_existing_output_and_missing_checkpoint_are_usage_errors(workspace):
    root, base, data = workspace
    (root / "taken").mkdir()
    with pytest.raises(UsageError, match="already exists"):
        train(load_preset("tiny"), base=str(base), data=data, out_dir=root / "taken", max_steps=1)
    with pytest.raises(UsageError, match="no checkpoint to resume from"):
        train(load_preset("tiny"), base=str(base), data=data, out_dir=root / "fresh", resume=True, max_steps=1)


def test_resume_continues_from_the_checkpoint(workspace):
    root, base, data = workspace
    config = load_preset("tiny")
    straight = root / "straight"
    train(config, base=str(base), data=data, out_dir=straight, max_steps=4)
    # A first run that stops after two steps, keeping its checkpoint, then a resumed one.
    resumed = root / "resumed"
    train(config, base=str(base), data=data, out_dir=resumed, max_steps=2, save_steps=2, keep_checkpoints=True)
    assert (checkpoint_dir(resumed) / "checkpoint-2").is_dir()
    train(config, base=str(base), data=data, out_dir=resumed, max_steps=4, save_steps=2, resume=True, overwrite=True)
    summary = json.loads((resumed / "training_summary.json").read_text())
    assert summary["training"]["resumed_from"] == "checkpoint-2"
    assert summary["training"]["steps"] == 4
    a, b = _lora_tensors(straight), _lora_tensors(resumed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_two_processes_train_on_different_records(workspace):
    root, base, data = workspace
    out = root / "ddp"
    script = root / "run_ddp.py"
    script.write_text(
        "import sys\n"
        "from apto_release.train.presets import load_preset\n"
        "from apto_release.train.trainer import train\n"
        "train(load_preset('tiny'), base=sys.argv[1], data=sys.argv[2], out_dir=sys.argv[3], max_steps=2)\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # accelerate launch --cpu --num_processes 2 silently runs one process; torchrun really runs two.
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(base), str(data), str(out)],
        capture_output=True, text=True, env=env, timeout=240, cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["training"]["world_size"] == 2
    rank0, rank1 = (set(r["record_ids"]) for r in summary["ranks"])
    assert rank0 and rank1 and not rank0 & rank1
    # Only the main process wrote: one output folder, nothing half-written beside it.
    assert sorted(p.name for p in root.iterdir() if p.name.startswith((".ddp", "ddp"))) == ["ddp"]


def test_a_base_model_gets_the_chat_template_it_was_tuned_with(workspace):
    """A base model ships without a chat template; its preset names one, and merge passes it on."""
    import shutil

    from transformers import AutoTokenizer

    from apto_release.merge.merge import merge
    from apto_release.train.collate import CHATML_TEMPLATE

    root, base, data = workspace
    bare = root / "bare-base"
    shutil.copytree(base, bare)
    (bare / "chat_template.jinja").unlink()
    assert AutoTokenizer.from_pretrained(bare).chat_template is None
    adapter = root / "bare-adapter"
    train(load_preset("tiny"), base=str(bare), data=data, out_dir=adapter, max_steps=1)
    assert (adapter / "chat_template.jinja").read_text() == CHATML_TEMPLATE
    merged = root / "bare-merged"
    merge(bare, adapter, merged)
    tokenizer = AutoTokenizer.from_pretrained(merged)
    assert tokenizer.chat_template == CHATML_TEMPLATE
    assert tokenizer.eos_token == "<|im_end|>"


def test_on_step_reports_each_optimiser_step_instead_of_the_trainers_log(workspace, capsys):
    root, base, data = workspace
    steps = []
    train(load_preset("tiny"), base=str(base), data=data, out_dir=root / "steps", max_steps=2,
          on_step=lambda step, total: steps.append((step, total)))
    assert steps == [(1, 2), (2, 2)]
    assert "'loss'" not in capsys.readouterr().out  # the Trainer's per-step log would tear a bar
