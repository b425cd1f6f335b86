"""The package's layers, read from its source with `ast`: no import cycle, and each layer imports only below itself.

From the bottom: errors -> the method core -> teachers, data -> model families -> features, diagnostics -> pictures -> training ->
the command-line layer -> commands (`__main__` modules, `eval`, the training script, and their entry points at the
repository's root). Imports inside functions count as much as those at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest


ROOT = Path(__file__).parents[1]
PACKAGE = "diffusers_tsa"

#: (layer, module prefixes), bottom first; a module belongs to the layer of its longest matching prefix.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "errors",
        (
            "diffusers_tsa.errors",
            "diffusers_tsa.paths",
            "diffusers_tsa.compat",
            "diffusers_tsa.storage",
            "diffusers_tsa.choices",
            "diffusers_tsa.lazy",
        ),
    ),
    (
        "method core",
        (
            "diffusers_tsa.losses",
            "diffusers_tsa.loss_registry",
            "diffusers_tsa.relations",
            "diffusers_tsa.masking",
            "diffusers_tsa.hooks",
            "diffusers_tsa.projector",
            "diffusers_tsa.alignment_weight",
        ),
    ),
    ("teachers, data", ("diffusers_tsa.teachers", "diffusers_tsa.data")),
    ("model families", ("diffusers_tsa.adapters",)),
    ("features, diagnostics", ("diffusers_tsa.features", "diffusers_tsa.diagnostics")),
    ("pictures", ("diffusers_tsa.visualize",)),  # matplotlib drawings of the diagnostics (the probe logs them)
    ("public API", ("diffusers_tsa",)),  # the package's __init__: re-exports of the layers below
    ("training", ("diffusers_tsa.training",)),
    ("integrations", ("diffusers_tsa.integrations",)),  # the term in loops that are not ours (diffusers, finetrainers)
    ("test components", ("diffusers_tsa.testing",)),
    ("command line", ("diffusers_tsa.cli",)),
    # and every `__main__` module, wherever it is; `eval` and `train_text_to_video_tsa` are the repository's entry points
    (
        "commands",
        (
            "diffusers_tsa.eval",
            "diffusers_tsa.train_text_to_video_tsa",
            # the bodies of the commands, imported once their flags parse
            "diffusers_tsa.train_loop",
            "diffusers_tsa.features.command",
            "diffusers_tsa.visualize.command",
            "eval",
            "train_text_to_video_tsa",
        ),
    ),
]
#: The method core imports none of these.
ABOVE_THE_CORE = (
    "diffusers_tsa.adapters",
    "diffusers_tsa.teachers",
    "diffusers_tsa.training",
    "diffusers_tsa.features",
    "diffusers_tsa.cli",
)


def source_modules(root: Path, packages: tuple[str, ...] = (PACKAGE, "eval"), scripts=("train_text_to_video_tsa",)):
    """Module name -> source file, for every module of `packages` (folders under `root`) and the `scripts`."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for script in scripts:
        if (root / f"{script}.py").is_file():
            modules[script] = root / f"{script}.py"
    return modules


def _is_package(modules: dict[str, Path], name: str) -> bool:
    return modules[name].name == "__init__.py"


def _imports(tree: ast.AST, name: str, is_package: bool) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import statement of a module, resolved to absolute names."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module
            found.append((target, [alias.name for alias in node.names]))
    return found


def import_graph(modules: dict[str, Path]) -> tuple[dict[str, set[str]], set[tuple[str, str]]]:
    """The edges `importer -> imported` between `modules`, and the (importer, imported) pairs where a name starting
    with `_` is taken from another module.

    Importing `a.b.c` also imports the packages `a.b` (its `__init__`) on the way, unless the importer is inside them
    (its own package is already being imported) or the package is the top-level one (whose `__init__` only re-exports).
    """
    graph: dict[str, set[str]] = {name: set() for name in modules}
    private: set[tuple[str, str]] = set()
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for target, names in _imports(tree, name, _is_package(modules, name)):
            imported = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]  # `from pkg import module`
            if target in modules and (len(imported) < len(names) or not names):
                imported.append(target)
            for module in imported:
                parts = module.split(".")
                for i in range(1 if len(parts) == 1 else 2, len(parts) + 1):  # with the packages on the way
                    package = ".".join(parts[:i])
                    if package in modules and not (name == package or name.startswith(package + ".")):
                        graph[name].add(package)
            if target in modules and target != name and any(n.startswith("_") and n != "__version__" for n in names):
                private.add((name, target))
    return graph, private


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of `graph`: its strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer(module: str) -> int:
    """The rank of `module`'s layer in `LAYERS` (0 at the bottom); `__main__` modules are commands."""
    if module.split(".")[-1] == "__main__":
        return len(LAYERS) - 1
    matches = [
        (len(prefix), rank)
        for rank, (_, prefixes) in enumerate(LAYERS)
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    ]
    if not matches:
        raise AssertionError(f"{module} is in no layer of LAYERS: add it where it belongs.")
    return max(matches)[1]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """The edges of `graph` from a layer to a higher one, as `importer (layer) -> imported (layer)`."""
    return [
        f"{a} ({LAYERS[layer(a)][0]}) -> {b} ({LAYERS[layer(b)][0]})"
        for a in sorted(graph)
        for b in sorted(graph[a])
        if layer(b) > layer(a)
    ]


@pytest.fixture(scope="module")
def package_graph():
    return import_graph(source_modules(ROOT))


def test_no_import_cycle(package_graph):
    graph, _ = package_graph
    assert cycles(graph) == []


def test_the_method_core_imports_no_family_teacher_training_features_or_command(package_graph):
    graph, _ = package_graph
    core = [m for m in graph if LAYERS[layer(m)][0] == "method core"]
    assert core, "the method core's modules are not found"
    bad = [
        f"{m} -> {t}"
        for m in core
        for t in sorted(graph[m])
        if layer(t) == len(LAYERS) - 1 or any(t == p or t.startswith(p + ".") for p in ABOVE_THE_CORE)
    ]
    assert bad == []


def test_each_layer_imports_only_below_itself(package_graph):
    graph, _ = package_graph
    assert upward_imports(graph) == []


def test_no_module_takes_private_names_from_another(package_graph):
    _, private = package_graph
    assert sorted(private) == []


def test_the_checks_find_a_cycle_an_upward_import_and_a_private_name(tmp_path):
    """The checks above on a tiny package with a cycle through a function-level relative import, a core module
    importing training, and a private name taken across modules."""
    package = tmp_path / PACKAGE
    (package / "training").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "losses.py": "from .errors import _helper\n\ndef f():\n    from .training import loop\n",
        "errors.py": "def _helper():\n    pass\n",
        "training/__init__.py": "from .loop import run\n",
        "training/loop.py": "from ..losses import f\n\ndef run():\n    from diffusers_tsa.training import plan\n",
        "training/plan.py": "from . import loop\n",
    }
    for name, text in files.items():
        (package / name).write_text(text)
    graph, private = import_graph(source_modules(tmp_path, packages=(PACKAGE,), scripts=()))
    assert graph["diffusers_tsa.losses"] == {
        "diffusers_tsa.errors",
        "diffusers_tsa.training",  # the package on the way to its module
        "diffusers_tsa.training.loop",
    }
    assert graph["diffusers_tsa.training.loop"] == {"diffusers_tsa.losses", "diffusers_tsa.training.plan"}
    assert cycles(graph) == [
        [
            "diffusers_tsa.losses",
            "diffusers_tsa.training",
            "diffusers_tsa.training.loop",
            "diffusers_tsa.training.plan",
        ]
    ]
    assert upward_imports(graph) == [
        "diffusers_tsa.losses (method core) -> diffusers_tsa.training (training)",
        "diffusers_tsa.losses (method core) -> diffusers_tsa.training.loop (training)",
    ]
    assert private == {("diffusers_tsa.losses", "diffusers_tsa.errors")}
