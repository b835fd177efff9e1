"""chexnet: DenseNet121 14-class CheXNet checkpoints (Rajpurkar et al. 2017), from a local file.

Weights: the checkpoints of the common CheXNet reimplementations, as their authors saved them:
- arnoweng/CheXNet `model.pth.tar`: {"state_dict": ...} of `DataParallel(DenseNet121)`, keys
  `module.densenet121.features.norm0.weight`, dense layers named with torchvision < 0.4's `norm.1` /
  `conv.1` (remapped to `norm1` / `conv1`), classifier `classifier.0` (Linear 1024→14, then Sigmoid);
- jrzech/reproduce-chexnet `checkpoint`: {"model": <whole pickled torchvision DenseNet>, ...};
- any state dict of a torchvision densenet121 with a 14-class head (.pth/.pt/.bin/.safetensors).
Files are read without running code from them (radlens.encoders.torch_files); the architecture is
radlens's own DenseNet121 with torchvision's module names (radlens.encoders.densenet).

Preprocessing follows arnoweng/CheXNet's test transform, which reads the PNG with Pillow as RGB,
`transforms.Resize(256)` (shorter side to 256, PIL bilinear), `TenCrop(224)`, `ToTensor()`,
`Normalize(ImageNet mean/std)`, and averages the 10 crops' outputs. radlens embeds the centre crop only
(`CenterCrop(224)`, the middle one of the ten): one image, one embedding, at a tenth of the cost.

Embedding: the classifier's input — ReLU(features) → global average pool, 1,024-d.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from radlens.encoders.base import Encoder, PreprocessSpec
from radlens.encoders.densenet import EMBEDDING_DIM, DenseNet121Features, load_features
from radlens.encoders.registry import register
from radlens.encoders.torch_files import find_weights_file, load_weights, strip_prefixes
from radlens.encoders.upstream import MissingWeightsError, files_digest, pil_preprocess

NAME = "chexnet"
SIZE = 224
RESIZE = 256
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHECKPOINT_FILES = ("model.pth.tar", "checkpoint", "checkpoint.pth.tar")
WHERE = ("the CheXNet reimplementation https://github.com/arnoweng/CheXNet (model.pth.tar in the repository), "
         "or https://github.com/jrzech/reproduce-chexnet (pretrained/checkpoint); or your own DenseNet121 14-class "
         "checkpoint. There is no official release of the original Stanford weights")


def chexnet_spec() -> PreprocessSpec:
    return PreprocessSpec(
        size=SIZE, resize="shortest-edge-256-then-center-crop-224", interpolation="pil-bilinear",
        mean=IMAGENET_MEAN, std=IMAGENET_STD, channels=3,
        extra={"pipeline": "pil-uint8", "mode": "RGB", "resize_to": "shortest_edge", "resize_size": RESIZE,
               "crop": SIZE, "resample": "bilinear", "rescale": 1 / 255,
               "follows": "arnoweng/CheXNet test transform: Resize(256), TenCrop(224) -> centre crop only "
                          "(= CenterCrop(224)), ToTensor, Normalize(ImageNet)",
               "embedding": "relu(features(x)) -> global average pool, 1024-d"})


class CheXNetEncoder(Encoder):
    name = NAME

    def __init__(self, weights_file: Path, threads: int | None = None) -> None:
        state = strip_prefixes(load_weights(weights_file), ("module.", "_orig_mod.", "densenet121.", "model."))
        self.model = DenseNet121Features(in_channels=3)
        self.loaded: dict[str, Any] = load_features(self.model, state, str(weights_file))
        self.model.eval()
        self.embedding_dim = EMBEDDING_DIM
        self.spec = chexnet_spec()
        self.encoder_id = f"{NAME}@{files_digest([weights_file])}"
        self.weights_file = weights_file
        self.threads = threads

    def preprocess(self, pixels: np.ndarray) -> np.ndarray:
        return pil_preprocess(np.asarray(pixels), self.spec)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self.threads:
            torch.set_num_threads(self.threads)
        return self.model(batch)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(weights_file=str(self.weights_file), n_classes=self.loaded["n_classes"],
                 embedding="ReLU(features) -> global average pool (1024-d), the classifier's input")
        return d


@register(NAME, description="CheXNet DenseNet121 14-class checkpoints (ImageNet-normalised RGB, resize 256 + centre "
                            "crop 224); embedding = ReLU + global average pool of the last feature map, 1024-d",
          input_size=SIZE, embedding_dim=EMBEDDING_DIM,
          license="depends on the checkpoint (arnoweng/CheXNet: no license stated; reproduce-chexnet: MIT); "
                  "trained on NIH ChestX-ray14 (CC0)",
          weights=WHERE)
def create(weights: Path | None = None, threads: int | None = None, allow_download: bool = False) -> CheXNetEncoder:
    if weights is None and allow_download:
        raise MissingWeightsError(f"{NAME}: no upstream library distributes CheXNet weights, so there is nothing to "
                                  f"download; pass --weights PATH. Get them from {WHERE}")
    path = find_weights_file(NAME, weights, WHERE, preferred=CHECKPOINT_FILES)
    return CheXNetEncoder(path, threads=threads)
