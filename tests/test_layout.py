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
