"""Benchmark of the importance matrix: Q4_K_M and IQ4_XS with and without it, on a trained tiny Qwen3.5.

Run by hand (never in CI):  python benchmarks/bench_imatrix.py [--work DIR] [--general PATH] [--steps 600]

An untrained model's next-token distributions are nearly flat, so what an imatrix buys cannot be
seen on the test models. This benchmark trains one first, then measures, all in one run:

1. **A trained model.** A text-only Qwen3.5 (``build_tiny_qwen35`` with ``WIDTHS``: hidden 512,
   intermediate 1536, 4 layers, three Gated DeltaNet then one gated full attention, every
   projection's rows a multiple of llama.cpp's 256-value K-quant block; vocabulary: the 3,000-token
   Japanese BPE of ``apto_release.testing``), trained from its random start, every weight, for
   ``--steps`` AdamW steps of 16 x 256 tokens (float32, cosine schedule, seeded). The corpus:
   ``--records`` example records (``generate_records(seed=0)``, the "release's records"), each
   rendered with the chat template as training renders them (``RecordEncoder.render``), and, with
   ``--general PATH``, general Japanese text: a UTF-8 file, or a folder of man pages in roff
   (``.gz`` or not) whose text lines are taken (``man_text``). General lines are split by a hash
   of the line: 1 in 20 is held out for measuring, 1 in 20 is kept for calibration, the rest is
   trained on. The trained model is saved in bf16, as checkpoints on the Hub are, in ``--work``
   and reused by later runs with the same options and general text.
2. **The files.** The F16 GGUF (``gguf.convert``); the calibration text (``draw_calibration`` over
   the records, with the calibration share of the general lines, ``--calib-tokens`` tokens); the
   imatrix (``compute_imatrix``, llama.cpp's ``llama-imatrix``, chunks of 512); then each type of
   ``--quants`` (Q4_K_M and IQ4_XS, the issue's, and the 3-bit Q3_K_M and IQ3_M) made by the same
   llama.cpp twice, without and with the imatrix (``gguf.quantize``).
3. **The measure.** What ``gguf verify --against-f16`` measures (``gguf.quality``: llama.cpp's
   next-token distributions of each file against the F16 file's), per token: KL(F16 || file) and
   top-1 agreement, on three held-out texts, none of them in the calibration text: the package's
   ``heldout_ja.txt`` (what ``verify`` uses), example records of another seed
   (``generate_records(seed=1)``, only those whose rendered text is not a training record's), and
   the held-out general lines. Each text is cut into windows of 512 tokens (about 8,000 tokens a
   text; ``heldout_ja.txt`` is one window), each window a sequence of its own. Printed per text and
   type: mean and 99th percentile of the KL and top-1 agreement, without and with the imatrix;
   the ratio of the mean KLs and the difference in top-1 with a 95% interval from a paired
   bootstrap over windows (2,000 draws, seeded); the F16 model's own mean negative
   log-likelihood per token, against ln(vocabulary), the figure of a model that learnt nothing;
   and, as a cross-check, ``measure_quality``'s own figures on ``heldout_ja.txt``.

Everything is deterministic (seeded training on a fixed thread count, llama.cpp's tools), so a
rerun on the same machine prints the same figures.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_merge import machine  # noqa: E402  (shared with the merge benchmark)

FORMAT = 1  # bump when the model, corpus or training changes, so a cached model is retrained

#: Every projection's input a multiple of 256 (llama.cpp's K-quant and IQ4_XS block): hidden 512,
#: intermediate 1536, 4 x 64 attention, 8 x 32 linear-attention values.
WIDTHS = {
    "hidden_size": 512,
    "intermediate_size": 1536,
    "num_hidden_layers": 4,
    "layer_types": ["linear_attention", "linear_attention", "linear_attention", "full_attention"],
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "linear_num_key_heads": 4,
    "linear_num_value_heads": 8,
    "linear_key_head_dim": 32,
    "linear_value_head_dim": 32,
}
QUANTS = ("Q4_K_M", "IQ4_XS", "Q3_K_M", "IQ3_M")  # the two, and two 3-bit types
SEQ, BATCH = 256, 16
HELDOUT_TOKENS = 8192  # tokens of each held-out text besides heldout_ja.txt (about)
WINDOW = 512  # tokens a sequence, as llama-perplexity's default context

_JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")
_ROFF_ESCAPES = re.compile(r"\\f(\[[^\]]*\]|\(..|.)|\\[,/&:%|^]|\\\(..|\\s[-+]?\d")


# ---------------------------------------------------------------------------------------------
# The corpus


def man_text(folder: Path) -> list[str]:
    """The Japanese text lines of the roff man pages under ``folder``: requests dropped, escapes removed."""
    lines: list[str] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        for line in raw.decode("utf-8", errors="replace").splitlines():
            if line.startswith((".", "'")):
                continue
            text = _ROFF_ESCAPES.sub("", line).replace("\\-", "-").replace("\\e", "\\").strip()
            if len(text) >= 8 and _JAPANESE.search(text) and "\ufffd" not in text:
                lines.append(text)
    return lines


def general_lines(path: Path | None) -> dict[str, list[str]]:
    """General lines split by a hash of each line: ``train``, ``calibration`` (1 in 20), ``heldout`` (1 in 20)."""
    split: dict[str, list[str]] = {"train": [], "calibration": [], "heldout": []}
    if path is None:
        return split
    lines = man_text(path) if path.is_dir() else [x.strip() for x in path.read_text("utf-8").splitlines() if x.strip()]
    seen: set[str] = set()
    for line in lines:
        if line in seen:
            continue
        seen.add(line)
        bucket = int.from_bytes(hashlib.sha256(line.encode()).digest()[:4], "big") % 20
        split["heldout" if bucket == 0 else "calibration" if bucket == 1 else "train"].append(line)
    return split


def rendered(records: list[dict], tokenizer) -> list[str]:
    from apto_release.train.collate import RecordEncoder

    encoder = RecordEncoder(tokenizer, max_length=4096)
    return [encoder.render(r)[0] for r in records]


def first_tokens(texts: list[str], tokenizer, budget: int, separator: str = "\n") -> str:
    """``texts`` joined by ``separator``, as many as fit in ``budget`` tokens."""
    taken, used = [], 0
    for text in texts:
        n = len(tokenizer(text + separator, add_special_tokens=False)["input_ids"])
        if used + n > budget:
            break
        taken.append(text)
        used += n
    return separator.join(taken) + separator


# ---------------------------------------------------------------------------------------------
# Training


def train(init: Path, out: Path, documents: list[str], tokenizer, *, steps: int, lr: float, seed: int) -> dict:
    """Train every weight of ``init`` on ``documents`` (packed into blocks); save to ``out`` in bf16."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    ids: list[int] = []
    for doc in documents:
        ids += tokenizer(doc, add_special_tokens=False)["input_ids"] + [eos]
    blocks = torch.tensor(ids[: len(ids) // SEQ * SEQ]).view(-1, SEQ)
    order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(seed))
    model = AutoModelForCausalLM.from_pretrained(init, dtype=torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))))
    losses, started = [], time.monotonic()
    for step in range(steps):
        picked = order[(torch.arange(BATCH) + step * BATCH) % len(order)]
        batch = blocks[picked]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 25 == 0 or step == steps - 1:
            print(f"  step {step + 1}/{steps}: loss {loss.item():.3f} ({time.monotonic() - started:.0f} s)", flush=True)
    model.to(torch.bfloat16).save_pretrained(out)
    for item in init.iterdir():  # the tokenizer, chat template and generation config
        if not (out / item.name).exists() and not item.name.endswith((".safetensors", ".index.json")):
            shutil.copy2(item, out / item.name)
    return {"tokens": len(ids), "blocks": len(blocks), "epochs": steps * BATCH / len(blocks),
            "loss_first": losses[0], "loss_last": sum(losses[-20:]) / len(losses[-20:]),
            "seconds": time.monotonic() - started}


def trained_model(work: Path, args: argparse.Namespace) -> tuple[Path, dict, dict[str, str], Path]:
    """The trained checkpoint (built once per options), its training summary, the held-out texts and the records file."""
    from apto_release.dataset.example import generate_records, write_example_data
    from apto_release.gguf.quality import heldout_text
    from apto_release.testing.models import build_tiny_qwen35
    from apto_release.testing.tokenizer import build_japanese_tokenizer

    general = general_lines(args.general)
    key = {"format": FORMAT, "steps": args.steps, "records": args.records, "lr": args.lr, "seed": args.seed,
           "general": hashlib.sha256(json.dumps(general, ensure_ascii=False).encode()).hexdigest()}
    tag = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    root = work / f"model-{tag}"
    tokenizer = build_japanese_tokenizer()
    records_path = root / "records.jsonl"
    if not (root / "done.json").is_file():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        write_example_data(records_path, n=args.records, seed=0)
        init = build_tiny_qwen35(root / "init", tokenizer=tokenizer, vision=False, mtp=False, config=WIDTHS, num_shards=1, seed=args.seed)
        records = [json.loads(x) for x in records_path.read_text("utf-8").splitlines()]
        documents = rendered(records, tokenizer) + general["train"]
        print(f"training: {len(records)} records, {len(general['train'])} general lines", flush=True)
        summary = train(init, root / "trained", documents, tokenizer, steps=args.steps, lr=args.lr, seed=args.seed)
        summary["general_lines"] = {k: len(v) for k, v in general.items()}
        (root / "done.json").write_text(json.dumps(summary, indent=1), "utf-8")
    summary = json.loads((root / "done.json").read_text("utf-8"))
    seen = set(rendered([json.loads(x) for x in records_path.read_text("utf-8").splitlines()], tokenizer))
    fresh = [t for t in rendered(list(generate_records(args.records, seed=1)), tokenizer) if t not in seen]
    texts = {"heldout_ja.txt": heldout_text(), "records (seed 1)": first_tokens(fresh, tokenizer, HELDOUT_TOKENS)}
    if general["heldout"]:
        texts["general (held out)"] = first_tokens(general["heldout"], tokenizer, HELDOUT_TOKENS)
    if args.general:
        (root / "calibration-general.txt").write_text("\n".join(general["calibration"]) + "\n", "utf-8")
    return root / "trained", summary, texts, records_path


# ---------------------------------------------------------------------------------------------
# Measuring


@contextlib.contextmanager
def quiet_stderr():
    """llama.cpp's load log goes to the process's stderr (fd 2): silence it for a block."""
    saved = os.dup(2)
    with open(os.devnull, "wb") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def windows(f16: Path, texts: dict[str, str]) -> dict[str, list[list[int]]]:
    """Each text tokenized by the F16 file and cut into windows of ``WINDOW`` tokens (the last,
    shorter one dropped; a text shorter than a window is one window)."""
    from apto_release.gguf._llama_worker import load_model

    with quiet_stderr():
        llm = load_model(str(f16), n_ctx=64, threads=2)
        ids = {name: llm.tokenize(text.encode("utf-8"), add_bos=False, special=False) for name, text in texts.items()}
        del llm
    return {name: [t[i:i + WINDOW] for i in range(0, len(t) - WINDOW + 1, WINDOW)] or [t] for name, t in ids.items()}


def per_token(f16: Path, files: list[Path], cut: dict[str, list[list[int]]]) -> tuple[dict, dict]:
    """Per window: the F16 file's NLL of each next token, and each file's per-token KL(F16 || file)
    and top-1 agreement, with the functions ``gguf verify --against-f16`` uses (``gguf.quality``)."""
    import numpy as np

    from apto_release.gguf._llama_worker import load_model
    from apto_release.gguf.quality import _log_probs, compare

    n_ctx = 64 * -(-(max(len(w) for ws in cut.values() for w in ws) + 16) // 64)
    with quiet_stderr():
        llm = load_model(str(f16), n_ctx=n_ctx, threads=2)
        reference = {name: [_log_probs(llm, w) for w in ws] for name, ws in cut.items()}
        del llm
    nll = {name: [-lp[np.arange(len(w) - 1), w[1:]] for lp, w in zip(reference[name], ws, strict=True)] for name, ws in cut.items()}
    measured: dict[Path, dict[str, list]] = {}
    for path in files:
        with quiet_stderr():
            llm = load_model(str(path), n_ctx=n_ctx, threads=2)
            measured[path] = {name: [compare(ref, _log_probs(llm, w)) for ref, w in zip(reference[name], ws, strict=True)]
                              for name, ws in cut.items()}
            del llm
    return nll, measured


def paired_interval(without: list, with_: list, statistic, *, draws: int = 2000, seed: int = 0) -> tuple[float, float] | None:
    """A 95% percentile interval of ``statistic(with, without)`` over windows resampled in pairs; None for one window."""
    import numpy as np

    if len(without) < 2:
        return None
    rng = np.random.default_rng(seed)
    values = [statistic([with_[i] for i in pick], [without[i] for i in pick])
              for pick in rng.integers(0, len(without), size=(draws, len(without)))]
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def kl_ratio(with_: list, without: list) -> float:
    import numpy as np

    return float(np.concatenate([k for k, _ in with_]).mean() / np.concatenate([k for k, _ in without]).mean())


def top1_points(with_: list, without: list) -> float:
    import numpy as np

    return float(100 * (np.concatenate([a for _, a in with_]).mean() - np.concatenate([a for _, a in without]).mean()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/apto-bench-imatrix"))
    parser.add_argument("--general", type=Path, help="general Japanese text: a UTF-8 file, or a folder of roff man pages (e.g. /usr/share/man/ja)")
    parser.add_argument("--records", type=int, default=4000)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calib-tokens", type=int, default=100_000)
    parser.add_argument("--quants", default=",".join(QUANTS), help="types made with and without the imatrix [%(default)s]")
    args = parser.parse_args()
    quants = [q.strip() for q in args.quants.split(",") if q.strip()]

    import numpy as np

    from apto_release.gguf.calibration import draw_calibration
    from apto_release.gguf.convert import convert
    from apto_release.gguf.imatrix import compute_imatrix
    from apto_release.gguf.quality import measure_quality
    from apto_release.gguf.quantize import quantize
    from apto_release.gguf.tools import build_tools

    build_tools()
    args.work.mkdir(parents=True, exist_ok=True)
    model, summary, texts, records = trained_model(args.work, args)
    run = args.work / "run"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    f16 = convert(model, run, quant="F16").path
    general = model.parent / "calibration-general.txt"
    calib = draw_calibration(records, model, run / "calibration.txt", max_tokens=args.calib_tokens,
                             general=general if general.is_file() else None)
    imatrix = compute_imatrix(f16, calib.path, run / "imatrix.gguf", threads=2)
    files = {}
    for quant in quants:
        files[quant, False] = quantize(f16, run, f"M-{quant}", quant).path
        files[quant, True] = quantize(f16, run, f"M-{quant}-imatrix", quant, imatrix=imatrix.path).path
    # The same figures as gguf verify --against-f16 prints, on its held-out text (one sequence).
    verify = {Path(q.file).name: q for q in measure_quality(list(files.values()), f16)}
    cut = windows(f16, texts)
    nll, measured = per_token(f16, list(files.values()), cut)
    vocab = json.loads((model / "config.json").read_text("utf-8"))["vocab_size"]

    print(f"\n{machine(('torch', 'transformers', 'llama_cpp_python', 'gguf'))}")
    print(f"\nModel: Qwen3.5 text, hidden {WIDTHS['hidden_size']}, intermediate {WIDTHS['intermediate_size']}, "
          f"{WIDTHS['num_hidden_layers']} layers, vocabulary {vocab}; trained {args.steps} steps x {BATCH * SEQ} tokens "
          f"({summary['epochs']:.2f} epochs of {summary['tokens']:,} tokens: {args.records} records"
          f"{', general lines ' + str(summary['general_lines']['train']) if args.general else ''}), "
          f"loss {summary['loss_first']:.2f} -> {summary['loss_last']:.2f} in {summary['seconds'] / 60:.0f} min.")
    print(f"Calibration: {calib.tokens:,} tokens ({calib.tokens_by_source}); imatrix {imatrix.chunks} chunks of 512 "
          f"in {imatrix.seconds:.0f} s.")
    for name, ws in cut.items():
        tokens = sum(len(w) for w in ws)
        print(f"\n**{name}**: {len(ws)} window(s), {tokens:,} tokens; F16 mean NLL "
              f"{np.concatenate(nll[name]).mean():.2f} nats/token (ln(vocabulary) = {math.log(vocab):.2f})\n")
        print("| type | mean KL without -> with | p99 KL without -> with | top-1 without -> with | mean KL with/without (95% CI) | top-1 with - without, points (95% CI) |")
        print("|---|---|---|---|---|---|")
        for quant in quants:
            a, b = measured[files[quant, False]][name], measured[files[quant, True]][name]
            ka, kb = np.concatenate([k for k, _ in a]), np.concatenate([k for k, _ in b])
            ta, tb = np.concatenate([x for _, x in a]).mean(), np.concatenate([x for _, x in b]).mean()
            ci_kl, ci_top = paired_interval(a, b, kl_ratio), paired_interval(a, b, top1_points)
            print(f"| {quant} | {ka.mean():.2e} -> {kb.mean():.2e} | {np.percentile(ka, 99):.2e} -> {np.percentile(kb, 99):.2e} | "
                  f"{ta:.1%} -> {tb:.1%} | x{kl_ratio(b, a):.3f}{_interval(ci_kl, 'x{:.3f}')} | "
                  f"{top1_points(b, a):+.2f}{_interval(ci_top, '{:+.2f}')} |")
    print("\n**gguf verify --against-f16** (heldout_ja.txt as one sequence): "
          + "; ".join(f"{quant} {verify[files[quant, False].name].kl_mean:.2e} -> {verify[files[quant, True].name].kl_mean:.2e}"
                      for quant in quants))
    return 0


def _interval(ci: tuple[float, float] | None, fmt: str) -> str:
    return f" ({fmt.format(ci[0])} to {fmt.format(ci[1])})" if ci else ""


if __name__ == "__main__":
    sys.exit(main())
