"""The package's structure: no import cycles among its modules, counting imports inside functions."""

import ast
import sys
from pathlib import Path

import pytest

import neuropil

PACKAGE = Path(neuropil.__file__).parent


def module_imports(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Each module of the package and the package modules it imports anywhere (top level or inside functions)."""
    root = package.parent
    modules = {}
    for path in package.rglob("*.py"):
        name = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        base = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = base.split(".")
                    anchor = ".".join(parts[: len(parts) - node.level + 1])
                    imported = f"{anchor}.{node.module}" if node.module else anchor
                else:
                    imported = node.module or ""
                targets = [imported] + [f"{imported}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                # a package re-exporting its own submodules is not a cycle with them
                if (
                    target
                    and target != name
                    and not name.startswith(target + ".")
                    and not target.startswith(name + ".")
                ):
                    edges[name].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_cycle_hidden_in_a_function(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import f\n")
    (package / "b.py").write_text("def f():\n    from pkg import a\n")
    (package / "c.py").write_text("import pkg.a\n")
    assert cycles(module_imports(package)) == [["pkg.a", "pkg.b"]]


def test_the_package_has_no_import_cycles():
    edges = module_imports()
    assert "neuropil.segment.pipeline" in edges and "neuropil.segment.watershed" in edges["neuropil.segment.pipeline"]
    assert cycles(edges) == []


@pytest.mark.parametrize("stage", ["neuropil.io", "neuropil.data.catalog", "neuropil.segment", "neuropil.evaluate"])
def test_the_lower_stages_do_not_import_the_upper_ones(stage):
    upper = ("neuropil.cli", "neuropil.experiments", "neuropil.blockwise", "neuropil.config", "neuropil.train")
    edges = module_imports()
    reached, todo = set(), [name for name in edges if name == stage or name.startswith(stage + ".")]
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo.extend(edges[name])
    assert not [name for name in reached if name.startswith(upper)]
