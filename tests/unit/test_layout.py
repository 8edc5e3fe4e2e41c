"""The package's import graph runs one way: no module imports, even lazily
inside a function, a module that imports it back. Read from the source with
:mod:`ast`, so nothing is imported to check it."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import wizard

PACKAGE = Path(wizard.__file__).resolve().parent

#: The modules in the order the README's layout section gives: each may
#: import only modules earlier in this list (or its own package's parts).
LAYERS = [
    "wizard.config",
    "wizard.logs",
    "wizard.proctitle",
    "wizard.store",
    "wizard.faults",
    "wizard.operations",
    "wizard.membership",
    "wizard.queue",
    "wizard.loop",
    "wizard.health",
    "wizard.metrics",
    "wizard.worker",
    "wizard.scheduler",
    "wizard.ratelimit",
    "wizard.access",
    "wizard.identity",
    "wizard.router",
    "wizard.views",
    "wizard.api",
    "wizard.server",
    "wizard.processes",
    "wizard.supervisor",
    "wizard.keeper",
    "wizard.acl",
    "wizard.ha",
    "wizard.lab",
    "wizard.inspection",
    "wizard.cluster",
    "wizard.certs",
    "wizard.slowlink",
    "wizard.netlab",
    "wizard.__main__",
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """The wizard modules ``path`` imports anywhere in its body."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
    # Importing wizard.queue.scripts runs wizard/queue/__init__.py first.
    found.update(m.rpartition(".")[0] for m in list(found) if m.count(".") > 1)
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {m for m in found if m in modules and m not in ("wizard", name, package)}


def graph() -> dict[str, set[str]]:
    """Module -> the wizard modules it imports (the package's own
    ``__init__``, which imports nothing, left out)."""
    paths = [p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py"]
    return {module_name(path): imported(path) for path in paths}


def layer(module: str) -> str:
    """The LAYERS entry ``module`` belongs to (a package's parts share it)."""
    for entry in LAYERS:
        if module == entry or module.startswith(entry + "."):
            return entry
    raise AssertionError(f"{module} is missing from LAYERS and the README's layout")


def test_the_import_graph_has_no_cycle():
    try:
        order = list(TopologicalSorter(graph()).static_order())
    except CycleError as error:
        raise AssertionError(f"import cycle: {' -> '.join(error.args[1])}") from None
    assert "wizard.queue" in order and "wizard.membership" in order


def test_each_module_imports_only_modules_listed_before_it():
    backwards = []
    for module, targets in graph().items():
        mine = LAYERS.index(layer(module))
        for target in targets:
            theirs = LAYERS.index(layer(target))
            if theirs > mine:
                backwards.append(f"{module} imports {target}")
    assert backwards == []


def test_the_readme_lists_every_layer():
    readme = (PACKAGE.parent / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    missing = [m for m in LAYERS if m.removeprefix("wizard.") not in layout]
    assert missing == []
