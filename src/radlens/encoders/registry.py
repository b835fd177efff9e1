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


def register(name: str, *, description: str, input_size: int, embedding_dim: int, license: str,
             weights: str) -> Callable[[Factory], Factory]:
    def deco(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise ValueError(f"encoder {name!r} is registered twice")
        _REGISTRY[name] = EncoderInfo(name, description, input_size, embedding_dim, license, weights, factory)
        return factory
    return deco


def available() -> list[EncoderInfo]:
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get(name: str, weights: str | Path | None = None, **kwargs) -> Encoder:
    """Build encoder `name`, loading weights from the local path `weights` where the family needs one."""
    try:
        info = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown encoder {name!r}; available: {', '.join(sorted(_REGISTRY))}") from None
    return info.factory(weights=Path(weights) if weights is not None else None, **kwargs)
