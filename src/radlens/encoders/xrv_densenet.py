"""densenet121-xrv: torchxrayvision's DenseNet121 chest X-ray models, from a local weights file.

Weights: any torchxrayvision DenseNet121 release file (e.g. "densenet121-res224-all" =
nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt, a whole
pickled model as torchxrayvision ships it), or a state dict of one (`torch.save(model.state_dict())`,
.pt/.pth/.bin, or .safetensors). Files are read without running code from them (radlens.encoders.torch_files).

Architecture: radlens's own DenseNet121 (radlens.encoders.densenet) with torchxrayvision's module names
and one input channel; torchxrayvision is not needed at run time (it needs torchvision, which does not
install beside the local torch 2.13 wheel). Tests check that the outputs equal torchxrayvision's own.

Preprocessing, torchxrayvision's exactly (its README's recipe for an 8-bit image):
  uint8 image → xrv.datasets.normalize(img, 255) = (2·x/255 − 1)·1024, i.e. [-1024, 1024] → one channel
  → XRayCenterCrop (centre square on the long side: start = n//2 − side//2)
  → XRayResizer(224) = skimage.transform.resize(img, (1, 224, 224), mode='constant', preserve_range=True):
    Gaussian anti-aliasing (sigma = (factor − 1)/2, zero padding) then order-1 spline zoom (grid mode),
    clipped to the input's range. radlens reimplements this with scipy.ndimage, the calls skimage makes.
radlens decodes to [0, 1] floats; they are quantised back to the 8-bit image first (exact for 8-bit files).
An RGB file is read as one grey channel by radlens.io (torchxrayvision's README averages the channels).

Embedding: `model.features2(x)` — ReLU(features) → global average pool, 1,024-d (the classifier's input).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from radlens.encoders.base import Encoder, PreprocessSpec
from radlens.encoders.densenet import EMBEDDING_DIM, DenseNet121Features, load_features
from radlens.encoders.registry import register
from radlens.encoders.torch_files import find_weights_file, load_weights, strip_prefixes
from radlens.encoders.upstream import MissingWeightsError, files_digest, to_uint8

log = logging.getLogger(__name__)

NAME = "densenet121-xrv"
SIZE = 224
DEFAULT_VARIANT = "densenet121-res224-all"
RELEASE_FILE = "nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"
WHERE = ("the torchxrayvision release page https://github.com/mlmed/torchxrayvision/releases/tag/v1 "
         f"(weights '{DEFAULT_VARIANT}' = {RELEASE_FILE}; other DenseNet121 variants: nih-, pc-, chex-, kaggle-, "
         "mimic_nb-, mimic_ch-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt), or a copy torchxrayvision "
         "already downloaded to ~/.torchxrayvision/. With torchxrayvision installed, --allow-download lets it fetch them")


def xrv_spec(size: int = SIZE) -> PreprocessSpec:
    return PreprocessSpec(
        size=size, resize="xrv-center-crop-then-resize", interpolation="skimage-resize-order1-antialias",
        mean=(0.0,), std=(1.0,), channels=1,
        extra={"pipeline": "torchxrayvision", "quantize": "uint8",
               "normalize": "xrv.datasets.normalize(img, 255): (2*x/255 - 1)*1024, range [-1024, 1024]",
               "crop": "XRayCenterCrop: centre square, start = n//2 - side//2",
               "resizer": "XRayResizer(size, engine='skimage'): skimage.transform.resize(order=1, mode='constant', "
                          "cval=0, anti_aliasing=True (sigma=(factor-1)/2), preserve_range=True, clip=True)",
               "embedding": "features2: relu(features(x)) -> global average pool, 1024-d"})


def _skimage_resize_2d(img: np.ndarray, size: int) -> np.ndarray:
    """skimage.transform.resize(img[None], (1, size, size), mode='constant', preserve_range=True), float32 in/out.

    Same scipy.ndimage calls, arguments and clipping as scikit-image 0.26 (checked against it in tests).
    """
    from scipy import ndimage as ndi

    image = img[None].astype(np.float32, copy=False)
    input_shape, output_shape = image.shape, (1, size, size)
    factors = np.divide(input_shape, output_shape)
    if any(o < i for o, i in zip(output_shape, input_shape)):  # anti-aliasing only when downsampling
        sigma = np.maximum(0, (factors - 1) / 2)
        filtered = ndi.gaussian_filter(image, sigma, cval=0.0, mode="grid-constant")
    else:
        filtered = image
    out = ndi.zoom(filtered, [1 / f for f in factors], order=1, mode="grid-constant", cval=0.0, grid_mode=True)
    lo, hi = np.min(image), np.max(image)
    if not lo <= 0.0 <= hi and np.min(out) <= 0.0 <= np.max(out):  # skimage keeps cval in range when it was used
        lo, hi = min(lo, np.float32(0.0)), max(hi, np.float32(0.0))
    np.clip(out, lo, hi, out=out)
    return out[0]


def xrv_preprocess(pixels: np.ndarray, size: int = SIZE) -> np.ndarray:
    """radlens-decoded image (float [0, 1], 2-D) → torchxrayvision's (1, size, size) float32 input."""
    if pixels.ndim != 2:
        raise ValueError(f"{NAME}: expected a 2-D monochrome image, got shape {pixels.shape}")
    img = (2 * (to_uint8(pixels).astype(np.float32) / 255) - 1.0) * 1024  # xrv.utils.normalize(img, 255)
    y, x = img.shape
    side = min(y, x)
    sx, sy = x // 2 - side // 2, y // 2 - side // 2
    img = img[sy:sy + side, sx:sx + side]
    return _skimage_resize_2d(img, size)[None].astype(np.float32, copy=False)


class XRVDenseNetEncoder(Encoder):
    name = NAME

    def __init__(self, weights_file: Path, threads: int | None = None) -> None:
        state = strip_prefixes(load_weights(weights_file), ("module.", "_orig_mod."))
        self.model = DenseNet121Features(in_channels=1)
        self.loaded: dict[str, Any] = load_features(self.model, state, str(weights_file))
        self.model.eval()
        self.embedding_dim = EMBEDDING_DIM
        self.spec = xrv_spec()
        self.encoder_id = f"{NAME}@{files_digest([weights_file])}"
        self.weights_file = weights_file
        self.threads = threads

    def preprocess(self, pixels: np.ndarray) -> np.ndarray:
        return xrv_preprocess(np.asarray(pixels), self.spec.size)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self.threads:
            torch.set_num_threads(self.threads)
        return self.model(batch)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(weights_file=str(self.weights_file), n_classes=self.loaded["n_classes"],
                 embedding="features2: ReLU(features) -> global average pool (1024-d)")
        return d


@register(NAME, description="torchxrayvision DenseNet121 (1-channel, [-1024,1024], 224 px); embedding = features2: "
                            "ReLU + global average pool of the last feature map, 1024-d",
          input_size=SIZE, embedding_dim=EMBEDDING_DIM,
          license="torchxrayvision code and weights: Apache-2.0 (trained on public CXR sets with their own terms)",
          weights=WHERE)
def create(weights: Path | None = None, threads: int | None = None, allow_download: bool = False,
           variant: str = DEFAULT_VARIANT) -> XRVDenseNetEncoder:
    if weights is None and allow_download:
        try:
            import torchxrayvision as xrv
        except ImportError as e:
            raise MissingWeightsError(f"{NAME}: --allow-download needs torchxrayvision (pip install 'radlens[zoo]'); "
                                      f"or pass --weights. Get them from {WHERE}") from e
        if not variant.startswith("densenet121-"):
            raise ValueError(f"{NAME}: variant {variant!r} is not a DenseNet121 weights name")
        log.info("downloading %s through torchxrayvision (user passed allow_download)", variant)
        weights = Path(xrv.models.get_weights(variant))  # torchxrayvision's own download + cache
    path = find_weights_file(NAME, weights, WHERE, preferred=(RELEASE_FILE,))
    return XRVDenseNetEncoder(path, threads=threads)
