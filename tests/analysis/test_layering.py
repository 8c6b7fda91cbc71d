"""The import graph's layering: mgcnn.lfa is pure maths at the bottom; models/ and layers/ never import analysis/.

Imports are read from the source with ``ast``, including those inside functions (lazy imports count too).
"""

import ast
from pathlib import Path

import pytest

import mgcnn

PKG = Path(mgcnn.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (``from X import name`` counts X and X.name)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def test_imported_modules_resolves_relative_and_lazy_imports():
    mods = imported_modules(PKG / "models" / "poly_mgnet.py")
    assert "mgcnn.lfa" in mods and "mgcnn.layers.polynomial" in mods
    assert "mgcnn.analysis.plots" in imported_modules(PKG / "cli.py")  # a lazy import inside a function


def test_lfa_imports_nothing_from_mgcnn():
    mods = imported_modules(PKG / "lfa.py")
    assert not [m for m in mods if m == "mgcnn" or m.startswith("mgcnn.")], mods


@pytest.mark.parametrize("sub", ["models", "layers"])
def test_models_and_layers_never_import_analysis(sub):
    files = sorted((PKG / sub).rglob("*.py"))
    assert files
    bad = {module_name(f): sorted(m for m in imported_modules(f) if m == "mgcnn.analysis"
                                  or m.startswith("mgcnn.analysis."))
           for f in files}
    assert not {k: v for k, v in bad.items() if v}


def test_no_import_cycle_among_analysis_modules():
    files = sorted((PKG / "analysis").glob("*.py"))
    names = {module_name(f) for f in files}
    graph = {module_name(f): {m for m in imported_modules(f) if m in names and m != module_name(f)} for f in files}
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, " -> ".join((*path, node))
        if node not in done:
            for nxt in graph[node]:
                visit(nxt, (*path, node))
            done.add(node)

    for node in graph:
        visit(node, ())
