"""The package's architecture rules (``docs/architecture.md``), checked from the source with ``ast``.

1. No import circle inside ``relkd_tutorial``: the graph of its imports (module-level *and*
   function-level, absolute and relative) has no strongly connected component of more than one
   module and no module importing itself. Importing a submodule also runs its parents'
   ``__init__``; that implicit edge is not counted (a package's ``__init__`` re-exports its
   submodules), only the module an ``import`` statement names.
2. The core (data, models, pretrained, relations, losses, methods, teacher, metrics, stats, the
   training loop, the checks, the package root) never imports the benchmark (``bench``) or the
   notebooks' helpers (``tutorial``).
3. No module is longer than :data:`MAX_LINES` lines.

The last tests run the same checker on small packages written to a temporary folder, so the
rules are shown to fail where they should (a circle through a function-level import, a core
module importing the benchmark, a long module).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "relkd_tutorial"
ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 650
CORE = (
    "data",
    "models",
    "pretrained",
    "relations",
    "losses",
    "methods",
    "teacher",
    "metrics",
    "stats",
    "training",
    "_checks",
    "fastmode",
    "wrap",
)
TOP = ("bench", "tutorial", "selfcheck")  # what the core must not import


def module_files(package_dir: Path, package: str = PACKAGE) -> dict[str, Path]:
    """``{dotted module name: file}`` for every ``.py`` file of the package."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [package, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a module of the package (``None`` if outside)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``module`` imports anywhere in its body (functions included)."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _known(alias.name, modules)
                if target is not None:
                    out.add(target)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                if node.level > 1:
                    base = base[: len(base) - (node.level - 1)]
                full = ".".join([*base, node.module] if node.module else base)
            else:
                full = node.module or ""
            for alias in node.names:
                target = _known(f"{full}.{alias.name}", modules) or _known(full, modules)
                if target is not None:
                    out.add(target)
    return out


def import_graph(package_dir: Path, package: str = PACKAGE) -> dict[str, set[str]]:
    modules = module_files(package_dir, package)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, and self-imports (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _in(module: str, names: tuple[str, ...], package: str) -> bool:
    return any(module == f"{package}.{n}" or module.startswith(f"{package}.{n}.") for n in names)


def core_violations(graph: dict[str, set[str]], package: str = PACKAGE) -> list[tuple[str, str]]:
    """``(core module, benchmark or notebook-helper module it imports)`` pairs."""
    return sorted(
        (module, target)
        for module, targets in graph.items()
        if module == package or _in(module, CORE, package)
        for target in targets
        if _in(target, TOP, package)
    )


def long_modules(package_dir: Path, limit: int = MAX_LINES) -> dict[str, int]:
    counts = {
        str(p.relative_to(package_dir.parent)): len(p.read_text().splitlines())
        for p in package_dir.rglob("*.py")
    }
    return {name: n for name, n in counts.items() if n > limit}


# ---------------------------------------------------------------------------------------------
# The rules, on the package
# ---------------------------------------------------------------------------------------------


def test_the_graph_sees_the_package():
    graph = import_graph(ROOT / PACKAGE)
    assert {"relkd_tutorial.training.loop", "relkd_tutorial.bench.cli"} <= set(graph)
    assert "relkd_tutorial.methods" in graph["relkd_tutorial.training.loop"]
    assert "relkd_tutorial.methods.base" in graph["relkd_tutorial.methods.embedding"]
    assert "relkd_tutorial.training.schedule" in graph["relkd_tutorial.training.loop"]
    # a function-level import is an edge too (the shipped teacher, loaded on demand)
    assert "relkd_tutorial.pretrained" in graph["relkd_tutorial.bench.workspace"]


def test_no_import_circle():
    found = cycles(import_graph(ROOT / PACKAGE))
    assert not found, f"import circles in {PACKAGE}: {found}"


def test_the_core_never_imports_the_benchmark_or_the_notebook_helpers():
    graph = import_graph(ROOT / PACKAGE)
    core = [m for m in graph if m == PACKAGE or _in(m, CORE, PACKAGE)]
    assert len(core) >= 20 and "relkd_tutorial.training.loop" in core
    assert not core_violations(graph), core_violations(graph)


def test_every_package_module_is_known_to_the_layers():
    """A new top-level module must be placed in the core or on top of it (update CORE/TOP)."""
    graph = import_graph(ROOT / PACKAGE)
    unplaced = [m for m in graph if m != PACKAGE and not _in(m, CORE + TOP, PACKAGE)]
    assert not unplaced, f"modules in no layer: {unplaced}"


def test_no_module_over_the_line_limit():
    assert not long_modules(ROOT / PACKAGE), long_modules(ROOT / PACKAGE)


FIT_MAX_LINES = 150  # the loop a learner reads at one sitting (docstring included)


def function_lines(path: Path, name: str) -> int:
    """Lines of the top-level function ``name`` of ``path``, from ``def`` to its last line."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node.end_lineno - node.lineno + 1  # type: ignore[operator]
    raise LookupError(f"{path} defines no function {name}")


def test_fit_reads_at_one_sitting(tmp_path):
    """``fit`` shows the step; resume, signals, DDP and checkpoints are called from it."""
    n = function_lines(ROOT / PACKAGE / "training" / "loop.py", "fit")
    assert n < FIT_MAX_LINES, f"training/loop.py: fit has {n} lines (limit {FIT_MAX_LINES})"
    long = _write(tmp_path, {"m.py": "def fit():\n" + "    x = 1\n" * FIT_MAX_LINES})
    assert function_lines(long / "m.py", "fit") == FIT_MAX_LINES + 1  # the count sees a long one


# ---------------------------------------------------------------------------------------------
# The checker fails where it should
# ---------------------------------------------------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_a_circle_through_a_function_level_import_is_found(tmp_path):
    pkg = _write(
        tmp_path,
        {
            "__init__.py": "from .a import f\n",
            "a.py": "from .b import g\n\ndef f():\n    return g()\n",
            "b.py": "def g():\n    from . import a\n    return a\n",
            "c.py": "import pkg.c\n",
            "sub/__init__.py": "",
            "sub/d.py": "from ..a import f\n",
        },
    )
    graph = import_graph(pkg, "pkg")
    assert graph["pkg.sub.d"] == {"pkg.a"}
    assert graph["pkg.b"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.b"], ["pkg.c"]]


def test_a_core_module_importing_the_benchmark_is_found(tmp_path):
    pkg = _write(
        tmp_path,
        {
            "__init__.py": "",
            "models.py": "def build():\n    from .bench.cli import main\n    return main\n",
            "bench/__init__.py": "",
            "bench/cli.py": "from ..models import build\n\ndef main():\n    return build\n",
            "tutorial/__init__.py": "",
            "tutorial/plots.py": "import pkg.models\n",
            "training/__init__.py": "from ..tutorial import plots\n",
        },
    )
    graph = import_graph(pkg, "pkg")
    assert core_violations(graph, "pkg") == [
        ("pkg.models", "pkg.bench.cli"),
        ("pkg.training", "pkg.tutorial.plots"),
    ]
    assert cycles(graph) == [["pkg.bench.cli", "pkg.models"]]


def test_a_long_module_is_found(tmp_path):
    pkg = _write(tmp_path, {"__init__.py": "", "big.py": "x = 1\n" * (MAX_LINES + 1)})
    assert long_modules(pkg) == {"pkg/big.py": MAX_LINES + 1}
