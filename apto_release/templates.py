"""Finding the card templates, in a checkout and in an installed wheel.

The templates live at the top of the repository (``dataset_cards/``, ``model_cards/``); the wheel
maps them to ``apto_release/_templates/`` (see ``pyproject.toml``). An editable install sees the
checkout's folders.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
KINDS = ("dataset_cards", "model_cards")


def template_dir(kind: str) -> Path:
    """The folder holding the templates of ``kind`` (``dataset_cards`` or ``model_cards``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown template kind {kind!r}; expected one of {', '.join(KINDS)}")
    for candidate in (_PACKAGE_DIR / "_templates" / kind, _PACKAGE_DIR.parent / kind):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"card templates '{kind}' not found beside the package ({_PACKAGE_DIR}); reinstall apto-release"
    )


def template_path(kind: str, name: str) -> Path:
    """The path of one template file."""
    path = template_dir(kind) / name
    if not path.is_file():
        raise FileNotFoundError(f"card template {name!r} not found in {path.parent}")
    return path
