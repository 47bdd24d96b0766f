"""Training the tiny Qwen3.5: outputs, the loss masks in action, two processes, resuming."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from apto_release.errors import UsageError  # noqa: E402
from apto_release.train.presets import load_preset  # noqa: E402
from apto_release.train.trainer import checkpoint_dir, latest_checkpoint, run_log_path, train  # noqa: E402


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
    # On CPU the PyTorch fallback is the only Gated DeltaNet path, and the summary says so.
    assert summary["kernels"] == {"device": "cpu", "gated_deltanet": "torch", "causal_conv1d": "torch", "liger_kernel": None}
    assert list(summary) == ["apto_release_version", "preset", "config", "base", "base_model_id", "data", "tokens",
                             "training", "ranks", "kernels", "versions"]
    assert (out / "loss_curve.png").read_bytes().startswith(b"\x89PNG")
    assert not checkpoint_dir(out).exists()


def test_existing_output_and_missing_checkpoint_are_usage_errors(workspace):
    root, base, data = workspace
    (root / "taken").mkdir()
    with pytest.raises(UsageError, match="already exists"):
        train(load_preset("tiny"), base=str(base), data=data, out_dir=root / "taken", max_steps=1)
    with pytest.raises(UsageError, match="no complete checkpoint to resume from"):
        train(load_preset("tiny"), base=str(base), data=data, out_dir=root / "fresh", resume=True, max_steps=1)


def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def straight(workspace):
    """An uninterrupted run of 4 steps, checkpointing every 2 (the checkpoints kept)."""
    root, base, data = workspace
    out = root / "straight"
    train(load_preset("tiny"), base=str(base), data=data, out_dir=out, max_steps=4, save_steps=2, keep_checkpoints=True)
    return out


def test_a_resumed_run_writes_the_same_bytes_as_an_uninterrupted_one(workspace, straight):
    """The adapter, the published summary (loss history, each rank's records over the whole
    training) and the loss curve; what differs (the resume, the times) is in the local run log."""
    root, base, data = workspace
    config = load_preset("tiny")
    resumed = root / "resumed"
    train(config, base=str(base), data=data, out_dir=resumed, max_steps=2, save_steps=2, keep_checkpoints=True)
    assert (checkpoint_dir(resumed) / "checkpoint-2").is_dir()
    result = train(config, base=str(base), data=data, out_dir=resumed, max_steps=4, save_steps=2, resume=True, overwrite=True)
    assert (result.steps, result.resumed_from, result.steps_trained) == (4, "checkpoint-2", 2)
    assert _outputs(resumed) == _outputs(straight)
    summary = json.loads((resumed / "training_summary.json").read_text())
    assert "resumed_from" not in summary["training"] and "duration_seconds" not in summary["training"]
    assert summary["ranks"][0]["examples"] == 4 * config.train.per_device_batch_size * config.train.gradient_accumulation_steps
    log = json.loads(run_log_path(resumed).read_text())
    assert [(r["resumed_from"], r["steps_trained"]) for r in log["runs"]] == [(None, 2), ("checkpoint-2", 2)]
    assert all(r["seconds"] > 0 and r["host"] and r["finished"] >= r["started"] for r in log["runs"])


def test_an_incomplete_checkpoint_is_removed_and_the_run_resumes_from_the_one_before(workspace, straight):
    """The Trainer writes checkpoints in place: a kill leaves an empty or half-written folder."""
    root, base, data = workspace
    out = root / "half-written"
    shutil.copytree(checkpoint_dir(straight), checkpoint_dir(out))
    four = checkpoint_dir(out) / "checkpoint-4"
    (four / "trainer_state.json").write_text('{"global_step": 4, "log_hi')  # killed while the Trainer wrote it
    (checkpoint_dir(out) / "checkpoint-6").mkdir()  # killed before it wrote anything
    assert latest_checkpoint(checkpoint_dir(out), remove_incomplete=False).name == "checkpoint-2"
    result = train(load_preset("tiny"), base=str(base), data=data, out_dir=out, max_steps=4, save_steps=2, resume=True)
    assert (result.resumed_from, result.steps_trained) == ("checkpoint-2", 2)
    assert _outputs(out) == _outputs(straight)
    # Nothing complete at all: the run cannot resume, and says so (the release then starts over).
    (root / "nothing.checkpoints" / "checkpoint-2").mkdir(parents=True)
    with pytest.raises(UsageError, match="no complete checkpoint"):
        train(load_preset("tiny"), base=str(base), data=data, out_dir=root / "nothing", max_steps=4, resume=True)
    assert not (root / "nothing.checkpoints" / "checkpoint-2").exists()


def test_a_run_at_its_last_checkpoint_trains_no_further_and_writes_the_adapter(workspace, straight):
    """Killed after the checkpoint of the last step, before the adapter: the re-run only writes it."""
    root, base, data = workspace
    out = root / "at-the-end"
    shutil.copytree(checkpoint_dir(straight), checkpoint_dir(out))
    steps = []
    result = train(load_preset("tiny"), base=str(base), data=data, out_dir=out, max_steps=4, save_steps=2, resume=True,
                   on_step=lambda step, total: steps.append(step))
    assert (result.steps, result.resumed_from, result.steps_trained, steps) == (4, "checkpoint-4", 0, [])
    assert _outputs(out) == _outputs(straight)


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
    assert [r["examples"] for r in summary["ranks"]] == [8, 8]  # 2 steps of 2 accumulated batches of 2, each rank
    # Only the main process wrote: one output folder and its local run log, nothing half-written beside them.
    assert sorted(p.name for p in root.iterdir() if p.name.startswith((".ddp", "ddp"))) == ["ddp", "ddp.run-log.json"]


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
