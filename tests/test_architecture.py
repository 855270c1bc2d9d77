"""The house rules of docs/design.md, checked by reading the source: no import circles (imports
inside functions count), nothing outside the napari layer imports Qt or napari, no module over
500 lines, a Trainer of at most 300, and no module reaching into the Trainer's private state."""

import ast
import re
from pathlib import Path

import napari_b2u

ROOT = Path(napari_b2u.__file__).parent
PKG = "napari_b2u"


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports, anywhere in the file (parent packages too: importing
    a.b.c runs a.b's __init__ first), as absolute names."""
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.ImportFrom):
            base = (pkg.split(".")[:len(pkg.split(".")) - node.level + 1] if node.level
                    else [])
            mod = ".".join(base + ([node.module] if node.module else []))
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        for t in targets:
            parts = t.split(".")
            found |= {".".join(parts[:k]) for k in range(1, len(parts) + 1)}
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    # an importer's own packages are already being imported: not an edge
    return {m: {t for t in _imports(m, p) if t in mods and t != m and not m.startswith(t + ".")}
            for m, p in mods.items()}


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    assert _cycles(_graph()) == []


def test_the_cycle_check_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_relative_import_resolves():
    mods = _modules()
    missing = []
    for name, path in mods.items():
        pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                if mod not in mods:
                    missing.append(f"{path.name}:{node.lineno} {mod}")
    assert missing == []


def test_only_the_napari_layer_imports_qt_or_napari():
    gui = re.compile(r"^(qtpy|PyQt\d|PySide\d|napari|magicgui|superqt|pyqtgraph|vispy)\b")
    offenders = []
    for name, path in _modules().items():
        if name.startswith(f"{PKG}._widgets"):
            continue
        offenders += [f"{name}: {t}" for t in _imports(name, path) if gui.match(t)]
    assert offenders == []


def test_module_and_trainer_sizes():
    long = {n: len(p.read_text().splitlines()) for n, p in _modules().items()}
    assert {n: k for n, k in long.items() if k > 500} == {}
    tree = ast.parse((ROOT / "train" / "trainer.py").read_text())
    trainer = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Trainer")
    assert trainer.end_lineno - trainer.lineno + 1 <= 300


def test_no_module_reaches_into_the_trainer():
    private = re.compile(r"\b(trainer|tr)\._[a-z]")
    offenders = [f"{n}: {m.group(0)}" for n, p in _modules().items()
                 if n != f"{PKG}.train.trainer"
                 for m in private.finditer(p.read_text())]
    assert offenders == []
