"""hf:<folder>: any local Hugging Face vision model folder loaded with AutoModel.

`radlens embed --encoder hf:/path/to/folder` (or `--encoder hf:NAME --weights /path/to/folder`).
The folder needs `config.json`, safetensors weights (`model.safetensors` or a sharded index) and a
`preprocessor_config.json` whose AutoImageProcessor is a standard PIL pipeline (resize / centre crop /
rescale / normalise; e.g. ViT, DeiT, BiT/DINOv2, CLIP, SigLIP processors). Processors with their own
steps (ConvNeXt's crop_pct, BEiT, ...) are refused with a message rather than approximated.

Embedding, decided once at load time by one forward pass on a blank image and recorded in
`spec.extra["embedding"]`:
- dual image-text models (CLIP, SigLIP, ...: AutoModel has `get_image_features`): the image features;
- otherwise `pooler_output` when the model returns one and the folder holds its weights (its meaning is
  the architecture's: ViT's tanh-dense on CLS, DINOv2's CLS, ...), flattened; a folder saved from a
  `*ForImageClassification` model has no pooler weights, and a randomly initialised pooler is never used;
- otherwise the CLS token `last_hidden_state[:, 0]` (or the spatial mean for a 4-D CNN feature map).
encoder_id = `hf:<model_type>@<digest of config + weights>`, so it names the bytes, not the path.
"""

from __future__ import annotations

from pathlib import Path

import torch

from radlens.encoders.hf_common import (CONFIG_FILE, PROCESSOR_FILE, HFImageEncoder, import_transformers,
                                        load_image_processor, load_model, pooled, processor_spec, read_config,
                                        resolve_folder, weight_files)
from radlens.encoders.registry import register
from radlens.encoders.upstream import files_digest

PREFIX = "hf"
WHERE = ("the model's own Hugging Face repository (save its folder with config.json, model.safetensors and "
         "preprocessor_config.json, e.g. `huggingface-cli download ORG/MODEL --local-dir PATH`)")


class HFGenericEncoder(HFImageEncoder):
    def __init__(self, folder: Path, *, name: str, threads: int | None = None) -> None:
        transformers = import_transformers(name)
        cfg = read_config(name, folder)
        proc = load_image_processor(name, folder)
        # A folder saved from a *ForImageClassification head has no pooler weights: never use a random pooler.
        self.model, no_pooler = load_model(name, transformers.AutoModel, folder, allow_missing=("pooler.",))
        self.name, self.threads, self.folder = name, threads, folder
        model_cls = type(self.model).__name__
        channels = int(getattr(getattr(self.model.config, "vision_config", self.model.config), "num_channels", 3))
        self._mode = "image_features" if hasattr(self.model, "get_image_features") else None
        # Decide the output once, on a blank image, before the spec is fixed.
        self.spec = processor_spec(proc, source=f"{name} ({folder / PROCESSOR_FILE})", embedding="?",
                                   channels=channels)
        probe = torch.zeros(1, channels, self.spec.size, self.spec.size)
        with torch.inference_mode():
            if self._mode is None:
                out = self.model(pixel_values=probe)
                if getattr(out, "pooler_output", None) is not None and not no_pooler:
                    self._mode = "pooler_output"
                elif out.last_hidden_state.ndim == 3:
                    self._mode = "cls"
                else:
                    self._mode = "spatial_mean"
            dim = self._embed(probe).shape[-1]
        embedding = {"image_features": f"{model_cls}.get_image_features (pooled, projected)",
                     "pooler_output": f"{model_cls} pooler_output (flattened)",
                     "cls": f"{model_cls} last_hidden_state[:, 0] (CLS token; "
                            f"{'the folder has no pooler weights' if no_pooler else 'the model has no pooler_output'})",
                     "spatial_mean": f"{model_cls} last_hidden_state mean over H, W (no pooler_output)"}[self._mode]
        self.spec = processor_spec(proc, source=f"{name} ({folder / PROCESSOR_FILE})", embedding=embedding,
                                   channels=channels)
        self.embedding_dim = int(dim)
        self.encoder_id = f"{PREFIX}:{cfg.get('model_type', 'model')}@{files_digest(weight_files(name, folder))}"

    def _embed(self, batch: torch.Tensor) -> torch.Tensor:
        if self._mode == "image_features":
            return pooled(self.model.get_image_features(pixel_values=batch))
        out = self.model(pixel_values=batch)
        if self._mode == "pooler_output":
            return out.pooler_output.reshape(len(batch), -1)
        h = out.last_hidden_state
        return h[:, 0] if self._mode == "cls" else h.mean(dim=(2, 3))


@register(f"{PREFIX}:", description="any local Hugging Face AutoModel vision folder with its image processor config",
          input_size=0, embedding_dim=0, license="that of the model you point it at",
          weights="your local folder: config.json, model.safetensors, preprocessor_config.json "
                  "(hf:<folder>, or hf:<name> --weights <folder>)")
def create(weights: Path | None = None, arg: str = "", allow_download: bool = False,
           threads: int | None = None) -> HFGenericEncoder:
    name = f"{PREFIX}:{arg}"
    local = Path(arg).expanduser()
    # hf:<folder>; with --allow-download and no such folder, <arg> is taken as a Hub repo id (ORG/MODEL).
    download = weights is None and allow_download and not local.exists() and not local.is_absolute()
    if weights is None and not download:
        weights = local
    folder = resolve_folder(name, weights, [CONFIG_FILE, PROCESSOR_FILE], WHERE, repo_id=arg if download else None,
                            allow_download=download, download_patterns=["*.json", "*.safetensors"])
    return HFGenericEncoder(folder, name=name, threads=threads)
