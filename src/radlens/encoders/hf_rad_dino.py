"""rad-dino: Microsoft's RAD-DINO chest X-ray ViT-B/14 (DINOv2 recipe on ~880k CXRs), from its HF folder.

Folder (the layout of huggingface.co/microsoft/rad-dino): `config.json` (Dinov2Model),
`model.safetensors` (or a sharded index), `preprocessor_config.json` (BitImageProcessor: shortest edge
→ 518 bicubic, centre crop 518, rescale 1/255, mean/std 0.5307/0.2583 in the released config).
The processor settings are read from *the user's* preprocessor_config.json through transformers and
recorded in the spec, so a different config gives a different preprocessing hash.

Embedding (stated in `spec.extra["embedding"]`):
- `rad-dino`: the CLS token of the last hidden state (after DINOv2's final layernorm; the same
  vector as the model's `pooler_output`, which is what the RAD-DINO model card uses): 768-d.
- `rad-dino-patch-mean`: the mean of the 37x37 patch tokens of the same hidden state (CLS excluded).
"""

from __future__ import annotations

from pathlib import Path

import torch

from radlens.encoders.hf_common import (CONFIG_FILE, PROCESSOR_FILE, HFImageEncoder, import_transformers,
                                        load_image_processor, load_model, processor_spec, read_config,
                                        resolve_folder, weight_files)
from radlens.encoders.registry import register
from radlens.encoders.upstream import files_digest

NAME = "rad-dino"
REPO_ID = "microsoft/rad-dino"
WHERE = (f"the Hugging Face repository {REPO_ID} (config.json, model.safetensors, preprocessor_config.json), "
         f"e.g. `huggingface-cli download {REPO_ID} --local-dir PATH` on a machine with access")
POOLINGS = {
    "cls": "CLS token of Dinov2Model last_hidden_state (post-layernorm; = pooler_output)",
    "patch-mean": "mean of the patch tokens of Dinov2Model last_hidden_state (CLS excluded)",
}


class RadDinoEncoder(HFImageEncoder):
    def __init__(self, folder: Path, *, name: str = NAME, pooling: str = "cls", threads: int | None = None) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"{name}: pooling {pooling!r} unknown; expected one of {sorted(POOLINGS)}")
        transformers = import_transformers(name)
        read_config(name, folder, {"dinov2"})
        proc = load_image_processor(name, folder)
        self.model, _ = load_model(name, transformers.Dinov2Model, folder)
        self.name, self.pooling, self.threads, self.folder = name, pooling, threads, folder
        self.spec = processor_spec(proc, source=f"{name} ({folder / PROCESSOR_FILE})",
                                   embedding=POOLINGS[pooling], channels=self.model.config.num_channels)
        self.embedding_dim = int(self.model.config.hidden_size)
        self.encoder_id = f"{name}@{files_digest(weight_files(name, folder))}"

    def _embed(self, batch: torch.Tensor) -> torch.Tensor:
        h = self.model(pixel_values=batch).last_hidden_state
        return h[:, 0] if self.pooling == "cls" else h[:, 1:].mean(dim=1)


def _create(name: str, pooling: str, weights: Path | None, allow_download: bool,
            threads: int | None) -> RadDinoEncoder:
    folder = resolve_folder(name, weights, [CONFIG_FILE, PROCESSOR_FILE], WHERE, repo_id=REPO_ID,
                            allow_download=allow_download,
                            download_patterns=["*.json", "*.safetensors"])
    return RadDinoEncoder(folder, name=name, pooling=pooling, threads=threads)


_INFO = dict(input_size=518, embedding_dim=768,
             license="weights: Microsoft Research License Agreement (MSRLA, research use); see the model card",
             weights=f"local folder from huggingface.co/{REPO_ID} (config.json, model.safetensors, "
                     f"preprocessor_config.json); never downloaded unless --allow-download")


@register(NAME, description="RAD-DINO (Microsoft) chest X-ray ViT-B/14, DINOv2 on CXRs; CLS token, 518 px",
          **_INFO)
def create(weights: Path | None = None, allow_download: bool = False, threads: int | None = None) -> RadDinoEncoder:
    return _create(NAME, "cls", weights, allow_download, threads)


@register(f"{NAME}-patch-mean", description="RAD-DINO, mean of the patch tokens instead of the CLS token", **_INFO)
def create_patch_mean(weights: Path | None = None, allow_download: bool = False,
                      threads: int | None = None) -> RadDinoEncoder:
    return _create(f"{NAME}-patch-mean", "patch-mean", weights, allow_download, threads)
