"""Reading artefact files that a user may have been handed: tensors only, never code, errors that name the file.

Every trained thing radlens loads (encoder, anatomy and generator weights, a mask prior's shape model, an
index's vectors, a training checkpoint) can arrive in a folder from somewhere else. A pickle can run
arbitrary code the moment it is read, so these readers only accept formats that cannot: safetensors,
``.npy`` without object arrays, ``torch.load(weights_only=True)``. They exist as one module so that a
refused file always reads the same way, with the path in the message, whichever layer loaded it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["UnsafeArtefactError", "read_npy", "read_safetensors", "torch_load_tensors"]


class UnsafeArtefactError(ValueError):
    """An artefact file that is not in the safe format its folder promises (e.g. a pickle), or that asks to
    construct types radlens does not trust. Nothing in it was executed."""


def read_safetensors(path: str | os.PathLike[str], framework: str = "pt") -> dict[str, Any]:
    """All tensors of a safetensors file (``framework`` "pt" or "numpy"); anything else is refused by name."""
    path = Path(path)
    if framework == "numpy":
        from safetensors.numpy import load_file
    else:
        from safetensors.torch import load_file
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for every malformed file
        raise UnsafeArtefactError(f"{path}: not a safetensors file ({type(e).__name__}: {e}); radlens reads "
                                  "weights only from safetensors and never unpickles them") from None


def read_npy(path: str | os.PathLike[str], mmap_mode: str | None = None) -> Any:
    """``np.load`` of a plain ``.npy`` array (``allow_pickle=False``: object arrays and pickles are refused)."""
    import numpy as np

    path = Path(path)
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError) as e:
        raise UnsafeArtefactError(f"{path}: not a plain .npy array ({e}); pickled or object data is never "
                                  "loaded") from None


def torch_load_tensors(path: str | os.PathLike[str]) -> Any:
    """``torch.load(weights_only=True)``: tensors, containers and primitives only; a refusal names the file."""
    import pickle

    import torch

    path = Path(path)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        why = str(e).split("WeightsUnpickler error:")[-1].strip().split("\n")[0]
        raise UnsafeArtefactError(f"{path}: refused to unpickle ({why}); checkpoints may hold tensors, "
                                  "containers and numbers only, never code") from None
