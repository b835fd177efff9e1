"""Reading published PyTorch weight files without running code from them.

Published checkpoints come in three shapes: a safetensors file; a pickled state dict (optionally inside
{"state_dict": ...} / {"model": ...}, with DataParallel's `module.` prefix); or a whole pickled model
(`torch.save(model)`: torchxrayvision's released DenseNet weights, reproduce-chexnet's checkpoints).
Unpickling a whole model normally imports and runs the model's classes, which is how a weights file
runs arbitrary code. radlens never does that:

- every .pt/.pth/.bin/.tar goes through `torch.load(..., weights_only=True)` (torch's restricted
  unpickler: tensors, containers and primitive types only; `os`/`sys` globals are refused outright);
- for a whole pickled model, every class the pickle names (e.g. `torchxrayvision.models.DenseNet`) is
  allowlisted *as an inert stand-in* (`_Stub`): torch's unpickler builds the stand-in and copies the
  pickled attributes into its `__dict__`; no class or function from the file is imported or called.
  The tensors are then read out of the stand-ins' `_parameters` / `_buffers`, as `state_dict()` would.
- torch's restricted unpickler refuses whole models in the legacy (pre-1.6, non-zip) format outright
  ("Only persistent_load of storage is allowed"), and torchxrayvision's 2020 release files are such
  files. For those only, radlens runs torch's own legacy reader with a restricted unpickler: the globals
  it resolves are torch's weights_only allowlist (tensor/storage rebuild functions, OrderedDict, ...),
  every other class name becomes an inert stand-in, and os/sys/builtins/subprocess names are refused.
"""

from __future__ import annotations

import _compat_pickle
import logging
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from radlens.encoders.upstream import MissingWeightsError, require_files

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".tar", ".ckpt")

_MAX_STUB_ROUNDS = 200
_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")


class _Stub:
    """Inert stand-in for a class named in a pickle: keeps what the pickle gives it, runs nothing."""

    _origin = "?"
    dump_patches = False  # read by torch's legacy-format loader for pickled modules

    def __new__(cls, *args: Any, **kwargs: Any) -> "_Stub":
        obj = object.__new__(cls)
        obj.__dict__["_stub_args"] = args
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], (dict, type(None))):
            state = state[0]
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_stub_state"] = state

    def __repr__(self) -> str:
        return f"<stand-in for {self._origin}>"


def _stub_for(full_name: str) -> type:
    return type(full_name.rsplit(".", 1)[-1], (_Stub,), {"_origin": full_name})


def _unsafe_globals(path: Path, err: Exception) -> list[str]:
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # legacy (non-zip) files: read the name from the refusal message
        names = []
    if not names:
        m = _GLOBAL_RE.search(str(err))
        names = [m.group(1)] if m else []
    return names


_REFUSED_MODULES = ("os", "sys", "posix", "nt", "builtins", "__builtin__", "subprocess", "shutil", "socket",
                     "importlib", "runpy", "pickle", "_pickle", "code", "pty", "webbrowser")


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only torch's weights_only allowlist; other class names become inert stand-ins."""

    def find_class(self, module: str, name: str) -> Any:
        from torch._weights_only_unpickler import _get_allowed_globals

        if (module, name) in _compat_pickle.NAME_MAPPING:  # protocol-2 pickles use Python 2 names
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        full = f"{module}.{name}"
        allowed = _get_allowed_globals()
        if full in allowed:
            return allowed[full]
        if full in ("builtins.set", "builtins.frozenset", "builtins.slice"):  # inert data types
            return {"set": set, "frozenset": frozenset, "slice": slice}[name]
        if module.split(".")[0] in _REFUSED_MODULES:
            raise pickle.UnpicklingError(f"refused global {full}")
        stubs = self.__dict__.setdefault("_stubs", {})
        if full not in stubs:
            stubs[full] = _stub_for(full)
        return stubs[full]


class _RestrictedPickleModule:
    """What torch.load's `pickle_module=` needs: `Unpickler` and `load`."""

    Unpickler = _RestrictedUnpickler
    __name__ = "radlens_restricted_pickle"

    @staticmethod
    def load(f: Any, **kwargs: Any) -> Any:
        return _RestrictedUnpickler(f, **kwargs).load()


def _legacy_load_restricted(path: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(str(path), map_location="cpu", weights_only=False, pickle_module=_RestrictedPickleModule)


def torch_load_safely(path: Path) -> Any:
    """`torch.load(weights_only=True)`; classes a whole-model pickle names become inert stand-ins."""
    stubs: dict[str, type] = {}
    err: Exception | None = None
    for _ in range(_MAX_STUB_ROUNDS):
        try:
            with torch.serialization.safe_globals([(cls, name) for name, cls in stubs.items()]), \
                    warnings.catch_warnings():
                warnings.simplefilter("ignore")  # legacy files warn that stand-ins have no source code
                return torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            err = e
            if "persistent_load of storage" in str(e) and not torch.serialization._is_zipfile(open(path, "rb")):
                try:  # a whole model in the legacy format: weights_only cannot read it at all
                    return _legacy_load_restricted(path)
                except pickle.UnpicklingError as e2:
                    err = e2
                    break
            new = [n for n in _unsafe_globals(path, e) if n not in stubs]
            bad = [n for n in new if n.split(".")[0] in _REFUSED_MODULES]
            if bad:
                err = pickle.UnpicklingError(f"it names {', '.join(bad)}")
            if not new or bad:
                break
            for n in new:
                stubs[n] = _stub_for(n)
        except RuntimeError as e:  # not a torch file at all
            raise ValueError(f"{path}: not a PyTorch weights file ({e})") from None
    why = str(err or "?").split("WeightsUnpickler error:")[-1].strip().split(". ")[0]
    raise ValueError(f"{path}: refused to read this file: it is not a plain weights file ({why}); "
                     f"radlens reads tensors only and never runs code from a weights file")


def _module_state(mod: Any, prefix: str, out: dict[str, torch.Tensor]) -> None:
    d = mod.__dict__
    skip = d.get("_non_persistent_buffers_set") or set()
    for k, v in (d.get("_parameters") or {}).items():
        if isinstance(v, torch.Tensor):
            out[prefix + k] = v.detach()
    for k, v in (d.get("_buffers") or {}).items():
        if isinstance(v, torch.Tensor) and k not in skip:
            out[prefix + k] = v
    for k, child in (d.get("_modules") or {}).items():
        if child is not None:
            _module_state(child, f"{prefix}{k}.", out)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def to_state_dict(obj: Any, keys: tuple[str, ...] = ("state_dict", "model", "model_state_dict", "net")) -> dict[str, torch.Tensor]:
    """A tensor dict out of what a checkpoint file held: a state dict, a wrapper dict, or a pickled model."""
    if isinstance(obj, _Stub):
        out: dict[str, torch.Tensor] = {}
        _module_state(obj, "", out)
        return out
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, dict):
        for k in keys:
            if k in obj:
                return to_state_dict(obj[k], keys)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and len(tensors) >= len(obj) // 2:
            return tensors
    raise ValueError(f"no weights found in the checkpoint (top level: {type(obj).__name__}"
                     f"{' with keys ' + ', '.join(map(str, list(obj)[:8])) if isinstance(obj, dict) else ''})")


def strip_prefixes(state: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes (DataParallel's `module.`, CheXNet's `densenet121.`) where every key has them."""
    for p in prefixes:
        if state and all(k.startswith(p) for k in state):
            state = {k[len(p):]: v for k, v in state.items()}
    return state


def load_weights(path: Path, keys: tuple[str, ...] = ("state_dict", "model", "model_state_dict", "net")) -> dict[str, torch.Tensor]:
    """Read a weights file (safetensors, or a torch pickle read safely) into a flat state dict."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return to_state_dict(torch_load_safely(path), keys)


def find_weights_file(family: str, path: Path | None, where: str, preferred: tuple[str, ...] = ()) -> Path:
    """`path` is a weights file, or a folder holding one; MissingWeightsError names what is wanted otherwise."""
    wanted = list(preferred) or ["a weights file (*.pt, *.pth, *.bin, *.safetensors)"]
    if path is None or not Path(path).exists():
        require_files(family, path, wanted[:1], where)  # raises, naming the file and where to get it
    path = Path(path)
    if path.is_file():
        return path
    for name in preferred:
        if (path / name).is_file():
            return path / name
    found = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if len(found) == 1:
        return found[0]
    if not found:
        raise MissingWeightsError(f"{family}: {path} holds no weights file (expected {' or '.join(wanted)}). "
                                  f"Get them from {where}")
    raise MissingWeightsError(f"{family}: {path} holds several weights files ({', '.join(p.name for p in found)}); "
                              f"pass --weights with the one to use")
