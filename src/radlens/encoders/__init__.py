"""Encoders: `radlens.encoders.get(name, weights=...)` is the only entry point."""

from radlens.encoders.base import Encoder, PreprocessSpec, preprocess_pixels
from radlens.encoders.registry import EncoderInfo, available, get, register

# Each family registers itself on import; adding a family = one module + one line here.
from radlens.encoders import radlens_cxr as _radlens_cxr  # noqa: E402,F401
from radlens.encoders import xrv_densenet as _xrv_densenet  # noqa: E402,F401
from radlens.encoders import chexnet as _chexnet  # noqa: E402,F401
from radlens.encoders import timm_generic as _timm_generic  # noqa: E402,F401
from radlens.encoders import openclip_biomedclip as _biomedclip  # noqa: E402,F401
from radlens.encoders import medimageinsight as _medimageinsight  # noqa: E402,F401
from radlens.encoders import cxr_foundation as _cxr_foundation  # noqa: E402,F401
from radlens.encoders import hf_rad_dino as _hf_rad_dino  # noqa: E402,F401
from radlens.encoders import hf_medsiglip as _hf_medsiglip  # noqa: E402,F401
from radlens.encoders import hf_generic as _hf_generic  # noqa: E402,F401
from radlens.encoders import hf_med_flamingo as _hf_med_flamingo  # noqa: E402,F401

DEFAULT_ENCODER = "radlens-cxr"

__all__ = ["Encoder", "EncoderInfo", "PreprocessSpec", "preprocess_pixels", "available", "get", "register",
           "DEFAULT_ENCODER"]
