"""``train``: LoRA safety tuning with the Hugging Face ``Trainer``, on one process or many.

Reads and validates the records, encodes them with ``train.collate``'s loss masks, wraps the base
model's text decoder with the preset's LoRA adapter and trains; writes the adapter, its summary
(``train.summary.TrainingSummary``) and ``loss_curve.png`` beside ``out_dir`` and renames them into place.
Distribution, what is published and what stays local, checkpoints and resuming: docs/training.md.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apto_release import __version__
from apto_release.errors import InputError, UsageError
from apto_release.io import sha256_file, write_json
from apto_release.train.distributed import adapter_state_dict, fsdp_arguments, strategy, warn_if_not_sharded
from apto_release.train.summary import LOSS_CURVE_NAME, TrainingSummary

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
#: The Trainer's own record of a checkpoint, written after the weights, optimizer, scheduler and
#: RNG states (transformers' ``Trainer._save_checkpoint``): a checkpoint is complete when it parses.
TRAINER_STATE = "trainer_state.json"
#: The batch key that carries each example's index in the dataset, from the collator to
#: ``training_step`` (which takes it out before the model sees the batch).
RECORD_INDEX = "apto_record_index"
#: Where the trained record ids travel inside ``trainer_state.json`` (a stateful callback's state).
RECORD_LOG = "RecordLog"


@dataclass
class TrainResult:
    """What a run did (every rank gets one; only the main process wrote ``out_dir``)."""

    out_dir: Path
    steps: int
    final_loss: float | None
    seconds: float
    is_main_process: bool
    summary: TrainingSummary | None = None  # what the main process wrote (None on the other ranks)
    resumed_from: str | None = None  # the checkpoint's name
    steps_trained: int = 0  # optimiser steps this run took (0: the adapter came from a final checkpoint)


def checkpoint_dir(out_dir: str | Path) -> Path:
    """Where a run into ``out_dir`` keeps its checkpoints."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".checkpoints")


def run_log_path(out_dir: str | Path) -> Path:
    """The local, unpublished log of the runs into ``out_dir`` (times, host, resumes)."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".run-log.json")


def checkpoint_complete(folder: Path, *, world_size: int = 1) -> bool:
    """Whether the Trainer finished writing the checkpoint ``folder``.

    The Trainer writes a checkpoint in place, in order: the adapter, the optimizer and scheduler,
    each process's RNG state, then ``trainer_state.json``. A checkpoint counts when that last file
    parses and names the folder's step, and the files before it are there.
    """
    step = folder.name.rsplit("-", 1)[-1]
    try:
        state = json.loads((folder / TRAINER_STATE).read_text("utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(state, dict) or str(state.get("global_step")) != step:
        return False
    rng = ["rng_state.pth"] if world_size <= 1 else [f"rng_state_{i}.pth" for i in range(world_size)]
    names = {p.name for p in folder.iterdir()}
    weights = any(n.startswith(("adapter_model.", "model.", "pytorch_model")) for n in names)
    optimizer = any(n.startswith("optimizer") or n.endswith("optimizer.pt") for n in names)
    return weights and optimizer and "scheduler.pt" in names and all(r in names for r in rng)


def latest_checkpoint(folder: str | Path, *, world_size: int = 1, remove_incomplete: bool = True) -> Path | None:
    """The newest complete checkpoint in ``folder`` (``checkpoint-<step>``), or None.

    With ``remove_incomplete`` the incomplete ones (a kill while the Trainer wrote them) are
    deleted, so that the Trainer's own rotation of old checkpoints never counts them.
    """
    folder = Path(folder)
    found = sorted(((int(p.name.rsplit("-", 1)[-1]), p) for p in folder.glob("checkpoint-*")
                    if p.is_dir() and p.name.rsplit("-", 1)[-1].isdigit()), reverse=True)
    latest = None
    for _, path in found:
        if checkpoint_complete(path, world_size=world_size):
            latest = latest or path
        elif remove_incomplete:
            shutil.rmtree(path, ignore_errors=True)
    return latest


def _checkpoint_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / TRAINER_STATE).read_text("utf-8"))


def _carried_records(state: dict[str, Any]) -> list[list[str]]:
    """The record ids each rank trained on up to a checkpoint (empty for checkpoints without them)."""
    log = (state.get("stateful_callbacks") or {}).get(RECORD_LOG) or {}
    ranks = (log.get("attributes") or {}).get("ranks") or []
    return [list(ids) for ids in ranks]


def _record_log_callback(seen: list[str], carried: list[list[str]]):
    """A stateful ``TrainerCallback`` that puts every rank's trained record ids into each checkpoint's
    ``trainer_state.json`` (written last, so the ids are there exactly when the checkpoint is complete)."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import ExportableState

    class RecordLog(TrainerCallback, ExportableState):
        def __init__(self) -> None:
            self.ranks: list[list[str]] = carried

        def on_train_begin(self, args, state, control, **kwargs):
            # A checkpoint from before the record log has no entry for it; the Trainer expects one.
            state.stateful_callbacks.setdefault(RECORD_LOG, self.state())
            return control

        def on_step_end(self, args, state, control, **kwargs):
            if control.should_save:  # every rank gets here with the same decision: gather once
                self.ranks = _combine(carried, _gather(list(seen), args.world_size))
            return control

        def state(self) -> dict[str, Any]:
            return {"args": {}, "attributes": {"ranks": self.ranks}}

    return RecordLog()


def _combine(carried: list[list[str]], new: list[list[str]]) -> list[list[str]]:
    """Each rank's ids before a resume followed by those after it."""
    width = max(len(carried), len(new))
    return [(carried[r] if r < len(carried) else []) + (new[r] if r < len(new) else []) for r in range(width)]


def _recording_trainer():
    """The ``Trainer`` with a ``training_step`` that notes which records each micro-batch holds.

    The ids are taken where the batch is trained, not where it is collated: the Trainer collates
    ahead (a whole accumulation step, and one more batch), and a resumed run skips batches.
    """
    from transformers import Trainer

    class RecordingTrainer(Trainer):
        record_ids: list[str]
        seen: list[str]

        def training_step(self, model, inputs, *args, **kwargs):
            indexes = inputs.pop(RECORD_INDEX)
            self.seen.extend(self.record_ids[i] for i in indexes.tolist())
            return super().training_step(model, inputs, *args, **kwargs)

    return RecordingTrainer


class _IndexingCollator:
    """Pads batches and adds each example's index in the dataset (see ``RECORD_INDEX``)."""

    def __init__(self, collate) -> None:
        self.collate = collate

    def __call__(self, features):
        import torch

        batch = self.collate([{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features])
        batch[RECORD_INDEX] = torch.tensor([f["index"] for f in features], dtype=torch.long)
        return batch


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
    # The preset's train.fsdp: the shipped FSDP2 config, unless `accelerate launch` set one up.
    kwargs: dict[str, Any] = fsdp_arguments(config)
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
        use_liger_kernel=t.liger_kernel,  # checked first by train.kernels.check_liger
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
    allow_slow_kernels: bool = False,
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
        allow_slow_kernels: train on CUDA even without the fast Gated DeltaNet kernels.

    Raises:
        UsageError: ``out_dir`` exists without ``overwrite``; ``resume`` without a complete checkpoint;
            a refusal of ``train.kernels.preflight`` (slow kernels on CUDA, packing, Liger).
        ValidationFailed: the data file has validation errors.
        InputError: the base model or tokenizer cannot be loaded, or no record fits.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, PrinterCallback, TrainerState, set_seed

    from apto_release.io import atomic_dir
    from apto_release.merge.merge import CHAT_TEMPLATE_FILE
    from apto_release.train.collate import (
        collator_for,
        encode_records,
        load_tokenizer,
        read_training_records,
        resolve_chat_template,
    )
    from apto_release.train.kernels import preflight

    started = time.perf_counter()
    started_at = _now()
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise UsageError("the output folder already exists", path=out_dir, hint="choose another -o or pass --overwrite")
    kernels = preflight(config, allow_slow=allow_slow_kernels)
    checkpoints = checkpoint_dir(out_dir)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    main_process = int(os.environ.get("RANK", "0")) == 0
    resume_from = latest_checkpoint(checkpoints, world_size=world_size, remove_incomplete=main_process) if resume else None
    if resume and resume_from is None:
        raise UsageError(f"there is no complete checkpoint to resume from in {checkpoints}", hint="run without --resume")
    resumed_state = _checkpoint_state(resume_from) if resume_from else None

    records = read_training_records(data)
    tokenizer = load_tokenizer(base)
    encoded, stats = encode_records(records, tokenizer, config)
    template = resolve_chat_template(config.data.chat_template or None)
    if not encoded:
        raise InputError(f"no record fits in data.max_length = {config.data.max_length} tokens", path=data)
    dataset = [{"input_ids": list(e.input_ids), "labels": list(e.labels), "index": i} for i, e in enumerate(encoded)]
    # Logged once the inputs are known to be good: a run refused for its data leaves nothing behind.
    if main_process:
        _log_run(out_dir, {"started": started_at, "host": socket.gethostname(), "world_size": world_size,
                           "resumed_from": resume_from.name if resume_from else None}, fresh=resume_from is None)

    dtype = torch.bfloat16 if config.train.precision == "bf16" else torch.float32
    # Before the model: under `accelerate launch` with ZeRO-3 the arguments register DeepSpeed's
    # config, and from_pretrained then loads the weights partitioned (zero.Init), not whole per process.
    args = _training_arguments(config, checkpoints, max_steps=max_steps, save_steps=save_steps)
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
    seen: list[str] = []
    carried = _carried_records(resumed_state) if resumed_state else []
    trainer = _recording_trainer()(model=model, args=args, train_dataset=dataset, data_collator=_IndexingCollator(collator_for(tokenizer)),
                                   callbacks=[_record_log_callback(seen, carried)])
    trainer.record_ids, trainer.seen = [e.record_id for e in encoded], seen
    warn_if_not_sharded(trainer, config)
    if on_step is not None:
        # disable_tqdm already keeps the Trainer's bar away; it prints each step's log instead.
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(_step_callback(on_step))
    if resumed_state and resumed_state["global_step"] >= (max_steps or resumed_state.get("max_steps") or 0) > 0:
        # Killed after its last checkpoint: training is over. Resuming would train a step past
        # the end (the Trainer checks the step count only after a step); the adapter is the
        # checkpoint's, written as an uninterrupted run writes it.
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(trainer.model, load_file(str(resume_from / "adapter_model.safetensors")))
        trainer.state = TrainerState.load_from_json(str(resume_from / TRAINER_STATE))
    else:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)

    state = trainer.state
    history = [
        {"step": e["step"], "loss": e["loss"], "learning_rate": e.get("learning_rate")}
        for e in state.log_history
        if "loss" in e
    ]
    seen_by_rank = _combine(carried, _gather(seen, trainer.args.world_size))
    steps_before = resumed_state["global_step"] if resumed_state else 0
    result = TrainResult(
        out_dir=out_dir,
        steps=state.global_step,
        final_loss=history[-1]["loss"] if history else None,
        seconds=time.perf_counter() - started,
        is_main_process=trainer.is_world_process_zero(),
        resumed_from=resume_from.name if resume_from else None,
        steps_trained=state.global_step - steps_before,
    )
    adapter = adapter_state_dict(trainer)  # under FSDP2 / ZeRO-3 a collective: every rank gathers
    if result.is_main_process:
        summary = TrainingSummary.from_dict({
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
                "final_loss": result.final_loss,
                "loss_history": history,
            },
            "ranks": [
                {"rank": rank, "examples": len(ids), "record_ids": sorted(set(ids))}
                for rank, ids in enumerate(seen_by_rank)
            ],
            "kernels": kernels.record(liger=config.train.liger_kernel),
            "versions": _versions(),
        })
        result.summary = summary
        with atomic_dir(out_dir, overwrite=overwrite) as tmp:
            trainer.model.save_pretrained(str(tmp), state_dict=adapter)
            (tmp / "README.md").unlink(missing_ok=True)  # PEFT's empty card stub; cards come from `cards`
            if template:  # the format the adapter learned; merge gives it to the merged model
                (tmp / CHAT_TEMPLATE_FILE).write_text(template, "utf-8")
            _set_base_model(tmp / "adapter_config.json", base_model_id or str(base))
            summary.write(tmp)
            plot_loss(history, tmp / LOSS_CURVE_NAME, title=f"{config.name} on {Path(str(base)).name}")
        _log_run(out_dir, {"finished": _now(), "seconds": round(result.seconds, 3), "steps_trained": result.steps_trained,
                           "steps": result.steps, "strategy": strategy(trainer)})
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


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _log_run(out_dir: Path, entry: dict[str, Any], *, fresh: bool = False) -> None:
    """Record this run in the local run log: a fresh run starts a new log, a resumed one adds
    itself, and the end of a run completes its entry (a killed run's stays without an end). What
    varies from run to run goes here, not into the published summary."""
    path = run_log_path(out_dir)
    runs: list[Any] = []
    if not fresh:
        try:
            runs = list(json.loads(path.read_text("utf-8"))["runs"])
        except (OSError, ValueError, KeyError, TypeError):
            runs = []
    if "started" in entry or not runs:
        runs.append(entry)
    else:
        runs[-1] = runs[-1] | entry
    write_json(path, {"output": out_dir.name, "runs": runs,
                      "seconds": round(sum(r.get("seconds") or 0 for r in runs), 3)})


def _gather(seen: list[str], world_size: int) -> list[list[str]]:
    """Every rank's list of record ids, on every rank."""
    import torch.distributed as dist

    if world_size > 1 and dist.is_available() and dist.is_initialized():
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

