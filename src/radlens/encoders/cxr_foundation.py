"""cxr-foundation: Google's CXR Foundation (ELIXR) from its released TensorFlow SavedModels.

The released folder (Hugging Face google/cxr-foundation, gated: accept the Health AI Developer Foundations
terms) holds two SavedModels radlens uses:

    elixr-c-v2-pooled/   saved_model.pb + variables/   signature serving_default:
                         input_example: tf.string [B] (a serialized tf.train.Example with `image/encoded` = PNG
                         bytes and `image/format` = b"png") → feature_maps_0: float [B, 8, 8, 1376]
    pax-elixr-b-text/    saved_model.pb + variables/   signature serving_default (the ELIXR-B QFormer):
                         image_feature [B, 8, 8, 1376], ids int32 [B, 1, 128], paddings float [B, 1, 128] →
                         all_contrastive_img_emb [B, 32, 128], img_emb [B, 32, 768], contrastive_txt_emb [B, 128]

The image model decodes and resizes the PNG itself, so radlens's preprocessing is the encoding Google's
quick-start notebook (`png_to_tfexample`) does: a 2-D grey image, minimum shifted to 0; 8-bit images stay
8-bit, anything else is stretched to the full 16-bit range (x · 65535 / max, truncated to uint16); written as
a greyscale PNG into a tf.Example. radlens's decoded image is float [0, 1]: when every pixel lies on the 8-bit
grid (k/255, i.e. it came from an 8-bit file) the 8-bit branch is taken, otherwise the 16-bit one (for a DICOM
that means after radlens's modality/VOI handling, not on the raw stored values as Google's serving code
does). PNG is lossless, so pixel data and not the encoder library matter (radlens writes with Pillow; the
notebook with pypng).

Embedding (`output=`, part of the encoder id):
- "contrastive" (default): ELIXR-B `all_contrastive_img_emb`, 32 query tokens x 128, flattened to 4,096 — the
  text-aligned embedding Google's data-efficient classifier notebook trains on (flattened, then averaged over
  the 32 tokens inside its model);
- "general": ELIXR-B `img_emb` 32 x 768, flattened to 24,576;
- "elixr-c": ELIXR-C `feature_maps_0` averaged over its 8 x 8 grid, 1,376-d.

TensorFlow is imported only when the encoder is built (`pip install 'radlens[cxr-foundation]'`); the
tf.Example is written by radlens's own protobuf encoder so preprocessing works without TensorFlow. Zero-shot
is not offered: text embeddings need Google's separate BERT preprocessing SavedModel, not in this folder.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from radlens.encoders.base import Encoder, PreprocessSpec
from radlens.encoders.registry import register
from radlens.encoders.upstream import files_digest

log = logging.getLogger(__name__)

NAME = "cxr-foundation"
ELIXR_C = "elixr-c-v2-pooled"
QFORMER = "pax-elixr-b-text"
HUB_REPO = "google/cxr-foundation"
WHERE = ("the gated Hugging Face repository google/cxr-foundation (accept the Health AI Developer Foundations terms, "
         "then e.g. `huggingface-cli download google/cxr-foundation --include 'elixr-c-v2-pooled/*' "
         "'pax-elixr-b-text/*' --local-dir cxr-foundation` on a connected machine); needs "
         "pip install 'radlens[cxr-foundation]' (TensorFlow)")
OUTPUTS = {"contrastive": (32 * 128, "all_contrastive_img_emb"), "general": (32 * 768, "img_emb"),
           "elixr-c": (1376, "feature_maps_0")}
QFORMER_TEXT_LEN = 128
SPEC = PreprocessSpec(
    size=0, resize="none (the model resizes the PNG itself)", interpolation="none", mean=(0.0,), std=(1.0,),
    channels=1,
    extra={"pipeline": "elixr-tf-example", "family": NAME,
           "png": "grey; min shifted to 0; 8-bit if every pixel is on the k/255 grid, else x*65535/max -> uint16",
           "grid_tolerance": 1e-3, "features": {"image/encoded": "png bytes", "image/format": "png"},
           "source": "google cxr-foundation quick_start_with_hugging_face png_to_tfexample"})


# ---------------------------------------------------------------- tf.Example without TensorFlow

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:  # length-delimited protobuf field (wire type 2)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_example(features: dict[str, bytes]) -> bytes:
    """A serialized tf.train.Example whose features are single-value bytes lists (keys in sorted order).

    Example{features=1: Features{feature=1: map<string, Feature>}}, Feature{bytes_list=1: BytesList{value=1}}.
    """
    entries = b"".join(_field(1, _field(1, k.encode()) + _field(2, _field(1, _field(1, v))))
                       for k, v in sorted(features.items()))
    return _field(1, entries)


def png_array(pixels: np.ndarray, tolerance: float = 1e-3) -> np.ndarray:
    """radlens float [0, 1] image → the integer array Google's notebook would write (uint8 or uint16)."""
    p = np.asarray(pixels, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"{NAME}: expected a 2-D grey image, got shape {p.shape}")
    k = p * 255.0
    if np.all(np.abs(k - np.round(k)) < tolerance):  # an 8-bit image: the notebook's uint8 branch
        u8 = np.round(k).astype(np.uint8)
        return (u8 - u8.min()).astype(np.uint8)
    x = np.asarray(pixels, dtype=np.float32)  # the notebook's arithmetic: float32, shift, scale, truncate
    x = x - x.min()
    mx = x.max()
    if mx > 0:
        x *= 65535 / mx
    return x.astype(np.uint16)


def encode_png(arr: np.ndarray) -> bytes:
    if arr.dtype == np.uint8:
        im = Image.fromarray(arr, mode="L")
    elif arr.dtype == np.uint16:
        im = Image.fromarray(arr)  # mode I;16 → a 16-bit greyscale PNG
    else:
        raise ValueError(f"{NAME}: PNG pixels must be uint8 or uint16, not {arr.dtype}")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def image_example(pixels: np.ndarray) -> bytes:
    """The serialized tf.Example ELIXR-C takes for one decoded radiograph."""
    return encode_example({"image/encoded": encode_png(png_array(pixels)), "image/format": b"png"})


# ---------------------------------------------------------------- the encoder

class CXRFoundationEncoder(Encoder):
    """`preprocess` returns the serialized tf.Example as a 0-d object array, so the embed job can batch it."""

    name = NAME
    spec = SPEC

    def __init__(self, folder: Path, output: str = "contrastive", threads: int | None = None) -> None:
        if output not in OUTPUTS:
            raise ValueError(f"{NAME}: output must be one of {sorted(OUTPUTS)}, not {output!r}")
        try:
            import tensorflow as tf
        except ImportError as e:
            raise ImportError(f"{NAME} needs TensorFlow: pip install 'radlens[cxr-foundation]'") from e
        if threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(1)
            except RuntimeError:  # TensorFlow already initialised in this process
                log.info("%s: TensorFlow already initialised; thread settings unchanged", NAME)
        self._tf = tf
        self.folder, self.output = folder, output
        self.embedding_dim, self.output_key = OUTPUTS[output]
        self._elixr_c = self._signature(folder / ELIXR_C)
        self._qformer = self._signature(folder / QFORMER) if output != "elixr-c" else None
        used = [ELIXR_C] + ([QFORMER] if self._qformer is not None else [])
        files = [p for d in used for p in sorted((folder / d).rglob("*")) if p.is_file()]
        self.encoder_id = f"{NAME}-{output}@{files_digest(files)}"

    def _signature(self, path: Path):
        model = self._tf.saved_model.load(str(path))
        if "serving_default" not in model.signatures:
            raise ValueError(f"{NAME}: {path} has no serving_default signature (has {list(model.signatures)})")
        self._keep = getattr(self, "_keep", []) + [model]  # the signature needs its model alive
        return model.signatures["serving_default"]

    def preprocess(self, pixels: np.ndarray) -> np.ndarray:
        out = np.empty((), dtype=object)
        out[()] = image_example(pixels)
        return out

    def elixr_c(self, example: bytes) -> np.ndarray:
        """ELIXR-C on one serialized example (upstream runs it one image at a time): (8, 8, 1376)."""
        out = self._elixr_c(input_example=self._tf.constant([example]))
        return out["feature_maps_0"].numpy()[0]

    def qformer(self, feature_maps: np.ndarray) -> dict[str, np.ndarray]:
        """ELIXR-B QFormer on ELIXR-C features with an empty text input (as upstream does for images)."""
        tf = self._tf
        out = self._qformer(image_feature=tf.constant(feature_maps[None], tf.float32),
                            ids=tf.zeros([1, 1, QFORMER_TEXT_LEN], tf.int32),
                            paddings=tf.zeros([1, 1, QFORMER_TEXT_LEN], tf.float32))
        return {k: v.numpy()[0] for k, v in out.items()}

    def _one(self, example: bytes) -> np.ndarray:
        fm = self.elixr_c(example)
        if self.output == "elixr-c":
            return fm.reshape(-1, fm.shape[-1]).mean(0)
        return self.qformer(fm)[self.output_key].reshape(-1)

    def embed(self, batch: np.ndarray | torch.Tensor | Sequence[Any]) -> np.ndarray:
        """A batch of serialized examples (object array from `preprocess`, or bytes), or a list of decoded 2-D images."""
        items = list(batch) if not isinstance(batch, np.ndarray) or batch.ndim else [batch[()]]
        examples = []
        for it in items:
            it = it[()] if isinstance(it, np.ndarray) and it.dtype == object and it.ndim == 0 else it
            if isinstance(it, (bytes, bytearray)):
                examples.append(bytes(it))
            elif isinstance(it, np.ndarray) and it.ndim == 2 and it.dtype != object:
                examples.append(image_example(it))
            else:
                raise ValueError(f"{NAME}: embed takes serialized examples (from preprocess) or 2-D images, "
                                 f"got {type(it).__name__}")
        if not examples:
            return np.zeros((0, self.embedding_dim), np.float32)
        return np.stack([self._one(e) for e in examples]).astype(np.float32)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:  # not used: embed is overridden
        raise NotImplementedError(f"{NAME} embeds serialized tf.Examples, not tensors")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "output": self.output, "output_key": self.output_key,
                "embedding": {"contrastive": "ELIXR-B all_contrastive_img_emb, 32x128 flattened",
                              "general": "ELIXR-B img_emb, 32x768 flattened",
                              "elixr-c": "ELIXR-C feature_maps_0 mean over the 8x8 grid"}[self.output]}


@register(NAME, description="Google CXR Foundation (ELIXR-C + ELIXR-B QFormer, TensorFlow SavedModels); default "
                            "embedding = 32x128 contrastive tokens flattened (output=general|elixr-c for others)",
          input_size=0, embedding_dim=4096, license="Health AI Developer Foundations terms of use (Google)",
          weights=WHERE)
def create(weights: Path | None = None, threads: int | None = None, output: str = "contrastive",
           allow_download: bool = False) -> CXRFoundationEncoder:
    """`allow_download` (only with no `weights`): fetch the two SavedModels through huggingface_hub (the repository
    is gated: accept its terms and log in first)."""
    from radlens.encoders.hf_common import resolve_folder

    need = [f"{ELIXR_C}/saved_model.pb"] + ([f"{QFORMER}/saved_model.pb"] if output != "elixr-c" else [])
    folder = resolve_folder(NAME, weights, need, WHERE, repo_id=HUB_REPO, allow_download=allow_download, any_of=(),
                            download_patterns=[f"{ELIXR_C}/*", f"{QFORMER}/*"])
    return CXRFoundationEncoder(folder, output=output, threads=threads)
