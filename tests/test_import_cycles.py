"""No import circles among the product's modules, counting imports inside functions, and the check can fail."""
from __future__ import annotations

import ast
from pathlib import Path

from testkit.import_graph import cycles, import_graph

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ["ssm_models", "ssm_lab", "app"]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_product_packages_import_each_other_without_a_cycle():
    found = cycles(import_graph(ROOT, PRODUCT))
    assert found == [], "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in found)


def test_the_graph_sees_the_product_modules_and_their_imports():
    graph = import_graph(ROOT, PRODUCT)
    assert "ssm_models.families" in graph["ssm_models.classifier"], sorted(graph["ssm_models.classifier"])


def test_a_cycle_through_a_function_level_import_is_found_and_named(tmp_path):
    write(tmp_path / "pkg" / "__init__.py", "")
    write(tmp_path / "pkg" / "a.py", "from .b import thing\n")
    write(tmp_path / "pkg" / "b.py", "def thing():\n    from pkg import c\n    return c\n")
    write(tmp_path / "pkg" / "c.py", "import pkg.a\n")
    write(tmp_path / "pkg" / "d.py", "from . import a\n")  # imports into the cycle, is not part of it
    assert cycles(import_graph(tmp_path, ["pkg"])) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]


def test_a_relative_import_from_a_sub_package_resolves_to_the_right_module(tmp_path):
    write(tmp_path / "pkg" / "__init__.py", "from .sub import x\n")
    write(tmp_path / "pkg" / "sub" / "__init__.py", "from .. import y\nx = 1\n")
    write(tmp_path / "pkg" / "y.py", "")
    graph = import_graph(tmp_path, ["pkg"])
    assert graph == {"pkg": {"pkg.sub"}, "pkg.sub": {"pkg.y"}, "pkg.y": set()}, graph


def test_importing_a_name_from_a_package_init_is_an_edge_to_the_package(tmp_path):
    write(tmp_path / "pkg" / "__init__.py", "from .a import f\n")
    write(tmp_path / "pkg" / "a.py", "def f():\n    from pkg import g\n")
    assert cycles(import_graph(tmp_path, ["pkg"])) == [["pkg", "pkg.a", "pkg"]]


def test_each_layer_imports_only_the_layers_below_it():
    layers = ["ssm_models", "ssm_lab", "app", "benchmarks", "testkit"]
    below = {"ssm_models": {"ssm_models"}, "ssm_lab": {"ssm_models", "ssm_lab"},
             "app": {"ssm_models", "ssm_lab", "app"}}
    graph = import_graph(ROOT, layers)
    upward = sorted(f"{module} -> {target}" for module, targets in graph.items() for target in targets
                    if module.split(".")[0] in below and target.split(".")[0] not in below[module.split(".")[0]])
    assert upward == [], "imports against the layering app -> ssm_lab -> ssm_models: " + "; ".join(upward)


def sys_path_edits(root: Path, folders: list[str]) -> list[str]:
    """`file:line` of every statement that changes sys.path (a call on it, or an assignment to it)."""
    found = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                targets = node.targets if isinstance(node, ast.Assign) else [node.func] if isinstance(node, ast.Call) \
                    else []
                if any("sys.path" in ast.unparse(target) for target in targets):
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_nothing_edits_sys_path():
    found = sys_path_edits(ROOT, [*PRODUCT, "benchmarks", "testkit", "tests", "scripts"])
    assert found == [], f"sys.path edited at {found}: import installed packages or run from the root (python -m)"


def test_the_sys_path_scan_can_fail(tmp_path):
    write(tmp_path / "pkg" / "a.py", "import sys\nsys.path.insert(0, '.')\nsys.path = []\nprint(sys.path)\n")
    assert sorted(sys_path_edits(tmp_path, ["pkg"])) == ["pkg/a.py:2", "pkg/a.py:3"]
