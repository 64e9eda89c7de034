"""The shape of the package: an acyclic import graph, floors in order, and package faces that only re-export.

Built with :mod:`ast` alone, from the source files, without importing anything. Every import counts:
at module level, inside functions (deferring torchattacks, timm or matplotlib is fine, but the
dependency is still there), under ``if TYPE_CHECKING`` and in ``try`` blocks, relative or absolute.
``from ellrobust.x import y`` is an edge to ``ellrobust.x.y`` when that is a module, else to
``ellrobust.x``. Importing ``ellrobust.x.y`` also runs the face ``ellrobust/x/__init__.py``; that
implicit edge is not counted, since a face re-exports its own modules by design (a real cycle through
a face shows up as an explicit import of it).

The rules are data, at the top: extend :data:`FLOORS` when a module is added (a module on no floor
fails the test), and empty :data:`KNOWN_VIOLATIONS` as the code is fixed.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "ellrobust"

#: The floors, lowest first: a folder of the package is a floor (several folders may share one), and the
#: package's root holds only the front doors. A module may import its own floor and the floors below,
#: never one above. Each package's docstring opens with "Floor N", checked against this list, so the
#: layers read off ``ls ellrobust`` and the faces alike.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("core",),
    ("stats",),
    ("results",),
    ("models", "data", "corruptions", "attacks"),
    ("request",),
    ("run",),
    ("measures",),
    ("engine",),
    ("verdict",),
    ("report",),
    ("api",),  # the module ellrobust/api.py: ellrobust.evaluate and run_config, what the CLI and the face call
    ("cli",),
    ("__init__", "__main__"),  # the front door
)


def _layer_of(module: str) -> str:
    """The folder (or root module) a module belongs to: ``ellrobust.stats.inference`` → ``stats``."""
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def _floors() -> tuple[tuple[str, frozenset[str]], ...]:
    return tuple(
        ("+".join(names), frozenset(PACKAGE if n == "__init__" else f"{PACKAGE}.{n}" for n in names))
        for names in LAYERS
    )


FLOORS = _floors()

#: Imports the floors alone would allow but issue 16 forbids: judgements and renderers work from
#: results tables (a report or a check is rebuilt from run folders on disk alone), so they never reach
#: into the engine or the measures. ``cli.terminal`` is the terminal's renderer, a sibling of the report's.
#: Each rule is (importers, imported, why); entries match as in :data:`FLOORS`.
FORBIDDEN: tuple[tuple[frozenset[str], frozenset[str], str], ...] = (
    (
        frozenset({"ellrobust.verdict", "ellrobust.cli.terminal", "ellrobust.report"}),
        frozenset({"ellrobust.engine", "ellrobust.measures"}),
        "judgements and renderers never import the engine or the measures",
    ),
)

#: Imports that break the rules today, in files being rewritten elsewhere; each entry is (importer,
#: imported). The test fails when one disappears from the graph (delete the entry) or a new one appears.
KNOWN_VIOLATIONS: frozenset[tuple[str, str]] = frozenset()

#: Packages whose ``__init__.py`` still holds code, in files being rewritten elsewhere; the test fails
#: when one only re-exports (delete the entry) or another starts holding code.
KNOWN_FACES_WITH_CODE: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Module:
    name: str
    path: Path

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"

    @property
    def relative(self) -> str:
        return self.path.relative_to(ROOT).as_posix()


def _modules() -> dict[str, Module]:
    found = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = Module(name, path)
    return found


MODULES = _modules()


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    """The absolute module name a ``from ... import`` names, relative forms resolved."""
    if not node.level:
        return node.module or ""
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(module: Module, node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        source = _absolute(module, node)
        return [f"{source}.{a.name}" if f"{source}.{a.name}" in MODULES else source for a in node.names]
    return []


def _graph() -> tuple[dict[str, dict[str, int]], list[str]]:
    """importer → {imported: line of the first such import}, over ellrobust's own modules only.

    Also returns the imports of ellrobust names that are no module (``file:line name``).
    """
    graph: dict[str, dict[str, int]] = {}
    unresolved = []
    for module in MODULES.values():
        edges = graph.setdefault(module.name, {})
        for node in ast.walk(ast.parse(module.path.read_text(), module.relative)):
            for target in _targets(module, node):
                if target != PACKAGE and not target.startswith(PACKAGE + "."):
                    continue
                if target not in MODULES:
                    unresolved.append(f"{module.relative}:{node.lineno} {target}")
                elif target != module.name:
                    edges[target] = min(edges.get(target, node.lineno), node.lineno)
    return graph, unresolved


GRAPH, UNRESOLVED = _graph()


def _where(importer: str, imported: str) -> str:
    return f"{MODULES[importer].relative}:{GRAPH[importer][imported]}"


def _matches(module: str, entry: str) -> bool:
    return module == entry or (entry != PACKAGE and module.startswith(entry + "."))


def _floor(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (entry length, floor index)
    for index, (_, entries) in enumerate(FLOORS):
        for entry in entries:
            if _matches(module, entry) and (best is None or len(entry) > best[0]):
                best = (len(entry), index)
    return None if best is None else best[1]


def _cycles(graph: dict[str, dict[str, int]]) -> list[tuple[set[str], list[str]]]:
    """The strongly connected components of more than one module (Tarjan), each with one concrete cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [(set(component), _cycle_in(graph, set(component))) for component in components]


def _cycle_in(graph: dict[str, dict[str, int]], component: set[str]) -> list[str]:
    """A path start → … → start inside one strongly connected component (breadth first: a shortest one)."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v]):
            if w == start:
                return paths[v] + [start]
            if w in component and w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    raise AssertionError(f"no cycle through {start}")  # unreachable for a strongly connected component


def _violations(graph: dict[str, dict[str, int]]) -> dict[tuple[str, str], str]:
    """Every import that breaks a floor or a forbidden pair, with why."""
    found = {}
    for importer, edges in graph.items():
        for imported in edges:
            low, high = _floor(importer), _floor(imported)
            if low is not None and high is not None and high > low:
                found[importer, imported] = f"{FLOORS[low][0]} imports {FLOORS[high][0]}, a floor above it"
            for sources, targets, why in FORBIDDEN:
                if any(_matches(importer, s) for s in sources) and any(_matches(imported, t) for t in targets):
                    found[importer, imported] = why
    return found


def test_graph_is_built_from_every_module():
    assert len(MODULES) > 50 and PACKAGE in MODULES
    # the resolution rules, on imports whose meaning is known
    assert "ellrobust.attacks.cascade" in GRAPH["ellrobust.attacks.fab"]  # from ellrobust.attacks.cascade import ...
    assert "ellrobust.cli.options" in GRAPH["ellrobust.cli.train"]  # from ellrobust.cli import options (a module)
    assert "ellrobust.attacks" in GRAPH["ellrobust.request.suites"]  # from ellrobust.attacks import ATTACKS (a name)
    assert "ellrobust.corruptions.cifar10c" in GRAPH["ellrobust.corruptions.generate"]  # inside a function


def test_every_import_names_a_module():
    assert not UNRESOLVED, f"imports of modules that do not exist: {', '.join(UNRESOLVED)}"


def test_every_module_is_on_a_floor():
    missing = sorted(name for name in MODULES if _floor(name) is None)
    assert not missing, f"add these modules to FLOORS in {Path(__file__).name}: {', '.join(missing)}"


def test_floors_name_existing_modules_once():
    entries = [e for _, floor in FLOORS for e in floor]
    stale = sorted(e for e in entries if not any(_matches(m, e) for m in MODULES))
    assert not stale, f"FLOORS names modules that do not exist: {', '.join(stale)}"
    assert len(entries) == len(set(entries)), "a FLOORS entry is on two floors"


def test_no_import_cycles():
    knots = _cycles(GRAPH)
    message = "\n".join(
        f"{', '.join(sorted(component))}; e.g. "
        + " → ".join(cycle)
        + "  ("
        + ", ".join(_where(a, b) for a, b in zip(cycle, cycle[1:], strict=False))
        + ")"
        for component, cycle in knots
    )
    assert not knots, f"import cycles (move the shared piece into a module both can import):\n{message}"


def test_imports_respect_the_floors():
    found = _violations(GRAPH)
    new = sorted(set(found) - KNOWN_VIOLATIONS)
    gone = sorted(KNOWN_VIOLATIONS - set(found))
    lines = [f"{_where(a, b)}: {a} → {b}: {found[a, b]}" for a, b in new]
    lines += [f"{a} → {b} is gone from the graph: delete it from KNOWN_VIOLATIONS" for a, b in gone]
    assert not lines, "\n".join(lines)


def _face_statements(tree: ast.Module) -> list[ast.stmt]:
    """The statements of an ``__init__.py`` that are not a docstring, an import or ``__all__ = [...]``."""
    body = tree.body[1:] if tree.body and isinstance(tree.body[0], ast.Expr) else tree.body
    other = []
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if (
            isinstance(node, ast.Assign)
            and [getattr(t, "id", None) for t in node.targets] == ["__all__"]
            and isinstance(node.value, ast.List | ast.Tuple)
            and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.value.elts)
        ):
            continue
        other.append(node)
    return other


def test_package_faces_only_re_export():
    faces = {m.name: m for m in MODULES.values() if m.is_package}
    holding = {name: _face_statements(ast.parse(m.path.read_text())) for name, m in faces.items()}
    holding = {name: nodes for name, nodes in holding.items() if nodes}
    new = sorted(set(holding) - KNOWN_FACES_WITH_CODE)
    gone = sorted(KNOWN_FACES_WITH_CODE - set(holding))
    lines = [
        f"{faces[n].relative}:{holding[n][0].lineno}: {n}'s __init__.py holds code ({len(holding[n])} statements); "
        "move it into a module and re-export it"
        for n in new
    ]
    lines += [f"{n}'s __init__.py only re-exports now: delete it from KNOWN_FACES_WITH_CODE" for n in gone]
    assert not lines, "\n".join(lines)


def test_the_checks_catch_what_they_are_for():
    graph = {
        "ellrobust.data.a": {"ellrobust.data.b": 1},
        "ellrobust.data.b": {"ellrobust.data.c": 1},
        "ellrobust.data.c": {"ellrobust.data.a": 1, "ellrobust.engine.runner": 2},
        "ellrobust.engine.runner": {"ellrobust.core.errors": 1},
        "ellrobust.report.x": {"ellrobust.measures.y": 1},
        "ellrobust.measures.y": {},
        "ellrobust.core.errors": {},
    }
    [(component, cycle)] = _cycles(graph)
    assert component == {"ellrobust.data.a", "ellrobust.data.b", "ellrobust.data.c"}
    assert cycle == ["ellrobust.data.a", "ellrobust.data.b", "ellrobust.data.c", "ellrobust.data.a"]
    expected = {("ellrobust.data.c", "ellrobust.engine.runner"), ("ellrobust.report.x", "ellrobust.measures.y")}
    assert set(_violations(graph)) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from ellrobust.attacks import ATTACKS", ["ellrobust.attacks"]),
        ("from ellrobust.attacks import cascade, ATTACKS", ["ellrobust.attacks.cascade", "ellrobust.attacks"]),
        ("import ellrobust.models.vit", ["ellrobust.models.vit"]),
        ("from . import options", ["ellrobust.cli.options"]),
        ("from .options import x", ["ellrobust.cli.options"]),
        ("from ..core.errors import UsageError", ["ellrobust.core.errors"]),
    ],
)
def test_import_resolution(source, expected):
    module = MODULES["ellrobust.cli.train"]
    assert _targets(module, ast.parse(source).body[0]) == expected


def test_every_folder_is_a_floor_and_says_so():
    """``ls ellrobust`` shows the layers: each folder is on :data:`LAYERS`, and its face names its floor."""
    listed = {name: index for index, names in enumerate(LAYERS) for name in names}
    root = ROOT / PACKAGE
    present = {p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    present |= {p.stem for p in root.glob("*.py")}
    assert present == set(listed), f"folders and root modules not in LAYERS: {sorted(present - set(listed))}; " + (
        f"stale LAYERS entries: {sorted(set(listed) - present)}"
    )
    for name in present:
        face = root / name / "__init__.py"
        if face.is_file():
            docstring = ast.get_docstring(ast.parse(face.read_text())) or ""
            assert docstring.startswith(f"Floor {listed[name]}:"), (
                f"{face}: its docstring must open 'Floor {listed[name]}:'"
            )
    for module in MODULES:
        assert _layer_of(module) in listed, module
