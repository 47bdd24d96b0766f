"""The training summary (``training_summary.json``) as a typed record: the trainer writes it, the cards read it.

The file is published with the adapter: the preset and its final settings, the data file's name,
hash and record count, token statistics per category, the loss history, the records each rank
trained on, the kernels it ran on (``train.kernels``) and the library versions. ``TrainingSummary`` keeps the whole file (``raw``, written
as is) and the values the cards show, checked when the record is made.

Nothing heavy is imported here: the trainer imports this module at load time, and so do the cards.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apto_release.errors import InputError

SUMMARY_NAME = "training_summary.json"
LOSS_CURVE_NAME = "loss_curve.png"


@dataclass(frozen=True)
class TrainingSummary:
    """``training_summary.json``: the whole file in ``raw``, and what the cards show of it."""

    raw: Mapping[str, Any]
    preset: str
    config: Mapping[str, Any]
    data_sha256: str
    records: int
    categories: list[dict[str, Any]]  # name, records, kept, tokens, trained_tokens
    toolkit_version: str | None
    path: Path | None = None  # the file it was read from (None: not read from a file)
    loss_curve: Path | None = None  # the adapter's loss_curve.png, where there is one
    #: Device and Gated DeltaNet / causal-conv1d / Liger implementations (``KernelReport.record``);
    #: None for a summary written before they were recorded.
    kernels: Mapping[str, Any] | None = None

    def setting(self, key: str, default: Any = None) -> Any:
        return self.config.get(key, default)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, path: Path | None = None, loss_curve: Path | None = None) -> TrainingSummary:
        """The record of a summary's contents, checked for every value the cards show.

        Raises:
            InputError: a value the cards show is missing or of the wrong type (naming ``path``).
        """

        def need(container: Any, key: str, where: str, kind: type | tuple[type, ...]) -> Any:
            if not isinstance(container, Mapping) or key not in container:
                raise InputError(f"the training summary has no '{where}'", path=path, field=where)
            value = container[key]
            if not isinstance(value, kind) or isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
                raise InputError(f"the training summary's '{where}' is {value!r}", path=path, field=where)
            return value

        preset = need(raw, "preset", "preset", str)
        config = need(raw, "config", "config", dict)
        # A list in the file; the trainer's settings hold a tuple until they are written as JSON.
        for key, kind in (("lora.r", int), ("lora.alpha", (int, float)), ("lora.target_modules", (list, tuple)),
                          ("train.learning_rate", (int, float)), ("train.epochs", (int, float))):
            need(config, key, f"config.{key}", kind)
        data = need(raw, "data", "data", dict)
        sha = need(data, "sha256", "data.sha256", str)
        if not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise InputError(f"the training summary's 'data.sha256' is not a SHA-256: {sha!r}", path=path, field="data.sha256")
        records = need(data, "records", "data.records", int)
        per_category = need(need(raw, "tokens", "tokens", dict), "per_category", "tokens.per_category", dict)
        categories = []
        for name, stats in per_category.items():
            if not isinstance(stats, Mapping):
                raise InputError(f"the training summary's 'tokens.per_category.{name}' is not an object", path=path, field=f"tokens.per_category.{name}")
            n = int(stats.get("records", 0))
            categories.append({
                "name": name,
                "records": n,
                "kept": int(stats.get("kept", n - int(stats.get("over_length", 0)))),
                "tokens": int(stats.get("tokens", 0)),
                "trained_tokens": int(stats.get("trained_tokens", 0)),
            })
        kernels = raw.get("kernels")
        if kernels is not None and not isinstance(kernels, Mapping):
            raise InputError(f"the training summary's 'kernels' is {kernels!r}", path=path, field="kernels")
        return cls(
            raw=raw, preset=preset, config=config, data_sha256=sha, records=records, categories=categories,
            toolkit_version=raw.get("apto_release_version") if isinstance(raw.get("apto_release_version"), str) else None,
            path=path, loss_curve=loss_curve, kernels=kernels,
        )

    def to_json(self) -> str:
        """The file's text: the whole record, UTF-8 (not ASCII-escaped), indented by two."""
        return json.dumps(self.raw, ensure_ascii=False, indent=2) + "\n"

    def write(self, folder: str | Path) -> Path:
        """Write ``training_summary.json`` into ``folder`` (the trainer's temporary output folder)."""
        path = Path(folder) / SUMMARY_NAME
        path.write_text(self.to_json(), "utf-8")
        return path


def load_training_summary(adapter_dir: str | Path) -> TrainingSummary:
    """Read the adapter's ``training_summary.json`` (written by ``apto-release train``).

    Raises:
        InputError: the file is missing, not JSON, or lacks a value the cards show.
    """
    from apto_release.io import read_json_object

    adapter_dir = Path(adapter_dir)
    path = adapter_dir / SUMMARY_NAME
    if not path.is_file():
        raise InputError(
            f"no {SUMMARY_NAME} in the adapter folder", path=adapter_dir,
            hint="give the folder 'apto-release train' wrote (the manifest's 'adapter')",
        )
    raw = read_json_object(path, "the training summary")
    curve = adapter_dir / LOSS_CURVE_NAME
    return TrainingSummary.from_dict(raw, path=path, loss_curve=curve if curve.is_file() else None)
