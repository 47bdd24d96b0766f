"""The release's files and digests: which files of each target folder a job's outputs and inputs
count (the push's rule: only publishable files), the digests the state file keeps, and the git facts
of the manifest the cards name."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from apto_release.cards.model import CARD_ASSETS, CARD_NAME
from apto_release.errors import UsageError
from apto_release.io import folder_files
from apto_release.release.manifest import Manifest, ModelTarget
from apto_release.release.state import ReleaseState, digest


def target_files(folder: Path, *, exclude: Iterable[str] = (), published: bool = True) -> list[Path]:
    """Every file under ``folder`` (hidden ones too: a dataset's build marker counts), sorted, but
    caches and the names in ``exclude`` at the top level. For a ``published`` folder the push's rule
    holds here too (``hub.filerules``): only regular files inside the folder, or links to them;
    a folder link, FIFO, socket or device is an ``InputError`` (a FIFO would block the digest
    forever). A folder that is only read (the base checkpoint) may link anywhere."""
    skip = set(exclude)
    if published:
        from apto_release.hub.filerules import publishable_files

        found = publishable_files(folder, lambda name: name in _CACHES)
    else:
        found = folder_files(folder, skip=lambda name: name in _CACHES)
    return [p for p in found if not (p.parent == folder and p.name in skip)]


#: Folders that no output digest counts.
_CACHES = ("__pycache__", ".cache")


def adapter_files(model: ModelTarget, *, reports: bool = False) -> list[Path]:
    """The adapter folder's files: the adapter itself (weights, config, chat template), and with
    ``reports`` the training summary and loss curve (the run's reports, which the adapter's digest
    leaves out, as it always has)."""
    from apto_release.train.summary import LOSS_CURVE_NAME, SUMMARY_NAME

    # The cards stage writes the card and its images (the eval chart too) into the folder.
    cards = (CARD_NAME, *(a for a in CARD_ASSETS if a != LOSS_CURVE_NAME))
    exclude = cards if reports else (*cards, SUMMARY_NAME, LOSS_CURVE_NAME)
    return target_files(model.adapter, exclude=exclude) if model.adapter.is_dir() else []


def merged_files(model: ModelTarget) -> list[Path]:
    """The merged checkpoint's files, without the card and its images (the cards stage writes them
    after the merge, and names this folder's digest)."""
    return target_files(model.merged, exclude=(CARD_NAME, *CARD_ASSETS)) if model.merged.is_dir() else []


def gguf_files(model: ModelTarget) -> list[Path]:
    from apto_release.gguf.output import companion_files, existing_outputs

    files = [p for t in model.gguf for p in existing_outputs(model.gguf_folder, f"{model.name}-{t}")]
    return sorted(files + companion_files(model.gguf_folder, model.name)) if files else []


_MADE_BY = {"adapter": "train", "merged checkpoint": "merge", "base checkpoint": None}


def folder_digest(state: ReleaseState, files: Sequence[Path], root: Path, what: str) -> str:
    """The digest of ``files`` relative to ``root``; an error naming the stage to run when there are none."""
    if not files:
        stage = _MADE_BY.get(what)
        raise UsageError(f"there is no {what} in this folder", path=root,
                         hint=f"run the {stage} stage first (apto-release release --stages {stage})" if stage else "fix the manifest")
    return digest(state.listing(files, root))


def templates_digest() -> str:
    """The card templates' digest: a changed template re-renders the cards."""
    import hashlib

    from apto_release.cards.templates import template_dir

    folder = Path(template_dir("model_cards"))
    return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in sorted(folder.glob("*.j2")))).hexdigest()


def manifest_commit(manifest: Manifest) -> str:
    """The last git commit of the manifest file (``abc123…``, with ``+ uncommitted changes`` when
    the file differs from it), or a phrase saying why there is none.

    The manifest's own commit, not HEAD: a commit that leaves the manifest alone changes no card.
    """
    folder = manifest.path.resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    if git("rev-parse", "--git-dir") is None:
        return "none (not in a git repository)"
    last = git("log", "-1", "--format=%H", "--", manifest.path.name)
    if not last:
        return "none (the manifest is not committed)"
    dirty = git("status", "--porcelain", "--", manifest.path.name)
    return last + (" + uncommitted changes" if dirty else "")


def manifest_year(manifest: Manifest) -> int | None:
    """The year (UTC) of the manifest's last git commit, or None outside git or before its first commit.

    The cards' citations give it instead of the current year, so that a rebuild of the same
    release next January writes the same cards (and the push finds nothing to change).
    """
    import datetime

    folder = manifest.path.resolve().parent
    try:
        done = subprocess.run(["git", "-C", str(folder), "log", "-1", "--format=%ct", "--", manifest.path.name],
                              capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    stamp = done.stdout.strip()
    if done.returncode != 0 or not stamp.isdigit():
        return None
    return datetime.datetime.fromtimestamp(int(stamp), datetime.timezone.utc).year


def details_files(model: ModelTarget) -> list[Path]:
    """The details dataset's files (its hidden marker included), when the model has one."""
    folder = model.details_folder
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder is not None and folder.is_dir() else []


def json_safe(value: Any) -> Any:
    """``value`` with paths as strings and tuples as lists (for the state file)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def total_size(paths: Iterable[Path]) -> int:
    """The bytes of the files among ``paths``."""
    return sum(p.stat().st_size for p in paths if p.is_file())
