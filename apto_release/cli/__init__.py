"""The ``apto-release`` command line: a thin layer over the library.

Each command parses its options, calls one library function and renders the result. ``main`` is
the one error boundary: library errors (``AptoError``) and the usual file-system errors become one
line on standard error and an exit code; a traceback appears only for real bugs, or with
``APTO_DEBUG=1``. Command modules import heavy libraries inside the commands, so that
``apto-release --help`` stays fast.
"""

from __future__ import annotations

import errno
import os
import sys

import click

from apto_release import __version__
from apto_release.cli.output import echo_error
from apto_release.errors import AptoError

EPILOG = "Example: apto-release demo -o out/demo   (a whole release on synthetic data, pushed to a local Hub)"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}, epilog=EPILOG)
@click.version_option(__version__, "-V", "--version", prog_name="apto-release")
def cli() -> None:
    """Cut Japanese LLM-safety releases on the Hugging Face Hub.

    Validate the dataset, draw the public sample, build the Hub dataset folders, train, merge,
    quantize to GGUF, write the cards and publish: each stage a command, and `release` runs them
    all, resumably. `demo` shows the whole pipeline on synthetic data.
    """


from apto_release.cli import cards as _cards  # noqa: E402
from apto_release.cli import dataset as _dataset  # noqa: E402  (the command modules import nothing heavy)
from apto_release.cli import evals as _evals  # noqa: E402
from apto_release.cli import gguf as _gguf  # noqa: E402
from apto_release.cli import merge as _merge  # noqa: E402
from apto_release.cli import push as _push  # noqa: E402
from apto_release.cli import release as _release  # noqa: E402
from apto_release.cli import train as _train  # noqa: E402

for _module in (_dataset, _train, _merge, _gguf, _cards, _push, _release, _evals):
    _module.register(cli)


# What the user sees for an error that is theirs to fix: (type, exit code, hint).
_OS_ERRORS: dict[int, str] = {
    errno.ENOENT: "check the path",
    errno.EACCES: "check the permissions",
    errno.ENOSPC: "free some disk space",
    errno.EISDIR: "give a file, not a folder",
    errno.ENOTDIR: "give a folder, not a file",
    errno.EEXIST: "choose another output or pass --overwrite",
}


# Packages of the optional extras: a command that needs one says which extra to install.
_EXTRAS = {
    "gguf": "gguf", "llama_cpp": "gguf",
    "torch": "train", "transformers": "train", "peft": "train", "accelerate": "train",
    "safetensors": "train", "tokenizers": "train", "matplotlib": "eval",
}
_EXTRA_HINTS = {
    "gguf": "pip install 'apto-release[gguf]'",
    "eval": "pip install 'apto-release[eval]'",
    "train": "pip install torch==2.13.0 && pip install 'apto-release[train]' (torch first, so that no CUDA build is fetched on a CPU machine)",
}


def _fail(message: str, hint: str | None, code: int) -> int:
    echo_error(message, hint)
    return code


def _from_huggingface_hub(exc: BaseException) -> bool:
    """An error raised by huggingface_hub (its own types: HFValidationError, HfHubHTTPError, ...)."""
    return any(cls.__module__.split(".")[0] == "huggingface_hub" for cls in type(exc).__mro__)


def _hub_error_line(exc: BaseException) -> tuple[str, str, int]:
    """One line for a huggingface_hub error that no stage turned into an AptoError, without the token.

    The stages check ids and versions before they call the Hub (see release.manifest), so this is
    the last line of defence: a message, never a traceback, and never the token.
    """
    from apto_release.hub.client import redact

    text = " ".join(str(exc).split()) or type(exc).__name__
    secrets = {os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN")}
    try:
        from huggingface_hub import get_token  # already imported: the error came from it

        secrets.add(get_token())
    except Exception:  # noqa: BLE001 - a token we cannot read is one we cannot leak
        pass
    text = redact(text, secrets, token_shapes=True)
    if type(exc).__name__ == "HFValidationError":
        return f"the Hugging Face Hub client refused a value: {text}", "check the repo ids and the version in the manifest", 2
    return f"a Hugging Face Hub call failed ({type(exc).__name__}): {text}", "run again; APTO_DEBUG=1 shows the traceback", 1


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and exit with its code."""
    debug = os.environ.get("APTO_DEBUG") == "1"
    try:
        rv = cli.main(args=argv, prog_name="apto-release", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        code = 130
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except AptoError as exc:
        if debug:
            raise
        code = _fail(str(exc), exc.hint, exc.exit_code)
    except ModuleNotFoundError as exc:
        package = (exc.name or "").split(".")[0]
        if debug or package not in _EXTRAS:
            raise
        extra = _EXTRAS[package]
        code = _fail(f"this command needs {package}, from the [{extra}] extra", _EXTRA_HINTS[extra], 2)
    except OSError as exc:
        if not debug and _from_huggingface_hub(exc):  # HfHubHTTPError and others are OSErrors too
            code = _fail(*_hub_error_line(exc))
        elif debug or exc.errno not in _OS_ERRORS:
            raise
        else:
            where = f"{exc.filename}: " if exc.filename else ""
            code = _fail(f"{where}{exc.strerror or exc}", _OS_ERRORS[exc.errno], 1)
    except KeyboardInterrupt:
        click.echo("Interrupted; nothing was left half-written.", err=True)
        code = 130
    except Exception as exc:
        if debug or not _from_huggingface_hub(exc):
            raise
        code = _fail(*_hub_error_line(exc))
    sys.exit(code)
