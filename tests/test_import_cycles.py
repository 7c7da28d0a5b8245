"""No import circles among the product's modules, counting imports inside functions, and the check can fail."""
from __future__ import annotations

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
