"""The command lines facerec prints for the user's next step, made to work as printed.

A newcomer runs ``make run`` and is told what to type next. ``facerec`` is on their PATH only
when the virtualenv is activated, so :func:`facerec_command` says ``facerec`` only when that name
runs this very install, and otherwise the path of this install's console script (``.venv/bin/
facerec`` from the project folder), or ``python -m facerec.cli``. :func:`run_script` runs the
original tutorial's scripts (``python process_raw_data.py``...) and turns a missing dependency
(the system Python instead of the project's virtualenv) into one line that says how to run them
(:func:`missing_dependency_line`; ``facerec.cli.run_script`` runs them).

Light module: the standard library only, so it loads even where facerec's dependencies do not.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path


def _shown(path: Path) -> str:
    """PATH relative to the current folder when it lies inside it (``.venv/bin/facerec``), else
    absolute; quoted for a POSIX shell when needed."""
    try:
        rel = path.absolute().relative_to(Path.cwd())
        text = rel.as_posix() if rel.parts and rel.parts[0] != ".." else str(path.absolute())
    except ValueError:
        text = str(path.absolute())
    return shlex.quote(text)


def facerec_command() -> str:
    """How to run this facerec from the current folder: ``facerec`` when that name on PATH is this
    install's console script; else that script's path (``.venv/bin/facerec``); else
    ``PYTHON -m facerec.cli`` with this interpreter."""
    bindir = Path(sys.executable).parent
    script = bindir / ("facerec.exe" if os.name == "nt" else "facerec")
    on_path = shutil.which("facerec")
    if script.is_file():
        try:
            if on_path and os.path.samefile(on_path, script):
                return "facerec"
        except OSError:
            pass
        return _shown(script)
    if on_path:  # an install without a console script beside its interpreter (rare)
        return "facerec"
    return f"{_shown(Path(sys.executable))} -m facerec.cli"


def command_line(*words: str | os.PathLike) -> str:
    """``facerec WORDS...`` as the user should type it here: the program as
    :func:`facerec_command` says, every path-like word shown relative to the current folder when
    it lies inside it, and quoted for the shell. Upper-case placeholders (``PHOTO``) stay as they
    are."""
    shown = []
    for w in words:
        if isinstance(w, os.PathLike) or (isinstance(w, str) and os.sep in w and Path(w).is_absolute()):
            shown.append(_shown(Path(w)))
        else:
            shown.append(shlex.quote(str(w)) if str(w) else "''")
    return " ".join([facerec_command(), *shown])


def _python_hint(script: str) -> str:
    """How to run the tutorial script SCRIPT with the project's virtualenv."""
    root = Path(script).resolve().parent
    venv_python = root / ".venv" / "bin" / "python"
    name = Path(script).name
    if venv_python.is_file():
        return (f"run it with the project's virtualenv: {_shown(venv_python)} {name} ... "
                f"(or `. {_shown(root / '.venv' / 'bin' / 'activate')}` first)")
    return (f"create the project's virtualenv first (`make venv` in {_shown(root)}), then run "
            f".venv/bin/python {name} ...")


#: modules a tutorial script's command needs (checked before it starts, without importing them)
SCRIPT_NEEDS = {"detect": ("torch", "numpy", "PIL"), "predict": ("torch", "numpy", "PIL"),
                "split": ("torch", "numpy", "sklearn"), "train": ("torch", "lightning", "sklearn")}


def missing_dependency_line(script: str, module: str) -> str:
    """The one line a tutorial script prints when this Python lacks MODULE (a dependency of
    facerec): which Python it was, and how to run SCRIPT instead."""
    return (f"{Path(script).name}: error: facerec's dependencies are not installed for "
            f"{sys.executable} (no module named {module!r}): {_python_hint(script)}")
