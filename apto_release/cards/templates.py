"""Finding the card templates, in a checkout and in an installed wheel, and the Jinja2 set-up they share.

The templates live at the top of the repository (``dataset_cards/``, ``model_cards/``); the wheel
maps them to ``apto_release/_templates/`` (see ``pyproject.toml``). An editable install sees the
checkout's folders.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # apto_release/
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


def environment(kind: str, filters: Mapping[str, Callable[..., str]] | None = None):
    """A Jinja2 environment over the ``kind`` templates: strict about undefined names, Markdown (no
    HTML escaping), block tags without stray blank lines, the ``thousands`` filter (``12,345``)
    and the caller's ``filters``."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir(kind))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # Markdown, not HTML
    )
    env.filters["thousands"] = lambda n: f"{int(n):,}"
    env.filters.update(filters or {})
    return env


def render(kind: str, name: str, context: Mapping[str, Any], filters: Mapping[str, Callable[..., str]] | None = None) -> str:
    """The template ``name`` of ``kind`` rendered with ``context``: a card's text, ending in exactly one newline."""
    text = environment(kind, filters).get_template(name).render(**context)
    return text.rstrip("\n") + "\n"
