"""The package's architecture, checked on its source: one-way imports between its parts, file sizes.

Imports are read with ``ast``, including those inside functions (a lazy import is still a dependency).
"""

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "mgcnn"
ARCHITECTURE = ("models", "layers")  # the parts that must not depend on the application around them
APPLICATION = ("train", "hub", "analysis", "sweep", "papers", "bench", "cli")


def _module(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


PARTS = {p.stem for p in PKG.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()} - {"__init__"}


def _import_nodes(path: Path):
    """The import statements of a file, at any depth, except those under ``if TYPE_CHECKING:`` (not run)."""
    todo = [ast.parse(path.read_text())]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        todo.extend(ast.iter_child_nodes(node))


def _from_target(node: ast.ImportFrom, path: Path) -> str:
    """The absolute module of ``from X import ...`` in ``path`` (relative imports resolved)."""
    mod = _module(path)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    if not node.level:
        return node.module or ""
    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(path: Path) -> set[str]:
    """Every ``mgcnn...`` module a file imports, as absolute names (``from .x import y`` in mgcnn.pkg -> mgcnn.pkg.x;
    ``from . import cli`` in mgcnn -> mgcnn.cli)."""
    out = set()
    for node in _import_nodes(path):
        if isinstance(node, ast.ImportFrom):
            target = _from_target(node, path)
            if target == "mgcnn":  # from the package root: a part (from . import cli) or a name it re-exports
                out.update(f"mgcnn.{a.name}" if a.name in PARTS else "mgcnn" for a in node.names)
            else:
                out.add(target)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {t for t in out if t == "mgcnn" or t.startswith("mgcnn.")}


def _part(name: str) -> str:
    """The top-level part of a module name: mgcnn.train.engine -> train; the package itself -> mgcnn."""
    return name.split(".")[1] if "." in name else "mgcnn"


def _graph() -> dict[str, set[str]]:
    """Part -> the parts it imports (the package root is the part "mgcnn")."""
    edges: dict[str, set[str]] = {}
    for path in PKG.rglob("*.py"):
        src = _part(_module(path))
        for dst in map(_part, _imports(path)):
            if dst != src:
                edges.setdefault(src, set()).add(dst)
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_parts_of_the_package_import_each_other_one_way():
    edges = _graph()
    assert _cycle(edges) is None, f"import cycle between parts of mgcnn: {' -> '.join(_cycle(edges))}"
    # the package root re-exports; nothing inside the package may import it back (mgcnn._version holds the version)
    inward = sorted(src for src, dsts in edges.items() if "mgcnn" in dsts)
    assert inward == [], f"{inward} import the package root mgcnn; import the module that defines the name instead"


def test_models_and_layers_import_nothing_from_the_application():
    bad = []
    for part in ARCHITECTURE:
        for path in (PKG / part).rglob("*.py"):
            bad += [f"{path.relative_to(PKG)} imports {t}" for t in _imports(path) if _part(t) in APPLICATION]
    assert bad == []


MODULES = {_module(p) for p in PKG.rglob("*.py")}


def _module_imports(path: Path) -> set[str]:
    """The modules (files) a file imports: ``from .x import y`` counts x, and x.y where that is a module too."""
    out = set()
    for node in _import_nodes(path):
        if isinstance(node, ast.ImportFrom):
            target = _from_target(node, path)
            out.add(target)
            out.update(f"{target}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out & MODULES


def test_no_module_imports_another_that_imports_it_back():
    """Between modules (packages' ``__init__`` re-exports aside), at any depth: e.g. no spectrum <-> roots."""
    inits = {_module(p) for p in PKG.rglob("__init__.py")}
    edges = {_module(p): _module_imports(p) - inits - {_module(p)}
             for p in PKG.rglob("*.py") if p.name != "__init__.py"}
    assert _cycle(edges) is None, " -> ".join(_cycle(edges))


def test_the_local_fourier_analysis_is_pure_maths_at_the_bottom():
    assert _imports(PKG / "lfa.py") == set()  # torch and the standard library only
    assert "mgcnn.lfa" in _module_imports(PKG / "models" / "poly_mgnet.py")  # the model needs it, not analysis/


def test_the_cycle_finder_finds_cycles():  # the check above must be able to fail
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}}) is None


def test_importing_the_models_loads_no_dataset_training_or_analysis_code():
    # (mgcnn.hub is loaded: the package root re-exports transforms_for; it imports no dataset code either)
    code = ("import sys, mgcnn.models; print(' '.join(sorted(m for m in sys.modules if m.startswith('mgcnn.'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "mgcnn.models.mgiad" in loaded
    assert [m for m in loaded if _part(m) in ("data", *(p for p in APPLICATION if p != "hub"))] == []


def test_no_source_file_is_longer_than_600_lines_and_the_training_loop_fits_in_300():
    long = {str(p.relative_to(PKG)): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > 600}
    assert long == {}
    assert len((PKG / "train" / "engine.py").read_text().splitlines()) <= 300
