"""What may be published from a folder: regular files inside it, and links to them.

A push publishes a folder's files under their paths in the folder. A symbolic link would publish
whatever it points at — ``notes.txt -> ~/.ssh/id_rsa`` would put the private key in a public repo —
so the rule is:

- a **regular file** is published;
- a **symlink to a regular file** is published (under the link's own path, with the target's bytes)
  only when its resolved target lies inside the folder, or inside the ``blobs/`` of the same repo
  in a Hugging Face cache (a snapshot folder ``…/models--org--name/snapshots/<rev>/`` is all links
  into ``…/models--org--name/blobs/``); any other link is refused, naming the link and its target;
- **directory symlinks, FIFOs, sockets and devices** are refused with their names. Nothing here
  ever opens a file: a FIFO would block the reader forever, so entries are told apart with
  ``lstat`` (``os.scandir``) alone.

The push's folder walk, its dry run and plan (``hub.push``) and the cards' GGUF file table
(``cards.model``) all go through ``check_file``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from apto_release.errors import InputError

COPY_HINT = "copy the file into the folder if it belongs in the release, or remove the entry"
#: Folder names of a Hugging Face cache's repos (``models--org--name``).
_CACHE_REPO_PREFIXES = ("models--", "datasets--", "spaces--")


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def cache_blobs(folder: Path) -> Path | None:
    """The ``blobs/`` folder of the Hugging Face cache repo that ``folder`` is a snapshot of (or lies
    in), or None: ``…/models--org--name/snapshots/<rev>[/sub]`` -> ``…/models--org--name/blobs``."""
    parts = folder.parts
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == "snapshots" and parts[i - 1].startswith(_CACHE_REPO_PREFIXES):
            return Path(*parts[:i]) / "blobs"
    return None


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check_file(folder: Path, path: Path, *, root: Path | None = None) -> None:
    """Raise ``InputError`` unless ``path`` (an entry of ``folder``) may be published: a regular
    file, or a symlink to a regular file inside ``folder`` (or the same cache repo's ``blobs/``).

    ``root``: ``folder`` resolved (pass it when checking many entries). Never opens ``path``.
    """
    root = root or folder.resolve()
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        raise InputError("the file does not exist", path=path) from None
    if stat.S_ISREG(mode):
        return
    if not stat.S_ISLNK(mode):
        raise InputError(f"refusing to publish it: it is {_kind(mode)}, not a regular file (only regular files are published)",
                         path=path, hint="remove it from the folder")
    target = os.readlink(path)
    try:
        resolved = path.resolve(strict=True)
    except (FileNotFoundError, RuntimeError, OSError):
        raise InputError(f"refusing to publish the symlink -> {target}: its target does not exist", path=path,
                         hint=COPY_HINT) from None
    blobs = cache_blobs(root)
    if not (_inside(resolved, root) or blobs is not None and _inside(resolved, blobs.resolve())):
        resolved_text = "" if str(resolved) == target else f" ({resolved})"
        raise InputError(f"refusing to publish the symlink -> {target}: it points outside the folder{resolved_text}",
                         path=path, hint=COPY_HINT)
    target_mode = os.stat(path).st_mode
    if stat.S_ISDIR(target_mode):
        raise InputError(f"refusing to publish the symlink -> {target}: it links a folder (folder links are never followed)",
                         path=path, hint=COPY_HINT)
    if not stat.S_ISREG(target_mode):
        raise InputError(f"refusing to publish the symlink -> {target}: its target is {_kind(target_mode)}, not a regular file",
                         path=path, hint="remove it from the folder")


def publishable_files(folder: Path, skip: Callable[[str], bool] = lambda name: False) -> list[Path]:
    """The files of ``folder`` to publish, sorted by their path in the folder, after ``check_file``
    on every entry (``InputError`` on the first refused one). Names for which ``skip`` is true
    (hidden files, caches) are left out without a look, folders included; folder symlinks are
    refused, never followed."""
    from apto_release.io import folder_files

    root = folder.resolve()
    return folder_files(folder, skip=skip, check=lambda path: check_file(folder, path, root=root))
