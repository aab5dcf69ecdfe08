"""The code's shape, checked: STYLE.md's layout rules as a test, on the source itself.

The rules live in :data:`RULES` (one place: add a rule there, or a package to
:data:`PACKAGES`). Each rule reads the parsed modules and yields ``(key, detail)`` pairs; the
key (``path:qualified.name``, no line numbers) is what an allow-list names. A violation
fails the test unless allow-listed with a reason; an allow-list entry that no longer
matches a violation fails too, so the lists only shrink.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
# bench/ joins once it is a package (it is being restructured into one); until then its
# flat scripts are not checked here.
PACKAGES = tuple(
    name
    for name in ("gateway", "engine", "portico", "modeltools", "loadtest", "bench")
    if (ROOT / name / "__init__.py").is_file()
)
MAX_FUNCTION_LINES = 60

# Which of our packages each package may import: the engine and the gateway share only
# the HTTP contract; the tools build on the engine; the command sits on top of everything.
ALLOWED_IMPORTS: dict[str, frozenset[str]] = {
    "gateway": frozenset({"gateway"}),
    "engine": frozenset({"engine"}),
    "loadtest": frozenset({"loadtest"}),
    "modeltools": frozenset({"modeltools", "engine"}),
    "portico": frozenset({"portico", "engine", "gateway", "loadtest", "modeltools"}),
    "bench": frozenset({"bench", "gateway", "engine", "portico", "loadtest", "modeltools"}),
}

# Reading os.environ outside a settings object, where that is the point.
ENVIRON_ALLOWED = {
    "engine/process.py:ManagedProcess.__init__": "passes the environment on to the child",
    "portico/gateway.py:serve": "passes the environment on to uvicorn, which it execs",
    "bench/core/procs.py:Service.start": "passes the environment on to the child",
    "bench/overhead/profile.py:main": "configures the gateway it profiles in this process",
}


@dataclass(frozen=True)
class Module:
    name: str  # dotted: "engine.launcher"; a package's __init__ is the package's name
    path: str  # relative to the repository: "engine/launcher.py"
    tree: ast.Module


Finding = tuple[str, str]  # (key for allow-lists, detail for the failure message)


def _modules() -> list[Module]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT)
            parts = list(relative.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            tree = ast.parse(path.read_text(), filename=str(relative))
            found.append(Module(".".join(parts), relative.as_posix(), tree))
    return found


def _scoped(tree: ast.AST) -> Iterator[tuple[str, ast.AST]]:
    """Every node with the qualified name of the function or class it sits in."""

    def walk(node: ast.AST, scope: str) -> Iterator[tuple[str, ast.AST]]:
        for child in ast.iter_child_nodes(node):
            yield scope, child
            inner = scope
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                inner = f"{scope}.{child.name}" if scope else child.name
            yield from walk(child, inner)

    yield from walk(tree, "")


def _where(module: Module, scope: str) -> str:
    return f"{module.path}:{scope or '<module>'}"


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _resolve(module: Module, node: ast.ImportFrom) -> str:
    """The absolute module an ``from ... import`` names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    is_package = module.path.endswith("__init__.py")
    base = module.name.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports(module: Module, ours: set[str]) -> Iterator[str]:
    """Every module this one imports, anywhere in it (lazy imports too): for ``from p
    import n``, ``p.n`` when that is one of ``ours``, else ``p``."""
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            for alias in node.names:
                yield f"{source}.{alias.name}" if f"{source}.{alias.name}" in ours else source


def _module_names(module: Module, ours: set[str]) -> set[str]:
    """Names this module binds to imported modules (``import x``, ``from p import mod``)."""
    names = set()
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            names |= {alias.asname or alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            names |= {
                alias.asname or alias.name
                for alias in node.names
                if f"{source}.{alias.name}" in ours
            }
    return names


def long_functions(modules: Sequence[Module]) -> Iterator[Finding]:
    for module in modules:
        for scope, node in _scoped(module.tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    name = f"{scope}.{node.name}" if scope else node.name
                    key = f"{module.path}:{name}"
                    yield key, f"{key} is {lines} lines (at most {MAX_FUNCTION_LINES})"


def private_names(modules: Sequence[Module]) -> Iterator[Finding]:
    """``from x import _y``, or ``mod._y`` on a name bound to an imported module."""
    ours = {m.name for m in modules}
    for module in modules:
        bound = _module_names(module, ours)
        for scope, node in _scoped(module.tree):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                for alias in node.names:
                    if _is_private(alias.name):
                        key = f"{_where(module, scope)}:{_resolve(module, node)}.{alias.name}"
                        yield key, f"{key}: imports another module's private name"
            elif isinstance(node, ast.Attribute) and _is_private(node.attr):
                root = node.value
                while isinstance(root, ast.Attribute):
                    root = root.value
                if isinstance(root, ast.Name) and root.id in bound:
                    key = f"{_where(module, scope)}:{ast.unparse(node)}"
                    yield key, f"{key}: reaches into an imported module's private name"


def import_cycles(modules: Sequence[Module]) -> Iterator[Finding]:
    """Strongly connected groups of the import graph (Tarjan), lazy imports included."""
    ours = {m.name for m in modules}
    graph = {
        m.name: sorted({i for i in _imports(m, ours) if i in ours} - {m.name}) for m in modules
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        for target in graph.get(name, []):
            if target not in index:
                visit(target)
                low[name] = min(low[name], low[target])
            elif target in stack:
                low[name] = min(low[name], index[target])
        if low[name] == index[name]:
            group = []
            while (member := stack.pop()) != name:
                group.append(member)
            groups.append(sorted([*group, name]))

    for name in graph:
        if name not in index:
            visit(name)
    for group in groups:
        if len(group) > 1:
            key = " <-> ".join(group)
            yield key, f"import cycle: {key}"


def asserts(modules: Sequence[Module]) -> Iterator[Finding]:
    for module in modules:
        for scope, node in _scoped(module.tree):
            if isinstance(node, ast.Assert):
                key = _where(module, scope)
                yield key, f"{key}: assert in production code (python -O drops it); raise"


def _environ_uses(modules: Sequence[Module]) -> Iterator[str]:
    """Where ``os.environ``, ``os.getenv`` or ``from os import environ/getenv`` appear."""
    names = ("environ", "environb", "getenv", "getenvb")
    for module in modules:
        for scope, node in _scoped(module.tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in names
                and isinstance(node.value, ast.Name)
                and node.value.id == "os"
            ) or (
                isinstance(node, ast.ImportFrom)
                and node.module == "os"
                and any(alias.name in names for alias in node.names)
            ):
                yield _where(module, scope)


def environ_reads(modules: Sequence[Module]) -> Iterator[Finding]:
    for key in _environ_uses(modules):
        if key not in ENVIRON_ALLOWED:
            yield key, f"{key}: reads os.environ outside a settings object"


def layering(modules: Sequence[Module]) -> Iterator[Finding]:
    ours = {m.name for m in modules}
    for module in modules:
        own = module.name.split(".")[0]
        for imported in sorted(set(_imports(module, ours))):
            top = imported.split(".")[0]
            if top in ALLOWED_IMPORTS and top not in ALLOWED_IMPORTS[own]:
                key = f"{module.path}:{imported}"
                yield key, f"{key}: package {own} may not import {top}"


RULES: dict[str, Callable[[Sequence[Module]], Iterator[Finding]]] = {
    "function-length": long_functions,
    "private-name": private_names,
    "import-cycle": import_cycles,
    "assert": asserts,
    "environ": environ_reads,
    "layering": layering,
}
MODULES = _modules()


@pytest.mark.parametrize("rule", sorted(RULES))
def test_the_code_keeps_the_rule(rule: str) -> None:
    findings = [detail for _, detail in sorted(RULES[rule](MODULES))]
    assert not findings, "\n".join(findings)


def test_every_allowed_environ_read_still_exists() -> None:
    """An entry whose code moved would excuse nothing, and linger."""
    assert set(ENVIRON_ALLOWED) <= set(_environ_uses(MODULES))


def _parse(source: str, name: str = "pkg.mod", path: str = "pkg/mod.py") -> list[Module]:
    return [Module(name, path, ast.parse(source))]


@pytest.mark.parametrize(
    ("rule", "source"),
    [
        ("function-length", "def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES),
        ("private-name", "from engine.launcher import _PROBE_TIMEOUT_S\n"),
        ("private-name", "import engine.launcher\nengine.launcher._PROBE_TIMEOUT_S\n"),
        ("assert", "def f(x):\n    assert x\n"),
        ("environ", "import os\nos.environ.get('X')\n"),
        ("environ", "import os\nos.getenv('X')\n"),
        ("environ", "from os import environ\n"),
    ],
)
def test_each_rule_catches_its_example(rule: str, source: str) -> None:
    assert list(RULES[rule](_parse(source)))


def test_the_cycle_rule_catches_a_lazy_circle() -> None:
    circle = [
        Module("engine.a", "engine/a.py", ast.parse("from engine import b\n")),
        Module("engine.b", "engine/b.py", ast.parse("def f():\n    from engine import a\n")),
    ]
    assert [key for key, _ in import_cycles(circle)] == ["engine.a <-> engine.b"]
    assert not list(import_cycles(circle[:1]))


def test_the_layering_rule_catches_the_engine_importing_a_tool() -> None:
    module = Module("engine.x", "engine/x.py", ast.parse("from modeltools import quantize\n"))
    assert [key for key, _ in layering([module])] == ["engine/x.py:modeltools"]
