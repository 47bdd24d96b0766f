"""The credential scan the push runs on every file it would publish, before any request.

What is looked for (``PATTERNS``; the README lists them too):

- Hugging Face tokens: ``hf_`` and 34 or more letters and digits; exchanged ones (Trusted
  Publishing, OAuth): ``hf_jwt_``/``hf_oauth_`` and 20 or more token characters; OIDC id tokens
  (a JWT: ``eyJ…`` header, ``.eyJ…`` claims, ``.`` signature);
- OpenAI keys ``sk-…`` / ``sk-proj-…`` and Anthropic keys ``sk-ant-…`` (20 or more key characters);
- AWS access key ids ``AKIA``/``ASIA`` + 16 upper-case letters and digits, and a 40-character secret
  key within three lines of one (or after ``aws_secret_access_key``);
- GCP service-account JSON (``"private_key": "-----BEGIN PRIVATE KEY-----``) and API keys ``AIza…``
  (35 more characters);
- private-key PEM blocks (``-----BEGIN … PRIVATE KEY-----``: RSA, EC, DSA, OpenSSH, encrypted, PGP);
- ``.netrc`` entries: ``machine <host>`` followed (on the same line or the next ones) by
  ``password <secret>``.

How much of a file is read: a text file (no NUL byte in its first 8 KiB) is read whole, a line at
a time. A binary file is read only where text lives, never its tensor data: a safetensors file's
JSON header, a GGUF file's metadata key/values (parsed from the header, bounded), and of any other
binary its first and last MiB (a Parquet footer's key/value metadata is at its end). So a 20 GB
checkpoint costs a few reads.

A hit names the file and the line (a byte offset in a binary), with the secret masked. A file the
manifest lists in ``allow_secrets_in`` (with a reason: a test fixture that holds fake keys) is not
scanned.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from apto_release.errors import InputError

SNIFF_BYTES = 8192
BINARY_EDGE = 1 << 20  # of an unknown binary, its first and last MiB are scanned
SAFETENSORS_HEADER_CAP = 100 << 20  # the safetensors format's own limit on its header
GGUF_METADATA_CAP = 256 << 20  # a GGUF header with more metadata than this is scanned up to here
NEAR_LINES = 3  # an AWS secret key this close to an access key id is one

# Patterns on bytes (so a binary's text parts need no decoding). Built from pieces so that this
# file holds no literal that looks like a key to other scanners.
_B = r"(?<![A-Za-z0-9_-])"  # a key starts at a word boundary
PATTERNS: dict[str, str] = {
    "a Hugging Face token": _B + r"hf_[A-Za-z0-9]{34,}",
    "an exchanged Hugging Face token": _B + r"hf_(?:jwt|oauth)_[A-Za-z0-9._-]{20,}",
    "an OIDC id token (JWT)": _B + r"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}",
    "an Anthropic API key": _B + r"sk-ant-[A-Za-z0-9_-]{20,}",
    "an OpenAI API key": _B + r"sk-(?!ant-)(?:proj-)?[A-Za-z0-9_-]{20,}",
    "an AWS access key id": r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])",
    "an AWS secret access key": r"(?i:aws_?secret_?access_?key)[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])",
    "a GCP service-account private key": r"\"private_key\"\s*:\s*\"-----BEGIN " + r"PRIVATE KEY-----",
    "a GCP API key": r"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])",
    "a private key (PEM)": r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----",
    "a .netrc password": r"(?m:^[ \t]*machine[ \t]+\S+(?:[ \t]+(?:login|account)[ \t]+\S+)*[ \t]+password[ \t]+\S+)",
}
_GROUPS = {f"p{i}": name for i, name in enumerate(PATTERNS)}
_ANY = re.compile("|".join(f"(?P<p{i}>{p})" for i, p in enumerate(PATTERNS.values())).encode())
_AWS_ID = re.compile(PATTERNS["an AWS access key id"].encode())
_AWS_SECRET_SHAPE = re.compile(rb"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_NETRC_MACHINE = re.compile(rb"^[ \t]*machine[ \t]+\S+", re.M)
_NETRC_PASSWORD = re.compile(rb"^[ \t]*(?:(?:login|account)[ \t]+\S+[ \t]+)*password[ \t]+\S+", re.M)
_MASK_PREFIXES = ("sk-proj-", "sk-ant-", "hf_jwt_", "hf_oauth_", "hf_", "sk-", "AKIA", "ASIA", "AIza", "eyJ")


@dataclass(frozen=True)
class Hit:
    """One thing that looks like a credential."""

    path: Path
    kind: str  # "a Hugging Face token", ...
    masked: str  # the match, the secret part masked
    line: int | None = None  # text files
    offset: int | None = None  # binaries: the byte offset
    part: str = ""  # binaries: where ("the safetensors header", "GGUF metadata", ...)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}" if self.line is not None else f"{self.path} ({self.part}, byte {self.offset})"

    def __str__(self) -> str:
        return f"{self.where}: {self.kind} ({self.masked})"


def mask(kind: str, text: str) -> str:
    """The match with its secret part hidden: ``hf_ab****`` (37 chars), a PEM header as it is,
    ``machine host login user password ****``."""
    if kind == "a private key (PEM)":
        return text
    if kind == "a GCP service-account private key":
        return '"private_key": "-----BEGIN PRIVATE KEY-----…"'
    if kind == "a .netrc password":
        return re.sub(r"(password[ \t]+)\S+", r"\1****", " ".join(text.split()))
    if kind == "an AWS secret access key":
        return re.sub(r"[A-Za-z0-9/+]{40}$", lambda m: m.group()[:2] + "****", text.strip())
    if kind == "AWS secret key shape":
        return text[:2] + "****"
    keep = next((len(p) for p in _MASK_PREFIXES if text.startswith(p)), 0) + 2
    return f"{text[:keep]}**** ({len(text)} chars)"


#: Every pattern holds one of these; only the text around them is searched with the patterns
#: (``bytes.find`` runs at memory speed, a regex alternation at every position does not).
ANCHORS = (b"hf_", b"sk-", b"AKIA", b"ASIA", b"AIza", b"PRIVATE KEY", b"machine", b"ecret", b"ECRET", b"eyJ")
_BEFORE, _AFTER = 256, 4096  # the window searched around an anchor
CHUNK = 16 << 20  # text files are read in chunks of whole lines of about this size


def _windows(data: bytes) -> list[tuple[int, int]]:
    """Spans of ``data`` around the anchors, merged where they overlap."""
    starts = []
    for anchor in ANCHORS:
        at = data.find(anchor)
        while at != -1:
            starts.append(at)
            at = data.find(anchor, at + 1)
    spans: list[tuple[int, int]] = []
    for at in sorted(starts):
        lo, hi = max(0, at - _BEFORE), min(len(data), at + _AFTER)
        if spans and lo <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], hi))
        else:
            spans.append((lo, hi))
    return spans


def _line_span(data: bytes, at: int, before: int, after: int) -> tuple[int, int]:
    """The span of the ``before`` lines before the line holding ``at``, that line and ``after`` lines after it."""
    lo = at
    for _ in range(before + 1):
        lo = data.rfind(b"\n", 0, lo)
        if lo == -1:
            break
    lo = 0 if lo == -1 else lo + 1
    hi = at
    for _ in range(after + 1):
        hi = data.find(b"\n", hi + 1)
        if hi == -1:
            hi = len(data)
            break
    return lo, hi


def _hits(data: bytes, *, lines: bool) -> list[tuple[str, str, int]]:
    """(kind, masked, offset) of every hit in ``data``. ``lines``: it is text, and an AWS secret key
    or a '.netrc' password counts within ``NEAR_LINES`` lines of its key id or 'machine' line
    (else within 200 bytes)."""
    found: dict[int, tuple[str, str, int]] = {}
    for lo, hi in _windows(data):
        for match in _ANY.finditer(data, lo, hi):
            kind = _GROUPS[match.lastgroup]
            found.setdefault(match.start(), (kind, mask(kind, _text(match)), match.start()))
            if kind == "an AWS access key id":
                a, b = (_line_span(data, match.start(), NEAR_LINES, NEAR_LINES) if lines
                        else (max(0, match.start() - 200), min(len(data), match.end() + 200)))
                near = _AWS_SECRET_SHAPE.search(data, a, b)
                if near and not any(k == "an AWS secret access key" and a <= at < b for k, _, at in found.values()):
                    found.setdefault(near.start(), ("an AWS secret access key", mask("AWS secret key shape", _text(near)), near.start()))
        if lines:  # a '.netrc' entry over several lines: 'machine host', then 'login user', 'password secret'
            for machine in _NETRC_MACHINE.finditer(data, lo, hi):
                if any(k == "a .netrc password" and at == machine.start() for k, _, at in found.values()):
                    continue
                a, b = _line_span(data, machine.start(), 0, NEAR_LINES)
                if password := _NETRC_PASSWORD.search(data, machine.end(), b):
                    found.setdefault(password.start(), ("a .netrc password", mask("a .netrc password", _text(password)), password.start()))
    return [found[at] for at in sorted(found)]


def _text(match: re.Match) -> str:
    return match.group().decode("utf-8", "replace")


def scan_text(path: Path, f: BinaryIO) -> list[Hit]:
    """Every hit in a text file open at its start, read in chunks of whole lines (the last
    ``NEAR_LINES`` lines of a chunk are searched again with the next, for the hits that span lines)."""
    hits: list[Hit] = []
    seen: set[tuple[str, int]] = set()
    carry, base, base_line = b"", 0, 1  # carry: the end of the last chunk; base: its offset in the file
    while True:
        data = f.read(CHUNK)
        if not data:
            break
        data = carry + data + f.readline()
        for kind, masked, at in _hits(data, lines=True):
            if (kind, base + at) not in seen:
                seen.add((kind, base + at))
                hits.append(Hit(path, kind, masked, line=base_line + data.count(b"\n", 0, at)))
        keep = _line_span(data, len(data) - 1, NEAR_LINES, 0)[0] if data.endswith(b"\n") else len(data)
        keep = max(keep, len(data) - 65536)
        base_line += data.count(b"\n", 0, keep)
        base += keep
        carry = data[keep:]
    return hits


def scan_bytes(path: Path, data: bytes, *, offset: int, part: str) -> list[Hit]:
    """Every hit in a binary file's text part ``data``, which starts at byte ``offset``."""
    return [Hit(path, kind, masked, offset=offset + at, part=part) for kind, masked, at in _hits(data, lines=False)]


def _gguf_metadata_end(f, size: int) -> int | None:
    """The byte offset where a GGUF file's metadata key/values end (its tensor infos start), read
    from the header without reading any tensor; None when it is not a GGUF file we can parse."""
    head = f.read(24)
    if len(head) < 24 or head[:4] != b"GGUF":
        return None
    version = struct.unpack_from("<I", head, 4)[0]
    if version not in (2, 3):
        return None
    kv_count = struct.unpack_from("<Q", head, 16)[0]
    fixed = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    pos = 24
    limit = min(size, GGUF_METADATA_CAP)

    def read(n: int) -> bytes:
        nonlocal pos
        if pos + n > limit:
            raise ValueError("past the end")
        data = f.read(n)
        pos += n
        return data

    def skip(n: int) -> None:
        nonlocal pos
        if pos + n > limit:
            raise ValueError("past the end")
        f.seek(n, 1)
        pos += n

    def value(type_: int) -> None:
        if type_ in fixed:
            skip(fixed[type_])
        elif type_ == 8:
            skip(struct.unpack("<Q", read(8))[0])
        elif type_ == 9:
            item, count = struct.unpack("<IQ", read(12))
            if item in fixed:
                skip(fixed[item] * count)
            else:
                for _ in range(count):
                    value(item)
        else:
            raise ValueError(f"unknown value type {type_}")

    try:
        for _ in range(kv_count):
            skip(struct.unpack("<Q", read(8))[0])  # the key
            value(struct.unpack("<I", read(4))[0])
    except (ValueError, struct.error):
        return None
    return pos


def scan_file(path: Path) -> list[Hit]:
    """Every hit in one file, reading only its text parts (see the module docstring). Opens the
    file: call it on regular files only (``hub.filerules.check_file``)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
        if b"\0" not in head:
            f.seek(0)
            return scan_text(path, f)
        if path.suffix == ".safetensors" and len(head) >= 8:
            length = struct.unpack_from("<Q", head)[0]
            if 0 < length <= min(SAFETENSORS_HEADER_CAP, size - 8):
                f.seek(8)
                return scan_bytes(path, f.read(length), offset=8, part="the safetensors header")
        if head[:4] == b"GGUF":
            f.seek(0)
            end = _gguf_metadata_end(f, size)
            if end is not None:
                f.seek(0)
                return scan_bytes(path, f.read(end), offset=0, part="the GGUF metadata")
        f.seek(0)
        hits = scan_bytes(path, f.read(BINARY_EDGE), offset=0, part="the start of the file")
        if size > BINARY_EDGE:
            start = max(BINARY_EDGE, size - BINARY_EDGE)
            f.seek(start)
            hits += scan_bytes(path, f.read(), offset=start, part="the end of the file")
        return hits


def _key(path: Path) -> str:
    """A path compared with the manifest's ``allow_secrets_in`` entries: absolute, its folder
    resolved, the name itself not (a link is listed under its own name)."""
    path = Path(path).absolute()
    return str(path.parent.resolve() / path.name)


def check_no_secrets(files: Iterable[Path], allowed: Mapping[Path, str] | None = None, *, what: str = "") -> None:
    """Raise ``InputError`` naming the first hit (file and line, masked) when any of ``files``
    holds something that looks like a credential, unless the file is in ``allowed`` (the manifest's
    ``allow_secrets_in``: path -> reason)."""
    skip = {_key(p) for p in (allowed or {})}
    hits: list[Hit] = []
    for path in files:
        if _key(path) not in skip:
            hits += scan_file(path)
    if not hits:
        return
    first = hits[0]
    files_hit = len({h.path for h in hits})
    more = f" (and {len(hits) - 1} more hit{'s' if len(hits) > 2 else ''} in {files_hit} file{'s' if files_hit > 1 else ''})" if len(hits) > 1 else ""
    where = "" if first.line is not None else f" {first.part} (byte {first.offset})"
    raise InputError(
        f"refusing to push{what}:{where or ' it'} holds what looks like {first.kind}: {first.masked}{more}",
        path=first.path, line=first.line,
        hint="remove the credential (and revoke it); a test fixture holding fake keys can be listed in the manifest's "
             "allow_secrets_in with a reason",
    )
