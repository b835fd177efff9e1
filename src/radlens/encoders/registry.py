"""One registry for every encoder family, in the style of timm's `create_model`.

A family is one module that decorates a factory with `@register(...)`; the factory imports its
heavy dependencies inside, so listing encoders never imports transformers or open_clip.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from radlens.encoders.base import Encoder

Factory = Callable[..., Encoder]


@dataclass(frozen=True)
class EncoderInfo:
    name: str
    description: str
    input_size: int
    embedding_dim: int
    license: str
    weights: str  # where the weights come from / how to get them
    factory: Factory


_REGISTRY: dict[str, EncoderInfo] = {}
# Parametric families: "timm:<arch>", "hf:<folder>" — the factory receives the part after the colon as `arg`.
_PREFIXES: dict[str, EncoderInfo] = {}


def register(name: str, *, description: str, input_size: int, embedding_dim: int, license: str,
             weights: str) -> Callable[[Factory], Factory]:
    """`name` ending in ":" registers a parametric family (e.g. "timm:"); its factory gets `arg=`."""
    def deco(factory: Factory) -> Factory:
        table = _PREFIXES if name.endswith(":") else _REGISTRY
        if name in table:
            raise ValueError(f"encoder {name!r} is registered twice")
        table[name] = EncoderInfo(name, description, input_size, embedding_dim, license, weights, factory)
        return factory
    return deco


def available() -> list[EncoderInfo]:
    """Every family; parametric ones are listed as "prefix:<arg>" (input size / dim 0 = depends on the model)."""
    return [_REGISTRY[k] for k in sorted(_REGISTRY)] + [_PREFIXES[k] for k in sorted(_PREFIXES)]


def get(name: str, weights: str | Path | None = None, **kwargs) -> Encoder:
    """Build encoder `name`, loading weights from the local path `weights` where the family needs one."""
    w = Path(weights) if weights is not None else None
    if name in _REGISTRY:
        return _REGISTRY[name].factory(weights=w, **kwargs)
    prefix, sep, arg = name.partition(":")
    if sep and f"{prefix}:" in _PREFIXES:
        if not arg:
            raise KeyError(f"encoder {name!r}: give the model after the colon, e.g. {prefix}:<name>")
        return _PREFIXES[f"{prefix}:"].factory(weights=w, arg=arg, **kwargs)
    names = sorted(_REGISTRY) + [f"{p}<...>" for p in sorted(_PREFIXES)]
    raise KeyError(f"unknown encoder {name!r}; available: {', '.join(names)}")
