"""The shipped accelerate configs (FSDP2, DeepSpeed ZeRO-3, data parallel) and what training takes from them.

The preset's ``train.fsdp`` under torchrun reads its FSDP settings from ``accelerate/fsdp-27b.yaml``,
the file ``accelerate launch --config_file`` reads: one source of truth. Launching: docs/training.md.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).parent / "accelerate"
#: The shipped configs by name; each is a file for ``accelerate launch --config_file``.
CONFIGS = {"fsdp": CONFIG_DIR / "fsdp-27b.yaml", "zero3": CONFIG_DIR / "zero3-27b.yaml", "ddp": CONFIG_DIR / "ddp.yaml"}


def fsdp_training_config(path: str | Path = CONFIGS["fsdp"]) -> dict[str, Any]:
    """The ``fsdp_config`` of an accelerate config file, as ``TrainingArguments(fsdp_config=...)`` takes it.

    transformers drops the ``fsdp_`` prefixes itself; the one key it spells differently is the
    parameter offload (accelerate's ``fsdp_offload_params``, transformers' ``cpu_offload``).
    """
    import yaml

    section = dict(yaml.safe_load(Path(path).read_text("utf-8"))["fsdp_config"])
    out = {k.removeprefix("fsdp_"): v for k, v in section.items()}
    out["cpu_offload"] = bool(out.pop("offload_params", False))
    return out


def launcher_strategy(env: Mapping[str, str] = os.environ) -> str | None:
    """``"FSDP"`` or ``"DEEPSPEED"`` when ``accelerate launch`` set one up from its config file, else None."""
    for name in ("FSDP", "DEEPSPEED"):
        if env.get(f"ACCELERATE_USE_{name}", "false").lower() == "true":
            return name
    return None


def fsdp_arguments(config) -> dict[str, Any]:
    """``TrainingArguments`` keywords for the preset's ``train.fsdp``: the shipped FSDP2 config.

    Empty when the preset does not shard, or when ``accelerate launch`` already set up a strategy
    from its config file (that file decides: FSDP from the same yaml, or DeepSpeed instead).
    """
    if not config.train.fsdp or launcher_strategy():
        return {}
    return {"fsdp": True, "fsdp_config": fsdp_training_config()}


def strategy(trainer) -> str:
    """What accelerate runs the training as: ``FSDP2``, ``DEEPSPEED_ZERO3``, ``MULTI_CPU``, ``NO``..."""
    state = trainer.accelerator.state
    if trainer.is_fsdp_enabled:
        return f"FSDP{state.fsdp_plugin.fsdp_version}"
    if trainer.is_deepspeed_enabled:
        return f"DEEPSPEED_ZERO{state.deepspeed_plugin.zero_stage}"
    return str(getattr(state.distributed_type, "value", state.distributed_type))


def warn_if_not_sharded(trainer, config) -> None:
    """Warn when FSDP was asked for (preset or launcher) and accelerate runs something else.

    accelerate 1.15 selects FSDP only for accelerator devices: on CPUs it runs FSDP configs
    data-parallel (``MULTI_CPU``), each process holding the whole model, and says nothing.
    """
    asked = launcher_strategy() == "FSDP" or (config.train.fsdp and launcher_strategy() is None)
    ran = strategy(trainer)
    if asked and not ran.startswith("FSDP") and trainer.args.world_size > 1:
        warnings.warn(
            f"FSDP was asked for, but accelerate runs these {trainer.args.world_size} processes as {ran} "
            "(it shards only on GPUs): each process holds the whole model", stacklevel=2)


def gather_trainable(model) -> dict[str, Any]:
    """Every trainable tensor of ``model``, whole and on the CPU, by its parameter name.

    Under FSDP2 each parameter is a ``DTensor`` holding this rank's shard; ``full_tensor()``
    all-gathers it, so every rank must call this, in the same order (it does: module order).
    Only the LoRA tensors are trainable, so this moves megabytes, not the frozen base.
    """
    from torch.distributed.tensor import DTensor

    out = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            tensor = param.full_tensor() if isinstance(param, DTensor) else param
            # FSDP's activation checkpointing wraps layers; the saved names are the model's own.
            out[name.replace("._checkpoint_wrapped_module", "")] = tensor.detach().to("cpu", copy=True)
    return out


def adapter_state_dict(trainer) -> dict[str, Any] | None:
    """The trained adapter's tensors whole, for ``save_pretrained(state_dict=...)``; None when the
    model's own tensors are whole (one process, data parallel).

    A collective under FSDP and ZeRO-3: every rank calls it; only the main process writes.
    """
    if trainer.is_fsdp_enabled:
        if trainer.accelerator.state.fsdp_plugin.fsdp_version == 2:
            return gather_trainable(trainer.model)
        return trainer.accelerator.get_state_dict(trainer.model)  # FSDP1: needs FULL_STATE_DICT
    engine = getattr(trainer, "deepspeed", None)
    if trainer.is_deepspeed_enabled and engine is not None and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3:
        # The Trainer's own call for PEFT under ZeRO-3: gathers the trainable partitions only
        # (needs stage3_gather_16bit_weights_on_model_save, zero3-27b.yaml's zero3_save_16bit_model).
        return engine._zero3_consolidated_16bit_state_dict(exclude_frozen_parameters=True)
    return None
