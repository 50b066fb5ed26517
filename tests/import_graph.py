"""The distribution's internal import graph, read from the source (no module is imported), and its cycles.

Every ``import`` and ``from … import`` counts, lazy ones inside functions included; imports under
``if TYPE_CHECKING:`` do not (they never run). ``from package import name`` is an edge to the submodule
``package.name`` when that is a module of the graph, else to ``package`` itself.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Set, Tuple

#: folder (relative to the repository root) → import name, as pyproject's package-dir maps them
FOLDERS: Dict[str, str] = {"edgeconf": "edgeconf", "export": "edgeconf.export", "gui": "edgeconf.gui",
                           "devices": "edgeconf.devices"}

Edge = Tuple[str, str, int]  # importer, imported, line


def module_files(root: Path, folders: Mapping[str, str] = FOLDERS) -> Dict[str, Path]:
    """Module name → file for every ``.py`` file of the mapped folders (a folder inside another is skipped
    when it is mapped itself, and package data folders hold no modules)."""
    mods: Dict[str, Path] = {}
    for folder, pkg in folders.items():
        base = root / folder
        for f in sorted(base.rglob("*.py")):
            rel = f.relative_to(base)
            if rel.parts and (rel.parts[0] == "data" or "%s/%s" % (folder, rel.parts[0]) in folders):
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join([pkg] + parts)] = f
    return mods


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> Iterator[ast.stmt]:
    """Import statements anywhere in ``tree``, skipping the body of ``if TYPE_CHECKING:`` blocks."""
    stack: List[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _absolute(module: str, is_package: bool, level: int, target: str) -> str:
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def internal_edges(mods: Mapping[str, Path], prefix: str = "edgeconf") -> List[Edge]:
    """(importer, imported, line) for every import of one module of ``mods`` by another."""
    edges: List[Edge] = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_pkg = path.name == "__init__.py"
        for node in _import_nodes(tree):
            targets: List[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _absolute(name, is_pkg, node.level, node.module or "") if node.level else (node.module or "")
                for alias in node.names:
                    sub = "%s.%s" % (base, alias.name)
                    targets.append(sub if sub in mods else base)
            for t in targets:
                if t != prefix and not t.startswith(prefix + "."):
                    continue
                while t not in mods and "." in t:  # `import a.b.c` where only a.b is a module of ours
                    t = t.rsplit(".", 1)[0]
                if t in mods and t != name:
                    edges.append((name, t, node.lineno))
    return edges


def find_cycles(edges: List[Edge]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted, largest first."""
    graph: Dict[str, Set[str]] = {}
    for a, b, _ in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    on_stack: Set[str] = set()
    stack: List[str] = []
    comps: List[List[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # recursion depth is bounded by the number of modules (a few hundred)
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(comps, key=len, reverse=True)


def describe_cycle(comp: List[str], edges: List[Edge], mods: Mapping[str, Path], root: Path) -> str:
    """The imports that tie one cycle's modules together, as ``file:line importer -> imported`` lines."""
    members = set(comp)
    lines = ["%s:%d %s -> %s" % (mods[a].relative_to(root), line, a, b) for a, b, line in edges
             if a in members and b in members]
    return "cycle among %s:\n  %s" % (", ".join(comp), "\n  ".join(sorted(lines)))
