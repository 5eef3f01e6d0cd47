"""Where flowaug keeps files it makes or fetches for reuse across runs: generated CIFAR-C, downloaded weights.

``$FLOWAUG_CACHE`` if set, else ``$XDG_CACHE_HOME/flowaug``, else ``~/.cache/flowaug``.
Everything in it can be deleted; it is made again (or fetched again) when needed.
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The cache folder (not created here)."""
    if os.environ.get("FLOWAUG_CACHE"):
        return Path(os.environ["FLOWAUG_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "flowaug"
