"""GGUF conversion of the tiny Qwen3.5 (``qwen35``), read back with gguf-py and run by llama.cpp.

The expected tensors are computed here from the safetensors, plainly and independently of the
converter: names written out by hand, ``A = -exp(A_log)``, +1 on the zero-centred norms, value
heads reordered from grouped to tiled order with numpy reshapes.

llama.cpp against transformers: an F32 file (a test-only type: F32 is not a product type) must
match within verify's F32 bound, which is decisive for the conversion itself; F16, BF16, Q8_0 and
Q4_K_M files pass every check of `gguf verify` with its bounds. (That needs the fixture's linear
attention to be conditioned as a trained model's is, see
``apto_release.testing.models._condition_linear_attention``: with independent random query and
key kernels, float16 activations alone moved the logits by 0.04-0.1.)
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")

from safetensors.torch import load_file

from apto_release.errors import InputError, UsageError
from apto_release.gguf import convert as convert_module
from apto_release.gguf import output
from apto_release.gguf.convert import convert
from apto_release.testing.models import QWEN35_SAMPLING, QWEN35_TEXT_CONFIG, build_tiny_qwen3, build_tiny_qwen35

QT = gguf.GGMLQuantizationType
CFG = QWEN35_TEXT_CONFIG
NK, NV = CFG["linear_num_key_heads"], CFG["linear_num_value_heads"]
DK, DV = CFG["linear_key_head_dim"], CFG["linear_value_head_dim"]
N_LAYER = CFG["num_hidden_layers"]
LINEAR = [t == "linear_attention" for t in CFG["layer_types"]]

COMMON = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
FULL = {
    **COMMON,
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
}
LINEAR_ATTN = {
    **COMMON,
    "linear_attn.in_proj_qkv.weight": "attn_qkv.weight",
    "linear_attn.in_proj_z.weight": "attn_gate.weight",
    "linear_attn.in_proj_a.weight": "ssm_alpha.weight",
    "linear_attn.in_proj_b.weight": "ssm_beta.weight",
    "linear_attn.A_log": "ssm_a",
    "linear_attn.dt_bias": "ssm_dt.bias",
    "linear_attn.conv1d.weight": "ssm_conv1d.weight",
    "linear_attn.norm.weight": "ssm_norm.weight",
    "linear_attn.out_proj.weight": "ssm_out.weight",
}
MTP_HEAD = {
    "fc.weight": "nextn.eh_proj.weight",
    "pre_fc_norm_embedding.weight": "nextn.enorm.weight",
    "pre_fc_norm_hidden.weight": "nextn.hnorm.weight",
    "norm.weight": "nextn.shared_head_norm.weight",
}
PLUS_ONE = re.compile(r"(layernorm|q_norm|k_norm|^norm|pre_fc_norm_\w+)\.weight$")


def tiled(x: np.ndarray, head_dim: int, axis: int = 0) -> np.ndarray:
    """Value heads from grouped ([k0: v0..v(r-1), k1: ...]) to tiled ([k0v0, k1v0, ..., k0v1, ...]) order along ``axis``."""
    x = np.moveaxis(x, axis, 0)
    rest = x.shape[1:]
    x = x.reshape(NK, NV // NK, head_dim, *rest).transpose(1, 0, 2, *range(3, 3 + len(rest))).reshape(NV * head_dim, *rest)
    return np.moveaxis(x, 0, axis)


def checkpoint_tensors(model_dir: Path) -> dict[str, np.ndarray]:
    out = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        out.update({k: v.float().numpy() for k, v in load_file(shard).items()})
    return out


def expected_tensors(model_dir: Path, *, mtp: bool) -> dict[str, np.ndarray]:
    """GGUF name -> expected float32 values (before rounding to the file's type)."""
    src = checkpoint_tensors(model_dir)
    prefix = "model.language_model." if any(k.startswith("model.language_model.") for k in src) else "model."
    out = {
        "token_embd.weight": src[prefix + "embed_tokens.weight"],
        "output_norm.weight": src[prefix + "norm.weight"] + 1,
        "output.weight": src["lm_head.weight"],
    }
    qk = 2 * NK * DK

    def block(bid: int, hf: str, table: dict[str, str], linear: bool) -> None:
        for leaf, name in table.items():
            x = src[f"{hf}{leaf}"]
            if PLUS_ONE.search(leaf):
                x = x + 1
            if linear:
                if leaf.endswith("in_proj_qkv.weight"):
                    x = np.concatenate([x[:qk], tiled(x[qk:], DV)])
                elif leaf.endswith("in_proj_z.weight"):
                    x = tiled(x, DV)
                elif leaf.endswith(("in_proj_a.weight", "in_proj_b.weight", "dt_bias")):
                    x = tiled(x, 1)
                elif leaf.endswith("A_log"):
                    x = -np.exp(tiled(x, 1))
                elif leaf.endswith("conv1d.weight"):
                    x = x[:, 0, :]
                    x = np.concatenate([x[:qk], tiled(x[qk:], DV)])
                elif leaf.endswith("out_proj.weight"):
                    x = tiled(x, DV, axis=1)
            out[f"blk.{bid}.{name}"] = x

    for bid in range(N_LAYER):
        block(bid, f"{prefix}layers.{bid}.", LINEAR_ATTN if LINEAR[bid] else FULL, LINEAR[bid])
    if mtp:
        block(N_LAYER, "mtp.layers.0.", FULL, False)
        for leaf, name in MTP_HEAD.items():
            x = src[f"mtp.{leaf}"]
            out[f"blk.{N_LAYER}.{name}"] = x + 1 if "norm" in leaf else x
    return out


def fields(reader) -> dict:
    return {k: f.contents() for k, f in reader.fields.items()}


def dequantized(t) -> np.ndarray:
    """A GGUFReader tensor's values as float32, in torch shape."""
    shape = tuple(int(d) for d in reversed(t.shape))
    if t.tensor_type in (QT.F32, QT.F16):
        return np.asarray(t.data, dtype=np.float32).reshape(shape)
    return gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape)


# ---------------------------------------------------------------------------------------------
# Fixtures, built once per module


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("qwen35")
    return {
        "vision": build_tiny_qwen35(root / "TinyQwen35", vision=True, mtp=True),
        "text": build_tiny_qwen35(root / "TinyQwen35Text", vision=False, mtp=False, num_shards=2, dtype="bfloat16"),
        "bf16": build_tiny_qwen35(root / "TinyQwen35BF16", vision=True, mtp=True, dtype="bfloat16", num_shards=2),
    }


@pytest.fixture(scope="module")
def outputs(models, tmp_path_factory) -> dict[tuple[str, str], Path]:
    out = tmp_path_factory.mktemp("gguf")
    files = {}
    for kind in ("vision", "text", "bf16"):
        for quant in ("F16", "BF16", "Q8_0"):
            files[kind, quant] = convert(models[kind], out / kind, quant=quant).path
    return files


@pytest.fixture(scope="module")
def references(models) -> dict:
    pytest.importorskip("llama_cpp")
    from apto_release.gguf.verify import load_reference

    return {kind: load_reference(models[kind]) for kind in ("vision", "text", "bf16")}


# ---------------------------------------------------------------------------------------------
# The file, read back


def test_tensors_names_shapes_types_values(models, outputs):
    expected = expected_tensors(models["vision"], mtp=True)
    reader = gguf.GGUFReader(outputs["vision", "F16"])
    got = {t.name: t for t in reader.tensors}
    assert set(got) == set(expected)
    assert not [n for n in got if "visual" in n or n.startswith(("v.", "mm."))]
    for name, want in expected.items():
        t = got[name]
        assert tuple(int(d) for d in reversed(t.shape)) == want.shape, name
        f32 = want.ndim == 1 or name.endswith(("_norm.weight", "ssm_conv1d.weight"))
        assert t.tensor_type == (QT.F32 if f32 else QT.F16), name
        value = dequantized(t)
        if f32:
            np.testing.assert_allclose(value, want, rtol=1e-6, atol=1e-7, err_msg=name)
        else:
            np.testing.assert_array_equal(value, want.astype(np.float16).astype(np.float32), err_msg=name)


def test_value_heads_really_move():
    """The test's own reorder: head j*NK + g of the output is head g*(NV/NK) + j of the checkpoint."""
    x = np.repeat(np.arange(NV), 3)  # head ids, head_dim 3
    np.testing.assert_array_equal(tiled(x, 3)[::3], [g * (NV // NK) + j for j in range(NV // NK) for g in range(NK)])
    assert NV > NK  # the fixture exercises the reorder


def test_metadata(outputs):
    kv = fields(gguf.GGUFReader(outputs["vision", "F16"]))
    assert kv["general.architecture"] == "qwen35"
    assert kv["general.name"] == "TinyQwen35"
    assert kv["general.file_type"] == 1
    assert kv["qwen35.block_count"] == N_LAYER + 1
    assert kv["qwen35.nextn_predict_layers"] == 1
    assert kv["qwen35.context_length"] == CFG["max_position_embeddings"]
    assert kv["qwen35.embedding_length"] == CFG["hidden_size"]
    assert kv["qwen35.feed_forward_length"] == CFG["intermediate_size"]
    assert kv["qwen35.attention.head_count"] == CFG["num_attention_heads"]
    assert kv["qwen35.attention.head_count_kv"] == CFG["num_key_value_heads"]
    assert kv["qwen35.attention.key_length"] == kv["qwen35.attention.value_length"] == CFG["head_dim"]
    assert kv["qwen35.attention.layer_norm_rms_epsilon"] == pytest.approx(CFG["rms_norm_eps"])
    assert kv["qwen35.rope.freq_base"] == pytest.approx(CFG["rope_parameters"]["rope_theta"])
    assert kv["qwen35.rope.dimension_count"] == CFG["head_dim"] * CFG["rope_parameters"]["partial_rotary_factor"] == 16
    assert kv["qwen35.rope.dimension_sections"] == [3, 3, 2, 0]
    assert kv["qwen35.ssm.conv_kernel"] == CFG["linear_conv_kernel_dim"]
    assert kv["qwen35.ssm.state_size"] == DK
    assert kv["qwen35.ssm.group_count"] == NK
    assert kv["qwen35.ssm.time_step_rank"] == NV
    assert kv["qwen35.ssm.inner_size"] == NV * DV
    assert kv["qwen35.attention.recurrent_layers"] == [*LINEAR, False]
    assert kv["qwen35.full_attention_interval"] == CFG["full_attention_interval"]
    assert kv["tokenizer.ggml.pre"] == "qwen35"
    # generation_config.json's sampling defaults, as llama.cpp's tools take them
    assert kv["general.sampling.temp"] == pytest.approx(QWEN35_SAMPLING["temperature"])
    assert kv["general.sampling.top_k"] == QWEN35_SAMPLING["top_k"]
    assert kv["general.sampling.top_p"] == pytest.approx(QWEN35_SAMPLING["top_p"])
    assert not [k for k in kv if k.startswith("general.sampling.") and k.split(".")[-1] not in ("temp", "top_k", "top_p")]


def test_text_only_without_mtp(models, outputs):
    expected = expected_tensors(models["text"], mtp=False)
    reader = gguf.GGUFReader(outputs["text", "F16"])
    kv = fields(reader)
    assert kv["qwen35.block_count"] == N_LAYER
    assert "qwen35.nextn_predict_layers" not in kv
    assert kv["qwen35.attention.recurrent_layers"] == LINEAR
    got = {t.name: t for t in reader.tensors}
    assert set(got) == set(expected)
    for name in ("blk.0.ssm_a", "blk.1.attn_qkv.weight", "blk.2.ssm_out.weight", "blk.3.attn_q_norm.weight"):
        np.testing.assert_allclose(dequantized(got[name]), expected[name], rtol=1e-3, atol=1e-3, err_msg=name)


def test_bfloat16_checkpoint(models, outputs):
    expected = expected_tensors(models["bf16"], mtp=True)
    reader = gguf.GGUFReader(outputs["bf16", "BF16"])
    got = {t.name: t for t in reader.tensors}
    assert set(got) == set(expected)
    for name, want in expected.items():
        t = got[name]
        if t.tensor_type == QT.BF16:  # a bfloat16 value stored as BF16: exact
            np.testing.assert_array_equal(dequantized(t), want, err_msg=name)
        else:
            assert t.tensor_type == QT.F32, name
            np.testing.assert_allclose(dequantized(t), want, rtol=1e-6, err_msg=name)


def test_q8_0_types(outputs):
    reader = gguf.GGUFReader(outputs["vision", "Q8_0"])
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["blk.0.ssm_conv1d.weight"] == types["blk.0.ssm_a"] == types["blk.0.ssm_norm.weight"] == QT.F32
    assert types["blk.0.ssm_dt.bias"] == types["blk.3.attn_q_norm.weight"] == QT.F32
    assert types["blk.0.attn_qkv.weight"] == types["blk.0.ssm_alpha.weight"] == types["blk.4.nextn.eh_proj.weight"] == QT.Q8_0


# ---------------------------------------------------------------------------------------------
# MTP: all or nothing


def test_mtp_left_out_on_request(models, tmp_path):
    result = convert(models["vision"], tmp_path, mtp=False)
    reader = gguf.GGUFReader(result.path)
    kv = fields(reader)
    assert kv["qwen35.block_count"] == N_LAYER and "qwen35.nextn_predict_layers" not in kv
    assert kv["qwen35.attention.recurrent_layers"] == LINEAR
    assert not [t.name for t in reader.tensors if t.name.startswith(f"blk.{N_LAYER}.")]
    assert set(t.name for t in reader.tensors) == set(expected_tensors(models["vision"], mtp=False))


def test_mtp_true_without_mtp_tensors(models, tmp_path):
    with pytest.raises(UsageError, match="mtp"):
        convert(models["text"], tmp_path / "out", mtp=True)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    convert(models["text"], tmp_path / "ok", mtp=None)  # none present: left out


def _drop_tensor(model_dir: Path, dest: Path, name: str) -> Path:
    """A copy of ``model_dir`` without tensor ``name`` (shard rewritten, index updated)."""
    from safetensors.torch import save_file

    shutil.copytree(model_dir, dest)
    index_path = dest / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shard = dest / index["weight_map"].pop(name)
    tensors = load_file(shard)
    del tensors[name]
    save_file(tensors, shard, metadata={"format": "pt"})
    index_path.write_text(json.dumps(index))
    return dest


def test_partial_mtp_is_refused(models, tmp_path):
    model = _drop_tensor(models["vision"], tmp_path / "m", "mtp.layers.0.self_attn.k_norm.weight")
    with pytest.raises(InputError, match=r"mtp\.layers\.0\.self_attn\.k_norm\.weight") as info:
        convert(model, tmp_path / "out")
    assert "mtp=False" in info.value.hint and "--no-mtp" in info.value.hint
    with pytest.raises(InputError, match="k_norm"):
        convert(model, tmp_path / "out", mtp=True)
    assert not list((tmp_path / "out").iterdir()) if (tmp_path / "out").exists() else True
    result = convert(model, tmp_path / "out", mtp=False)
    assert fields(gguf.GGUFReader(result.path))["qwen35.block_count"] == N_LAYER


def test_missing_main_tensor_is_named(models, tmp_path):
    model = _drop_tensor(models["vision"], tmp_path / "m", "model.language_model.layers.1.linear_attn.dt_bias")
    with pytest.raises(InputError, match=r"layers\.1\.linear_attn\.dt_bias"):
        convert(model, tmp_path / "out", mtp=False)


def test_unknown_tensor_in_a_linear_layer(models, tmp_path):
    from apto_release.gguf.qwen35 import Qwen35Spec

    config = json.loads((models["vision"] / "config.json").read_text())
    spec = Qwen35Spec("Qwen3_5ForConditionalGeneration", config, models["vision"] / "config.json", [])
    with pytest.raises(InputError, match="self_attn.q_proj.weight' in a linear-attention layer"):
        spec.rule("model.language_model.layers.0.self_attn.q_proj.weight", (512, 64))
    with pytest.raises(InputError, match="block 7"):
        spec.rule("model.language_model.layers.7.mlp.up_proj.weight", (128, 64))
    assert spec.rule("model.visual.blocks.0.attn.qkv.weight", (96, 32)) is None
    with pytest.raises(InputError, match="shape"):
        spec.rule("model.language_model.layers.0.linear_attn.in_proj_z.weight", (32, 64))


def test_other_architecture_still_named(models, tmp_path):
    model = tmp_path / "m"
    shutil.copytree(models["text"], model)
    config = json.loads((model / "config.json").read_text())
    config["architectures"] = ["Qwen3_5MoeForCausalLM"]
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(UsageError, match="Qwen3_5MoeForCausalLM.*Qwen3_5ForConditionalGeneration"):
        convert(model, tmp_path / "out")


# ---------------------------------------------------------------------------------------------
# Split sets


@pytest.mark.parametrize("family", ["qwen3", "qwen35"])
def test_split_set(models, tmp_path, family):
    model = models["vision"] if family == "qwen35" else build_tiny_qwen3(tmp_path / "TinyQwen3")
    single = convert(model, tmp_path / "one", quant="F16")
    split = convert(model, tmp_path / "split", quant="F16", split_max_size=200_000)
    n = len(split.paths)
    assert n > 1
    stem = single.path.name.removesuffix(".gguf")
    assert [p.name for p in split.paths] == output.split_names(stem, n) == [f"{stem}-{i:05d}-of-{n:05d}.gguf" for i in range(1, n + 1)]
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == [p.name for p in split.paths]
    assert split.bytes == sum(p.stat().st_size for p in split.paths)
    assert split.tensors == single.tensors
    readers = [gguf.GGUFReader(p) for p in split.paths]
    names = []
    for i, reader in enumerate(readers):
        kv = fields(reader)
        assert kv["split.no"] == i and kv["split.count"] == n and kv["split.tensors.count"] == single.tensors
        assert ("general.architecture" in kv) == ("tokenizer.ggml.tokens" in kv) == (i == 0)  # metadata: first file only
        names += [t.name for t in reader.tensors]
        assert reader.tensors
    whole = {t.name: t for t in gguf.GGUFReader(single.path).tensors}
    assert names == list(whole)
    for reader in readers:
        for t in reader.tensors:
            np.testing.assert_array_equal(np.asarray(t.data), np.asarray(whole[t.name].data))
    kv0, kv1 = fields(readers[0]), fields(gguf.GGUFReader(single.path))
    assert {k: v for k, v in kv0.items() if not k.startswith(("split.", "GGUF."))} == {k: v for k, v in kv1.items() if not k.startswith("GGUF.")}

    # overwrite: the split set is replaced by a single file only with overwrite
    with pytest.raises(UsageError, match="exists"):
        convert(model, tmp_path / "split", quant="F16")
    again = convert(model, tmp_path / "split", quant="F16", overwrite=True)
    assert [p.name for p in (tmp_path / "split").iterdir()] == [again.path.name]


def test_split_set_loads_in_llama_cpp(models, references, tmp_path):
    """llama.cpp loads the set from its first file and computes the unsplit file's logits."""
    import math
    import tempfile

    from apto_release.gguf import verify as verify_module

    ref = references["vision"]
    single = convert(models["vision"], tmp_path / "one", quant="F16")
    split = convert(models["vision"], tmp_path / "split", quant="F16", split_max_size=200_000)
    assert len(split.paths) > 2
    logits = []
    for path in (single.path, split.path):
        request = {
            "path": str(path), "threads": 2, "n_ctx": 256, "texts": ref.texts[:1], "conversations": ref.conversations[:1],
            "sequences": ref.prompt_ids[1:2], "eot_id": ref.eot_id, "eot_prompt": ref.prompt_ids[1],
        }
        assert len(ref.prompt_ids[1]) + 16 <= request["n_ctx"] and math.isfinite(request["n_ctx"])
        with tempfile.TemporaryDirectory() as workdir:
            run = verify_module._run_worker(request, Path(workdir), None)
            assert not run.failure("logits"), run.failure("logits")
            logits.append(np.load(Path(workdir) / run.stages["logits"]["files"][0]))
    np.testing.assert_array_equal(logits[0], logits[1])
    report = verify_module.verify(split.path, ref)
    assert [c.name for c in report.checks if not c.passed] in ([], ["logits"]), report.to_text()


# ---------------------------------------------------------------------------------------------
# llama.cpp against transformers


@pytest.mark.parametrize("kind", ["vision", "text"])
def test_llama_cpp_matches_transformers_f32(models, references, tmp_path, monkeypatch, kind):
    """The decisive check of the conversion: an F32 file within verify's F32 bound (max|Δ| ≤ 1e-3·max(1,σ), NMSE ≤ 1e-6)."""
    from apto_release.gguf.verify import verify

    monkeypatch.setitem(convert_module.QUANT_TYPES, "F32", (QT.F32, gguf.LlamaFileType.ALL_F32))
    result = convert(models[kind], tmp_path, quant="F32")
    report = verify(result.path, references[kind])
    assert report.ok, report.to_text()


@pytest.mark.parametrize("quant", ["F16", "BF16", "Q8_0"])
@pytest.mark.parametrize("kind", ["bf16", "text"])
def test_llama_cpp_passes_verify(outputs, references, kind, quant):
    """Every check of `gguf verify`, for both layouts, from bfloat16 checkpoints as the real ones are."""
    from apto_release.gguf.verify import verify

    report = verify(outputs[kind, quant], references[kind])
    assert report.ok, report.to_text()


def test_float32_checkpoint_f16_runs(outputs, references):
    """Weights stored in float32 are rounded once more to float16. Its max|Δ| sits at F16's bound
    (0.01 measured here; CPU kernels may round differently), so the looser measures are asserted."""
    from apto_release.gguf.verify import verify

    report = verify(outputs["vision", "F16"], references["vision"])
    assert {c.name for c in report.checks if not c.passed} <= {"logits"}, report.to_text()
    logits = next(c for c in report.checks if c.name == "logits")
    assert logits.measured["nmse"] <= 1e-4 and logits.measured["decisive_disagreements"] == 0, report.to_text()


def test_q4_k_m_of_a_wide_qwen35_passes_verify(tmp_path):
    """Real K-quant blocks (hidden size 256: rows split into 256-value super-blocks) run in llama.cpp."""
    from apto_release.gguf.quantize import quantize
    from apto_release.gguf.verify import verify

    model = build_tiny_qwen35(tmp_path / "Wide", vision=False, mtp=False, dtype="bfloat16", config={"hidden_size": 256, "intermediate_size": 512})
    f16 = convert(model, tmp_path / "out", quant="F16")
    q4 = quantize(f16.path, tmp_path / "out", "Wide-Q4_K_M", "Q4_K_M")
    assert q4.tensor_types.get("Q4_K", 0) >= 8, q4.tensor_types
    report = verify(q4.path, model)
    assert report.ok, report.to_text()
    sampling = next(c for c in report.checks if c.name == "sampling defaults")  # llama.cpp's quantizer kept them
    assert sampling.measured["read"] == {"temp": "1.000000", "top_k": "20", "top_p": "0.950000"}, sampling.measured


def test_verify_fails_sampling_defaults_that_differ_from_the_checkpoint(outputs, references):
    """The file's general.sampling.* keys against the checkpoint's generation_config.json, read back by llama.cpp."""
    import dataclasses

    from apto_release.gguf.verify import verify

    other = dataclasses.replace(references["text"], sampling={"temp": 0.7, "top_k": 20, "min_p": 0.05})
    report = verify(outputs["text", "BF16"], other)
    assert [c.name for c in report.failed] == ["sampling defaults"], report.to_text()
    detail = report.failed[0].detail
    assert "general.sampling.temp is 1.000000, not 0.7" in detail and "reads no general.sampling.min_p" in detail
    assert "general.sampling.top_p is 0.950000, and the checkpoint has none" in detail
