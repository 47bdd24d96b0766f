"""The release's Hub repos: which repos a manifest names (``Target``, ``targets``), with their
visibility and gating; the guards on what may go into them (every dataset folder from validated
records, only the sample in a public repo, a model in a model repo, a model's own eval details in
its always-private details repo); and the rules a user,
organisation, repo or git ref name must meet.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apto_release.dataset.build import BUILD_MARKER
from apto_release.errors import InputError, UsageError

if TYPE_CHECKING:  # the release hands the push its manifest; the hub never imports the release
    from apto_release.release.manifest import Manifest

MAX_NAME_LENGTH = 96  # the Hub's limit on a user, organisation or repo name


def _show(value: str) -> str:
    """A value quoted for a one-line message: a newline or other control character shows escaped."""
    return repr(value)


def name_problem(name: str) -> str | None:
    """Why the Hub would refuse ``name`` as a user, organisation or repo name, or None.

    The rules of ``huggingface_hub.utils.validate_repo_id`` (which mirrors the Hub's own), each
    with its own reason, plus one of ours: a name starts with a letter or a digit.
    """
    if not name:
        return "the name is empty"
    bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "._-"))})
    if bad:
        return f"{', '.join(_show(c) for c in bad)} not allowed (only ASCII letters, digits, '.', '_' and '-')"
    if len(name) > MAX_NAME_LENGTH:
        return f"{len(name)} characters; the Hub allows {MAX_NAME_LENGTH}"
    if "--" in name or ".." in name:
        return "the Hub forbids '--' and '..' in a name"
    if name[0] in "-." or name[-1] in "-.":
        return "the Hub forbids a name that starts or ends with '-' or '.'"
    if not name[0].isalnum():
        return "a name starts with a letter or a digit"
    if name.endswith(".git"):
        return "the Hub forbids a name ending in '.git'"
    return None


def repo_id_problem(repo_id: str) -> str | None:
    """Why the Hub would refuse ``repo_id`` (``name`` or ``organisation/name``), or None.

    Our checks give the reason; huggingface_hub's own validator runs after them, so that a rule
    it adds in a later release is enforced here too (its message then reaches the user).
    """
    parts = repo_id.split("/")
    if len(parts) > 2:
        return "a repo id is organisation/name, with one '/'"
    for part in parts:
        problem = name_problem(part)
        if problem:
            return problem
    try:
        from huggingface_hub.errors import HFValidationError
        from huggingface_hub.utils import validate_repo_id
    except ModuleNotFoundError:  # pragma: no cover - huggingface_hub is a dependency
        return None
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        return " ".join(str(exc).split())
    return None


def git_ref_problem(ref: str) -> str | None:
    """Why ``ref`` (a full name, ``refs/tags/v1.0.0``) is not a valid git ref, or None.

    The rules of ``git check-ref-format`` (https://git-scm.com/docs/git-check-ref-format).
    """
    bad = sorted({c for c in ref if ord(c) < 0x20 or ord(c) == 0x7F or c in " ~^:?*[\\"})
    if bad:
        return f"{', '.join(_show(c) for c in bad)} not allowed in a git ref"
    if ".." in ref:
        return "'..' not allowed in a git ref"
    if "@{" in ref:
        return "'@{' not allowed in a git ref"
    if ref == "@":
        return "'@' alone is not a git ref"
    if ref.startswith("/") or ref.endswith("/") or "//" in ref:
        return "a git ref does not start or end with '/' or hold '//'"
    if ref.endswith("."):
        return "a git ref does not end with '.'"
    for component in ref.split("/"):
        if component.startswith("."):
            return f"a git ref component does not start with '.' ({_show(component)})"
        if component.endswith(".lock"):
            return f"a git ref component does not end with '.lock' ({_show(component)})"
    return None


# ---------------------------------------------------------------------------------------------
# The release's repos


@dataclass(frozen=True)
class Target:
    """One repo of the release and the local folder (or files) that go into it."""

    name: str  # the --only name it belongs to: dataset.sample, dataset.full or a model name
    role: str  # "dataset sample", "dataset full", "model", "GGUF", "adapter", "eval details"
    repo_id: str
    repo_type: str  # "dataset" or "model"
    folder: Path
    private: bool
    gated: str | bool = False
    max_rows: int | None = None
    card_kind: str = "model"  # "dataset", "model", "gguf", "adapter", "details"
    gguf_types: tuple[str, ...] = ()
    model_name: str | None = None


def targets(manifest: Manifest, only: Iterable[str] | None = None) -> list[Target]:
    """The repos of the release, narrowed to the ``only`` names (see ``Manifest.target_names``)."""
    names = manifest.target_names()
    wanted = list(dict.fromkeys(only or []))
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise UsageError(
            f"--only {', '.join(unknown)}: not in the manifest; choose from {', '.join(names) or 'nothing'}",
            path=manifest.path,
        )
    out: list[Target] = []
    for key in ("sample", "full"):
        ds = manifest.datasets.get(key)
        if ds is None or wanted and f"dataset.{key}" not in wanted:
            continue
        out.append(Target(f"dataset.{key}", f"dataset {key}", ds.repo, "dataset", ds.folder, ds.private,
                          ds.gated, ds.max_rows, "dataset"))
    for model in manifest.models:
        if wanted and model.name not in wanted:
            continue
        out.append(Target(model.name, "model", model.repo, "model", model.merged, model.private, card_kind="model",
                          model_name=model.name))
        if model.gguf:
            out.append(Target(model.name, "GGUF", model.gguf_repo, "model", model.gguf_folder, model.private,
                              card_kind="gguf", gguf_types=model.gguf, model_name=model.name))
        if model.adapter_repo:
            out.append(Target(model.name, "adapter", model.adapter_repo, "model", model.adapter, model.private,
                              card_kind="adapter", model_name=model.name))
        if model.details_folder is not None:  # always private: no manifest key makes it public
            out.append(Target(model.name, "eval details", model.eval.details_repo, "dataset", model.details_folder, True,
                              card_kind="details", model_name=model.name))
    return out


# ---------------------------------------------------------------------------------------------
# The guards: what may go into a repo


def count_parquet_rows(files: Iterable[Path]) -> int:
    """Rows of the Parquet files, from their footers (no data is read)."""
    import pyarrow.parquet as pq

    total = 0
    for path in files:
        try:
            total += pq.read_metadata(path).num_rows
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad footer
            raise InputError(f"not a readable Parquet file: {exc}", path=path) from None
    return total


def _read_marker(target: Target, name: str, where: str, hint: str, missing: str) -> dict[str, Any]:
    """The JSON object of the folder's hidden marker ``name``; ``UsageError`` when absent or unreadable."""
    marker_path = target.folder / name
    if os.path.lexists(marker_path):
        from apto_release.hub.filerules import check_file

        # Never opened unless it is a regular file of the folder: a FIFO would hang the read.
        check_file(target.folder, marker_path)
    try:
        marker = json.loads(marker_path.read_text("utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{where}: it has no {name}, {missing}", hint=hint) from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{where}: {name} cannot be read ({exc})", hint=hint) from None
    if not isinstance(marker, dict):
        raise UsageError(f"{where}: {name} is not a JSON object", hint=hint)
    return marker


def _marker_rows(marker: dict[str, Any], name: str, files: Sequence[Path], where: str, hint: str) -> int:
    """The Parquet files' row count, which must be the marker's ``rows``; ``UsageError`` otherwise."""
    rows = count_parquet_rows(p for p in files if p.suffix == ".parquet")
    if marker.get("rows") != rows:
        raise UsageError(f"{where}: its Parquet files hold {rows:,} rows but {name} says {marker.get('rows')}: "
                         "the folder changed after it was built", hint=hint)
    return rows


def read_build_marker(target: Target, files: Sequence[Path]) -> tuple[dict[str, Any], int]:
    """The provenance guard of every dataset repo, private full set included: the folder must carry
    ``dataset build``'s marker naming the SHA-256 of a records file that passed validation, and its
    Parquet files must hold the rows the marker counted. Returns (the marker, the row count).

    The marker's ``records`` entry is written only by a build that took its records from
    ``load_valid_records`` (``dataset build``, the release's dataset jobs), after they passed; a
    folder built otherwise, or by a version of apto-release before the entry existed, is refused.
    Raises ``UsageError`` (before any request) otherwise.
    """
    where = f"refusing to push {target.folder} to the dataset repo {target.repo_id}"
    hint = "build it with 'apto-release dataset build' (or the release's dataset stage), which validates the records first"
    marker = _read_marker(target, BUILD_MARKER, where, hint, "so nothing says its records were validated")
    records = marker.get("records")
    sha = records.get("sha256") if isinstance(records, dict) else None
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise UsageError(f"{where}: {BUILD_MARKER} names no records file SHA-256, so it was not built from validated records",
                         hint=hint)
    verdict = records.get("validation")
    if verdict not in ("PASSED", "PASSED with warnings"):
        raise UsageError(f"{where}: {BUILD_MARKER} says its records file {str(records.get('file') or '')!r} "
                         f"(SHA-256 {sha[:12]}…) did not pass validation ({verdict!r})", hint=hint)
    return marker, _marker_rows(marker, BUILD_MARKER, files, where, "build it again")


def check_details_folder(target: Target, files: Sequence[Path]) -> int:
    """The details guard: a details repo is private, and its folder is what ``evals.details`` built
    for this model (its marker, kind "details", names the model and counts the Parquet rows).
    Returns the row count. Raises ``UsageError`` (before any request) otherwise."""
    from apto_release.evals.details import DETAILS_MARKER

    where = f"refusing to push {target.folder} to the details repo {target.repo_id}"
    hint = "build it with the release's eval stage ([model.eval] details_repo)"
    if not target.private:  # pragma: no cover - targets() never makes one; the guard holds anyway
        raise UsageError(f"{where}: a details repo is always private")
    marker = _read_marker(target, DETAILS_MARKER, where, hint, "so it is not a details dataset")
    if marker.get("kind") != "details" or marker.get("model") != target.model_name:
        raise UsageError(f"{where}: {DETAILS_MARKER} does not say it holds the details of {target.model_name}", hint=hint)
    return _marker_rows(marker, DETAILS_MARKER, files, where, "run the eval stage again")


def check_public_dataset(target: Target, files: Sequence[Path]) -> int:
    """The public-repo guard: only the validated sample, with at most ``max_rows`` rows, goes public.

    Returns the row count. Raises ``UsageError`` (before any request) otherwise.
    """
    where = f"refusing to push {target.folder} to the public dataset repo {target.repo_id}"
    build_hint = ("publish only the sample built with 'apto-release dataset build SAMPLE.jsonl --report distribution.json'; "
                  "the full set belongs in a private repo")
    if not (target.folder / BUILD_MARKER).is_file():
        raise UsageError(f"{where}: it has no {BUILD_MARKER}, so it is not a validated sample", hint=build_hint)
    marker, rows = read_build_marker(target, files)
    if marker.get("kind") != "sample":
        raise UsageError(f"{where}: it was built as the {marker.get('kind') or 'unknown'} set, not as the sample (no distribution report)",
                         hint=build_hint)
    limit = target.max_rows
    if limit is not None and rows > limit:
        raise UsageError(f"{where}: its Parquet files hold {rows:,} rows, more than max_rows = {limit:,}", hint=build_hint)
    return rows


def check_model_folder(target: Target, files: Sequence[Path]) -> None:
    """A model repo's folder must hold a model, not only a card: a merged model needs ``config.json``
    and its weights (``model.safetensors``, or ``model.safetensors.index.json`` and every shard its
    ``weight_map`` names); an adapter ``adapter_config.json`` and ``adapter_model.safetensors``. (A
    GGUF repo's files are the manifest's types, which the push already requires.)

    Raises ``InputError`` naming the folder and what is missing; dataset and GGUF targets pass.
    """
    if target.card_kind not in ("model", "adapter"):
        return
    names = {p.relative_to(target.folder).as_posix() for p in files}
    if target.card_kind == "adapter":
        missing = [n for n in ("adapter_config.json", "adapter_model.safetensors") if n not in names]
        hint = "train it with 'apto-release train', or fix the adapter folder in the manifest"
    else:
        missing = [] if "config.json" in names else ["config.json"]
        index_name = "model.safetensors.index.json"
        if index_name in names:
            index_path = target.folder / index_name
            try:
                weight_map = json.loads(index_path.read_text("utf-8")).get("weight_map")
            except (OSError, ValueError, AttributeError) as exc:
                raise InputError(f"refusing to push the model folder to {target.repo_id}: {index_name} cannot be read "
                                 f"({' '.join(str(exc).split())})", path=index_path) from None
            if not isinstance(weight_map, dict) or not weight_map:
                missing.append(f"the weight_map of {index_name}")
            else:
                missing += sorted({str(s) for s in weight_map.values()} - names)
        elif "model.safetensors" not in names:
            missing.append(f"model.safetensors (or {index_name} and its shards)")
        hint = "merge it with 'apto-release merge', or fix the merged folder in the manifest"
    if missing:
        raise InputError(f"refusing to push the {target.role} folder to {target.repo_id}: it holds no {target.role}, "
                         f"{', '.join(missing)} missing", path=target.folder, hint=hint)
