"""The training dry run: what a run would train on, computed without training (``train --dry-run``).

Reads and validates the records, loads only the tokenizer, and returns the token counts per
category, one masked example per category and the kernels a run on this machine would use
(refusing packing, which no machine runs); the CLI renders them with the resolved config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from apto_release.train.collate import (
    MaskedExample,
    TokenStatistics,
    load_tokenizer,
    masked_examples,
    read_training_records,
    token_statistics,
)

if TYPE_CHECKING:
    from apto_release.train.kernels import KernelReport


@dataclass(frozen=True)
class TrainingPreview:
    """What ``preview_training`` found: the records read, their token counts, the examples."""

    records: int
    statistics: TokenStatistics
    examples: list[MaskedExample]
    kernels: KernelReport | None = None  # which Gated DeltaNet / causal-conv1d kernels a run would use


def preview_training(config, *, base: str | Path, data: str | Path, begin: str, end: str) -> TrainingPreview:
    """The dry run of a training run with ``config`` (a ``TrainConfig``) on ``data`` from ``base``.

    ``examples`` are the first record of each category, trained text between ``begin`` and ``end``
    (see ``collate.masked_examples``). Nothing is written.

    Raises:
        UsageError: ``data.packing = true`` (``train.kernels.check_packing``). What depends on the
            machine (slow kernels, Liger) is reported in ``kernels``, not refused: a dry run on a
            laptop checks a GPU run.
        ValidationFailed: the data file has validation errors (checked before the tokenizer loads).
        InputError: the tokenizer cannot be loaded from ``base``.
    """
    from apto_release.train.kernels import check_packing, kernel_report

    kernels = kernel_report()
    check_packing(config, kernels)
    records = read_training_records(data)
    tokenizer = load_tokenizer(base)
    return TrainingPreview(
        records=len(records),
        statistics=token_statistics(records, tokenizer, config),
        examples=masked_examples(records, tokenizer, config, begin=begin, end=end),
        kernels=kernels,
    )
