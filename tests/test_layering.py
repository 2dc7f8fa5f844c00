"""The package is layered like the pipeline (issue 17), read from the source with `ast` (no import
side effects): no import cycle among unified modules, no unified module imports a CLI script or
`unified.cli` (only the packages' `__main__` modules, which are CLIs, may), lower layers never
import higher ones, and no .py file of the package or the CLIs is over 400 lines."""
from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

from helpers import ROOT

# The layer order, lowest first; written down once here and once in unified/__init__.py (checked
# below). "core" is the top-level modules every layer may use (errors, progress, devices).
LAYERS = ("core", "ops", "models", "text", "data", "train", "evals", "compare", "ladder")
CLI_SCRIPTS = {"train", "eval_hub", "compare", "ladder", "sample", "bench"}
MAX_LINES = 400


def module_name(path: Path) -> str:
    """`unified/models/base.py` -> "unified.models.base"; a package's `__init__.py` -> the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted((ROOT / "unified").rglob("*.py"))}


def imported_modules(name: str) -> set[str]:
    """Every module `name` imports, anywhere in the file (function-level imports included):
    `from unified.x import y` counts as unified.x.y when that is a module, else as unified.x."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for a in node.names:
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
    return out


GRAPH = {name: {m for m in imported_modules(name) if m in MODULES} for name in MODULES}


def layer(name: str) -> str:
    """The layer of a unified module: its subpackage, "core" for top-level modules."""
    parts = name.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else "core"


def test_every_subpackage_is_a_known_layer() -> None:
    packages = {p.parent.name for p in (ROOT / "unified").glob("*/__init__.py")}
    assert packages == set(LAYERS) - {"core"}, packages


def test_no_import_cycle() -> None:
    """Among unified modules, imports form a DAG (a cycle raises CycleError naming it)."""
    try:
        graphlib.TopologicalSorter(GRAPH).prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_library_never_imports_a_cli() -> None:
    """No unified module imports train.py, eval_hub.py, compare.py, ladder.py, sample.py, bench/
    or unified.cli; only `__main__` modules (python -m CLIs) import unified.cli, and nothing
    imports a `__main__` module."""
    bad = []
    for name in MODULES:
        for m in imported_modules(name):
            is_main = name.endswith("__main__")
            if m.split(".")[0] in CLI_SCRIPTS or (m == "unified.cli" and not is_main) or (
                    m in MODULES and m.endswith("__main__")):
                bad.append(f"{name} imports {m}")
    assert not bad, bad
    assert "unified.cli" in GRAPH["unified.text.__main__"]  # the check above can see such an import


def _is_cli_script(path: Path) -> bool:
    return 'if __name__ == "__main__":' in path.read_text(encoding="utf-8")


# every script run as a command: the top-level CLIs and bench/'s (bench/measure.py and
# bench/gpu_report.py are bench's helper modules, not commands)
CLI_FILES = sorted(p for p in [*ROOT.glob("*.py"), *(ROOT / "bench").glob("*.py")] if _is_cli_script(p))


def _top_names(path: Path) -> set[str]:
    """The first component of every module `path` imports (`import a.b`, `from a.b import c` -> a)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return names | {n.module.split(".")[0] for n in ast.walk(tree)
                    if isinstance(n, ast.ImportFrom) and n.module and not n.level}


def test_no_cli_script_imports_another() -> None:
    """CLI scripts are thin wrappers over the library: none imports another (what two CLIs share
    lives in unified/, e.g. ladder.py checks train and eval options with unified.train.flags and
    unified.evals.flags instead of importing train.py or eval_hub.py)."""
    assert {"train.py", "eval_hub.py", "ladder.py", "compare.py", "sample.py", "run.py"} <= {p.name for p in CLI_FILES}
    scripts = {p.stem for p in CLI_FILES}
    bad = [f"{p.relative_to(ROOT)} imports {m}" for p in CLI_FILES for m in sorted(_top_names(p) & (scripts - {p.stem}))]
    assert not bad, bad
    assert "unified" in _top_names(ROOT / "ladder.py")  # the check sees the imports it must


def test_lower_layers_never_import_higher_ones() -> None:
    """models/ops -> text -> data -> train -> evals -> compare -> ladder, each importing only its
    own layer and those before it (ops below models: kernels never import the model code)."""
    bad = [f"{name} ({layer(name)}) imports {m} ({layer(m)})" for name, deps in GRAPH.items() for m in deps
           if LAYERS.index(layer(m)) > LAYERS.index(layer(name))]
    assert not bad, bad
    assert layer("unified.compare.report") == "compare" and layer("unified.errors") == "core"


def test_the_package_docstring_states_the_same_order() -> None:
    import unified

    assert " -> ".join(LAYERS) in " ".join(unified.__doc__.split())


@pytest.mark.parametrize("path", sorted([*(ROOT / "unified").rglob("*.py"), *ROOT.glob("*.py"),
                                         *(ROOT / "bench").glob("*.py")]), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_file_over_400_lines(path: Path) -> None:
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(ROOT)} has {n} lines; split it into modules with one job each"


def test_pyproject_lists_every_package() -> None:
    """pyproject.toml's [tool.setuptools] packages are exactly the folders with an __init__.py."""
    import tomllib

    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    found = {module_name(p) for p in (ROOT / "unified").rglob("__init__.py")}
    assert sorted(listed) == sorted(found)
