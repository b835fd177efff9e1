"""Shared machinery of the Hugging Face families (rad-dino, medsiglip, hf:<folder>, med-flamingo).

- `processor_spec` turns the user's image processor (read from *their* preprocessor_config.json by
  transformers itself, so the processor class's defaults apply exactly as upstream) into a
  PreprocessSpec whose `extra` drives `upstream.pil_preprocess`: another config, another hash.
  Only the standard PIL chain (convert RGB → resize → centre crop → rescale → normalise) is
  reproduced; a processor class that overrides any step is refused with a message, never approximated.
- `load_model` loads safetensors only (never a pickle), offline (`local_files_only=True`), in float32,
  and refuses a folder whose weights leave any parameter of the model uninitialised.
- `resolve_folder` is the one place where a download can happen: only with `allow_download=True`
  and no local path, through huggingface_hub (transformers' own hub client).

transformers is imported inside functions so that listing encoders stays light.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch

from radlens.encoders.base import Encoder, PreprocessSpec
from radlens.encoders.upstream import MissingWeightsError, pil_preprocess, require_files

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
PROCESSOR_FILE = "preprocessor_config.json"
SINGLE_WEIGHTS = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"
WEIGHTS_ANY_OF = (SINGLE_WEIGHTS, SHARD_INDEX)
INSTALL_HINT = "pip install 'radlens[hf]'"
# PIL.Image.Resampling values, as Hugging Face processor configs store them ("resample": 3).
RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
_PIPELINE_STEPS = ("_preprocess", "resize", "center_crop", "rescale", "normalize", "process_image")


def import_transformers(family: str):
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(f"{family} needs the transformers library: {INSTALL_HINT}") from e
    return transformers


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and progress bars while we check missing keys ourselves."""
    from transformers.utils import logging as tlogging

    tlog = logging.getLogger("transformers")
    level, bars = tlog.level, tlogging.is_progress_bar_enabled()
    tlog.setLevel(logging.ERROR)
    tlogging.disable_progress_bar()
    try:
        yield
    finally:
        tlog.setLevel(level)
        if bars:
            tlogging.enable_progress_bar()


def resolve_folder(family: str, weights: Path | None, expected: Iterable[str], where: str, *,
                   repo_id: str | None = None, allow_download: bool = False,
                   any_of: Iterable[Iterable[str]] = (WEIGHTS_ANY_OF,),
                   download_patterns: Sequence[str] | None = None) -> Path:
    """The local folder to load from. With no `weights` and `allow_download=True`, fetch `repo_id`
    through huggingface_hub (its cache) first; otherwise never touch the network."""
    if weights is None and allow_download and repo_id:
        from huggingface_hub import snapshot_download

        log.warning("%s: downloading %s from the Hugging Face Hub (--allow-download)", family, repo_id)
        patterns = list(download_patterns) if download_patterns else None
        weights = Path(snapshot_download(repo_id, allow_patterns=patterns))
    return require_files(family, weights, expected, where, any_of=any_of)


def weight_files(family: str, folder: Path) -> list[Path]:
    """config.json + the safetensors weights (one file, or the index and every shard it names): the
    files whose bytes define the model, digested into the encoder id."""
    if (folder / SINGLE_WEIGHTS).is_file():
        return [folder / CONFIG_FILE, folder / SINGLE_WEIGHTS]
    index = json.loads((folder / SHARD_INDEX).read_text())
    shards = sorted(set(index.get("weight_map", {}).values()))
    missing = [s for s in shards if not (folder / s).is_file()]
    if not shards or missing:
        raise MissingWeightsError(f"{family}: {folder / SHARD_INDEX} names shards that are not in {folder}: "
                                  f"{', '.join(missing) or '(none listed)'}")
    return [folder / CONFIG_FILE, folder / SHARD_INDEX] + [folder / s for s in shards]


def read_config(family: str, folder: Path, model_types: Iterable[str] | None = None) -> dict[str, Any]:
    cfg = json.loads((folder / CONFIG_FILE).read_text())
    if model_types is not None and cfg.get("model_type") not in set(model_types):
        raise ValueError(f"{family}: {folder / CONFIG_FILE} has model_type={cfg.get('model_type')!r}; "
                         f"expected {' or '.join(sorted(model_types))}")
    return cfg


def load_model(family: str, cls: Any, folder: Path, allow_missing: Iterable[str] = ()) -> tuple[Any, list[str]]:
    """`cls.from_pretrained` offline, safetensors only, float32, eval mode. Every parameter must come
    from the folder (a missing key would silently stay randomly initialised), except keys starting
    with an `allow_missing` prefix, which are returned so the caller can avoid using them."""
    with quiet_transformers():
        model, info = cls.from_pretrained(str(folder), local_files_only=True, use_safetensors=True,
                                          dtype=torch.float32, output_loading_info=True)
    prefixes = tuple(allow_missing)
    all_missing = sorted(info.get("missing_keys", ()))
    missing = [k for k in all_missing if not (prefixes and k.startswith(prefixes))]
    mismatched = list(info.get("mismatched_keys", ()))
    if missing or mismatched:
        raise ValueError(f"{family}: the weights in {folder} do not fit {cls.__name__} "
                         f"(missing: {missing[:8]}{'...' if len(missing) > 8 else ''}; "
                         f"shape mismatch: {mismatched[:8]})")
    return model.eval(), [k for k in all_missing if k not in missing]


def load_image_processor(family: str, folder: Path):
    transformers = import_transformers(family)
    with quiet_transformers():
        return transformers.AutoImageProcessor.from_pretrained(str(folder), local_files_only=True, backend="pil")


def processor_spec(proc: Any, *, source: str, embedding: str, channels: int = 3,
                   **extra: Any) -> PreprocessSpec:
    """The PreprocessSpec that reproduces Hugging Face image processor `proc` on 8-bit images.

    Every value the processor uses is recorded (hashed): resize rule and size, resample filter,
    centre crop (HF offsets `(h - crop) // 2`), rescale factor, mean/std, the processor class, and
    `embedding` (which output the family returns) plus any family `extra`.
    """
    from transformers.image_processing_backends import PilBackend

    cls = type(proc)
    custom = [m for m in _PIPELINE_STEPS if getattr(cls, m, None) is not getattr(PilBackend, m, None)]
    if not isinstance(proc, PilBackend) or custom:
        raise ValueError(f"{source}: image processor {cls.__name__} has its own pipeline "
                         f"({', '.join(custom) or 'not a PIL-backend processor'}); radlens reproduces only the "
                         f"standard resize / centre-crop / rescale / normalise chain")
    if getattr(proc, "do_pad", None):
        raise ValueError(f"{source}: do_pad=true is not supported")
    if not proc.do_resize:
        raise ValueError(f"{source}: do_resize=false (native-size input) is not supported; radlens needs a fixed size")
    size = proc.size
    if size.shortest_edge and not size.longest_edge:
        resize_to, n = "shortest_edge", int(size.shortest_edge)
    elif size.height and size.width and size.height == size.width:
        resize_to, n = "square", int(size.height)
    else:
        raise ValueError(f"{source}: size={size} is not supported (expected shortest_edge, or equal height and width)")
    crop = None
    if proc.do_center_crop:
        c = proc.crop_size
        if not (c.height and c.width and c.height == c.width):
            raise ValueError(f"{source}: crop_size must be square, got {c.height}x{c.width}")
        crop = int(c.height)
        if crop > n:
            raise ValueError(f"{source}: crop_size {crop} larger than the resized image {n} (padding) is not supported")
    elif resize_to != "square":
        raise ValueError(f"{source}: shortest_edge resize without a centre crop gives non-square input; not supported")
    resample = RESAMPLE_NAMES[int(proc.resample) if proc.resample is not None else 2]  # PilBackend: None = bilinear
    rescale = float(proc.rescale_factor) if proc.do_rescale else 1.0
    if proc.do_normalize:
        mean = tuple(float(v) for v in np.broadcast_to(np.asarray(proc.image_mean, float), (channels,)))
        std = tuple(float(v) for v in np.broadcast_to(np.asarray(proc.image_std, float), (channels,)))
    else:
        mean, std = (0.0,) * channels, (1.0,) * channels
    name = cls.__name__[:-3] if cls.__name__.endswith("Pil") else cls.__name__
    return PreprocessSpec(
        size=crop or n, resize=resize_to, interpolation=resample, mean=mean, std=std, channels=channels,
        extra={"pipeline": "pil-uint8", "mode": "RGB", "resize_to": resize_to, "resize_size": n, "crop": crop,
               "crop_offset": "floor", "rescale": rescale, "resample": resample, "processor": name,
               "embedding": embedding, **extra})


class HFImageEncoder(Encoder):
    """Base of the Hugging Face families: Pillow-uint8 preprocessing from the spec, optional thread cap."""

    threads: int | None = None

    def preprocess(self, pixels: np.ndarray) -> np.ndarray:
        return pil_preprocess(pixels, self.spec)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self.threads:
            torch.set_num_threads(self.threads)
        return self._embed(batch)

    def _embed(self, batch: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def pooled(out: Any) -> torch.Tensor:
    """`get_image_features` / `get_text_features` return a tensor in transformers 4 and a
    BaseModelOutputWithPooling in 5; the embedding is its pooler_output."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output
