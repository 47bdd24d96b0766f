"""The house's import rules: imports flow downwards, and no module imports itself back.

The layers, top to bottom (``../shared/ARCHITECTURE.md``): the CLI; the demo; the release
(manifest, pipeline, state); the parts of the pipeline, which may import one another; the
foundations. An import made only for type annotations (under ``TYPE_CHECKING``) never runs and
is not counted: cards and the push name the ``Manifest`` they are handed, and import nothing of
the release.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "apto_release"

LAYERS = {
    "cli": 5,
    "__main__": 5,
    "demo": 4,
    "release": 3,
    **dict.fromkeys(["cards", "hub", "evals", "gguf", "merge", "train", "dataset", "testing"], 2),
    **dict.fromkeys(["errors", "io", "schema", "schemas", "progress", "retry", "__init__"], 1),
}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def _runtime_imports(path: Path) -> set[str]:
    """The ``apto_release`` modules ``path`` imports, leaving out ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
        for statement in block.body
        for node in ast.walk(statement)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "apto_release":
            base = node.module.removeprefix("apto_release").lstrip(".")
            for alias in node.names:
                candidate = f"{base}.{alias.name}".lstrip(".")
                found.add(candidate if (PACKAGE / (candidate.replace(".", "/") + ".py")).is_file()
                          or (PACKAGE / candidate.replace(".", "/")).is_dir() else base or "__init__")
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("apto_release.") for a in node.names if a.name.startswith("apto_release."))
    return found


GRAPH = {_module(p): _runtime_imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> int:
    top = module.split(".")[0]
    assert top in LAYERS, f"{module}: a new top-level module or package; give it a layer in LAYERS"
    return LAYERS[top]


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_flow_downwards(module):
    upward = sorted(m for m in GRAPH[module] if _layer(m) > _layer(module))
    assert not upward, f"{module} imports {upward}, a layer above it"


def test_evals_never_import_the_release():
    assert not any(m.startswith("release") for name, deps in GRAPH.items() if name.startswith("evals") for m in deps)


def test_no_module_imports_itself_back():
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for dep in sorted(GRAPH.get(module, ())):
            if dep == module or dep not in GRAPH:
                continue
            assert state.get(dep) != "open", "import cycle: " + " -> ".join([*path, module, dep])
            if dep not in state:
                visit(dep, [*path, module])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [])


def test_the_rules_see_an_upward_import(tmp_path):
    source = tmp_path / "x.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from apto_release.release.manifest import load_manifest\n"
        "if TYPE_CHECKING:\n    from apto_release.cli import main\n"
    )
    assert _runtime_imports(source) == {"release.manifest"}


def test_the_readme_layout_names_every_part_of_the_package():
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    parts = {p.name + ("/" if p.is_dir() else "") for p in PACKAGE.iterdir()
             if not p.name.startswith(("_", ".")) and (p.is_dir() or p.suffix == ".py")}
    missing = sorted(part for part in parts if part.removesuffix(".py").rstrip("/") not in layout)
    assert not missing, f"README's Layout does not name {missing}"
    for package in (p for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()):
        modules = {m.stem for m in package.glob("*.py") if not m.stem.startswith("_")}
        found = re.search(rf"^  {package.name}/(.*?)(?=^  \S|^\S|\Z)", layout, re.M | re.S)
        section = found.group(1) if found else ""
        unnamed = sorted(m for m in modules if m not in section and package.name != "schemas")
        assert not unnamed, f"README's Layout line for {package.name}/ does not name {unnamed}"
