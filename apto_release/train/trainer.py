"""``train``: LoRA safety tuning with the Hugging Face ``Trainer``, on one process or many.

The run reads and validates the records, encodes them with the loss masks of ``train.collate``
(assistant tokens only; the ``harmful_prefix`` of ``mid_refusal`` records opens the final answer
and carries no loss), loads the base model's *text* decoder, wraps it with the preset's LoRA
adapter and trains.

Distribution comes from the launcher: under ``torchrun`` or ``accelerate launch`` every process
runs this same function, the ``Trainer`` shards the data (each rank sees its own records) and
only the main process writes the output. On CPUs the processes talk over gloo.

Outputs, written beside ``out_dir`` and renamed into place when complete:

- ``adapter_config.json`` and ``adapter_model.safetensors`` (PEFT), naming the base model;
- ``training_summary.json``: the preset and its final settings, the data file's hash, token
  statistics per category, the loss history, the records each rank trained on, the duration
  and the library versions;
- ``loss_curve.png``.

Checkpoints go to ``<out_dir>.checkpoints/`` while the run lasts; ``resume=True`` continues from
the newest one. They are removed after a successful run unless ``keep_checkpoints``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apto_release import __version__
from apto_release.errors import InputError, UsageError
from apto_release.io import sha256_file

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
SUMMARY_NAME = "training_summary.json"
LOSS_CURVE_NAME = "loss_curve.png"


@dataclass
class TrainResult:
    """What a run did (every rank gets one; only the main process wrote ``out_dir``)."""

    out_dir: Path
    steps: int
    final_loss: float | None
    seconds: float
    is_main_process: bool
    summary: dict[str, Any] = field(default_factory=dict)


def checkpoint_dir(out_dir: str | Path) -> Path:
    """Where a run into ``out_dir`` keeps its checkpoints."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".checkpoints")


def _latest_checkpoint(folder: Path) -> Path | None:
    steps = [(int(p.name.split("-")[-1]), p) for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return max(steps)[1] if steps else None


class _RecordingCollator:
    """Pads batches and remembers which records this process trained on."""

    def __init__(self, collate) -> None:
        self.collate = collate
        self.seen: list[str] = []

    def __call__(self, features):
        self.seen.extend(f["record_id"] for f in features)
        return self.collate([{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features])


def _versions() -> dict[str, str]:
    import accelerate
    import peft
    import torch
    import transformers

    return {
        "apto_release": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "accelerate": accelerate.__version__,
    }


def _training_arguments(config, checkpoints: Path, *, max_steps: int | None, save_steps: int):
    import torch
    from transformers import TrainingArguments

    t = config.train
    on_gpu = torch.cuda.is_available()
    kwargs: dict[str, Any] = {}
    if t.fsdp:
        # Shard parameters, gradients and optimizer state over the GPUs, wrapping each decoder
        # layer; the shipped accelerate config (train/accelerate/fsdp.yaml) says the same.
        kwargs["fsdp"] = "full_shard auto_wrap"
        kwargs["fsdp_config"] = {"transformer_layer_cls_to_wrap": ["Qwen3_5DecoderLayer"], "use_orig_params": True}
    # transformers renamed gradient_checkpointing to activation_checkpointing (the old name warns).
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__ else "gradient_checkpointing"
    kwargs[checkpointing] = t.gradient_checkpointing
    kwargs[f"{checkpointing}_kwargs"] = {"use_reentrant": False} if t.gradient_checkpointing else None
    return TrainingArguments(
        output_dir=str(checkpoints),
        per_device_train_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        num_train_epochs=t.epochs,
        max_steps=max_steps if max_steps is not None else -1,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        bf16=t.precision == "bf16",
        seed=t.seed,
        data_seed=t.seed,
        logging_steps=1,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=2,
        report_to=[],
        disable_tqdm=True,
        remove_unused_columns=False,
        use_cpu=not on_gpu,
        # Under a launcher on CPUs the processes talk over gloo (NCCL needs GPUs); a single
        # process must not ask for a backend, or accelerate waits for a process group.
        ddp_backend="gloo" if not on_gpu and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        dataloader_num_workers=0,
        **kwargs,
    )


def train(
    config,
    *,
    base: str,
    data: str | Path,
    out_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    max_steps: int | None = None,
    save_steps: int = 200,
    keep_checkpoints: bool = False,
    base_model_id: str | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train a LoRA adapter on ``data`` for the model at ``base``, into ``out_dir``.

    Args:
        config: the resolved ``TrainConfig`` (``train.presets.load_preset``).
        base: a local model folder or a Hub id in the local cache.
        data: the records (schema v1); a file with validation errors is refused.
        resume: continue from the newest checkpoint in ``checkpoint_dir(out_dir)``.
        max_steps: stop after this many optimiser steps (default: the preset's epochs).
        save_steps: checkpoint every this many steps.
        base_model_id: the id written into ``adapter_config.json`` (default ``base``).
        on_step: called as ``on_step(step, max_steps)`` after each optimiser step, on the main
            process only (for progress output). The Trainer's own printing of each step's log
            is then left out, so that it does not tear a progress bar; the losses are in
            ``training_summary.json`` either way.

    Raises:
        UsageError: ``out_dir`` exists without ``overwrite``; ``resume`` without a checkpoint.
        ValidationFailed: the data file has validation errors.
        InputError: the base model or tokenizer cannot be loaded, or no record fits.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, PrinterCallback, Trainer, set_seed

    from apto_release.io import atomic_dir
    from apto_release.merge.merge import CHAT_TEMPLATE_FILE
    from apto_release.train.collate import (
        collator_for,
        encode_records,
        load_tokenizer,
        read_training_records,
        resolve_chat_template,
    )

    started = time.perf_counter()
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise UsageError("the output folder already exists", path=out_dir, hint="choose another -o or pass --overwrite")
    checkpoints = checkpoint_dir(out_dir)
    resume_from = _latest_checkpoint(checkpoints) if resume else None
    if resume and resume_from is None:
        raise UsageError(f"there is no checkpoint to resume from in {checkpoints}", hint="run without --resume")

    records = read_training_records(data)
    tokenizer = load_tokenizer(base)
    encoded, stats = encode_records(records, tokenizer, config)
    template = resolve_chat_template(config.data.chat_template or None)
    if not encoded:
        raise InputError(f"no record fits in data.max_length = {config.data.max_length} tokens", path=data)
    dataset = [{"input_ids": list(e.input_ids), "labels": list(e.labels), "record_id": e.record_id} for e in encoded]

    dtype = torch.bfloat16 if config.train.precision == "bf16" else torch.float32
    try:
        # The causal-LM class loads the text decoder only: a Qwen3.5 checkpoint's vision tower and
        # multi-token-prediction weights are left out of training (and copied as they are by merge).
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot load the base model from {base!r}: {first}") from exc
    lora = config.lora
    # LoRA's A matrices are drawn from the global RNG: seed it here, not only in the Trainer
    # (which seeds after the adapter exists), so that the same seed gives the same adapter.
    set_seed(config.train.seed)
    model = get_peft_model(
        model,
        LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            use_rslora=lora.use_rslora,
            target_modules=lora.target_regex,
            task_type="CAUSAL_LM",
        ),
    )
    collator = _RecordingCollator(collator_for(tokenizer))
    args = _training_arguments(config, checkpoints, max_steps=max_steps, save_steps=save_steps)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    if on_step is not None:
        # disable_tqdm already keeps the Trainer's bar away; it prints each step's log instead.
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(_step_callback(on_step))
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)

    state = trainer.state
    history = [
        {"step": e["step"], "loss": e["loss"], "learning_rate": e.get("learning_rate")}
        for e in state.log_history
        if "loss" in e
    ]
    seen_by_rank = _gather(collator.seen, trainer)
    result = TrainResult(
        out_dir=out_dir,
        steps=state.global_step,
        final_loss=history[-1]["loss"] if history else None,
        seconds=time.perf_counter() - started,
        is_main_process=trainer.is_world_process_zero(),
    )
    if result.is_main_process:
        summary = {
            "apto_release_version": __version__,
            "preset": config.name,
            "config": config.flat(),
            # Names, not the machine's paths: the summary is published with the adapter, and the
            # hashes say which files they were.
            "base": Path(base).name if Path(base).exists() else str(base),
            "base_model_id": base_model_id or str(base),
            "data": {"path": Path(data).name, "sha256": sha256_file(data), "records": len(records)},
            "tokens": {
                "max_length": stats.max_length,
                "per_category": {c: vars(s) | {"kept": s.kept} for c, s in stats.categories.items()},
            },
            "training": {
                "world_size": trainer.args.world_size,
                "steps": state.global_step,
                "epochs": state.epoch,
                "resumed_from": resume_from.name if resume_from else None,
                "final_loss": result.final_loss,
                "loss_history": history,
                "duration_seconds": round(result.seconds, 3),
            },
            "ranks": [
                {"rank": rank, "examples": len(ids), "record_ids": sorted(set(ids))}
                for rank, ids in enumerate(seen_by_rank)
            ],
            "versions": _versions(),
        }
        result.summary = summary
        with atomic_dir(out_dir, overwrite=overwrite) as tmp:
            trainer.model.save_pretrained(str(tmp))
            (tmp / "README.md").unlink(missing_ok=True)  # PEFT's empty card stub; cards come from `cards`
            if template:  # the format the adapter learned; merge gives it to the merged model
                (tmp / CHAT_TEMPLATE_FILE).write_text(template, "utf-8")
            _set_base_model(tmp / "adapter_config.json", base_model_id or str(base))
            (tmp / SUMMARY_NAME).write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", "utf-8")
            plot_loss(history, tmp / LOSS_CURVE_NAME, title=f"{config.name} on {Path(str(base)).name}")
        if not keep_checkpoints:
            shutil.rmtree(checkpoints, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return result


def _step_callback(on_step: Callable[[int, int], None]):
    """A ``TrainerCallback`` that reports each optimiser step to ``on_step``, on the main process."""
    from transformers import TrainerCallback

    class StepCallback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                on_step(state.global_step, state.max_steps)

    return StepCallback()


def _gather(seen: list[str], trainer) -> list[list[str]]:
    """Every rank's list of record ids, on every rank."""
    import torch.distributed as dist

    if trainer.args.world_size > 1 and dist.is_available() and dist.is_initialized():
        out: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(out, seen)
        return out
    return [seen]


def _set_base_model(config_path: Path, base_model_id: str) -> None:
    data = json.loads(config_path.read_text("utf-8"))
    data["base_model_name_or_path"] = base_model_id
    config_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", "utf-8")


def plot_loss(history: list[dict[str, Any]], dest: Path, *, title: str) -> None:
    """A PNG of the training loss per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot([h["step"] for h in history], [h["loss"] for h in history], marker="." if len(history) < 50 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    # Fixed metadata, so that the same history gives the same bytes.
    fig.savefig(dest, format="png", metadata={"Software": None})
    plt.close(fig)

