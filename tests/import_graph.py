"""The import graph of a package, read with `ast` (nothing is imported), and the import cycles in it.

Every import that can run counts: at module level, inside functions and methods (lazy imports hide
cycles, they do not remove them), and `importlib.import_module("a.literal")`. Only the bodies of
`if TYPE_CHECKING:` are left out, since they never run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path


def module_files(source_root: Path, package: str) -> dict[str, Path]:
    """Every module of `package` (a folder under `source_root`) by dotted name; a package is its `__init__.py`."""
    found: dict[str, Path] = {}
    for path in sorted((source_root / package.replace(".", "/")).rglob("*.py")):
        parts = list(path.relative_to(source_root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def import_graph(source_root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (targets resolved to the deepest known module)."""
    files = module_files(source_root, package)
    known = set(files)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), filename=str(path))
        targets = {_resolve(name, known) for name in _imported_names(tree, module, is_package)}
        graph[module] = {target for target in targets if target is not None and target != module}
    return graph


def find_cycles(graph: dict[str, set[str]], packages: Sequence[str]) -> list[list[str]]:
    """The import cycles that pass through any module of `packages` (dotted modules or package prefixes).

    Each cycle is one strongly connected group of modules, given as one concrete loop through it
    (`[a, b, c, a]`), so that a failure message says which imports to cut.
    """

    def selected(module: str) -> bool:
        return any(module == name or module.startswith(name + ".") for name in packages)

    cycles: list[list[str]] = []
    for component in _strongly_connected(graph):
        if (len(component) > 1 or _self_loop(graph, component)) and any(selected(m) for m in component):
            cycles.append(_loop_through(graph, component))
    return sorted(cycles)


def _imported_names(tree: ast.Module, module: str, is_package: bool) -> Iterator[str]:
    """The dotted names `tree` imports: `import a.b` gives a.b; `from a import b` gives a.b (b may be a name)."""
    base_package = module if is_package else module.rpartition(".")[0]
    for node in _runnable_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node.module, node.level, base_package)
            for alias in node.names:
                yield f"{source}.{alias.name}" if alias.name != "*" else source
        elif isinstance(node, ast.Call) and _is_import_module(node.func) and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                yield first.value


def _runnable_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of `tree` except those under `if TYPE_CHECKING:` (their `else` branch still runs)."""
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            pending.extend(node.orelse)
            continue
        pending.extend(ast.iter_child_nodes(node))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _is_import_module(func: ast.expr) -> bool:
    return (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id == "import_module"
    )


def _absolute(name: str | None, level: int, base_package: str) -> str:
    if level == 0:
        return name or ""
    parts = base_package.split(".")
    anchor = ".".join(parts[: len(parts) - (level - 1)])
    return f"{anchor}.{name}" if name else anchor


def _resolve(name: str, known: set[str]) -> str | None:
    """The deepest known module that `name` is or lies in (`a.b.func` -> `a.b`), None outside the package."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _strongly_connected(graph: dict[str, set[str]]) -> Iterable[list[str]]:
    """Tarjan's strongly connected components, iteratively (import chains can be deep)."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = lowlink[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = lowlink[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    lowlink[node] = min(lowlink[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                lowlink[parent] = min(lowlink[parent], lowlink[node])
            if lowlink[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def _self_loop(graph: dict[str, set[str]], component: list[str]) -> bool:
    return len(component) == 1 and component[0] in graph.get(component[0], set())


def _loop_through(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest loop from the component's first module back to itself, staying inside the component."""
    members = set(component)
    start = component[0]
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for child in sorted(graph.get(node, ())):
                if child not in members:
                    continue
                if child == start:
                    loop = [node]
                    while loop[-1] != start:
                        loop.append(came_from[loop[-1]])
                    return [start, *reversed(loop[:-1]), start]
                if child not in came_from:
                    came_from[child] = node
                    following.append(child)
        frontier = following
    return [*component, start]
