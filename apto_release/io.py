"""The house's file helpers, each once: atomic outputs, hashing, folder walking, sizes.

Outputs so that an interrupted command never leaves a file that looks finished: everything is written beside its destination under a hidden temporary name, flushed, and renamed
into place only when complete (``os.replace`` is atomic on one file system). The temporary name
says which process writes it, so that the next write of the same destination removes what a
killed process left (``remove_stale_temps``) and never what a live one is writing.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process umask, read without changing it for longer than the call."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Every temporary output names its writer in its own name, ``.<dest>.<random>.<owner>.tmp``, where
# the owner is ``o<pid>-<start>-<host>``: the process id, the process's start time (clock ticks
# since boot, from /proc; 0 where there is none), so that a recycled pid is not taken for the
# dead writer, and 8 hex digits of the host name's SHA-256. The mark is part of the name, so it
# exists from the instant the file or folder does: a kill can never leave an unmarked one. A
# later write to the same destination removes the temporaries of writers that are gone (killed,
# crashed), and only those: a run in parallel on this host, or any run on another host sharing
# the folder, keeps its own.
_OWNED = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.o(?P<pid>\d+)-(?P<start>\d+)-(?P<host>[0-9a-f]{8})\.(?:tmp|old)$")


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode("utf-8")).hexdigest()[:8]


def _start_ticks(pid: int | str) -> int:
    """When process ``pid`` started (clock ticks since boot), or 0 where /proc cannot say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        # The command name (field 2) may hold spaces and parentheses: count fields after the last ")".
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


def owner_tag() -> str:
    """This process's mark, as temporary names carry it: ``o<pid>-<start>-<host>``."""
    return f"o{os.getpid()}-{_start_ticks('self')}-{_host_tag()}"


def _owner_gone(pid: int, start: int, host: str) -> bool:
    """Whether the writer of a temporary named with this mark is gone; never for another host."""
    if host != _host_tag():
        return False
    if not _pid_alive(pid):
        return True
    started = _start_ticks(pid)  # a live pid that started at another time is a recycled one
    return start != 0 and started != 0 and started != start


def _temp_name(dest: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".{owner_tag()}.tmp", dir=dest.parent)
    # mkstemp makes the file private (0600); the finished output gets the mode open() would give.
    os.fchmod(fd, 0o666 & ~current_umask())
    os.close(fd)
    return Path(name)


def make_temp_dir(dest: str | Path, *, suffix: str = ".tmp") -> Path:
    """A new, empty, hidden folder beside ``dest`` (``.<dest>.<random>.<owner>.tmp``), marked
    as this process's: ``remove_stale_temps`` removes it once this process is gone."""
    dest = Path(dest)
    return Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=f".{owner_tag()}{suffix}", dir=dest.parent))


#: Inside a temporary folder of an earlier version (a merge, a GGUF conversion): which process
#: wrote it, as ``{"host", "pid"}``. Temporary names carry the owner themselves now; folders that
#: earlier versions marked this way are still understood, so that their leftovers are removed too.
OWNER_FILE = ".apto-owner"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(path: Path, name: str | None) -> bool:
    """Whether ``path`` is a temporary (of the output ``name``, when given) whose writer is gone."""
    match = _OWNED.match(path.name)
    if match:
        return (name is None or match["name"] == name) and _owner_gone(int(match["pid"]), int(match["start"]), match["host"])
    if name is None or not path.is_dir():
        return False
    try:  # a folder claimed with OWNER_FILE
        owner = json.loads((path / OWNER_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int) and not _pid_alive(owner["pid"])


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temps(parent: str | Path, prefix: str | None = None) -> int:
    """Remove the hidden temporaries in ``parent`` whose writer is gone (killed, crashed); return
    how many. With ``prefix``, only those of the output of that name (``.<prefix>.*.tmp``, and the
    ``.old`` folder a kill can leave in ``atomic_dir``); without, every marked one in ``parent``.
    Only temporaries of a dead process on this host are touched, so a run in parallel keeps its own.
    """
    parent = Path(parent)
    if not parent.is_dir():
        return 0
    pattern = f".{glob.escape(prefix)}.*" if prefix is not None else ".*"
    removed = 0
    for tmp in parent.glob(pattern):
        if (tmp.name.endswith((".tmp", ".old"))) and _stale(tmp, prefix):
            _remove(tmp)
            removed += 1
    return removed


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` if the block succeeds.

    The parent folder is created. On any exception (KeyboardInterrupt included) the temporary
    file is removed and ``dest`` is left as it was; a kill leaves it, marked with the killed
    process's id, and the next write of ``dest`` removes it.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(dest.parent, dest.name)  # a killed writer's partial file
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
    A kill leaves the temporary folder (or that ``.old`` one) behind, marked with the killed
    process's id: the next ``atomic_dir`` or ``atomic_path`` of the same destination removes it.
    """
    dest = Path(dest)
    if dest.exists() and not overwrite:
        # Raised by callers as a user error; kept generic here.
        raise FileExistsError(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(dest.parent, dest.name)  # a killed writer's partial folder
    tmp = make_temp_dir(dest)
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp's 0700 would follow the folder into place
    try:
        yield tmp
        if dest.exists():
            old = make_temp_dir(dest, suffix=".old")
            os.replace(dest, old / "x")
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def folder_files(folder: Path, *, skip: Callable[[str], bool] = lambda name: False,
                 check: Callable[[Path], None] | None = None) -> list[Path]:
    """The files under ``folder``, sorted by their path in it; names for which ``skip`` is true are
    left out without a look, folders included. A link to a folder is never followed: with ``check``,
    every entry that is not a folder goes through it first (and it may refuse the entry by raising);
    without, a link to a folder is left out."""
    found: list[Path] = []

    def walk(current: Path) -> None:
        with os.scandir(current) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if skip(entry.name):
                    continue
                path = Path(entry.path)
                if entry.is_dir(follow_symlinks=False):
                    walk(path)
                elif check is not None:
                    check(path)
                    found.append(path)
                elif not entry.is_dir():
                    found.append(path)

    walk(folder)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def human_size(n: int) -> str:
    """A byte count in decimal units, as the Hub shows them: 812 B, 4.20 KB, 16.54 GB, 123.4 GB.

    The one byte-size format of the house: the cards publish it, the push and the release print it.
    """
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("KB", "MB", "GB", "TB"):
        value /= 1000
        if value < 1000 or unit == "TB":
            return f"{value:.2f} {unit}" if value < 100 else f"{value:.1f} {unit}"
    return f"{n} B"  # pragma: no cover


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


def _read_into(path: str | Path, digests: list[Any], chunk_size: int = 1 << 20) -> None:
    """Feed the file's bytes, in chunks, to every digest of ``digests``."""
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            for digest in digests:
                digest.update(chunk)


def sha256_file(path: str | Path, *, chunk_size: int = 1 << 20) -> str:
    """The hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    _read_into(path, [digest], chunk_size)
    return digest.hexdigest()


#: Files under this size also get their git blob SHA-1 (regular, non-LFS files on the Hub are smaller).
GIT_SHA1_LIMIT = 10_000_000


@dataclass(frozen=True)
class FileHash:
    """A file's content hashes: SHA-256, and git's blob SHA-1 under ``GIT_SHA1_LIMIT`` (else None)."""

    size: int
    sha256: str
    git_sha1: str | None


def hash_file(path: str | Path) -> FileHash:
    """SHA-256 and (under ``GIT_SHA1_LIMIT``) git blob SHA-1 of a file, in one read.

    The git blob SHA-1 is what the Hub lists as a regular file's ``blob_id``; the SHA-256 what it
    lists for an LFS file: the push compares its local files with the remote ones by them.
    """
    size = os.stat(path).st_size
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(b"blob %d\0" % size) if size < GIT_SHA1_LIMIT else None
    _read_into(path, [sha256] if sha1 is None else [sha256, sha1])
    return FileHash(size, sha256.hexdigest(), sha1.hexdigest() if sha1 else None)
