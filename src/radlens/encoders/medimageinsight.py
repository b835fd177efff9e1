"""medimageinsight: Microsoft's MedImageInsight (UniCL: DaViT image encoder + CLIP-style text transformer).

The released folder (`2024.09.27/` of the MedImageInsight package, as redistributed e.g. in the Hugging Face
repository lion-ai/MedImageInsights) is:

    config.yaml                                   IMAGE_ENCODER (davit_v1 SPEC, IMAGE_SIZE 480, mean/std),
                                                  LANG_ENCODER (transformer, CONTEXT_LENGTH 77, WIDTH, HEADS,
                                                  LAYERS, TOKENIZER clip), UNICL_MODEL.DIM_PROJECTION 1024,
                                                  AUG.INTERPOLATION, TEST.CENTER_CROP
    vision_model/medimageinsigt-v1.0.0.pt         the whole UniCL state dict (image_encoder.*, lang_encoder.*,
                                                  image_projection, lang_projection, logit_scale); despite the
                                                  .pt name upstream reads it with safetensors
    language_model/clip_tokenizer_4.16.2/         CLIP BPE tokenizer files (vocab.json, merges.txt, ...)

There is no installable upstream package (the reference code is a git folder needing mup, yacs, einops and
timm), so radlens rebuilds the architecture here from the published description and source layout:

- DaViT (Ding et al. 2022, "davit_v1"): per stage a conv patch embedding (stage 0: 7x7/4 conv then LayerNorm;
  later stages: LayerNorm then 3x3/2 conv), then `depth` dual blocks, each a spatial block (depth-wise 3x3 conv
  residual, windowed multi-head self-attention over 12x12 windows with zero padding, conv residual, MLP) and a
  channel block (the same with group channel attention scaled by N^-0.5). Features: mean over tokens, then
  LayerNorm → 2048-d. State-dict names are upstream's (`convs.*`, `blocks.*.*.spatial_block.window_attn.fn.qkv`,
  `norms`), including its remapping of older names (`conv_embeds`, `main_blocks`, `*.cpe.*`).
- Text: CLIP-style transformer (token + learned positional embedding, pre-LN residual blocks with
  nn.MultiheadAttention and QuickGELU MLP, TF-style LayerNorm eps 1e-12), key-padding mask from the attention
  mask when AUTOGRESSIVE is false (a causal mask otherwise); the feature is the end-of-text token's (argmax id),
  projected by `lang_projection`.

Embedding: UniCL `encode_image` — DaViT features @ image_projection, L2-normalised (1024-d), exactly what
MedImageInsight's own `encode` returns. Preprocessing: its evaluation transform from config.yaml — RGB, resize
to IMAGE_SIZE x IMAGE_SIZE with PIL bicubic (AUG.INTERPOLATION; or shortest edge to size/0.875 + centre crop
when TEST.CENTER_CROP is true), ImageNet mean/std.

Verified in tests: the image encoder against timm's DaViT (`davit_*_fl` family, the same architecture
implemented independently, mapped with timm's own Florence/MSFT key converter) on random weights; the
preprocessing against torchvision's transform built the way upstream builds it. Not verifiable here: numerical
parity with the upstream repository's own code and with the real released checkpoint (neither can be
installed or downloaded here); the text tower is built from the same torch modules upstream uses but is only
checked for self-consistency.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from radlens.encoders.base import Encoder, PreprocessSpec
from radlens.encoders.registry import register
from radlens.encoders.upstream import MissingWeightsError, files_digest, pil_preprocess, require_files

log = logging.getLogger(__name__)

NAME = "medimageinsight"
CONFIG_FILE = "config.yaml"
VISION_DIR = "vision_model"
DEFAULT_WEIGHTS = "medimageinsigt-v1.0.0.pt"  # sic: upstream's file name
TOKENIZER_DIR = "language_model/clip_tokenizer_4.16.2"
WHERE = ("Microsoft's MedImageInsight release (Azure AI Foundry model catalog) or its redistribution in the Hugging "
         "Face repository lion-ai/MedImageInsights: use its dated folder, e.g. 2024.09.27/ (git lfs); MIT license")
PROMPT_TEMPLATE = "{}"  # upstream's zero-shot examples pass the bare label text ("normal", "Pneumonia")


# ---------------------------------------------------------------- DaViT (image encoder)

class _Residual(nn.Module):
    """x + fn(norm(x)) on tokens; upstream calls it PreNorm. `norm` None: x + fn(x)."""

    def __init__(self, norm: nn.Module | None, fn: nn.Module) -> None:
        super().__init__()
        self.norm = norm
        self.fn = fn

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        y, size = self.fn(self.norm(x) if self.norm is not None else x, size)
        return x + y, size


class _DepthWiseConv(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, kernel_size=3, padding=1, stride=1, groups=dim, bias=True)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        B, N, C = x.shape
        x = self.dw(x.transpose(1, 2).reshape(B, C, *size))
        size = (x.shape[-2], x.shape[-1])
        return x.flatten(2).transpose(1, 2), size


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(OrderedDict([("fc1", nn.Linear(dim, hidden)), ("act", nn.GELU()),
                                              ("fc2", nn.Linear(hidden, dim))]))

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        return self.net(x), size


class _WindowAttention(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.heads, self.window = heads, window
        self.scale = float(dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        H, W = size
        B, L, C = x.shape
        w = self.window
        x = x.view(B, H, W, C)
        pad_r, pad_b = (w - W % w) % w, (w - H % w) % w
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        Hp, Wp = H + pad_b, W + pad_r
        x = x.view(B, Hp // w, w, Wp // w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, C)
        qkv = self.qkv(x).reshape(x.shape[0], w * w, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        x = ((q @ k.transpose(-2, -1)).softmax(dim=-1) @ v).transpose(1, 2).reshape(-1, w * w, C)
        x = self.proj(x)
        x = x.view(B, Hp // w, Wp // w, w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, C)
        return x[:, :H, :W, :].reshape(B, H * W, C), size


class _ChannelAttention(nn.Module):
    """Group channel attention; scale N^-0.5 (dynamic) or C^-0.5."""

    def __init__(self, dim: int, groups: int, qkv_bias: bool = True, dynamic_scale: bool = True) -> None:
        super().__init__()
        self.dim, self.groups, self.dynamic_scale = dim, groups, dynamic_scale
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.groups, C // self.groups).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, groups, N, group_dim)
        q = q * (N ** -0.5 if self.dynamic_scale else self.dim ** -0.5)
        attn = (q.transpose(-1, -2) @ k).softmax(dim=-1)  # (B, groups, group_dim, group_dim)
        x = (attn @ v.transpose(-1, -2)).transpose(-1, -2)
        return self.proj(x.transpose(1, 2).reshape(B, N, C)), size


class _SpatialBlock(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, mlp_ratio: float, conv_at_attn: bool,
                 conv_at_ffn: bool) -> None:
        super().__init__()
        self.conv1 = _Residual(None, _DepthWiseConv(dim)) if conv_at_attn else None
        self.window_attn = _Residual(nn.LayerNorm(dim), _WindowAttention(dim, heads, window))
        self.conv2 = _Residual(None, _DepthWiseConv(dim)) if conv_at_ffn else None
        self.ffn = _Residual(nn.LayerNorm(dim), _Mlp(dim, int(dim * mlp_ratio)))

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        if self.conv1 is not None:
            x, size = self.conv1(x, size)
        x, size = self.window_attn(x, size)
        if self.conv2 is not None:
            x, size = self.conv2(x, size)
        return self.ffn(x, size)


class _ChannelBlock(nn.Module):
    def __init__(self, dim: int, groups: int, mlp_ratio: float, conv_at_attn: bool, conv_at_ffn: bool,
                 dynamic_scale: bool) -> None:
        super().__init__()
        self.conv1 = _Residual(None, _DepthWiseConv(dim)) if conv_at_attn else None
        self.channel_attn = _Residual(nn.LayerNorm(dim), _ChannelAttention(dim, groups, dynamic_scale=dynamic_scale))
        self.conv2 = _Residual(None, _DepthWiseConv(dim)) if conv_at_ffn else None
        self.ffn = _Residual(nn.LayerNorm(dim), _Mlp(dim, int(dim * mlp_ratio)))

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        if self.conv1 is not None:
            x, size = self.conv1(x, size)
        x, size = self.channel_attn(x, size)
        if self.conv2 is not None:
            x, size = self.conv2(x, size)
        return self.ffn(x, size)


class _DualBlock(nn.Module):
    def __init__(self, spatial: _SpatialBlock, channel: _ChannelBlock) -> None:
        super().__init__()
        self.spatial_block = spatial
        self.channel_block = channel

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        return self.channel_block(*self.spatial_block(x, size))


class _ConvEmbed(nn.Module):
    """Patch embedding. pre_norm: LayerNorm on the incoming tokens (in_chans), else on the outgoing ones."""

    def __init__(self, patch: int, stride: int, padding: int, in_chans: int, dim: int, pre_norm: bool) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=stride, padding=padding)
        self.norm = nn.LayerNorm(in_chans if pre_norm else dim)
        self.pre_norm = pre_norm

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        if x.ndim == 3:  # tokens from the previous stage
            if self.pre_norm:
                x = self.norm(x)
            x = x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *size)
        x = self.proj(x)
        size = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        if not self.pre_norm:
            x = self.norm(x)
        return x, size


class DaViT(nn.Module):
    """DaViT image encoder with upstream's module names; `forward_features` → (B, embed_dims[-1])."""

    def __init__(self, spec: dict[str, Any], in_chans: int = 3) -> None:
        super().__init__()
        dims, heads, groups = list(spec["DIM_EMBED"]), list(spec["NUM_HEADS"]), list(spec["NUM_GROUPS"])
        depths = list(spec["DEPTHS"])
        if not len(dims) == len(heads) == len(groups) == len(depths):
            raise ValueError(f"{NAME}: IMAGE_ENCODER.SPEC lists of unequal length: {spec}")
        if not spec.get("STANDPARAM", True):
            raise ValueError(f"{NAME}: muP parameterisation (STANDPARAM false) is not supported")
        window, mlp = int(spec.get("WINDOW_SIZE", 7)), float(spec.get("MLP_RATIO", 4.0))
        caa, caf = bool(spec.get("CONV_AT_ATTN", True)), bool(spec.get("CONV_AT_FFN", True))
        dyn = bool(spec.get("DYNAMIC_SCALE", True))
        self.embed_dims = dims
        self.convs = nn.ModuleList([
            _ConvEmbed(spec["PATCH_SIZE"][i], spec["PATCH_STRIDE"][i], spec["PATCH_PADDING"][i],
                       in_chans if i == 0 else dims[i - 1], dims[i], bool(spec["PATCH_PRENORM"][i]))
            for i in range(len(dims))])
        self.blocks = nn.ModuleList([
            nn.ModuleList([_DualBlock(_SpatialBlock(dims[i], heads[i], window, mlp, caa, caf),
                                      _ChannelBlock(dims[i], groups[i], mlp, caa, caf, dyn)) for _ in range(depths[i])])
            for i in range(len(dims))])
        self.norms = nn.LayerNorm(dims[-1])

    @property
    def dim_out(self) -> int:
        return self.embed_dims[-1]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[2], x.shape[3])
        for conv, stage in zip(self.convs, self.blocks):
            x, size = conv(x, size)
            for block in stage:
                x, size = block(x, size)
        return self.norms(x.mean(dim=1))


# ---------------------------------------------------------------- text transformer

class _TFLayerNorm(nn.Module):
    """LayerNorm with epsilon inside the square root, computed in float32 (upstream's text LayerNorm)."""

    def __init__(self, dim: int, eps: float = 1e-12) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        u = x.mean(-1, keepdim=True)
        s = (x - u).pow(2).mean(-1, keepdim=True)
        return self.weight * ((x - u) / torch.sqrt(s + self.eps)).to(dtype) + self.bias


class _QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class _TextBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = _TFLayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, width * 4)), ("gelu", _QuickGELU()),
                                              ("c_proj", nn.Linear(width * 4, width))]))
        self.ln_2 = _TFLayerNorm(width)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None):
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, key_padding_mask=key_padding_mask, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class TextTransformer(nn.Module):
    def __init__(self, vocab_size: int, context_length: int, width: int, layers: int, heads: int,
                 autoregressive: bool) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.zeros(context_length, width))
        self.resblocks = nn.ModuleList([_TextBlock(width, heads) for _ in range(layers)])
        self.ln_final = _TFLayerNorm(width)
        self.autoregressive = autoregressive
        self.context_length = context_length

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        L = input_ids.shape[1]
        causal = torch.full((L, L), float("-inf")).triu_(1) if self.autoregressive else None
        kpm = None if self.autoregressive else (attention_mask == 0)
        x = (self.token_embedding(input_ids) + self.positional_embedding[:L]).permute(1, 0, 2)  # LND
        for block in self.resblocks:
            x = block(x, causal, kpm)
        return self.ln_final(x.permute(1, 0, 2))


class UniCL(nn.Module):
    def __init__(self, image_encoder: DaViT, dim_projection: int, text: TextTransformer | None) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.image_projection = nn.Parameter(torch.zeros(image_encoder.dim_out, dim_projection))
        self.lang_encoder = text
        self.lang_projection = nn.Parameter(torch.zeros(text.positional_embedding.shape[1], dim_projection)) \
            if text is not None else None
        self.logit_scale = nn.Parameter(torch.ones([]))

    def encode_image(self, image: torch.Tensor, norm: bool = True) -> torch.Tensor:
        x = self.image_encoder.forward_features(image) @ self.image_projection
        return F.normalize(x, dim=-1) if norm else x

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, norm: bool = True) -> torch.Tensor:
        x = self.lang_encoder(input_ids, attention_mask)
        x = x[torch.arange(x.shape[0]), input_ids.argmax(dim=-1)] @ self.lang_projection  # end-of-text token
        return F.normalize(x, dim=-1) if norm else x


# ---------------------------------------------------------------- folder, weights, preprocessing

_OLD_TOP = (("visual.", "image_encoder."), ("text.", "lang_encoder."))
_OLD_NAMES = {"vision_projection": "image_projection", "text_projection": "lang_projection"}
# upstream's remapping of older DaViT checkpoints (substring replacements, applied in this order)
_DAVIT_REMAP = (("conv_embeds", "convs"), ("main_blocks", "blocks"), ("0.cpe.0.proj", "spatial_block.conv1.fn.dw"),
                ("0.attn", "spatial_block.window_attn.fn"), ("0.cpe.1.proj", "spatial_block.conv2.fn.dw"),
                ("0.mlp", "spatial_block.ffn.fn.net"), ("1.cpe.0.proj", "channel_block.conv1.fn.dw"),
                ("1.attn", "channel_block.channel_attn.fn"), ("1.cpe.1.proj", "channel_block.conv2.fn.dw"),
                ("1.mlp", "channel_block.ffn.fn.net"), ("0.norm1", "spatial_block.window_attn.norm"),
                ("0.norm2", "spatial_block.ffn.norm"), ("1.norm1", "channel_block.channel_attn.norm"),
                ("1.norm2", "channel_block.ffn.norm"))


def canonical_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Upstream's key conversions: old top-level names, then old DaViT block names."""
    out = {}
    for k, v in state.items():
        k = k[7:] if k.startswith("module.") else k
        for old, new in _OLD_TOP:
            if k.startswith(old):
                k = new + k[len(old):]
        k = _OLD_NAMES.get(k, k)
        if k.startswith("image_encoder."):
            for old, new in _DAVIT_REMAP:
                k = k.replace(old, new)
        out[k] = v
    return out


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """safetensors (what upstream reads, whatever the extension) or a torch file loaded with weights_only=True."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) == 9 and head[8:9] == b"{":  # safetensors: 8-byte header length, then JSON
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{NAME}: {path} is not a state dict of tensors")
    return state


def read_config(folder: Path) -> dict[str, Any]:
    try:
        import yaml
    except ImportError as e:
        raise ImportError(f"{NAME}: reading {CONFIG_FILE} needs PyYAML (pip install pyyaml, or radlens[hf])") from e
    path = folder / CONFIG_FILE
    cfg = yaml.safe_load(path.read_text())
    for section, keys in (("IMAGE_ENCODER", ("IMAGE_SIZE", "SPEC")), ("UNICL_MODEL", ("DIM_PROJECTION",))):
        missing = [k for k in keys if k not in (cfg.get(section) or {})]
        if missing:
            raise ValueError(f"{NAME}: {path} lacks {section}.{missing[0]} (expected a MedImageInsight/UniCL config)")
    name = cfg["IMAGE_ENCODER"].get("NAME", "davit_v1")
    if name != "davit_v1":
        raise ValueError(f"{NAME}: {path} IMAGE_ENCODER.NAME is {name!r}; radlens implements davit_v1 only")
    return cfg


def spec_from_config(cfg: dict[str, Any]) -> PreprocessSpec:
    """Upstream's evaluation transform (build_transforms(cfg, is_train=False)) as a radlens pil-uint8 spec."""
    ie = cfg["IMAGE_ENCODER"]
    size = ie["IMAGE_SIZE"]
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h != w:
        raise ValueError(f"{NAME}: non-square IMAGE_SIZE {size} is not supported")
    interp = str((cfg.get("AUG") or {}).get("INTERPOLATION", "bicubic"))
    if interp not in ("bicubic", "bilinear", "nearest"):
        raise ValueError(f"{NAME}: AUG.INTERPOLATION {interp!r} is not one upstream supports")
    if (cfg.get("TEST") or {}).get("CENTER_CROP", False):
        extra = {"resize_to": "shortest_edge", "resize_size": int(h / 0.875), "crop": h}
        rule = "shortest-edge+center-crop"
    else:
        extra = {"resize_to": "square", "resize_size": h}
        rule = "squash"
    mean = tuple(float(m) for m in ie.get("IMAGE_MEAN", (0.485, 0.456, 0.406)))
    std = tuple(float(s) for s in ie.get("IMAGE_STD", (0.229, 0.224, 0.225)))
    return PreprocessSpec(size=h, resize=rule, interpolation=f"pil-{interp}", mean=mean, std=std, channels=3,
                          extra={"pipeline": "pil-uint8", "family": NAME, "mode": "RGB", **extra, "resample": interp,
                                 "rescale": 1 / 255, "source": "MedImageInsight build_transforms(is_train=False)"})


def weights_path(folder: Path, name: str | None = None) -> Path:
    vdir = folder / VISION_DIR
    if name:
        p = vdir / name
        if not p.is_file():
            raise MissingWeightsError(f"{NAME}: {p} does not exist. Get it from {WHERE}")
        return p
    if (vdir / DEFAULT_WEIGHTS).is_file():
        return vdir / DEFAULT_WEIGHTS
    found = sorted(p for p in vdir.glob("*") if p.suffix in (".pt", ".pth", ".safetensors", ".bin")) if vdir.is_dir() else []
    if len(found) == 1:
        return found[0]
    if not found:
        raise MissingWeightsError(f"{NAME}: {folder} lacks {VISION_DIR}/{DEFAULT_WEIGHTS} (the UniCL checkpoint). "
                                  f"Get it from {WHERE}")
    raise ValueError(f"{NAME}: several checkpoints in {vdir} ({[p.name for p in found]}); pass vision_model=NAME")


def build_model(cfg: dict[str, Any], state: dict[str, torch.Tensor]) -> UniCL:
    """UniCL from config.yaml; vocabulary size from the checkpoint (upstream takes it from the tokenizer)."""
    le = cfg.get("LANG_ENCODER") or {}
    text = None
    if "lang_encoder.token_embedding.weight" in state:
        if le.get("NAME", "transformer") != "transformer":
            raise ValueError(f"{NAME}: LANG_ENCODER.NAME {le.get('NAME')!r} is not supported (transformer only)")
        text = TextTransformer(int(state["lang_encoder.token_embedding.weight"].shape[0]), int(le["CONTEXT_LENGTH"]),
                               int(le["WIDTH"]), int(le["LAYERS"]), int(le["HEADS"]),
                               bool(le.get("AUTOGRESSIVE", True)))
    return UniCL(DaViT(cfg["IMAGE_ENCODER"]["SPEC"]), int(cfg["UNICL_MODEL"]["DIM_PROJECTION"]), text)


def load_weights(model: UniCL, state: dict[str, torch.Tensor], source: Path) -> list[str]:
    """Strict on every tensor the model has (a silent partial load is how wrong embeddings happen);
    checkpoint tensors the model does not use (e.g. a classification head) are returned and logged."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ValueError(f"{NAME}: {source} lacks {len(missing)} tensors the config's architecture needs, e.g. "
                         f"{missing[:3]}; config.yaml and the checkpoint do not match")
    bad = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items() if state[k].shape != v.shape]
    if bad:
        k, got, want = bad[0]
        raise ValueError(f"{NAME}: {source}: tensor {k} has shape {got}, config.yaml implies {want} "
                         f"({len(bad)} mismatches)")
    model.load_state_dict({k: state[k] for k in own}, strict=True)
    unused = sorted(k for k in state if k not in own)
    if unused:
        log.info("%s: %d checkpoint tensors unused (e.g. %s)", NAME, len(unused), unused[:3])
    return unused


class MedImageInsightEncoder(Encoder):
    name = NAME

    def __init__(self, folder: Path, vision_model: str | None = None, threads: int | None = None) -> None:
        self.folder = folder
        self.config = read_config(folder)
        ckpt = weights_path(folder, vision_model)
        state = canonical_keys(load_state(ckpt))
        self.model = build_model(self.config, state)
        self.unused_tensors = load_weights(self.model, state, ckpt)
        del state
        self.model.eval()
        self.spec = spec_from_config(self.config)
        self.embedding_dim = int(self.config["UNICL_MODEL"]["DIM_PROJECTION"])
        self.encoder_id = f"{NAME}@{files_digest([ckpt, folder / CONFIG_FILE])}"
        self.threads = threads
        self.has_text = self.model.lang_encoder is not None
        self.zero_shot = {"logit_scale": float(self.model.logit_scale.detach().exp()), "logit_bias": None,
                          "activation": "softmax", "prompt_template": PROMPT_TEMPLATE}
        self._tokenizer = None

    def preprocess(self, pixels: np.ndarray) -> np.ndarray:
        return pil_preprocess(pixels, self.spec)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self.threads:
            torch.set_num_threads(self.threads)
        return self.model.encode_image(batch, norm=True)

    def tokenizer(self):
        """Upstream's tokenizer: transformers CLIPTokenizer from the folder's files, cls token = eos."""
        if self._tokenizer is None:
            tdir = self.folder / TOKENIZER_DIR
            require_files(NAME, tdir, ["vocab.json", "merges.txt"], WHERE)
            try:
                from transformers import CLIPTokenizer
            except ImportError as e:
                raise ImportError(f"{NAME}: text embeddings need transformers (pip install 'radlens[hf]')") from e
            tok = CLIPTokenizer.from_pretrained(str(tdir), local_files_only=True)
            tok.add_special_tokens({"cls_token": tok.eos_token})
            self._tokenizer = tok
        return self._tokenizer

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """UniCL `encode_text` (normalised 1024-d, the space `embed` returns)."""
        if not self.has_text:
            raise ValueError(f"{NAME}: the checkpoint in {self.folder} has no language encoder tensors")
        length = int(self.config["LANG_ENCODER"]["CONTEXT_LENGTH"])
        tok = self.tokenizer()(list(texts), padding="max_length", max_length=length, truncation=True,
                               return_tensors="pt")
        with torch.inference_mode():
            return self.model.encode_text(tok["input_ids"], tok["attention_mask"]).float().numpy()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "embedding": "UniCL encode_image: DaViT mean-pooled tokens + LayerNorm, "
                                                   "@ image_projection, L2-normalised",
                "architecture": {"image": self.config["IMAGE_ENCODER"]["SPEC"],
                                 "text": {k: self.config.get("LANG_ENCODER", {}).get(k)
                                          for k in ("CONTEXT_LENGTH", "WIDTH", "HEADS", "LAYERS", "AUTOGRESSIVE")}},
                "zero_shot": self.zero_shot}


@register(NAME, description="MedImageInsight (UniCL: DaViT image encoder, 480 px) rebuilt by radlens from the released "
                            "folder; image embedding = normalised projected DaViT features; zero-shot capable",
          input_size=480, embedding_dim=1024, license="MIT (Microsoft); check the release's terms of use",
          weights=WHERE)
def create(weights: Path | None = None, threads: int | None = None, vision_model: str | None = None,
           allow_download: bool = False) -> MedImageInsightEncoder:
    if weights is None and allow_download:  # no upstream library to download through; say so rather than guess
        raise MissingWeightsError(f"{NAME}: --allow-download is not supported (the release is not a library-loadable "
                                  f"hub model); pass --weights with the release folder. Get it from {WHERE}")
    folder = require_files(NAME, weights, [CONFIG_FILE], WHERE)
    if not (folder / VISION_DIR).is_dir():
        raise MissingWeightsError(f"{NAME}: {folder} lacks {VISION_DIR}/{DEFAULT_WEIGHTS} (expected {CONFIG_FILE}, "
                                  f"{VISION_DIR}/{DEFAULT_WEIGHTS}, {TOKENIZER_DIR}/). Get them from {WHERE}")
    return MedImageInsightEncoder(folder, vision_model=vision_model, threads=threads)
