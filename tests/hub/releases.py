"""A release on disk for the hub tests (both dataset folders, a merged model, its GGUF files and
adapter) and helpers that look at what LocalHub received."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import textwrap
from pathlib import Path

import pytest

from apto_release.dataset.validate import ValidateOptions
from apto_release.errors import InputError, UsageError
from apto_release.hub.push import push
from apto_release.testing.hub import LFS_THRESHOLD

MODEL = "Tiny-Safety"
BIG = bytes(range(256)) * (LFS_THRESHOLD // 256 + 9)  # a little over 1 MiB: goes through LFS


def _card(kind: str) -> str:
    meta = {
        "model": "base_model_relation: finetune\nlibrary_name: transformers\n",
        "gguf": "base_model_relation: quantized\n",
        "adapter": "base_model_relation: adapter\nlibrary_name: peft\n",
    }[kind]
    return (
        "---\nbase_model: Qwen/Qwen3.5-9B\n" + meta
        + "pipeline_tag: text-generation\nlanguage:\n- ja\n- en\nlicense: apache-2.0\ntags:\n- safety\n---\n"
        + f"# {MODEL} ({kind})\n\nA test card.\n"
    )


BUILD_CHECKS = ValidateOptions(near_duplicates=False)  # what 'dataset build' checks

_orgs = itertools.count()


def make_release(root: Path, datasets_src: Path, *, adapter: bool = True, **dataset_overrides) -> Path:
    """A release in ``root``: both dataset folders, a merged model, its GGUF files and adapter; returns the manifest."""
    for name in ("dataset-sample", "dataset-full"):
        shutil.copytree(datasets_src / name, root / name)
    merged = root / "merged"
    merged.mkdir()
    (merged / "config.json").write_text('{"model_type": "qwen3"}\n')
    (merged / "model.safetensors").write_bytes(BIG)
    (merged / "README.md").write_text(_card("model"))
    (merged / ".cache").mkdir()  # hidden: never uploaded
    (merged / ".cache" / "x.lock").write_text("lock")
    (merged / "__pycache__").mkdir()
    (merged / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"\0")
    gguf = root / "gguf"
    gguf.mkdir()
    (gguf / f"{MODEL}-Q4_K_M.gguf").write_bytes(b"GGUF" + bytes(3000))
    (gguf / f"{MODEL}-Q8_0.gguf").write_bytes(b"GGUF" + bytes(range(256)) * 20)
    (gguf / f"{MODEL}-F16.gguf").write_bytes(b"GGUF not listed")  # not in the manifest: not uploaded
    (gguf / "README.md").write_text(_card("gguf"))
    lora = root / "adapter"
    lora.mkdir()
    (lora / "adapter_config.json").write_text('{"r": 8}\n')
    (lora / "adapter_model.safetensors").write_bytes(b"\1" * 5000)
    (lora / "README.md").write_text(_card("adapter"))
    org = f"org{next(_orgs)}"
    sample = {"repo": "ja-safety-sft-40", "folder": "dataset-sample", "private": False, "gated": "auto", "max_rows": 50}
    sample.update(dataset_overrides)
    table = "\n".join(f"{k} = {json.dumps(v)}" for k, v in sample.items())
    manifest = root / "release.toml"
    manifest.write_text(textwrap.dedent(f"""\
        organisation = "{org}"
        version = "1.0.0"
        license = "apache-2.0"

        [dataset.sample]
        {{sample}}

        [dataset.full]
        repo = "ja-safety-sft"
        folder = "dataset-full"
        private = true

        [[model]]
        name = "{MODEL}"
        base_model = "Qwen/Qwen3.5-9B"
        preset = "tiny"
        adapter = "adapter"
        merged = "merged"
        gguf = ["Q4_K_M", "Q8_0"]
        gguf_folder = "gguf"
        push_adapter = {"true" if adapter else "false"}
        """).replace("{sample}", table))
    return manifest


WRITES = r"/commit/|/preupload/|/repos/create|/settings|/tag/|/branch/|/_lfs/|info/lfs"


def _writes(hub):
    return [r for r in hub.requests if r.method in ("PUT", "DELETE") or (r.method == "POST" and re.search(WRITES, r.path))]


def _head_tree(hub, repo_id, repo_type="model") -> dict[str, dict]:
    state = hub.repo_state(repo_id, repo_type)
    return state["commits"][state["branches"]["main"]]["tree"]


def _blobs(hub) -> set[str]:
    return {p.name for p in (hub.root / "blobs").rglob("*") if p.is_file()}


def _not_a_model(release, case):
    merged, adapter = release.models[0].merged, release.models[0].adapter
    if case == "no config.json":
        (merged / "config.json").unlink()
    elif case == "no weights":
        (merged / "model.safetensors").unlink()
    elif case == "a shard the index names is missing":
        (merged / "model.safetensors").rename(merged / "model-00001-of-00002.safetensors")
        (merged / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": {
            "a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors"}}))
    elif case == "only a card":
        for p in merged.iterdir():
            if p.is_file() and p.name != "README.md":
                p.unlink()
    elif case == "an adapter without weights":
        (adapter / "adapter_model.safetensors").unlink()
    elif case == "an adapter without its config":
        (adapter / "adapter_config.json").unlink()


def _assert_nothing_written(hub, release, before_blobs):
    org = release.organisation
    assert _writes(hub) == [] and _blobs(hub) == before_blobs
    for repo_id, repo_type in ((f"{org}/ja-safety-sft-40", "dataset"), (f"{org}/ja-safety-sft", "dataset"),
                               (f"{org}/{MODEL}", "model")):
        with pytest.raises(KeyError):
            hub.repo_state(repo_id, repo_type)  # the first three repos were never created


def _refused_writing_nothing(hub, api, release, match: str | None = None, *, manifest=None) -> UsageError:
    """Push ``manifest`` (default: ``release``): refused (with ``match``) before the first write."""
    hub.clear_requests()
    before = _blobs(hub)
    with pytest.raises(UsageError, match=match) as exc:
        push(manifest or release, api=api, backoff=0)
    _assert_nothing_written(hub, release, before)
    return exc.value


def _refused(hub, manifest, match: str, **kwargs) -> InputError:
    """The push (and its dry run) fail with ``match`` before any request."""
    from huggingface_hub import HfApi

    for dry_run in (True, False):
        hub.clear_requests()
        with pytest.raises(InputError, match=match) as info:
            push(manifest, api=HfApi(endpoint=hub.url, token=hub.token), dry_run=dry_run, backoff=0, **kwargs)
        assert hub.requests == []  # no repo created, no byte uploaded: not even a read
    return info.value
