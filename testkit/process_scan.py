"""Which tests start a process, a server or a browser, read from source: the calls each test reaches, transitively."""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

# What starts another process, the app's server or a browser: names, and `.attribute` calls such as demo.launch().
# The local Hub (testkit.hub_server) is a thread in the test's own process, as cheap as a fixture, and is not here.
STARTERS = frozenset({"subprocess", "Popen", "torchrun", "sync_playwright", "running_app", "multiprocessing",
                      "ProcessPoolExecutor", ".launch", ".Popen"})


@dataclass
class Module:
    functions: dict[str, ast.AST] = field(default_factory=dict)
    imported: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # alias -> (module, name or None)
    marked_e2e: bool = False  # a module-level `pytestmark` that includes e2e


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[0] == "tests":  # pytest puts tests/ itself on sys.path: test modules import each other by bare name
        parts = parts[1:]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_e2e_marker(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr == "e2e" for n in ast.walk(node))


def read_modules(root: str | Path, folders: tuple[str, ...] = ("tests", "testkit", "benchmarks")) -> dict[str, Module]:
    root = Path(root)
    modules = {}
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            name, module = _module_name(root, path), Module()
            package = name if path.name == "__init__.py" else name.rpartition(".")[0]
            for node in tree.body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    module.functions[node.name] = node
                elif isinstance(node, ast.ClassDef):
                    for item in node.body:
                        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                            module.functions.setdefault(item.name, item)
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        module.imported[alias.asname or alias.name.split(".")[0]] = (alias.name, None)
                elif isinstance(node, ast.ImportFrom):
                    base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                    source = ".".join(base + ([node.module] if node.module else []))
                    for alias in node.names:
                        module.imported[alias.asname or alias.name] = (source, alias.name)
                elif isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in node.targets):
                    module.marked_e2e = _is_e2e_marker(node.value)
            modules[name] = module
    return modules


def _references(function: ast.AST) -> set[str]:
    """Bare names, `.attribute` and `alias.attribute` used in the function and its decorators, and its parameters."""
    refs = {arg.arg for arg in function.args.args + function.args.kwonlyargs}
    for node in ast.walk(function):
        if isinstance(node, ast.Name):
            refs.add(node.id)
        elif isinstance(node, ast.Attribute):
            refs.add(f".{node.attr}")
            if isinstance(node.value, ast.Name):
                refs.add(f"{node.value.id}.{node.attr}")
    return refs


def _resolve(modules: dict[str, Module], module: str, ref: str) -> tuple[str, str] | None:
    """(module, function) a reference in `module` names, when it is one of the read modules' functions."""
    here = modules[module]
    alias, _, attr = ref.partition(".")
    if attr:
        source = here.imported.get(alias)
        target = (source[0] if source[1] is None else f"{source[0]}.{source[1]}") if source else None
        return (target, attr) if target in modules and attr in modules[target].functions else None
    if ref in here.functions:
        return module, ref
    if ref in here.imported and here.imported[ref][1] is not None:
        source, name = here.imported[ref]
        if source in modules and name in modules[source].functions:
            return source, name
    return None


def starts_processes(modules: dict[str, Module], module: str, function: str, fixtures: dict[str, tuple[str, str]],
                     seen: set | None = None) -> list[str]:
    """The chain of calls from `function` to a process starter, or [] when it reaches none."""
    seen = set() if seen is None else seen
    if (module, function) in seen:
        return []
    seen.add((module, function))
    refs = _references(modules[module].functions[function])
    hit = sorted(refs & STARTERS)
    if hit:
        return [f"{module}.{function}", hit[0]]
    for ref in sorted(refs):
        target = _resolve(modules, module, ref) or fixtures.get(ref)
        if target:
            chain = starts_processes(modules, *target, fixtures, seen)
            if chain:
                return [f"{module}.{function}", *chain]
    return []


def unmarked_process_tests(root: str | Path) -> list[str]:
    """`module::test -> ... -> starter` for every test that reaches a process starter without the e2e marker."""
    modules = read_modules(root)
    fixtures = {name: (module, name) for module in ("conftest",) if module in modules
                for name in modules[module].functions}
    problems = []
    for name, module in modules.items():
        if not name.startswith("test_") or module.marked_e2e:
            continue
        for function, node in module.functions.items():
            if not function.startswith("test_") or any(_is_e2e_marker(d) for d in node.decorator_list):
                continue
            chain = starts_processes(modules, name, function, fixtures)
            if chain:
                problems.append(f"{name}::{function}: " + " -> ".join(chain))
    return problems
