"""Encoders: `radlens.encoders.get(name, weights=...)` is the only entry point."""

from radlens.encoders.base import Encoder, PreprocessSpec, preprocess_pixels
from radlens.encoders.registry import EncoderInfo, available, get, register

# Each family registers itself on import; adding a family = one module + one line here.
from radlens.encoders import radlens_cxr as _radlens_cxr  # noqa: E402,F401

DEFAULT_ENCODER = "radlens-cxr"

__all__ = ["Encoder", "EncoderInfo", "PreprocessSpec", "preprocess_pixels", "available", "get", "register",
           "DEFAULT_ENCODER"]
