"""The package's layering: imports only go from a stage to the stages (and shared layers) below
it, and no facerec module imports the package's public re-exports (``facerec/__init__.py``)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "facerec"

#: lowest first; a module may import its own layer and the ones before it
LAYERS = [
    ("foundation", ["facerec._version", "facerec.errors", "facerec.safeio", "facerec.cache",
                    "facerec.images", "facerec.manifest", "facerec.cropspec", "facerec.crops",
                    "facerec.registry", "facerec.weights", "facerec.defaults",
                    "facerec.extras", "facerec.workspace", "facerec.hints",
                    "facerec.threads"]),
    ("detection", ["facerec.detection"]),
    ("recognition", ["facerec.recognition"]),
    ("annotate", ["facerec.annotate"]),
    ("split", ["facerec.split"]),
    ("datastore", ["facerec.datastore"]),
    ("training", ["facerec.training"]),
    ("inference", ["facerec.inference"]),
    ("apps", ["facerec.workflow", "facerec.pipeline", "facerec.serve"]),
    ("cli", ["facerec.cli"]),
]


def _layer(module: str) -> int:
    for level, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every import in PATH, function-level ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module, [a.name for a in node.names]))
    return out


def test_every_module_has_a_layer():
    for name in _modules():
        if name != "facerec":
            _layer(name)


def test_no_import_goes_up_a_layer():
    upward = []
    for name, path in _modules().items():
        if name == "facerec":
            continue
        mine = _layer(name)
        for line, module, _ in _imports(path):
            if module.startswith("facerec.") and _layer(module) > mine:
                upward.append(f"{path.relative_to(SRC.parent)}:{line}: {name} "
                              f"({LAYERS[mine][0]}) imports {module} ({LAYERS[_layer(module)][0]})")
    assert not upward, "\n".join(upward)


def test_no_module_imports_the_package_reexports():
    found = []
    for name, path in _modules().items():
        if name == "facerec":
            continue
        for line, module, names in _imports(path):
            if module == "facerec":
                found.append(f"{path.relative_to(SRC.parent)}:{line}: "
                             + (f"from facerec import {', '.join(names)}" if names else "import facerec"))
    assert not found, "\n".join(found)


def _resolve(module: str, names: list[str], modules: dict[str, Path]) -> list[str]:
    """The facerec modules an import statement loads: ``from facerec.x import y`` is module
    ``facerec.x.y`` when that is a module (a submodule import), else ``facerec.x``."""
    out = []
    for name in names or [""]:
        sub = f"{module}.{name}" if name else module
        out.append(sub if sub in modules else module)
    return [m for m in out if m in modules]


def _graph() -> dict[str, set[str]]:
    """module -> the facerec modules it imports (function-level imports included; a package
    ``__init__`` re-exporting its own modules is left out: importing it is not a dependency of
    those modules on their package)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for _, module, names in _imports(path):
            if module.startswith("facerec"):
                graph[name].update(m for m in _resolve(module, names, modules)
                                   if m != name and not name.startswith(m + "."))
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    """No two modules import each other, directly or through others, counting the imports made
    inside functions (a cycle hidden that way still ties the two modules together)."""
    cycles = _cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_no_private_names_imported_across_modules():
    """``from facerec.a import _name`` outside ``facerec.a`` reaches into another module's
    internals: make the name public (and documented) or move the code."""
    found = []
    for name, path in _modules().items():
        for line, module, names in _imports(path):
            if module.startswith("facerec") and module != name:
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                if private:
                    found.append(f"{path.relative_to(SRC.parent)}:{line}: from {module} import "
                                 f"{', '.join(private)}")
    assert not found, "\n".join(found)


#: the longest a function in src/ may be, in lines (its signature and docstring included)
MAX_FUNCTION_LINES = 100


def _long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    shown = path.relative_to(SRC.parent) if path.is_relative_to(SRC.parent) else path
    return [f"{shown}:{node.lineno}: {node.name} is "
            f"{node.end_lineno - node.lineno + 1} lines"
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > limit]


def test_no_function_is_longer_than_the_limit():
    long = [entry for path in _modules().values() for entry in _long_functions(path)]
    assert not long, "\n".join(long)


def test_the_checks_can_fail(tmp_path):
    """The walker sees imports inside functions, which is where the lazy upward ones hide."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from facerec.cli import main\n    import facerec\n")
    assert [(m, n) for _, m, n in _imports(probe)] == [("facerec.cli", ["main"]), ("facerec", [])]
    assert _layer("facerec.cli") > _layer("facerec.inference.predict") > _layer("facerec.errors")
    # a cycle through a function-level import is found; a chain is not a cycle
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    long = tmp_path / "long.py"
    long.write_text("def f():\n" + "    x = 1\n" * 120)
    assert _long_functions(long, limit=100) and not _long_functions(long, limit=200)
