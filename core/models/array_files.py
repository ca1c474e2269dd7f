"""Reading a bundle's array files (ood.npz, embeddings.npz) so that garbage is one line, never a traceback.

The files are hash-verified against the card before they are read, but a local bundle's card can be re-sealed
over any bytes: a file that is not an .npz, holds pickled objects, lacks an array or has arrays of the wrong
shape raises ArrayFileError (a ValueError) naming the file and what is wrong.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np


class ArrayFileError(ValueError):
    """An .npz file is unreadable or malformed; the message is one line naming it."""


def read_arrays(path: str | os.PathLike, required: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Every array of the .npz at `path`; `required` maps array names to their number of dimensions."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise ArrayFileError(f"{path}: not an .npz archive of arrays")
            arrays = {k: data[k] for k in data.files}
    except ArrayFileError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        if "pickled" in reason:  # numpy's guess for bytes that are not a zip archive
            reason = "not a zip archive of arrays; pickled objects are never loaded"
        raise ArrayFileError(f"{path}: not a readable .npz archive of arrays ({reason})") from None
    for name, ndim in (required or {}).items():
        if name not in arrays:
            raise ArrayFileError(f"{path}: lacks the array {name!r} (has {', '.join(sorted(arrays)) or 'none'})")
        if arrays[name].ndim != ndim or arrays[name].dtype.kind not in "fiu" and ndim:
            raise ArrayFileError(f"{path}: array {name!r} has shape {arrays[name].shape} and type "
                                 f"{arrays[name].dtype}; expected {ndim} dimension(s) of numbers")
    return arrays
