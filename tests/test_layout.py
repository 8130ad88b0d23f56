"""The tree's rules (issue 14): the layers import downwards only, so each can be read and changed alone.

    base/    (the input error type and checks)   imports none of the others
    models/, meshes/                               import base/ only
    tracer/                                        imports all three
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
ALLOWED = {"base": {"base"}, "models": {"base", "models"}, "meshes": {"base", "meshes"}}


def imported_packages(path: Path) -> set[str]:
    """The project packages a module imports, wherever in it the import stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found & {"base", "models", "meshes", "tracer"}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_lower_layers_import_nothing_above(package):
    wrong = {str(p.relative_to(ROOT)): imported_packages(p) - ALLOWED[package]
             for p in sorted((ROOT / package).rglob("*.py"))}
    assert not {k: v for k, v in wrong.items() if v}


def modules() -> dict[str, Path]:
    """The project's modules by dotted name."""
    found = {}
    for package in ("base", "models", "meshes", "tracer"):
        for path in (ROOT / package).rglob("*.py"):
            found[".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")] = path
    return found


def imports(path: Path, known: dict) -> set[str]:
    """The project modules `path` imports, wherever the import stands (`from pkg import mod` is mod, not pkg)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            subs = {f"{node.module}.{alias.name}" for alias in node.names} & set(known)
            found |= subs if len(subs) == len(node.names) else {node.module} | subs
    return found & set(known)


def test_no_import_cycle():
    known = modules()
    graph = {name: imports(path, known) - {name} for name, path in known.items()}
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done

    def walk(name: str, path: list[str]):
        state[name] = 1
        for dep in sorted(graph[name]):
            assert state.get(dep) != 1, " -> ".join([*path[path.index(dep):], dep])
            if dep not in state:
                walk(dep, [*path, dep])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])


MODULE_LINES, FUNCTION_LINES = 400, 60  # issue 14: past these a piece does more than one thing


def test_modules_and_functions_stay_small():
    long = []
    for name, path in sorted(modules().items()):
        text = path.read_text()
        if text.count("\n") > MODULE_LINES:
            long.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and (
                    node.end_lineno - node.lineno + 1 > FUNCTION_LINES):
                long.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long
