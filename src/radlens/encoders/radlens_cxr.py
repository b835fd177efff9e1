"""radlens-cxr: the compact chest X-ray CNN that radlens trains itself and ships in the package.

No pretrained medical weights can be downloaded where radlens runs, so the default encoder is
trained by `radlens train-encoder` on the NIH training split only (see the model card beside the
weights). The architecture is a plain residual CNN: wide enough that batched CPU inference runs
near the matmul roofline, small enough (~4.7M parameters) to train in under an hour on 2 cores.
The embedding is global average- and max-pooled final features, concatenated.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from radlens.encoders.base import Encoder, PreprocessSpec
from radlens.encoders.registry import register

NAME = "radlens-cxr"
PACKAGED_WEIGHTS = Path(__file__).parent / "weights" / "radlens-cxr-v1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class _Stage(nn.Module):
    """Strided conv to downsample and widen, then one residual 3x3 conv."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.down = _conv_bn(cin, cout, 3, 2)
        self.conv = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        return self.act(x + self.bn(self.conv(x)))


class RadlensCXRNet(nn.Module):
    def __init__(self, widths: tuple[int, ...] = (64, 128, 256, 512), stem: int = 32, n_labels: int = 15,
                 dropout: float = 0.3) -> None:
        super().__init__()
        self.stem = _conv_bn(1, stem, 5, 2)
        stages, c = [], stem
        for w in widths:
            stages.append(_Stage(c, w))
            c = w
        self.stages = nn.Sequential(*stages)
        self.embedding_dim = 2 * c
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.embedding_dim, n_labels))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        f = self.stages(self.stem(x))
        return torch.cat([f.mean((2, 3)), f.amax((2, 3))], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_model(config: dict[str, Any]) -> RadlensCXRNet:
    return RadlensCXRNet(tuple(config["widths"]), config["stem"], len(config["labels"]), config.get("dropout", 0.3))


def spec_from_config(config: dict[str, Any]) -> PreprocessSpec:
    p = config["preprocess"]
    return PreprocessSpec(size=p["size"], resize=p["resize"], interpolation=p["interpolation"],
                          mean=tuple(p["mean"]), std=tuple(p["std"]), channels=p["channels"])


class RadlensCXREncoder(Encoder):
    name = NAME

    def __init__(self, folder: Path, threads: int | None = None) -> None:
        from radlens.safe_files import read_safetensors

        cfg_path, w_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        missing = [p.name for p in (cfg_path, w_path) if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{NAME}: {folder} lacks {', '.join(missing)}; expected a folder written by "
                f"`radlens train-encoder` (config.json + model.safetensors)")
        self.config = json.loads(cfg_path.read_text())
        self.spec = spec_from_config(self.config)
        self.model = build_model(self.config)
        state = read_safetensors(w_path)
        self.model.load_state_dict(state, strict=True)
        self.model.eval()
        # channels_last lets oneDNN pick its fastest convolution kernels on CPU (~1.2x here).
        self.model = self.model.to(memory_format=torch.channels_last)
        self.embedding_dim = self.model.embedding_dim
        digest = hashlib.sha256(w_path.read_bytes()).hexdigest()[:12]
        self.encoder_id = f"{NAME}-{self.config.get('version', 'v1')}@{digest}"
        self.threads = threads
        self.folder = folder

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self.threads:
            torch.set_num_threads(self.threads)
        return self.model.features(batch.contiguous(memory_format=torch.channels_last))


@register(NAME, description="radlens's own compact residual CNN trained on the NIH ChestX-ray14 training split",
          input_size=192, embedding_dim=1024, license="weights: CC0 data, trained by radlens (Apache-2.0)",
          weights="shipped inside the radlens package (no download)")
def create(weights: Path | None = None, threads: int | None = None) -> RadlensCXREncoder:
    return RadlensCXREncoder(weights or PACKAGED_WEIGHTS, threads=threads)
