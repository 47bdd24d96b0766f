"""Progress of the long steps: a bar or spinner on a terminal, plain lines in a log, or nothing.

Training, merging, converting and uploading take minutes to hours. On a terminal each step gets a
tqdm bar on standard error (a spinner while its total is unknown) that disappears when the step
ends, so what stays on screen is the command's own result lines. In a CI log a bar would be
thousands of carriage returns, so there a step prints plain lines instead::

    train: 20/200 steps (10%) after 41.0s
    train: 40/200 steps (20%) after 1m22s
    ...
    train: 200/200 steps done in 13m40s

at most one each tenth of the total, at least one every 30 seconds (a heartbeat, also for a step
that counts nothing, such as llama.cpp's quantizer in its subprocess: ``still running after
1m30s``), and a last ``done in`` line. A step that fails prints no last line: its error says it.

Which of the three (``bars``, ``lines``, ``off``): the ``mode`` given to ``Progress``; else the
environment variable ``APTO_PROGRESS``; else bars when the stream is a terminal, lines otherwise.
``Progress.off()`` reports nothing at no cost (no thread, no tqdm).

Library functions of one phase take a plain callback that a task's ``update`` fits
(``train(on_step=...)``, ``merge(on_bytes=...)``, ``convert(on_bytes=...)``); ``build_gguf``, which
runs several phases, takes the reporter itself. Without one, each behaves as it always did.

Example:
    >>> progress = Progress()
    >>> with progress.task("merge", unit="B") as task:
    ...     merge(base, adapter, out_dir, on_bytes=task.update)
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from typing import IO, Literal

from apto_release.errors import UsageError
from apto_release.io import human_size

Mode = Literal["bars", "lines", "off"]
MODES: tuple[Mode, ...] = ("bars", "lines", "off")
#: The environment variable that chooses the mode when the code does not.
ENV = "APTO_PROGRESS"
#: Seconds after which a log gets a line even if the step has not moved on by a tenth.
HEARTBEAT = 30.0
#: Seconds between redraws of a bar (a spinner turns, the elapsed time moves on).
_REDRAW = 0.1
_SPINNER_UTF8 = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_SPINNER_ASCII = "|/-\\"


class Progress:
    """Hands out ``Task``s that report on ``stream`` (default: standard error) in one mode.

    Args:
        mode: ``"bars"``, ``"lines"`` or ``"off"``; ``None``: ``APTO_PROGRESS`` if set, else bars
            when ``stream`` is a terminal and lines otherwise.
        stream: where to report; looked up when the reporter is made, so that a redirected
            ``sys.stderr`` is the one used.
        heartbeat: in lines mode, the longest silence in seconds while a step runs.

    Raises:
        UsageError: an unknown mode, given or in ``APTO_PROGRESS``.
    """

    def __init__(self, mode: Mode | None = None, *, stream: IO[str] | None = None, heartbeat: float = HEARTBEAT) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.heartbeat = heartbeat
        self.mode: Mode = _resolve_mode(mode, self.stream)
        # One lock for all tasks of this reporter: a task's thread and the code that updates the
        # task change the same counters, and lines of two tasks must not interleave.
        self.lock = threading.RLock()

    @classmethod
    def off(cls) -> Progress:
        """A reporter that reports nothing: for library calls made without progress."""
        return cls("off")

    @property
    def bars(self) -> bool:
        """Whether tasks draw bars (on a terminal), so that a caller can leave out lines a bar replaces."""
        return self.mode == "bars"

    def task(self, name: str, total: int | None = None, unit: str = "step") -> Task:
        """Start reporting the step ``name``: ``total`` ``unit``s, ``None`` while unknown.

        ``unit="B"`` counts bytes and shows sizes (``1.2 GB/3.4 GB``); any other unit is counted
        (``40/200 steps``). Use the task as a context manager, or ``close`` it.
        """
        if self.mode == "off":
            return _NULL_TASK
        if self.mode == "bars":
            return _BarTask(self, name, total, unit)
        return _LineTask(self, name, total, unit)


def _resolve_mode(mode: str | None, stream: IO[str]) -> Mode:
    """The mode given, else ``APTO_PROGRESS``'s, else bars on a terminal and lines elsewhere."""
    if mode is None:
        chosen = os.environ.get(ENV, "").strip().lower()
        if not chosen:
            return "bars" if _is_terminal(stream) else "lines"
        if chosen not in MODES:
            raise UsageError(f"{ENV}={chosen!r} is not a progress mode", hint="set it to bars, lines or off, or unset it")
        return chosen  # type: ignore[return-value]  # one of MODES
    if mode not in MODES:
        raise UsageError(f"{mode!r} is not a progress mode; choose bars, lines or off")
    return mode  # type: ignore[return-value]  # one of MODES


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


class Task:
    """One long step being reported. This base class reports nothing (the tasks of ``Progress.off()``).

    ``update(done, total)`` fits the ``(int, int)`` callbacks of the library's long functions.
    Leaving a ``with`` block closes the task: a bar disappears; in a log a last line says that
    the step is done, unless the block raised.
    """

    def update(self, done: int, total: int | None = None) -> None:
        """``done`` units are done, of ``total`` (``None``: the total as it was)."""

    def advance(self, n: int = 1) -> None:
        """``n`` more units are done."""

    def close(self, *, failed: bool = False) -> None:
        """End the task; ``failed`` leaves out its last line."""

    def __enter__(self) -> Task:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(failed=exc_type is not None)


_NULL_TASK = Task()


class _ReportedTask(Task):
    """What bars and lines share: the counters, and a thread for the time between updates.

    The thread redraws a bar (a spinner turns) or prints a log's heartbeat while the step is busy
    and calls nothing. Subclasses say how long it waits (``_wait``) and what it then does
    (``_tick``), how an update shows (``_show``) and how the task ends (``_end``), and start the
    thread (``_start``) once they are set up.
    """

    def __init__(self, progress: Progress, name: str, total: int | None, unit: str) -> None:
        self.progress = progress
        self.name = name
        self.total = total
        self.unit = unit
        self.done = 0
        self.started = time.monotonic()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"progress: {name}", daemon=True)

    def update(self, done: int, total: int | None = None) -> None:
        with self.progress.lock:
            if total is not None:
                self.total = total
            self.done = done
            self._show()

    def advance(self, n: int = 1) -> None:
        with self.progress.lock:
            self.update(self.done + n)

    def close(self, *, failed: bool = False) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._thread.join()
        with self.progress.lock:
            self._end(failed)

    def _start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self._wait()):
            with self.progress.lock:
                if not self._stopped.is_set():
                    self._tick()

    def _wait(self) -> float:
        raise NotImplementedError

    def _tick(self) -> None:
        raise NotImplementedError

    def _show(self) -> None:
        raise NotImplementedError

    def _end(self, failed: bool) -> None:
        raise NotImplementedError


class _LineTask(_ReportedTask):
    """Plain lines: one each new tenth of the total, a heartbeat when quiet, ``done in`` at the end."""

    def __init__(self, progress: Progress, name: str, total: int | None, unit: str) -> None:
        super().__init__(progress, name, total, unit)
        self._last_line = self.started
        self._tenths = 0  # tenths of the total reported so far
        self._start()

    def _show(self) -> None:
        # At its total a step gets its last line from close, so below it only.
        if self.total and self.done < self.total:
            tenths = math.floor(10 * self.done / self.total)
            if tenths > self._tenths:
                self._tenths = tenths
                self._print(self._status())

    def _wait(self) -> float:
        return max(0.0, self._last_line + self.progress.heartbeat - time.monotonic())

    def _tick(self) -> None:
        if time.monotonic() - self._last_line >= self.progress.heartbeat:  # no line came while it waited
            self._print(self._status())

    def _end(self, failed: bool) -> None:
        if not failed:
            counted = f"{self._amount()} " if self.done or self.total else ""
            self._print(f"{self.name}: {counted}done in {human_duration(time.monotonic() - self.started)}")

    def _status(self) -> str:
        elapsed = human_duration(time.monotonic() - self.started)
        if self.total:
            return f"{self.name}: {self._amount()} ({math.floor(100 * self.done / self.total)}%) after {elapsed}"
        if self.done:
            return f"{self.name}: {self._amount()} after {elapsed}"
        return f"{self.name}: still running after {elapsed}"

    def _amount(self) -> str:
        """``40/200 steps``, ``1.2 GB/3.4 GB``; without a total ``40 steps``, ``1.2 GB``."""
        if self.unit == "B":
            return human_size(int(self.done)) + (f"/{human_size(int(self.total))}" if self.total else "")
        count = f"{self.done:,}" + (f"/{self.total:,}" if self.total else "")
        return f"{count} {self.unit}{'' if (self.total or self.done) == 1 else 's'}"

    def _print(self, line: str) -> None:
        self._last_line = time.monotonic()
        self.progress.stream.write(line + "\n")
        self.progress.stream.flush()


class _BarTask(_ReportedTask):
    """A tqdm bar, or a spinner while the total is unknown; it disappears when closed."""

    def __init__(self, progress: Progress, name: str, total: int | None, unit: str) -> None:
        super().__init__(progress, name, total, unit)
        from tqdm import tqdm

        encoding = (getattr(progress.stream, "encoding", None) or "").lower().replace("-", "")
        self._frames = _SPINNER_UTF8 if encoding == "utf8" else _SPINNER_ASCII
        self._frame = 0
        bar_format, desc = self._look()
        self._bar = tqdm(
            total=total, desc=desc, bar_format=bar_format, unit=unit, unit_scale=unit == "B", unit_divisor=1000,
            file=progress.stream, leave=False, dynamic_ncols=True, disable=False,
        )
        self._start()

    def _show(self) -> None:
        if self.total and self._bar.total != self.total:
            self._bar.total = self.total
        self._describe()
        self._bar.update(self.done - self._bar.n)

    def _wait(self) -> float:
        return _REDRAW

    def _tick(self) -> None:
        self._frame += 1
        self._describe()
        self._bar.refresh()

    def _describe(self) -> None:
        self._bar.bar_format, desc = self._look()
        self._bar.set_description_str(desc, refresh=False)

    def _look(self) -> tuple[str | None, str]:
        """The bar's format and description: tqdm's own bar with a total, else a spinner, the name, the count."""
        if self.total:
            return None, self.name
        text = f"{self._frames[self._frame % len(self._frames)]} {self.name}"
        if self.done:
            text += f": {human_size(int(self.done))}" if self.unit == "B" else f": {self.done:,} {self.unit}s"
        return "{desc} [{elapsed}]", text

    def _end(self, failed: bool) -> None:
        self._bar.close()


def human_duration(seconds: float) -> str:
    """``12.3s``, ``4m05s``, ``2h07m``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


__all__ = ["ENV", "HEARTBEAT", "MODES", "Progress", "Task", "human_duration"]
