"""The shipped accelerate configs, read by accelerate's own parser and launcher, and two-process runs.

accelerate 1.15 selects FSDP only on GPUs: on CPUs `accelerate launch` with the FSDP2 config runs
data parallel (MULTI_CPU). So the launched run below proves the launch path, the warning and the
adapter; the FSDP2 sharding and gathering run on CPUs through torch's own fully_shard, wrapped by
accelerate's own FSDP2 wrap policy built from the shipped file.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
yaml = pytest.importorskip("yaml")

from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file  # noqa: E402
from accelerate.commands.launch import _validate_launch_command, launch_command_parser  # noqa: E402
from accelerate.commands.to_fsdp2 import ARGUMENT_KEY_MAPPING, ConversionStatus, to_fsdp2_command, to_fsdp2_command_parser  # noqa: E402
from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin  # noqa: E402
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env  # noqa: E402

from apto_release.train.distributed import CONFIGS, fsdp_arguments, fsdp_training_config  # noqa: E402
from apto_release.train.presets import load_preset  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
#: The variables `accelerate launch` passes on to the processes, which its plugins read back.
ACCELERATE_VARS = ("ACCELERATE_", "FSDP_")


def _launch_env(config: Path, monkeypatch, prepare) -> dict[str, str]:
    """Run accelerate's own launch steps on ``config`` (parse, validate, build the processes'
    environment) without starting anything, and put that environment in place for the plugins."""
    args = launch_command_parser().parse_args(["--config_file", str(config), "--main_process_port", "0", "train.py"])
    args, defaults, mixed_precision_from_config = _validate_launch_command(args)
    if prepare is prepare_deepspeed_cmd_env:  # as accelerate's launch_command does before it
        fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mixed_precision_from_config else [])
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
    env = prepare(args)
    env = env[1] if isinstance(env, tuple) else env  # the DeepSpeed one returns (command, env)
    for name in list(os.environ):
        if name.startswith(ACCELERATE_VARS):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith(ACCELERATE_VARS):
            monkeypatch.setenv(name, value)
    return env


def _launch_options() -> set[str]:
    return {action.dest for action in launch_command_parser()._actions}


def test_every_shipped_config_parses_with_accelerates_own_parser():
    assert set(CONFIGS) == {"fsdp", "zero3", "ddp"}
    shipped = sorted(p.name for p in CONFIGS["fsdp"].parent.glob("*.yaml"))
    assert shipped == sorted(p.name for p in CONFIGS.values())
    kinds = {name: load_config_from_file(str(path)) for name, path in CONFIGS.items()}
    assert all(isinstance(c, ClusterConfig) for c in kinds.values())
    assert kinds["fsdp"].distributed_type == DistributedType.FSDP
    assert kinds["zero3"].distributed_type == DistributedType.DEEPSPEED
    assert kinds["ddp"].distributed_type == DistributedType.MULTI_GPU
    assert {c.mixed_precision for c in kinds.values()} == {"bf16"}


def test_the_fsdp_config_holds_only_keys_accelerates_fsdp2_reads(tmp_path, caplog):
    raw = yaml.safe_load(CONFIGS["fsdp"].read_text())
    section = raw["fsdp_config"]
    assert section["fsdp_version"] == 2
    assert set(section) <= _launch_options()  # each is a flag `accelerate launch` turns into FSDP_*
    removed = {k for k, v in ARGUMENT_KEY_MAPPING.items() if isinstance(v, ConversionStatus)}
    assert "fsdp_use_orig_params" in removed and not set(section) & removed
    # `accelerate to-fsdp2` has nothing to convert: the file it writes is the file we ship.
    out = tmp_path / "converted.yaml"
    to_fsdp2_command(to_fsdp2_command_parser().parse_args(["--config_file", str(CONFIGS["fsdp"]), "--output_file", str(out)]))
    assert yaml.safe_load(out.read_text()) == raw
    # The file before this change, for contrast: the same command drops its FSDP1-only key.
    old = copy.deepcopy(raw)
    old["fsdp_config"] |= {"fsdp_version": 1, "fsdp_use_orig_params": True}
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(old))
    to_fsdp2_command(to_fsdp2_command_parser().parse_args(["--config_file", str(tmp_path / "old.yaml"), "--overwrite"]))
    assert "fsdp_use_orig_params" not in yaml.safe_load((tmp_path / "old.yaml").read_text())["fsdp_config"]


def _plugin_fields(plugin) -> dict:
    return {k: getattr(plugin, k) for k in (
        "fsdp_version", "reshard_after_forward", "state_dict_type", "auto_wrap_policy", "transformer_cls_names_to_wrap",
        "cpu_offload", "cpu_ram_efficient_loading", "activation_checkpointing", "use_orig_params", "sync_module_states",
    )}


def test_launching_the_fsdp_config_builds_a_full_shard_fsdp2_plugin_the_preset_agrees_with(monkeypatch, tmp_path):
    from torch.distributed.fsdp import StateDictType
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    from apto_release.train.trainer import _training_arguments

    env = _launch_env(CONFIGS["fsdp"], monkeypatch, prepare_multi_gpu_env)
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
    launched = FullyShardedDataParallelPlugin()
    fields = _plugin_fields(launched)
    assert fields["fsdp_version"] == 2 and fields["reshard_after_forward"] is True
    assert fields["state_dict_type"] == StateDictType.FULL_STATE_DICT
    assert fields["auto_wrap_policy"] is transformer_auto_wrap_policy
    assert fields["transformer_cls_names_to_wrap"] == ["Qwen3_5DecoderLayer"]
    assert fields["cpu_ram_efficient_loading"] is True and fields["activation_checkpointing"] is False
    assert fields["use_orig_params"] is None and fields["sync_module_states"] is None  # FSDP1 only

    # Under `accelerate launch` the launcher's file decides; the trainer adds nothing of its own.
    assert fsdp_arguments(load_preset("qwen3.5-27b")) == {}
    # Under torchrun the preset's train.fsdp reads the same file, through TrainingArguments.
    for name in list(os.environ):
        if name.startswith(ACCELERATE_VARS):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")  # TrainingArguments sets it; undone after
    args = _training_arguments(load_preset("qwen3.5-27b"), tmp_path / "ckpt", max_steps=1, save_steps=1)
    assert _plugin_fields(FullyShardedDataParallelPlugin(**args.fsdp_plugin_args)) == fields
    assert fsdp_arguments(load_preset("qwen3.5-9b")) == {}


def test_the_wrap_unit_is_the_decoder_layer_of_the_text_model_and_of_the_vlm(workspace, monkeypatch):
    """accelerate's own FSDP2 wrap policy, built from the shipped file, picks every decoder layer
    and nothing else; without the class named it fails on Qwen3.5's text model."""
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from transformers import AutoModelForCausalLM, Qwen3_5ForConditionalGeneration

    _, base, _ = workspace
    _launch_env(CONFIGS["fsdp"], monkeypatch, prepare_multi_gpu_env)
    layers = json.loads((base / "config.json").read_text())["text_config"]["num_hidden_layers"]
    for cls in (AutoModelForCausalLM, Qwen3_5ForConditionalGeneration):
        model = cls.from_pretrained(base)
        plugin = FullyShardedDataParallelPlugin()
        plugin.set_auto_wrap_policy(model)
        policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
        picked = [type(m).__name__ for m in model.modules() if policy(m)]
        assert picked == ["Qwen3_5DecoderLayer"] * layers, cls.__name__
    monkeypatch.delenv("FSDP_TRANSFORMER_CLS_TO_WRAP")
    default = FullyShardedDataParallelPlugin()
    with pytest.raises(ValueError, match="Could not find the transformer layer class Qwen3_5VisionBlock"):
        default.set_auto_wrap_policy(AutoModelForCausalLM.from_pretrained(base))


def test_the_zero3_config_launches_stage_3_gathering_16bit_weights_on_save(monkeypatch):
    """Parsed and turned into DeepSpeed's config by accelerate, without DeepSpeed installed."""
    raw = yaml.safe_load(CONFIGS["zero3"].read_text())
    assert set(raw["deepspeed_config"]) <= _launch_options()
    env = _launch_env(CONFIGS["zero3"], monkeypatch, prepare_deepspeed_cmd_env)
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true"
    plugin = DeepSpeedPlugin()
    plugin.set_mixed_precision("bf16")
    ds = plugin.deepspeed_config
    zero = ds["zero_optimization"]
    assert zero["stage"] == 3 and zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert zero["offload_param"]["device"] == zero["offload_optimizer"]["device"] == "none"
    assert plugin.zero3_init_flag is True and ds["bf16"]["enabled"] is True
    # Batch, accumulation and clipping stay "auto": the Trainer fills them from the preset.
    assert ds["train_micro_batch_size_per_gpu"] == ds["gradient_accumulation_steps"] == "auto"
    # The launcher's DeepSpeed wins over the preset's train.fsdp.
    assert fsdp_arguments(load_preset("qwen3.5-27b")) == {}
    # The extra pins DeepSpeed; CI and the README's test command do not install it (it builds for CUDA).
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["deepspeed"] == ["deepspeed==0.19.8"]
    assert "deepspeed" not in (ROOT / ".ci" / "run").read_text()


def test_the_preset_reads_fsdp_settings_from_the_shipped_file(monkeypatch):
    config = fsdp_training_config()
    assert config["version"] == 2 and config["transformer_layer_cls_to_wrap"] == "Qwen3_5DecoderLayer"
    assert config["cpu_offload"] is False and "offload_params" not in config
    # ddp.yaml sets up neither FSDP nor DeepSpeed: the 27B preset still shards, the 9B does not.
    env = _launch_env(CONFIGS["ddp"], monkeypatch, prepare_multi_gpu_env)
    assert "ACCELERATE_USE_FSDP" not in env and "ACCELERATE_USE_DEEPSPEED" not in env
    assert fsdp_arguments(load_preset("qwen3.5-27b")) == {"fsdp": True, "fsdp_config": config}
    assert fsdp_arguments(load_preset("qwen3.5-9b")) == {}


def _changed_by_merge(base: Path, merged: Path) -> set[str]:
    """The tensor names whose values differ between two model folders (same names in both)."""
    from safetensors.torch import load_file

    def tensors(folder):
        out = {}
        for f in sorted(folder.glob("*.safetensors")):
            out |= load_file(str(f))
        return out

    a, b = tensors(base), tensors(merged)
    assert set(a) == set(b)
    return {k for k in a if not torch.equal(a[k], b[k])}


def _lora_targets(base: Path) -> set[str]:
    """The base's weights that the tiny preset's LoRA adapts (its target regex on the module name)."""
    import re

    from safetensors import safe_open

    regex = load_preset("tiny").lora.target_regex
    names = set()
    for f in base.glob("*.safetensors"):
        with safe_open(str(f), "pt") as shard:
            names |= set(shard.keys())
    targets = {k for k in names if k.endswith(".weight") and re.fullmatch(regex, k.removesuffix(".weight"))}
    assert targets and not any("visual" in k or k.startswith("mtp") for k in targets)
    return targets


@pytest.fixture(scope="module")
def launched(workspace):
    """`accelerate launch --config_file fsdp-27b.yaml` of `train` on two CPU processes."""
    root, base, data = workspace
    out = root / "launched"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS["fsdp"]),
         "--num_processes", "2", "--main_process_port", "0", "--mixed_precision", "no",
         "-m", "apto_release", "train", "--preset", "tiny", "--base", str(base), "--data", str(data),
         "-o", str(out), "--max-steps", "2"],
        capture_output=True, text=True, env=env, timeout=300, cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = json.loads((root / "launched.run-log.json").read_text())
    return out, proc, log["runs"][-1]


def test_the_fsdp_config_launches_train_on_two_cpu_processes_and_merge_reads_the_adapter(workspace, launched):
    from apto_release.merge.merge import merge

    root, base, _ = workspace
    out, proc, run = launched
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["training"]["world_size"] == 2 and run["world_size"] == 2
    # accelerate 1.15 on CPUs: data parallel, and `train` says so instead of staying silent.
    assert run["strategy"] == "MULTI_CPU"
    assert "FSDP was asked for, but accelerate runs these 2 processes as MULTI_CPU" in proc.stderr
    merged = root / "launched-merged"
    merge(base, out, merged)
    # Exactly the weights LoRA adapted (every targeted projection of the text decoder) changed.
    assert _changed_by_merge(base, merged) == _lora_targets(base)


@pytest.mark.xfail(strict=True, reason="accelerate 1.15 selects FSDP only for GPU distributed types; on CPUs "
                   "AcceleratorState is MULTI_CPU (see docs/training.md). Passes, and fails as strict, once it shards on CPUs.")
def test_the_fsdp_config_shards_on_cpu_processes(launched):
    _, _, run = launched
    assert run["strategy"] == "FSDP2"


FSDP2_SCRIPT = """
import hashlib, sys, torch, torch.distributed as dist
from pathlib import Path
from accelerate.utils import FullyShardedDataParallelPlugin
from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
from peft import LoraConfig, get_peft_model
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from transformers import AutoModelForCausalLM
from apto_release.train.distributed import fsdp_training_config, gather_trainable
from apto_release.train.presets import load_preset

base, out = sys.argv[1], Path(sys.argv[2])
dist.init_process_group("gloo")
rank = dist.get_rank()
lora = load_preset("tiny").lora
torch.manual_seed(0)
model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(
    r=lora.r, lora_alpha=lora.alpha, target_modules=lora.target_regex, task_type="CAUSAL_LM"))
cfg = fsdp_training_config()
plugin = FullyShardedDataParallelPlugin(fsdp_version=cfg["version"], auto_wrap_policy=cfg["auto_wrap_policy"],
                                        transformer_cls_names_to_wrap=cfg["transformer_layer_cls_to_wrap"],
                                        reshard_after_forward=cfg["reshard_after_forward"])
plugin.set_auto_wrap_policy(model)
policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
units = [m for m in model.modules() if policy(m)]
for unit in units:  # bottom-up is not needed: decoder layers do not nest
    fully_shard(unit, reshard_after_forward=plugin.reshard_after_forward)
fully_shard(model, reshard_after_forward=plugin.reshard_after_forward)
trainable = [p for p in model.parameters() if p.requires_grad]
assert all(isinstance(p, DTensor) for p in trainable)
assert any(p.to_local().numel() < p.numel() for p in trainable)  # really sharded
opt = torch.optim.AdamW(trainable, lr=1e-2)
ids = torch.randint(0, 200, (2, 24), generator=torch.Generator().manual_seed(rank))
for _ in range(2):
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward(); opt.step(); opt.zero_grad()
whole = gather_trainable(model)
digest = hashlib.sha256(b"".join(t.float().numpy().tobytes() for t in whole.values())).hexdigest()
(out.parent / f"digest-{rank}").write_text(f"{len(units)} {digest}")
if rank == 0:
    model.save_pretrained(str(out), state_dict=whole)
dist.barrier()
dist.destroy_process_group()
"""


def test_fsdp2_sharded_lora_is_gathered_whole_into_an_adapter_merge_reads(workspace):
    """torch's FSDP2 on two CPU processes (gloo), wrapped as the shipped config says: the adapter
    `train` gathers after sharded training is whole, the same on every rank, and merges."""
    from safetensors.torch import load_file

    from apto_release.merge.merge import merge

    root, base, _ = workspace
    script, out = root / "fsdp2.py", root / "fsdp2-adapter"
    script.write_text(FSDP2_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), str(base), str(out)],
        capture_output=True, text=True, env=env, timeout=240, cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    digests = {(root / f"digest-{r}").read_text() for r in (0, 1)}
    layers = json.loads((base / "config.json").read_text())["text_config"]["num_hidden_layers"]
    assert len(digests) == 1 and digests.pop().startswith(f"{layers} ")
    r = load_preset("tiny").lora.r
    tensors = load_file(str(out / "adapter_model.safetensors"))
    assert tensors and all(t.shape[0] == r for k, t in tensors.items() if "lora_A" in k)
    assert all(t.shape[1] == r for k, t in tensors.items() if "lora_B" in k)
    merged = root / "fsdp2-merged"
    merge(base, out, merged)
    assert _changed_by_merge(base, merged) == _lora_targets(base)
