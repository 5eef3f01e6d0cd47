"""Where datasets live: explicit argument, then ``$FLOWAUG_DATA``, then ``~/.cache/flowaug/data``."""
from __future__ import annotations

import os
from pathlib import Path

DATA_ENV_VAR = "FLOWAUG_DATA"
DEFAULT_DATA_ROOT = Path("~/.cache/flowaug/data")


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """Return the data root to use.

    Order: ``data_root`` if given, else the ``FLOWAUG_DATA`` environment
    variable, else ``~/.cache/flowaug/data``. The directory need not exist;
    loaders raise :class:`flowaug.errors.DatasetNotFoundError` naming the file
    they expected.
    """
    if data_root is not None:
        return Path(data_root).expanduser()
    from_env = os.environ.get(DATA_ENV_VAR)
    if from_env:
        return Path(from_env).expanduser()
    return DEFAULT_DATA_ROOT.expanduser()
