"""Writing outputs so that an interrupted command never leaves a file that looks finished.

Everything is written beside its destination under a hidden temporary name, flushed, and renamed
into place only when complete (``os.replace`` is atomic on one file system).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process umask, read without changing it for longer than the call."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_name(dest: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    # mkstemp makes the file private (0600); the finished output gets the mode open() would give.
    os.fchmod(fd, 0o666 & ~current_umask())
    os.close(fd)
    return Path(name)


#: Inside a long-lived temporary folder (a merge, a GGUF conversion): which process writes it, so
#: that a later run can remove the folders of a process that was killed, and only those.
OWNER_FILE = ".apto-owner"


def claim_temp_dir(folder: Path) -> None:
    """Mark ``folder`` as written by this process (see ``remove_stale_temps``)."""
    (folder / OWNER_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}), encoding="utf-8")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(parent: Path, prefix: str) -> int:
    """Remove the hidden temporary folders ``parent/.<prefix>.*.tmp`` whose writer is gone (killed,
    crashed); return how many. Only folders claimed by a dead process on this host are touched, so
    a run in parallel keeps its folder.
    """
    removed = 0
    for tmp in Path(parent).glob(f".{glob.escape(prefix)}.*.tmp"):
        try:
            owner = json.loads((tmp / OWNER_FILE).read_text("utf-8"))
        except (OSError, ValueError):
            continue
        if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int) and not _pid_alive(owner["pid"]):
            shutil.rmtree(tmp, ignore_errors=True)
            removed += 1
    return removed


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` if the block succeeds.

    The parent folder is created. On any exception (KeyboardInterrupt included) the temporary
    file is removed and ``dest`` is left as it was.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(dest)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(dest: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``dest``; move it onto ``dest`` if the block succeeds.

    An existing ``dest`` is replaced only with ``overwrite``: the old folder is moved aside, the new
    one renamed into place, then the old one removed. An exception leaves the old folder as it
    was; only a kill in the instant between the two renames leaves the old folder under a hidden
    ``.<name>.*.old`` name instead of at ``dest`` (Linux has no atomic swap of folders here).
    """
    dest = Path(dest)
    if dest.exists() and not overwrite:
        # Raised by callers as a user error; kept generic here.
        raise FileExistsError(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp's 0700 would follow the folder into place
    try:
        yield tmp
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
            os.replace(dest, old / "x")
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_json_object(path: str | Path, what: str) -> dict[str, Any]:
    """A JSON file that must hold an object (a model's config, say), with errors that say which.

    Raises:
        InputError: the file is missing, unreadable, not JSON, or not an object; ``what`` names
            it in the message ("the base model's config").
    """
    from apto_release.errors import InputError

    path = Path(path)
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"no {path.name} ({what})", path=path.parent, hint=f"give the folder that holds {path.name}") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read {what}: {exc}", path=path) from exc
    if not isinstance(data, dict):
        raise InputError(f"{what} is not a JSON object", path=path)
    return data


def write_text(dest: str | Path, text: str) -> Path:
    """Write UTF-8 text atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(dest)


def write_json(dest: str | Path, data: Any) -> Path:
    """Write pretty, UTF-8 (not ASCII-escaped) JSON atomically."""
    return write_text(dest, json.dumps(data, ensure_ascii=False, indent=2, sort_keys=False) + "\n")


def dump_jsonl_line(record: dict[str, Any]) -> str:
    """One record as a compact JSON Lines line (UTF-8 text, no ASCII escapes), with newline."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


def sha256_file(path: str | Path, *, chunk_size: int = 1 << 20) -> str:
    """The hex SHA-256 of a file, read in chunks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
