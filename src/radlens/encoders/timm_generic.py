"""timm:<arch>: any timm architecture, from a local weights file (needs `pip install 'radlens[zoo]'`).

Weights (--weights): a file (.safetensors; or .pth/.pt/.bin/.pth.tar read with torch.load(weights_only=True),
timm training checkpoints included: "state_dict" is used, not the EMA copy), or a folder laid out like a
timm model on the Hugging Face hub (model.safetensors or pytorch_model.bin, plus config.json whose
"pretrained_cfg" and "model_args" then apply). Nothing is downloaded unless `allow_download=True`
(`radlens embed --allow-download`), which lets timm fetch the default pretrained weights itself.

Loading goes through timm's own pretrained-weights path (`create_model(..., pretrained=True)` with the state
dict handed over in `pretrained_cfg_overlay`), so the architecture's checkpoint filter (original-format
conversions, position-embedding resizing) applies as it would for timm's hub weights; the head size is read
from the checkpoint, so the load is strict.

Preprocessing: timm's eval transform for the model's pretrained_cfg, from `timm.data.resolve_data_config`
(input size, interpolation, mean/std, crop_pct, crop_mode), reproduced on the 8-bit image with Pillow
(radlens.encoders.upstream.pil_preprocess): "center" = Resize(floor(size / crop_pct)) on the shorter side +
CenterCrop(size); "squash" = Resize to a floor(size / crop_pct) square + CenterCrop(size). The resolved data
config is recorded in the spec. Grey radiographs are replicated to RGB, as `Image.convert("RGB")` does.

Embedding: `model.forward_head(model.forward_features(x), pre_logits=True)` — the model's own pooling
(global average pool for CNNs, the class token or its pooling for ViTs), `head_hidden_size` (or
`num_features`) wide.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from radlens.encoders.base import Encoder, PreprocessSpec
from radlens.encoders.registry import register
from radlens.encoders.torch_files import load_weights, strip_prefixes
from radlens.encoders.upstream import files_digest, pil_preprocess, require_files

log = logging.getLogger(__name__)

PREFIX = "timm:"
FOLDER_FILES = ("model.safetensors", "pytorch_model.bin")
_INTERP = {"bicubic", "bilinear", "nearest", "lanczos", "box", "hamming"}


def _where(arch: str) -> str:
    return (f"the model's page on the Hugging Face hub, https://huggingface.co/timm/{arch} (model.safetensors + "
            "config.json), or the release page its timm pretrained_cfg names (`url`); radlens never downloads "
            "unless --allow-download is given")


def _import_timm():
    try:
        import timm
        import timm.data
    except ImportError as e:  # torchvision-based: not in the light install
        raise ImportError("timm:<arch> encoders need timm (and torchvision): pip install 'radlens[zoo]' "
                          "(see README, 'Published encoders')") from e
    return timm


def spec_from_data_config(cfg: dict[str, Any]) -> PreprocessSpec:
    """timm's resolved eval data config → a radlens pil-uint8 spec (same Resize / CenterCrop / Normalize)."""
    chans, h, w = (int(v) for v in cfg["input_size"])
    if h != w:
        raise ValueError(f"timm model wants a {h}x{w} input; radlens supports square inputs only")
    interp = cfg.get("interpolation", "bilinear")
    if interp not in _INTERP:
        raise ValueError(f"timm interpolation {interp!r} is not supported (one of {sorted(_INTERP)})")
    crop_pct = float(cfg.get("crop_pct") or 0.875)
    crop_mode = cfg.get("crop_mode") or "center"
    scale = math.floor(h / crop_pct)
    if crop_mode == "center":
        resize_to = "shortest_edge"
    elif crop_mode == "squash":
        resize_to = "square"
    else:
        raise ValueError(f"timm crop_mode {crop_mode!r} is not supported by radlens (center, squash)")
    data_config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
    return PreprocessSpec(
        size=h, resize=f"timm-{crop_mode}-crop_pct-{crop_pct}", interpolation=f"pil-{interp}",
        mean=tuple(float(m) for m in cfg["mean"]), std=tuple(float(s) for s in cfg["std"]), channels=chans,
        extra={"pipeline": "pil-uint8", "mode": "RGB" if chans == 3 else "L", "resize_to": resize_to,
               "resize_size": scale, "crop": h, "resample": interp, "rescale": 1 / 255,
               "timm_data_config": data_config,
               "follows": "timm.data.create_transform(**resolve_data_config({}, model=model)) eval transform",
               "embedding": "forward_head(forward_features(x), pre_logits=True)"})


def _weights_in(folder: Path, arch: str) -> tuple[Path, dict[str, Any]]:
    require_files(PREFIX + arch, folder, [], _where(arch), any_of=[FOLDER_FILES])
    wfile = next(folder / f for f in FOLDER_FILES if (folder / f).is_file())
    cfg_path = folder / "config.json"
    config = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    return wfile, config


def _classifier_names(timm, arch: str, config: dict[str, Any]) -> tuple[str, ...]:
    names = (config.get("pretrained_cfg") or {}).get("classifier")
    if not names:
        try:
            names = timm.models.get_pretrained_cfg_value(arch, "classifier")
        except Exception:
            names = None
    names = names or ("head", "fc", "classifier", "head.fc")
    return (names,) if isinstance(names, str) else tuple(names)


def tensors_digest(state: dict[str, torch.Tensor], length: int = 12) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:length]


class TimmEncoder(Encoder):
    def __init__(self, arch: str, weights: Path | None, threads: int | None = None,
                 allow_download: bool = False, **model_kwargs: Any) -> None:
        self.name = PREFIX + arch
        if weights is None and not allow_download:
            require_files(self.name, None, ["a weights file (model.safetensors, pytorch_model.bin, *.pth)"],
                          _where(arch))
        config: dict[str, Any] = {}
        wfile: Path | None = None
        if weights is not None:
            weights = Path(weights)
            if weights.is_dir():
                wfile, config = _weights_in(weights, arch)
            elif weights.is_file():
                wfile = weights
            else:
                require_files(self.name, weights, ["model.safetensors or a weights file"], _where(arch))
        timm = _import_timm()
        cfg_arch = config.get("architecture")
        if cfg_arch and cfg_arch.split(".")[0] != arch.split(".")[0]:
            raise ValueError(f"{self.name}: {weights}/config.json is for architecture {cfg_arch!r}")
        kwargs = {**(config.get("model_args") or {}), **model_kwargs}
        overlay: dict[str, Any] = dict(config.get("pretrained_cfg") or {})
        if wfile is not None:
            state = strip_prefixes(load_weights(wfile), ("module.", "_orig_mod."))
            head = next((state[f"{c}.weight"] for c in _classifier_names(timm, arch, config)
                         if f"{c}.weight" in state), None)
            n = int(head.shape[0]) if head is not None else 0
            # hand timm the tensors: its own load path (checkpoint filter, strict load), no file or hub lookup
            overlay.update(state_dict=state, num_classes=n, file=None, url=None, hf_hub_id=None, source="")
            kwargs.setdefault("num_classes", n)
            self.encoder_id = f"{self.name}@{files_digest([wfile])}"
        else:
            log.info("%s: letting timm download its pretrained weights (allow_download=True)", self.name)
        self.model = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=overlay or None, **kwargs)
        self.model.pretrained_cfg.pop("state_dict", None)  # don't keep a second reference to the tensors
        if wfile is None:
            self.encoder_id = f"{self.name}@{tensors_digest(self.model.state_dict())}"
        self.model.eval()
        self.data_config = timm.data.resolve_data_config({}, model=self.model)
        self.spec = spec_from_data_config(self.data_config)
        self.embedding_dim = int(getattr(self.model, "head_hidden_size", None) or self.model.num_features)
        self.weights_file = wfile
        self.threads = threads

    def preprocess(self, pixels: np.ndarray) -> np.ndarray:
        return pil_preprocess(np.asarray(pixels), self.spec)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self.threads:
            torch.set_num_threads(self.threads)
        return self.model.forward_head(self.model.forward_features(batch), pre_logits=True)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(weights_file=str(self.weights_file) if self.weights_file else None,
                 embedding="forward_head(forward_features(x), pre_logits=True)")
        return d


@register(PREFIX, description="any timm architecture from a local weights file; timm's pretrained_cfg preprocessing; "
                              "embedding = forward_head(forward_features(x), pre_logits=True) (needs radlens[zoo])",
          input_size=0, embedding_dim=0, license="per model: see the weights' model card (timm code: Apache-2.0)",
          weights="a local .safetensors/.pth/.bin file or a hub-layout folder (model.safetensors + config.json), "
                  "e.g. from https://huggingface.co/timm/<arch>")
def create(arg: str, weights: Path | None = None, threads: int | None = None, allow_download: bool = False,
           **model_kwargs: Any) -> TimmEncoder:
    return TimmEncoder(arg, weights, threads=threads, allow_download=allow_download, **model_kwargs)
