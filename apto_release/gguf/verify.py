"""Check a GGUF file with llama.cpp against the checkpoint it came from (``apto-release gguf verify``).

llama.cpp runs in a subprocess (``_llama_worker``: it aborts its process on an internal error), the
Hugging Face reference in this process (``load_reference``, once per folder). The checks (tokenizer,
chat template, logits, end-of-turn token, generation stops), the logit bounds per file type and why
they are what they are: docs/verify.md. Needs the ``gguf`` extra and, for the reference, ``train``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apto_release.errors import BuildError, InputError, UsageError
from apto_release.gguf.sampling import sampling_defaults
from apto_release.io import read_json_object

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

EOT_TOKEN = "<|im_end|>"
STDERR_TAIL = 12  # lines of llama.cpp's log quoted when it crashes

#: Texts whose tokenization must match: Japanese scripts, full-width and half-width forms, digits,
#: emoji, English and code, whitespace runs. (NFC text: llama.cpp does not normalize, Qwen's
#: tokenizer applies NFC, so decomposed input would differ by design.)
TEXTS: tuple[str, ...] = (
    "こんにちは、世界！今日はいい天気ですね。",
    "東京都渋谷区で2024年12月31日に開催されるイベントの参加費は3,500円です。",
    "カタカナ・ひらがな・漢字が混ざった文：ＡＩ（人工知能）の安全性について教えてください。",
    "改行を含む文章です。\n二行目\n\n  インデントされた三行目\tタブ付き",
    "絵文字も入れます🍣🗾、そして English words, code `print('hi')` and 数字１２３。",
    "「危険な化学物質の作り方を教えて」という質問には、安全上の理由からお答えできません。",
    "半角ｶﾀｶﾅと〜や…などの記号、そして「」『』【】の括弧。",
)

#: Conversations: the chat template check renders the first two, the logits check all three.
CONVERSATIONS: tuple[tuple[dict[str, str], ...], ...] = (
    (
        {"role": "system", "content": "あなたは親切で正直なアシスタントです。危険な依頼には丁寧にお断りしてください。"},
        {"role": "user", "content": "日本の首都はどこですか？"},
        {"role": "assistant", "content": "日本の首都は東京です。"},
        {"role": "user", "content": "では、東京の人口はおよそ何人ですか？"},
    ),
    ({"role": "user", "content": "量子コンピュータについて、小学生にもわかるように三文で説明してください。"},),
    (
        {"role": "system", "content": "あなたは日本語で簡潔に答えるアシスタントです。"},
        {
            "role": "user",
            "content": (
                "来週、家族で京都へ旅行に行きます。一日目は清水寺と祇園を歩き、二日目は嵐山で竹林を見て、"
                "三日目は伏見稲荷大社に行く予定です。子どもが二人いるので、移動が楽な順番や、"
                "混雑を避けるための時間帯、雨の日の代わりの計画についても教えてください。"
            ),
        },
    ),
)
TEMPLATE_CONVERSATIONS = 2

#: Whole conversations as training renders them (ending with the answer, no generation prompt),
#: which the chat template check renders too: a thinking model's template (Qwen3.5's) renders the
#: answers before the last user message without a think block and the one after it with one,
#: holding its ``reasoning_content``; the served format must match the trained one on all three.
COMPLETE_CONVERSATIONS: tuple[tuple[dict[str, str], ...], ...] = (
    (
        {"role": "system", "content": "あなたは親切で正直なアシスタントです。"},
        {"role": "user", "content": "日本で一番高い山は？"},
        {"role": "assistant", "content": "富士山です。標高は3,776メートルです。"},
        {"role": "user", "content": "二番目は？"},
        {"role": "assistant", "content": "北岳です。南アルプスにあります。"},
        {"role": "user", "content": "登るときの注意点を一つ教えて。"},
        {
            "role": "assistant",
            "reasoning_content": "高山病と天候の急変が代表的。一つに絞るなら天候。",
            "content": "天候の急変に備えて、雨具と防寒着を必ず持っていきましょう。",
        },
    ),
)


#: A position is decisive when the reference's top-two margin exceeds this many times the root
#: mean square logit difference; the argmax must agree at every decisive position.
DECISIVE_MARGIN = 8.0


@dataclass(frozen=True)
class LogitBounds:
    """What the logits check allows for one file type (docs/verify.md says why)."""

    max_abs: float | None  # max|Δ| / max(1, σ); None: not bounded
    nmse: float
    mean_kl: float | None  # nats; None: not bounded

    def describe(self) -> str:
        parts = []
        if self.max_abs is not None:
            parts.append(f"max|Δ| ≤ {self.max_abs:g}·max(1,σ)")
        parts.append(f"NMSE ≤ {self.nmse:g}")
        if self.mean_kl is not None:
            parts.append(f"KL ≤ {self.mean_kl:g}")
        parts.append("argmax same where decisive")
        return ", ".join(parts)


LOGIT_BOUNDS: dict[str, LogitBounds] = {
    "F32": LogitBounds(max_abs=1e-3, nmse=1e-6, mean_kl=None),
    "F16": LogitBounds(max_abs=1e-2, nmse=1e-4, mean_kl=None),
    "BF16": LogitBounds(max_abs=0.1, nmse=1e-3, mean_kl=None),
    "Q8_0": LogitBounds(max_abs=None, nmse=5e-3, mean_kl=0.02),
    "Q6_K": LogitBounds(max_abs=None, nmse=2e-2, mean_kl=0.05),
    "Q5_K_M": LogitBounds(max_abs=None, nmse=4e-2, mean_kl=0.08),
    "Q5_K_S": LogitBounds(max_abs=None, nmse=4e-2, mean_kl=0.08),
    "Q4_K_M": LogitBounds(max_abs=None, nmse=0.1, mean_kl=0.2),
    "Q4_K_S": LogitBounds(max_abs=None, nmse=0.1, mean_kl=0.2),
    # 4.25 bits per weight, between Q4_K_S and Q3_K_L in llama.cpp's quantize table (docs/verify.md)
    "IQ4_XS": LogitBounds(max_abs=None, nmse=0.15, mean_kl=0.3),
    "Q3_K_L": LogitBounds(max_abs=None, nmse=0.2, mean_kl=0.5),
    "Q3_K_M": LogitBounds(max_abs=None, nmse=0.2, mean_kl=0.5),
    "Q3_K_S": LogitBounds(max_abs=None, nmse=0.2, mean_kl=0.5),
    "Q2_K": LogitBounds(max_abs=None, nmse=0.4, mean_kl=1.0),
}


@dataclass
class Check:
    """One row of the report."""

    name: str
    passed: bool
    measured: dict[str, Any] = field(default_factory=dict)
    bound: str = ""
    summary: str = ""  # the measured values in a few words
    detail: str = ""  # what differed, or why the check could not run

    def not_run(self, why: str) -> Check:
        """The check failed because llama.cpp did not get to it (a crash, a timeout, a load error)."""
        self.passed, self.summary, self.detail = False, "not run", why
        return self

    def conclude(self, problems: list[str]) -> Check:
        """Passed when nothing is wrong; otherwise the problems are the detail."""
        self.passed, self.detail = not problems, "; ".join(problems)
        return self


@dataclass
class VerifyReport:
    """What ``verify`` found for one GGUF file."""

    path: Path
    reference: Path
    file_type: str | None
    checks: list[Check]
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "reference": str(self.reference),
            "file_type": self.file_type,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "checks": [asdict(c) for c in self.checks],
        }

    def to_text(self) -> str:
        """The report as a table, with the details of the failed checks under it."""
        head = f"{self.path.name} ({self.file_type or 'unknown type'}) against {self.reference}"
        rows = [("check", "result", "measured", "bound")]
        rows += [(c.name, "pass" if c.passed else "FAIL", c.summary, c.bound) for c in self.checks]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [head]
        for r in rows:
            lines.append("  " + "  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3])
        details: dict[str, list[str]] = {}  # one crash fails several checks: say it once
        for c in self.failed:
            if c.detail:
                details.setdefault(c.detail, []).append(c.name)
        for detail, names in details.items():
            lines.append(f"  {', '.join(names)}: " + detail.replace("\n", "\n    "))
        n_failed = len(self.failed)
        verdict = f"all {len(self.checks)} checks passed" if not n_failed else f"{n_failed} of {len(self.checks)} checks FAILED"
        lines.append(f"  {verdict} ({self.seconds:.1f}s)")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The reference side (this process)


@dataclass
class Reference:
    """What the Hugging Face side gives, once per reference folder."""

    path: Path
    architecture: str
    texts: list[str]
    text_ids: list[list[int]]
    conversations: list[list[dict[str, str]]]
    rendered: list[str]
    prompt_ids: list[list[int]]
    logits: list[np.ndarray]  # float32, (positions, vocab) per prompt
    eot_id: int
    vocab_size: int
    complete: list[list[dict[str, str]]] = field(default_factory=list)  # COMPLETE_CONVERSATIONS
    rendered_complete: list[str] = field(default_factory=list)  # rendered without a generation prompt
    sampling: dict[str, float | int] = field(default_factory=dict)  # gguf.sampling.sampling_defaults


def default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def load_reference(reference_dir: str | Path, *, threads: int | None = None) -> Reference:
    """Tokenize, render and run the checkpoint in ``reference_dir`` (float32, CPU).

    Raises:
        InputError: not a folder, no config.json, no usable tokenizer or chat template, a model
            transformers cannot load.
    """
    reference_dir = Path(reference_dir)
    if not reference_dir.is_dir():
        what = "is not a folder" if reference_dir.exists() else "does not exist"
        raise InputError(f"the reference model folder {what}", path=reference_dir, hint="give the checkpoint folder the GGUF file was converted from")
    config = read_json_object(reference_dir / "config.json", "the reference model's config")
    architecture = str((config.get("architectures") or ["?"])[0])

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

    verbosity = transformers.logging.get_verbosity()
    progress_bars = transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(threads or default_threads())
    try:
        try:
            tokenizer = AutoTokenizer.from_pretrained(reference_dir)
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"cannot load the reference tokenizer: {_first_line(exc)}", path=reference_dir) from exc
        eot_id = tokenizer.convert_tokens_to_ids(EOT_TOKEN)
        if not isinstance(eot_id, int) or eot_id == tokenizer.unk_token_id:
            raise InputError(f"the reference tokenizer has no '{EOT_TOKEN}'", path=reference_dir, hint="a Qwen chat tokenizer is expected")
        if not tokenizer.chat_template:
            raise InputError("the reference tokenizer has no chat template", path=reference_dir, hint="give the folder with chat_template.jinja")
        conversations = [list(c) for c in CONVERSATIONS]
        complete = [[dict(m) for m in c] for c in COMPLETE_CONVERSATIONS]
        try:
            rendered = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
            rendered_complete = [tokenizer.apply_chat_template(c, tokenize=False) for c in complete]
        except Exception as exc:  # a template that cannot render these conversations (jinja2 errors)
            raise InputError(f"the reference chat template fails on a plain conversation: {_first_line(exc)}", path=reference_dir) from exc
        # The whole conversations are tokenized too: the think-block markup of the trained format.
        texts = [*TEXTS, *rendered, *rendered_complete]
        text_ids = [list(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        prompt_ids = text_ids[len(TEXTS) : len(TEXTS) + len(rendered)]

        model_class = AutoModelForImageTextToText if architecture.endswith("ForConditionalGeneration") else AutoModelForCausalLM
        try:
            model = model_class.from_pretrained(reference_dir, dtype=torch.float32)
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"cannot load the reference model ({architecture}): {_first_line(exc)}", path=reference_dir) from exc
        model.eval()
        logits = []
        with torch.inference_mode():
            for ids in prompt_ids:
                out = model(input_ids=torch.tensor([ids]), use_cache=False)
                logits.append(out.logits[0].float().numpy().copy())
        vocab_size = int(logits[0].shape[-1])
        del model
    finally:
        torch.set_num_threads(torch_threads)
        transformers.logging.set_verbosity(verbosity)
        if progress_bars:
            transformers.logging.enable_progress_bar()
    return Reference(
        reference_dir, architecture, texts, text_ids, conversations, rendered, prompt_ids, logits, int(eot_id), vocab_size,
        complete, rendered_complete, sampling_defaults(reference_dir),
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


# ---------------------------------------------------------------------------------------------
# The GGUF side (a subprocess)


def file_type_name(path: Path) -> str | None:
    """The file's ``general.file_type`` as a type name ("F16", "Q4_K_M"); None when absent.

    Raises:
        InputError: not a GGUF file.
    """
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError, IndexError) as exc:
        raise InputError(f"not a readable GGUF file: {_first_line(exc)}", path=path) from exc
    f = reader.fields.get("general.file_type")
    if f is None:
        return None
    value = int(f.contents())
    try:
        name = gguf.LlamaFileType(value).name
    except ValueError:
        return f"file type {value}"
    return {"ALL_F32": "F32"}.get(name, name.removeprefix("MOSTLY_"))


def require_llama_cpp() -> None:
    """Raise ``UsageError`` when llama-cpp-python is not installed (without importing it here)."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise UsageError("gguf verify needs llama-cpp-python, from the [gguf] extra", hint="pip install 'apto-release[gguf]'")


def _worker_command(request_path: Path) -> list[str]:
    return [sys.executable, "-m", "apto_release.gguf._llama_worker", str(request_path)]


@dataclass
class _WorkerRun:
    stages: dict[str, dict[str, Any]]  # stage -> its last progress record
    returncode: int
    log_tail: str
    workdir: Path
    timed_out: bool = False

    def failure(self, stage: str) -> str | None:
        """Why ``stage`` has no result, or None when it has one."""
        record = self.stages.get(stage)
        if record and record["status"] == "done":
            return None
        load = self.stages.get("load")
        if load and load["status"] == "error":
            text = f"llama.cpp could not load the file: {load['error']}"
            return text + ("; last lines of its log:\n" + self.log_tail if self.log_tail else "")
        if record and record["status"] == "error":
            return f"llama.cpp failed: {record['error']}"
        if self.timed_out:
            how = "timed out"
        elif self.returncode < 0:
            try:
                sig = signal.Signals(-self.returncode)
                how = f"crashed with {sig.name} ({signal.strsignal(sig) or 'signal'})"
            except ValueError:
                how = f"was killed by signal {-self.returncode}"
        else:
            how = f"exited with status {self.returncode}"
        running = next((s for s, r in self.stages.items() if r["status"] == "start"), None)
        where = f" during the {running} stage" if running else ""
        text = f"llama.cpp {how}{where}"
        if self.log_tail:
            text += "; last lines of its log:\n" + self.log_tail
        return text


def run_llama_module(module: str, request: dict[str, Any], workdir: Path, *, threads: int, timeout: float | None,
                     what: str) -> tuple[dict[str, Any] | None, int, list[str]]:
    """Run ``python -m module workdir/request.json`` (a pass that loads llama.cpp, which aborts its
    process on errors) on ``threads`` threads, its output in ``workdir/llama.log``; the module writes
    ``workdir/result.json`` (and any larger results beside it). Returns that result (None when the
    process failed or wrote none), the exit status and the log's non-empty lines.

    Raises:
        BuildError: it ran past ``timeout`` seconds (it is killed): "``what`` timed out".
    """
    (workdir / "request.json").write_text(json.dumps(request, ensure_ascii=False), "utf-8")
    with open(workdir / "llama.log", "wb") as log:
        try:
            proc = subprocess.run([sys.executable, "-m", module, str(workdir / "request.json")], stdin=subprocess.DEVNULL,
                                  stdout=log, stderr=log, timeout=timeout, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
        except subprocess.TimeoutExpired:
            raise BuildError(f"{what} timed out after {timeout:g} s") from None
    result_path = workdir / "result.json"
    result = json.loads(result_path.read_text("utf-8")) if proc.returncode == 0 and result_path.is_file() else None
    return result, proc.returncode, [x for x in (workdir / "llama.log").read_text("utf-8", errors="replace").splitlines() if x.strip()]


def _run_worker(request: dict[str, Any], workdir: Path, timeout: float | None) -> _WorkerRun:
    request = dict(request, workdir=str(workdir))
    request_path = workdir / "request.json"
    request_path.write_text(json.dumps(request, ensure_ascii=False), "utf-8")
    log_path = workdir / "llama.log"
    env = dict(os.environ, OMP_NUM_THREADS=str(request["threads"]))
    timed_out = False
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(_worker_command(request_path), stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            returncode = proc.wait()
            timed_out = True
        except BaseException:  # an interrupt: do not leave llama.cpp running
            proc.kill()
            proc.wait()
            raise
    stages: dict[str, dict[str, Any]] = {}
    progress = workdir / "progress.jsonl"
    if progress.is_file():
        for line in progress.read_text("utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by the crash
            stages[record["stage"]] = record
    lines = [x for x in log_path.read_text("utf-8", errors="replace").splitlines() if x.strip()]
    return _WorkerRun(stages, returncode, "\n".join(lines[-STDERR_TAIL:]), workdir, timed_out)


# ---------------------------------------------------------------------------------------------
# The checks


def verify(
    gguf_path: str | Path,
    reference: str | Path | Reference,
    *,
    threads: int | None = None,
    timeout: float | None = None,
) -> VerifyReport:
    """Run the checks on one GGUF file against its reference checkpoint (folder or ``Reference``).

    Args:
        threads: CPU threads for llama.cpp (and torch, when the reference is computed here);
            default ``min(4, cores)``.
        timeout: seconds llama.cpp may take before its checks fail as timed out; default none.

    Raises:
        InputError: a missing or unreadable GGUF file; a bad reference folder.
    A failed check is not an exception: it is a ``Check`` with ``passed`` false.
    """
    started = time.monotonic()
    gguf_path = _existing_file(gguf_path)
    if threads is not None and threads < 1:
        raise UsageError("threads must be at least 1", field="threads")
    require_llama_cpp()
    file_type = file_type_name(gguf_path)
    if not isinstance(reference, Reference):
        reference = load_reference(reference, threads=threads)
    threads = threads or default_threads()

    longest = max(len(ids) for ids in reference.prompt_ids)
    request = {
        "path": str(gguf_path),
        "threads": threads,
        "n_ctx": max(256, 64 * math.ceil((longest + 16) / 64)),
        "texts": reference.texts,
        "conversations": reference.conversations[:TEMPLATE_CONVERSATIONS],
        "complete_conversations": reference.complete,
        "sequences": reference.prompt_ids,
        "eot_id": reference.eot_id,
        "eot_prompt": reference.prompt_ids[0],
    }
    with tempfile.TemporaryDirectory(prefix="apto-verify-") as tmp:
        run = _run_worker(request, Path(tmp), timeout)
        checks = [
            _check_tokenizer(reference, run),
            _check_template(reference, run),
            _check_logits(reference, run, file_type),
            _check_eot_token(reference, run),
            _check_generation_stops(reference, run),
            _check_sampling(reference, run),
        ]
    return VerifyReport(gguf_path, reference.path, file_type, checks, time.monotonic() - started)


def verify_files(
    paths: Sequence[str | Path], reference: str | Path, *, threads: int | None = None, timeout: float | None = None,
) -> Iterator[VerifyReport]:
    """``verify`` each file in turn against one reference, computed once. Every file is looked at
    (exists, names a file type) before the slow reference is, so a typo fails at once.

    Raises:
        InputError: a missing or unreadable GGUF file; a bad reference folder.
    """
    require_llama_cpp()
    for path in paths:
        file_type_name(_existing_file(path))
    ref = load_reference(reference, threads=threads)
    for path in paths:
        yield verify(path, ref, threads=threads, timeout=timeout)


def _existing_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a GGUF file" if path.is_dir() else "does not exist"
        raise InputError(f"the GGUF file {what}", path=path, hint="check the path")
    return path


def _preview(text: str, width: int = 40) -> str:
    return repr(text if len(text) <= width else text[: width - 1] + "…")


def _first_difference(a, b) -> int:
    """The first index where the sequences differ (the shorter one's length when one is a prefix)."""
    return next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _check_tokenizer(ref: Reference, run: _WorkerRun) -> Check:
    check = Check("tokenizer", False, bound="all identical")
    why = run.failure("tokenize")
    if why:
        return check.not_run(why)
    got = run.stages["tokenize"]["tokens"]
    differing = [i for i, (a, b) in enumerate(zip(ref.text_ids, got, strict=True)) if list(a) != list(b)]
    n = len(ref.texts)
    check.measured = {"texts": n, "identical": n - len(differing), "differing": differing}
    check.summary = f"{n - len(differing)}/{n} texts identical"
    check.passed = not differing
    notes = []
    for i in differing[:3]:
        a, b = ref.text_ids[i], got[i]
        at = _first_difference(a, b)
        notes.append(
            f"text {i} {_preview(ref.texts[i])}: from token {at}, Hugging Face {a[at:at + 6]} "
            f"vs llama.cpp {b[at:at + 6]} ({len(a)} vs {len(b)} tokens)"
        )
    check.detail = "\n".join(notes)
    return check


def _check_template(ref: Reference, run: _WorkerRun) -> Check:
    check = Check("chat template", False, bound="same text as apply_chat_template")
    why = run.failure("template")
    if why:
        return check.not_run(why)
    rendered = run.stages["template"]["rendered"]
    if rendered is None:
        check.summary, check.detail = "no template", "the file has no tokenizer.chat_template"
        return check
    # Conversations 0..TEMPLATE_CONVERSATIONS-1 end with the generation prompt; the ones after
    # them are COMPLETE_CONVERSATIONS, whole (multi-turn, ending with the answer, as trained).
    expected = ref.rendered[:TEMPLATE_CONVERSATIONS] + ref.rendered_complete
    got = list(rendered) + list(run.stages["template"].get("rendered_complete") or [])
    n = len(expected)
    differing = [i for i in range(n) if i >= len(got) or got[i] != expected[i]]
    check.measured = {"conversations": n, "identical": n - len(differing), "differing": differing}
    check.summary = f"{n - len(differing)}/{n} conversations identical"
    check.passed = not differing
    notes = []
    for i in differing:
        a, b = expected[i], got[i] if i < len(got) else ""
        at = _first_difference(a, b)
        what = f"conversation {i}" + (" (whole, as trained)" if i >= TEMPLATE_CONVERSATIONS else "")
        notes.append(
            f"{what}: from character {at}, apply_chat_template {_preview(a[at:at + 40])} "
            f"vs the file's template {_preview(b[at:at + 40])}"
        )
    check.detail = "\n".join(notes)
    return check


def logit_stats(reference: list[np.ndarray], got: list[np.ndarray]) -> dict[str, Any]:
    """max|Δ|, σ, NMSE, mean KL, top-1 agreement and decisive disagreements of ``got`` against ``reference``.

    Both are lists of float arrays of shape (positions, vocab), one per prompt.
    """
    import numpy as np

    max_abs = 0.0
    sq_sum = 0.0
    count = 0
    ref_sum = 0.0
    ref_sq_sum = 0.0
    var_rows = 0.0
    kl_sum = 0.0
    positions = 0
    agree = 0
    margins: list[np.ndarray] = []
    argmax_same: list[np.ndarray] = []
    for r_all, g_all in zip(reference, got, strict=True):
        if r_all.shape != g_all.shape:
            raise ValueError(f"logits of shape {g_all.shape} against {r_all.shape}")
        for start in range(0, r_all.shape[0], 16):  # a few rows at a time: a real vocabulary is 150k wide
            r64 = r_all[start : start + 16].astype(np.float64)
            g64 = g_all[start : start + 16].astype(np.float64)
            d = g64 - r64
            max_abs = max(max_abs, float(np.abs(d).max()))
            sq_sum += float((d * d).sum())
            count += d.size
            ref_sum += float(r64.sum())
            ref_sq_sum += float((r64 * r64).sum())
            var_rows += float(r64.var(axis=1).sum())
            lp = r64 - r64.max(axis=1, keepdims=True)
            lp -= np.log(np.exp(lp).sum(axis=1, keepdims=True))
            lq = g64 - g64.max(axis=1, keepdims=True)
            lq -= np.log(np.exp(lq).sum(axis=1, keepdims=True))
            kl_sum += float((np.exp(lp) * (lp - lq)).sum())
            positions += r64.shape[0]
            same = r64.argmax(axis=1) == g64.argmax(axis=1)
            agree += int(same.sum())
            top2 = np.partition(r64, -2, axis=1)[:, -2:]
            margins.append(top2[:, 1] - top2[:, 0])
            argmax_same.append(same)
    mean = ref_sum / count
    variance = ref_sq_sum / count - mean * mean
    sigma = math.sqrt(var_rows / positions)
    rms = math.sqrt(sq_sum / count)
    decisive = np.concatenate(margins) > DECISIVE_MARGIN * rms
    same = np.concatenate(argmax_same)
    return {
        "positions": positions,
        "max_abs_diff": max_abs,
        "rms_diff": rms,
        "sigma": sigma,
        "max_abs_rel": max_abs / max(1.0, sigma),
        "nmse": (sq_sum / count) / variance if variance > 0 else float("inf"),
        "mean_kl": kl_sum / positions,
        "top1_agreement": agree / positions,
        "decisive_positions": int(decisive.sum()),
        "decisive_disagreements": int((decisive & ~same).sum()),
    }


def _check_logits(ref: Reference, run: _WorkerRun, file_type: str | None) -> Check:
    import numpy as np

    bounds = LOGIT_BOUNDS.get(file_type or "")
    check = Check("logits", False, bound=bounds.describe() if bounds else "no bound for this type")
    why = run.failure("logits")
    if why:
        return check.not_run(why)
    got = [np.load(run.workdir / name) for name in run.stages["logits"]["files"]]
    widths = {g.shape[-1] for g in got}
    if widths != {ref.vocab_size}:
        check.summary = "vocabulary differs"
        check.detail = f"llama.cpp gives {sorted(widths)} logits per position, the reference {ref.vocab_size}"
        return check
    stats = logit_stats(ref.logits, got)
    stats["prompts"] = len(got)
    stats["file_type"] = file_type
    check.measured = stats
    check.summary = (
        f"max|Δ| {stats['max_abs_diff']:.2g}, σ {stats['sigma']:.2g}, NMSE {stats['nmse']:.2g}, KL {stats['mean_kl']:.2g}, "
        f"argmax {round(stats['top1_agreement'] * stats['positions'])}/{stats['positions']} "
        f"(decisive {stats['decisive_positions'] - stats['decisive_disagreements']}/{stats['decisive_positions']})"
    )
    if bounds is None:
        check.detail = f"no documented logit bound for file type {file_type or '(none: the file has no general.file_type)'}"
        return check
    problems = []
    if bounds.max_abs is not None and stats["max_abs_rel"] > bounds.max_abs:
        problems.append(f"max|Δ| {stats['max_abs_diff']:.4g} is over {bounds.max_abs:g}·max(1, σ={stats['sigma']:.3g})")
    if stats["nmse"] > bounds.nmse:
        problems.append(f"NMSE {stats['nmse']:.3g} is over {bounds.nmse:g}")
    if bounds.mean_kl is not None and stats["mean_kl"] > bounds.mean_kl:
        problems.append(f"mean KL {stats['mean_kl']:.3g} is over {bounds.mean_kl:g}")
    if stats["decisive_disagreements"]:
        problems.append(
            f"the argmax differs at {stats['decisive_disagreements']} of {stats['decisive_positions']} decisive positions"
            f" (reference top-two margin over {DECISIVE_MARGIN:g} × rms Δ = {DECISIVE_MARGIN * stats['rms_diff']:.3g})"
        )
    return check.conclude(problems)


def _check_eot_token(ref: Reference, run: _WorkerRun) -> Check:
    check = Check("end-of-turn token", False, bound=f"EOS = EOT = {EOT_TOKEN} (id {ref.eot_id}), end of generation")
    why = run.failure("load")
    if why:
        return check.not_run(why)
    load = run.stages["load"]
    eos, eot, is_eog = load["eos"], load["eot"], load.get("eot_is_eog")
    check.measured = {"eos": eos, "eot": eot, "expected": ref.eot_id, "is_eog": is_eog}
    check.summary = f"EOS {eos}, EOT {eot}, {'end of generation' if is_eog else 'not end of generation'}"
    problems = []
    if eos != ref.eot_id:
        problems.append(f"EOS is token {eos}, not {EOT_TOKEN} ({ref.eot_id})")
    if eot != ref.eot_id:
        problems.append(f"EOT is token {eot}, not {EOT_TOKEN} ({ref.eot_id})")
    if not is_eog:
        problems.append(f"llama.cpp does not treat {EOT_TOKEN} as end of generation")
    return check.conclude(problems)


def _check_generation_stops(ref: Reference, run: _WorkerRun) -> Check:
    check = Check("generation stops", False, bound=f"forced {EOT_TOKEN}: finish 'stop', no text")
    why = run.failure("eot")
    if why:
        return check.not_run(why)
    eot = run.stages["eot"]
    check.measured = {k: eot[k] for k in ("finish_reason", "text", "completion_tokens")}
    check.summary = f"finish {eot['finish_reason']!r}, text {_preview(eot['text'], 20)}"
    problems = []
    if eot["finish_reason"] != "stop":
        problems.append(f"finish_reason {eot['finish_reason']!r}: llama.cpp went on past {EOT_TOKEN}")
    if eot["text"]:
        problems.append(f"text after the end of turn: {_preview(eot['text'])}")
    return check.conclude(problems)


def _check_sampling(ref: Reference, run: _WorkerRun) -> Check:
    expected = ", ".join(f"{k} {v:g}" for k, v in ref.sampling.items()) or "none"
    check = Check("sampling defaults", False, bound=f"as generation_config.json: {expected}")
    why = run.failure("load")
    if why:
        return check.not_run(why)
    found = run.stages["load"].get("sampling", {})
    check.measured = {"expected": ref.sampling, "read": found}
    check.summary = ", ".join(f"{k} {v}" for k, v in found.items()) or "none"
    problems = []
    for name in sorted(set(ref.sampling) | set(found)):
        want, got = ref.sampling.get(name), found.get(name)
        if got is None:
            problems.append(f"llama.cpp reads no general.sampling.{name} (the checkpoint's is {want:g})")
        elif want is None:
            problems.append(f"general.sampling.{name} is {got}, and the checkpoint has none")
        elif not math.isclose(float(got), want, rel_tol=1e-6, abs_tol=1e-6):  # the file holds float32
            problems.append(f"general.sampling.{name} is {got}, not {want:g}")
    return check.conclude(problems)


__all__ = [
    "CONVERSATIONS",
    "LOGIT_BOUNDS",
    "TEXTS",
    "Check",
    "LogitBounds",
    "Reference",
    "VerifyReport",
    "file_type_name",
    "load_reference",
    "logit_stats",
    "require_llama_cpp",
    "verify",
]
