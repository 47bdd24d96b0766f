"""The progress reporter: lines in a log, bars on a terminal, nothing when off, and the choice between them."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time

import pytest

from apto_release.errors import UsageError
from apto_release.progress import ENV, Progress, Task, human_duration


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)


def lines_of(stream: io.StringIO) -> list[str]:
    """The lines written, with elapsed times ("after 0.0s", "in 1m05s") made ``T``."""
    return [re.sub(r"(after|in) [0-9.hms]+$", r"\1 T", line) for line in stream.getvalue().splitlines()]


def test_lines_come_each_tenth_and_end_with_done():
    stream = io.StringIO()
    with Progress("lines", stream=stream).task("train", total=200, unit="step") as task:
        for step in range(1, 201):
            task.update(step)
    assert lines_of(stream) == [f"train: {20 * i}/200 steps ({10 * i}%) after T" for i in range(1, 10)] + [
        "train: 200/200 steps done in T"
    ]


def test_lines_skip_tenths_that_were_passed_at_once_and_take_the_total_late():
    stream = io.StringIO()
    with Progress("lines", stream=stream).task("train") as task:
        task.update(1, 10)  # the total arrives with the first step, as from the trainer
        task.update(7)
        task.advance()
    assert lines_of(stream) == [
        "train: 1/10 steps (10%) after T", "train: 7/10 steps (70%) after T", "train: 8/10 steps (80%) after T",
        "train: 8/10 steps done in T",
    ]


def test_bytes_are_shown_as_sizes():
    stream = io.StringIO()
    with Progress("lines", stream=stream).task("convert F16", total=3_400_000_000, unit="B") as task:
        task.update(1_700_000_000)
        task.update(3_400_000_000)
    # the house's one size format (io.human_size), as the cards and the push print sizes
    assert lines_of(stream) == ["convert F16: 1.70 GB/3.40 GB (50%) after T", "convert F16: 3.40 GB/3.40 GB done in T"]
    assert [human_duration(s) for s in (0.04, 59.9, 65, 7620)] == ["0.0s", "59.9s", "1m05s", "2h07m"]


def test_a_quiet_step_gets_heartbeat_lines():
    stream = io.StringIO()
    with Progress("lines", stream=stream, heartbeat=0.05).task("quantize Q4_K_M"):
        time.sleep(0.3)
    lines = lines_of(stream)
    assert len(lines) >= 3 and set(lines[:-1]) == {"quantize Q4_K_M: still running after T"}
    assert lines[-1] == "quantize Q4_K_M: done in T"


def test_a_failed_step_has_no_done_line_and_one_unit_is_singular():
    stream = io.StringIO()
    progress = Progress("lines", stream=stream)
    with pytest.raises(KeyError), progress.task("verify", total=4, unit="file") as task:
        task.advance(2)
        raise KeyError("boom")
    with progress.task("upload", total=1, unit="file") as task:
        task.advance()
    assert lines_of(stream) == ["verify: 2/4 files (50%) after T", "upload: 1/1 file done in T"]


def test_off_prints_nothing_and_hands_out_the_no_op_task():
    stream = Terminal()
    progress = Progress("off", stream=stream)
    task = progress.task("train", total=10)
    assert type(task) is Task and Progress.off().task("merge") is task
    with task:
        task.update(5, 10)
        task.advance()
    assert stream.getvalue() == "" and not progress.bars


def test_a_terminal_gets_a_tqdm_bar_that_disappears():
    stream = Terminal()
    progress = Progress(stream=stream)
    assert progress.mode == "bars" and progress.bars
    with progress.task("merge", total=4_000_000, unit="B") as task:
        task.update(2_000_000)
        time.sleep(0.25)  # tqdm draws at most each 0.1 s; the task's thread redraws it
    text = stream.getvalue()
    assert "merge:  50%|" in text and "2.00M/4.00M" in text
    assert text.endswith("\r")  # cleared, not left on screen


def test_a_terminal_gets_a_spinner_while_the_total_is_unknown():
    stream = Terminal()
    with Progress(stream=stream).task("quantize Q4_K_M"):
        time.sleep(0.35)  # a few redraws
    frames = re.findall(r"\r(\S) quantize Q4_K_M \[00:0\d\]", stream.getvalue())
    assert len(set(frames)) >= 2  # it turns


def test_the_mode_comes_from_the_argument_then_the_environment_then_the_stream(monkeypatch):
    assert Progress(stream=io.StringIO()).mode == "lines"
    assert Progress(stream=Terminal()).mode == "bars"
    monkeypatch.setenv(ENV, "lines")
    assert Progress(stream=Terminal()).mode == "lines"
    monkeypatch.setenv(ENV, "Off")
    assert Progress(stream=Terminal()).mode == "off"
    monkeypatch.setenv(ENV, "bars")
    assert Progress(stream=io.StringIO()).mode == "bars"
    assert Progress("lines", stream=Terminal()).mode == "lines"  # given beats the environment
    monkeypatch.setenv(ENV, "fancy")
    with pytest.raises(UsageError, match="APTO_PROGRESS='fancy' is not a progress mode"):
        Progress()
    with pytest.raises(UsageError, match="'loud' is not a progress mode; choose bars, lines or off"):
        Progress("loud")  # type: ignore[arg-type]


def test_the_reporter_imports_neither_torch_nor_tqdm_for_lines():
    code = (
        "import sys; from apto_release.progress import Progress\n"
        "with Progress('lines').task('x', total=2) as t: t.advance(2)\n"
        "print(sorted(m for m in ('torch', 'tqdm') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]" and proc.stderr.startswith("x: 2/2 steps done in")
