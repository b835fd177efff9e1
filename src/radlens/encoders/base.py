"""The contract every encoder meets, and the preprocessing spec that is hashed into every artefact.

Silent preprocessing mismatches are the most common way radiograph models fail in practice, so the
spec is a frozen dataclass whose canonical JSON is hashed; stores, adapters and indexes record that
hash and refuse to mix embeddings made under different preprocessing.
"""

from __future__ import annotations

import abc
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

# Bump when the *code* that applies a spec changes behaviour, so old artefacts are refused.
PREPROCESS_IMPL_VERSION = "radlens-preprocess-1"


@dataclass(frozen=True)
class PreprocessSpec:
    """How a decoded radiograph (float32, [0,1], higher = brighter) becomes model input."""

    size: int
    resize: str = "squash"  # whole image to size x size; aspect ratio is not kept
    interpolation: str = "bilinear-antialias"
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.25,)
    channels: int = 1
    extra: dict[str, Any] = field(default_factory=dict)  # family-specific knobs, hashed too

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @property
    def hash(self) -> str:
        payload = json.dumps({"impl": PREPROCESS_IMPL_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def __hash__(self) -> int:  # dict field makes the default dataclass hash unusable
        return hash(self.hash)


def preprocess_pixels(pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Apply `spec` to one decoded image; returns (C, size, size) float32.

    Antialiased bilinear resize (numerically the same as Pillow's BILINEAR on mode F, within
    1e-5) so that a user resizing with Pillow upstream gets the same input.
    """
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2-D monochrome image, got shape {pixels.shape}")
    if spec.resize != "squash" or spec.interpolation != "bilinear-antialias":
        raise ValueError(f"unsupported preprocessing {spec.resize}/{spec.interpolation}")
    t = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None, None]
    if t.shape[-2:] != (spec.size, spec.size):
        t = F.interpolate(t, size=(spec.size, spec.size), mode="bilinear", antialias=True, align_corners=False)
    t = t[0].expand(spec.channels, -1, -1)
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(-1, 1, 1)
    return ((t - mean) / std).numpy().astype(np.float32, copy=False)


class Preprocessor:
    """`Encoder.preprocessor()`: the family's `preprocess` on a weightless instance (pickles as class + spec)."""

    def __init__(self, cls: type, spec: PreprocessSpec) -> None:
        self.cls, self.spec = cls, spec

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        shell = self.cls.__new__(self.cls)
        shell.spec = self.spec
        return self.cls.preprocess(shell, pixels)


class Encoder(abc.ABC):
    """An image encoder: preprocessed batch in, float32 embeddings out.

    `encoder_id` names the weights (family + weights digest), not just the family, so two
    checkpoints of one architecture never share stored embeddings.
    """

    name: str
    encoder_id: str
    spec: PreprocessSpec
    embedding_dim: int

    device: str = "cpu"

    @property
    def preprocess_hash(self) -> str:
        return self.spec.hash

    def preprocessor(self) -> "Preprocessor":
        """A small picklable callable that preprocesses exactly like `self.preprocess`, without the weights.

        Why: distributed decoders (the Ray engine's decode tasks) must apply the encoder's own preprocessing
        next to the file, but shipping or rebuilding the model in every decode worker would cost its memory
        and load time there. Every family's `preprocess` reads only `self.spec`, so a weightless instance of
        the same class with the same spec gives bit-identical input.
        """
        return Preprocessor(type(self), self.spec)

    def to(self, device: str) -> "Encoder":
        """Move the encoder's torch modules to `device` (e.g. "cuda" for a GPU actor); inputs follow in `embed`."""
        moved = [v.to(device) for v in vars(self).values() if isinstance(v, torch.nn.Module)]
        if not moved and device != "cpu":
            raise ValueError(f"{self.name}: no torch module found on this encoder to move to {device}")
        self.device = device
        return self

    def preprocess(self, pixels: np.ndarray) -> np.ndarray:
        return preprocess_pixels(pixels, self.spec)

    @abc.abstractmethod
    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Embed an already preprocessed (N, C, H, W) float32 batch."""

    def embed(self, batch: np.ndarray | torch.Tensor | Sequence[np.ndarray]) -> np.ndarray:
        """Embed a batch: a preprocessed (N, C, H, W) array, or a list of decoded 2-D images."""
        if isinstance(batch, (list, tuple)):
            batch = np.stack([self.preprocess(np.asarray(p)) for p in batch]) if batch else np.zeros(
                (0, self.spec.channels, self.spec.size, self.spec.size), np.float32)
        x = torch.as_tensor(batch, dtype=torch.float32, device=self.device)
        if x.ndim != 4 or x.shape[1] != self.spec.channels:
            raise ValueError(f"{self.name}: expected (N, {self.spec.channels}, H, W) input, got {tuple(x.shape)}")
        if len(x) == 0:
            return np.zeros((0, self.embedding_dim), np.float32)
        with torch.inference_mode():
            out = self._forward(x)
        return out.float().cpu().numpy()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "encoder_id": self.encoder_id,
            "embedding_dim": self.embedding_dim,
            "preprocess": self.spec.to_dict(),
            "preprocess_hash": self.preprocess_hash,
        }
