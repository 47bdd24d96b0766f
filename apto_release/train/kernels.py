"""Which Gated DeltaNet and causal-conv1d kernels a Qwen3.5 run would use, and the checks built on it.

transformers' Qwen3.5 picks each op once, when ``modeling_qwen3_5`` is imported
(``integrations.hub_kernels.use_kernel_func_from_hub_with_fallback``): it imports the package,
looks the function up, and on any failure keeps its PyTorch reference ("This is correct but much
slower"). ``kernel_report`` makes the same look-ups; ``preflight`` refuses what cannot run well.
Why and how to install the fast path: docs/training.md.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass
from typing import Any

from apto_release.errors import UsageError

#: The ops of Qwen3.5's Gated DeltaNet layers that transformers routes to a package when it can
#: (transformers 5.24, models/qwen3_5/modeling_qwen3_5.py, each decorated with
#: ``use_kernel_func_from_hub_with_fallback(op, package)``), with the submodule it looks in when the
#: package's root does not export the op (hub_kernels' ``_KERNELS_INTERNAL_PATH_MAPPINGS``).
FAST_OPS: tuple[tuple[str, str, str | None], ...] = (
    ("chunk_gated_delta_rule", "fla", "ops.gated_delta_rule"),
    ("fused_recurrent_gated_delta_rule", "fla", "ops.gated_delta_rule"),
    ("causal_conv1d_fn", "causal_conv1d", None),
    ("causal_conv1d_update", "causal_conv1d", None),
)
#: Import name -> the distributions that install it (fla's ops come from fla-core, which
#: flash-linear-attention pins; transformers names flash-linear-attention in its warning).
DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "fla": ("flash-linear-attention", "fla-core"),
    "causal_conv1d": ("causal-conv1d",),
    "liger_kernel": ("liger-kernel",),
}
#: What each package does for a run, as the dry run and the summary name it.
ROLES = {"fla": "gated_deltanet", "causal_conv1d": "causal_conv1d"}
INSTALL = "pip install -c constraints.txt '.[gpu]'"
#: transformers' own floor for ``use_liger_kernel`` (``utils.import_utils.is_liger_kernel_available``).
LIGER_MIN_VERSION = "0.3.0"


@dataclass(frozen=True)
class OpChoice:
    """One op: whether transformers would use the package's kernel, and if not, why."""

    op: str
    package: str  # the import name (fla, causal_conv1d)
    fast: bool
    version: str | None  # the package's version when it imports
    problem: str | None = None  # why the PyTorch fallback is used ("not installed", an import error)

    @property
    def distribution(self) -> str:
        return DISTRIBUTIONS[self.package][0]


@dataclass(frozen=True)
class KernelReport:
    """The kernels a run on this machine would use (``kernel_report``)."""

    device: str  # "cuda" or "cpu": where the Trainer puts the model
    ops: tuple[OpChoice, ...]
    liger_version: str | None  # liger-kernel's version when transformers would accept it

    @property
    def fast(self) -> bool:
        """Every op has its fast kernel."""
        return all(o.fast for o in self.ops)

    def package_fast(self, package: str) -> bool:
        return all(o.fast for o in self.ops if o.package == package)

    @property
    def missing(self) -> list[str]:
        """The distributions whose kernels are not used, each once, in ``FAST_OPS`` order."""
        return list(dict.fromkeys(o.distribution for o in self.ops if not o.fast))

    def implementation(self, package: str) -> str:
        """``flash-linear-attention 0.6.0`` or ``torch`` (the PyTorch fallback) for a package's ops."""
        ops = [o for o in self.ops if o.package == package]
        if all(o.fast for o in ops):
            return f"{ops[0].distribution} {ops[0].version}" if ops[0].version else ops[0].distribution
        return "torch"

    def describe(self) -> str:
        """One line: the device and, per role, the implementation (and why it is the fallback)."""
        parts = []
        for package, role in ROLES.items():
            name = "Gated DeltaNet" if role == "gated_deltanet" else "causal conv1d"
            impl = self.implementation(package)
            if impl == "torch":
                problem = next(o.problem for o in self.ops if o.package == package and not o.fast)
                impl = f"PyTorch fallback ({problem})"
            parts.append(f"{name}: {impl}")
        return f"on {self.device}: " + "; ".join(parts)

    def record(self, *, liger: bool = False) -> dict[str, Any]:
        """What ``training_summary.json`` keeps under ``kernels`` (stable across runs on alike machines)."""
        return {
            "device": self.device,
            **{role: self.implementation(package) for package, role in ROLES.items()},
            "liger_kernel": f"liger-kernel {self.liger_version}" if liger and self.liger_version else None,
        }


def _version(package: str, module: Any = None) -> str | None:
    for dist in DISTRIBUTIONS.get(package, (package,)):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    version = getattr(module, "__version__", None)
    return str(version) if version is not None else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _look_up(op: str, package: str, internal: str | None) -> OpChoice:
    """transformers' look-up of one op (``use_kernel_func_from_hub_with_fallback``): the op on the
    package's root, then along ``internal``, then in the imported submodule; any exception on the
    way means the PyTorch fallback."""
    try:
        module = importlib.import_module(package)
    except ModuleNotFoundError as exc:
        if exc.name == package:
            return OpChoice(op, package, False, None, f"{DISTRIBUTIONS[package][0]} not installed")
        return OpChoice(op, package, False, None, f"{package} does not import: {_first_line(exc)}")
    except Exception as exc:  # transformers catches everything here, and so must the check
        return OpChoice(op, package, False, None, f"{package} does not import: {_first_line(exc)}")
    version = _version(package, module)
    try:
        found = getattr(module, op, None)
        if found is None and internal:
            found = module
            for part in f"{internal}.{op}".split("."):
                found = getattr(found, part, None)
                if found is None:
                    break
            if found is None:
                found = getattr(importlib.import_module(f"{package}.{internal}"), op, None)
    except Exception as exc:
        return OpChoice(op, package, False, version, f"{package}.{internal} does not import: {_first_line(exc)}")
    if found is None:
        return OpChoice(op, package, False, version, f"{package} {version} has no {op}")
    return OpChoice(op, package, True, version)


def _liger_version() -> str | None:
    """liger-kernel's version if transformers' Trainer would accept it (installed, at least 0.3.0)."""
    from importlib.util import find_spec

    from packaging import version

    if find_spec("liger_kernel") is None:
        return None
    found = _version("liger_kernel")
    try:
        return found if found and version.parse(found) >= version.parse(LIGER_MIN_VERSION) else None
    except version.InvalidVersion:
        return None


def kernel_report() -> KernelReport:
    """Which Gated DeltaNet and causal-conv1d kernels a run on this machine would use.

    The device is the Trainer's (CUDA when torch sees a GPU). Importing the packages is what
    transformers does when it loads Qwen3.5, so the check costs what the run would cost anyway.
    """
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return KernelReport(device=device, ops=tuple(_look_up(*entry) for entry in FAST_OPS), liger_version=_liger_version())


def check_kernels(report: KernelReport, *, allow_slow: bool = False) -> None:
    """Refuse a CUDA run whose Gated DeltaNet layers would fall back to PyTorch (unless ``allow_slow``).

    On CPU the fallback is the only path, and nothing is refused.

    Raises:
        UsageError: on CUDA, a fast kernel is missing and ``allow_slow`` is false.
    """
    if report.device != "cuda" or report.fast or allow_slow:
        return
    problems = "; ".join(dict.fromkeys(o.problem or "" for o in report.ops if not o.fast))
    raise UsageError(
        f"Qwen3.5's Gated DeltaNet layers would run on transformers' PyTorch fallback on this CUDA machine "
        f"({problems}), several times slower and with more memory; install the kernels with {INSTALL}",
        hint="or pass --allow-slow-kernels to train on the fallback anyway",
    )


def check_liger(config, report: KernelReport) -> None:
    """Refuse ``train.liger_kernel = true`` where transformers' Trainer could not apply it.

    Raises:
        UsageError: liger-kernel is not installed (or older than the Trainer accepts), or no GPU.
    """
    if not config.train.liger_kernel:
        return
    off = "or --set train.liger_kernel=false"
    if report.liger_version is None:
        raise UsageError(
            f"train.liger_kernel = true needs liger-kernel >= {LIGER_MIN_VERSION}, which is not installed; "
            f"install it with {INSTALL} on a CUDA machine", hint=off,
        )
    if report.device != "cuda":
        raise UsageError("train.liger_kernel = true needs a CUDA GPU: Liger's kernels are Triton GPU kernels", hint=off)


def check_packing(config, report: KernelReport) -> None:
    """Refuse ``data.packing = true``: several samples in one row would share Gated DeltaNet state.

    Raises:
        UsageError: always when packing is asked for; the reason depends on whether fla is there.
    """
    if not config.data.packing:
        return
    if not report.package_fast("fla"):
        reason = (
            "without flash-linear-attention, Qwen3.5's Gated DeltaNet runs on transformers' PyTorch fallback, "
            "which cannot take cu_seqlens: the recurrent state (and the causal conv's window) would carry "
            "from one packed sample into the next"
        )
    else:
        reason = (
            "apto-release does not implement it: flash-linear-attention could keep packed samples apart "
            "with cu_seqlens, but this toolkit's collator pads each batch and builds no packed rows"
        )
    raise UsageError(f"data.packing = true is refused for Qwen3.5: {reason}",
                     hint="--set data.packing=false (batches are padded to their longest record)")


def preflight(config, *, allow_slow: bool = False) -> KernelReport:
    """The kernel report for a run with ``config``, after every check that refuses it.

    Raises:
        UsageError: see ``check_packing``, ``check_liger`` and ``check_kernels``.
    """
    report = kernel_report()
    check_packing(config, report)
    check_liger(config, report)
    check_kernels(report, allow_slow=allow_slow)
    return report
