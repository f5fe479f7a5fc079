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
                    "facerec.registry", "facerec.weights", "facerec.workspace"]),
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


def test_the_checks_can_fail(tmp_path):
    """The walker sees imports inside functions, which is where the lazy upward ones hide."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from facerec.cli import main\n    import facerec\n")
    assert [(m, n) for _, m, n in _imports(probe)] == [("facerec.cli", ["main"]), ("facerec", [])]
    assert _layer("facerec.cli") > _layer("facerec.inference.predict") > _layer("facerec.errors")
