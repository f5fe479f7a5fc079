"""One cache root for everything facerec keeps between runs (no torch; light).

``$FACEREC_CACHE_DIR``, else ``$XDG_CACHE_HOME/facerec``, else ``~/.cache/facerec``, with one
subfolder per kind: ``embeddings/`` (descriptors by crop hash), ``models/`` (converted networks),
``datastores/`` (pulled dataset versions). ``$FACEREC_CACHE`` (the datastore's old variable, whose
default was ``~/.facerec/cache``) is still read, as an alias, for one release.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "FACEREC_CACHE_DIR"
_OLD_CACHE_ENV = "FACEREC_CACHE"


def cache_root() -> Path:
    """The folder under which every facerec cache lives (see the module docstring)."""
    for name in (CACHE_ENV, _OLD_CACHE_ENV):
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "facerec"
