"""hub.secrets: each credential shape is found in text and in the text parts of binaries, masked;
tensor data is never read; ordinary release files are not flagged.

Every fake is built here by concatenation, so the repo holds no literal that looks like a key."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from apto_release.errors import InputError
from apto_release.hub.secrets import check_no_secrets, scan_file

ALNUM = "Zq8rT3vLm0pXw9YbC2dE5fG7hJ1kN4sUaQ"  # 34 letters and digits
UPPER = "QX7Z2W4N6M8P3R5T"  # 16
AWS_SECRET = "wJalrXUtnFEMI" + "/K7MDENG/bPxRfiCY" + "EXAMPLEKEY"  # 40
FAKES = {
    "a Hugging Face token": ("token = '" + "hf" + "_" + ALNUM + "'", "hf_Zq**** (37 chars)"),
    "an exchanged Hugging Face token": ("HF_TOKEN=" + "hf" + "_jwt_" + "eyJ" + ALNUM + ".x-Y_z", "hf_jwt_ey**** (50 chars)"),
    "an OIDC id token (JWT)": ("HF_OIDC_ID_TOKEN=" + "eyJ" + "hbGciOiJSUzI1NiJ9." + "eyJ" + ALNUM + "." + ALNUM[::-1],
                               "eyJhb**** (93 chars)"),
    "an OpenAI API key": ("OPENAI_API_KEY=" + "sk" + "-" + ALNUM, "sk-Zq**** (37 chars)"),
    "an OpenAI API key ": ("key: " + "sk" + "-proj-" + ALNUM + "_" + ALNUM, "sk-proj-Zq****"),
    "an Anthropic API key": ("ANTHROPIC_API_KEY=" + "sk" + "-ant-api03-" + ALNUM, "sk-ant-ap****"),
    "an AWS access key id": ("aws_access_key_id = " + "AK" + "IA" + UPPER, "AKIAQX****"),
    "an AWS access key id ": ("id: " + "AS" + "IA" + UPPER, "ASIAQX****"),
    "an AWS secret access key": ("aws_secret_access_key = " + AWS_SECRET, "wJ****"),
    "a GCP service-account private key": ('{"type": "service_account", "private_key": "-----BEGIN ' + 'PRIVATE KEY-----\\nMIIE"}',
                                          '"private_key": "-----BEGIN PRIVATE KEY-----…"'),
    "a GCP API key": ("maps_key = " + "AI" + "za" + ALNUM + "x", "AIzaZq****"),
    "a private key (PEM)": ("-----BEGIN " + "RSA PRIVATE KEY-----", "-----BEGIN RSA PRIVATE KEY-----"),
    "a .netrc password": ("machine api.example.com login alice " + "pass" + "word s3cr3t-pw", "password ****"),
}


@pytest.mark.parametrize("kind", list(FAKES))
def test_each_shape_is_found_with_its_line_and_masked(tmp_path, kind):
    text, masked = FAKES[kind]
    path = tmp_path / "notes.txt"
    path.write_text("# notes\n\n" + text + "\nmore\n")
    hits = scan_file(path)
    assert hits, kind
    assert hits[0].kind == kind.strip() and hits[0].line == 3
    assert masked in hits[0].masked
    secret = text.split()[-1].strip("'")
    if kind.strip() not in ("a private key (PEM)", "a GCP service-account private key"):
        assert secret not in str(hits[0])  # the secret itself never shows


def test_netrc_over_several_lines_and_aws_secret_near_its_id(tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine huggingface.co\n  login alice\n  " + "pass" + "word s3cr3t-pw\n")
    hits = scan_file(netrc)
    assert [(h.kind, h.line) for h in hits] == [("a .netrc password", 3)] and "s3cr3t" not in hits[0].masked
    creds = tmp_path / "credentials"
    creds.write_text("[default]\nkey_id = " + "AK" + "IA" + UPPER + "\nsecret = " + AWS_SECRET + "\n")
    assert [(h.kind, h.line) for h in scan_file(creds)] == [("an AWS access key id", 2), ("an AWS secret access key", 3)]
    before = tmp_path / "before"
    before.write_text("secret = " + AWS_SECRET + "\nkey_id = " + "AK" + "IA" + UPPER + "\n")
    assert {(h.kind, h.line) for h in scan_file(before)} == {("an AWS access key id", 2), ("an AWS secret access key", 1)}


@pytest.mark.parametrize("text", [
    "from huggingface_hub import hf_hub_download\nhf_hub_download(repo_id='Qwen/Qwen3.5-9B')\n",
    "a task-based risk-assessment-framework-for-the-whole-release\n",
    "sha1 " + "a" * 40 + "\n",  # a 40-character word far from any AWS key id
    "BEGIN PUBLIC KEY is fine: -----BEGIN " + "PUBLIC KEY-----\n",
    "the machine learning model has a password field in its form\n",
    "hf_short_token_like_name\n",
])
def test_ordinary_text_is_not_flagged(tmp_path, text):
    path = tmp_path / "README.md"
    path.write_text(text)
    assert scan_file(path) == []


def _safetensors(path: Path, metadata: dict, data: bytes) -> None:
    header = json.dumps({"__metadata__": metadata, "w": {"dtype": "U8", "shape": [len(data)], "data_offsets": [0, len(data)]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)


def test_a_safetensors_header_is_scanned_but_not_its_tensor_data(tmp_path):
    token = "hf" + "_" + ALNUM
    path = tmp_path / "model.safetensors"
    _safetensors(path, {"note": token}, b"\0" * 64)
    hits = scan_file(path)
    assert [(h.kind, h.part) for h in hits] == [("a Hugging Face token", "the safetensors header")]
    assert hits[0].line is None and hits[0].offset > 8 and "byte" in hits[0].where
    _safetensors(path, {"note": "clean"}, b"\0" * 64 + token.encode() + b"\0" * 64)  # in the weights: not read
    assert scan_file(path) == []


def test_gguf_metadata_is_scanned_but_not_its_tensor_data(tmp_path):
    gguf = pytest.importorskip("gguf")
    np = pytest.importorskip("numpy")
    token = "hf" + "_" + ALNUM

    def write(path, value, tensor):
        writer = gguf.GGUFWriter(str(path), "llama")
        writer.add_string("general.description", value)
        writer.add_array("tokenizer.ggml.tokens", ["a", "b", "<|im_start|>"])
        writer.add_tensor("w", tensor)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    path = tmp_path / "m.gguf"
    write(path, f"made with {token}", np.zeros(64, dtype=np.int8))
    assert [(h.kind, h.part) for h in scan_file(path)] == [("a Hugging Face token", "the GGUF metadata")]
    blob = np.frombuffer(token.encode().ljust(64, b"\0"), dtype=np.int8).copy()
    write(path, "clean", blob)  # the token in the tensor data only: never read
    assert token.encode() in path.read_bytes() and scan_file(path) == []


def test_a_large_binary_is_read_only_at_its_edges(tmp_path):
    token = ("hf" + "_" + ALNUM).encode()
    path = tmp_path / "big.bin"
    with open(path, "wb") as f:  # sparse: 4 GiB on the file system, almost nothing on disk
        f.write(b"\0PAR1")
        f.seek(2 << 30)
        f.write(token)  # in the middle: not read
        f.seek((4 << 30) - 100)
        f.write(b"\0" + token + b"\0")  # in the last MiB (where a Parquet footer is): read
    hits = scan_file(path)
    assert [(h.kind, h.part) for h in hits] == [("a Hugging Face token", "the end of the file")]


def test_check_no_secrets_names_the_first_hit_and_counts_the_rest_unless_allowed(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.yaml"
    a.write_text('{"k": "' + "hf" + "_" + ALNUM + '"}\n')
    b.write_text("x: 1\ny: " + "AI" + "za" + ALNUM + "x\n")
    with pytest.raises(InputError, match=r"a Hugging Face token: hf_Zq\*\*\*\* \(37 chars\) \(and 1 more hit in 2 files\)") as info:
        check_no_secrets([a, b])
    assert (info.value.path, info.value.line) == (str(a), 1) and "allow_secrets_in" in info.value.hint
    with pytest.raises(InputError, match=r"b\.yaml:2: .*a GCP API key"):
        check_no_secrets([a, b], {a: "fake"})
    check_no_secrets([a, b], {a: "fake", b: "fake"})


def test_chunked_reading_keeps_line_numbers_and_hits_across_chunk_ends(tmp_path, monkeypatch):
    import apto_release.hub.secrets as secrets

    path = tmp_path / "long.txt"
    filler = [f"line {i} of ordinary text\n" for i in range(200)]
    body = filler[:100] + ["key_id = " + "AK" + "IA" + UPPER + "\n", "secret = " + AWS_SECRET + "\n"] + filler[100:]
    body += ["machine example.com\n", "  login bob\n", "  " + "pass" + "word pw1\n", "token " + "hf" + "_" + ALNUM + "\n"]
    path.write_text("".join(body))
    expected = [("an AWS access key id", 101), ("an AWS secret access key", 102), ("a .netrc password", 205),
                ("a Hugging Face token", 206)]
    assert [(h.kind, h.line) for h in scan_file(path)] == expected
    for chunk in (7, 64, 2600, 2650, 2700):  # chunk ends fall between and inside the lines of each hit
        monkeypatch.setattr(secrets, "CHUNK", chunk)
        assert [(h.kind, h.line) for h in scan_file(path)] == expected, chunk
