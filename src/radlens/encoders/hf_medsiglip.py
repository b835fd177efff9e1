"""medsiglip: Google's MedSigLIP-448 (SigLIP-400M image + text towers tuned on medical image-text pairs).

Folder (the layout of huggingface.co/google/medsiglip-448): `config.json` (SiglipModel),
`model.safetensors` (or a sharded index), `preprocessor_config.json` (SiglipImageProcessor: resize
to 448x448 bilinear, no crop, rescale 1/255, mean/std 0.5), and the tokenizer files
(`tokenizer_config.json` + `spiece.model` — SiglipTokenizer needs `sentencepiece` and `protobuf` —
or `tokenizer.json`). Processor settings are read from the user's preprocessor_config.json.

Image embedding (`spec.extra["embedding"]`): `SiglipModel.get_image_features`, i.e. the vision tower's
attention-pooling head output (SigLIP has no separate projection): 1152-d for MedSigLIP-448.
Un-normalised; the same vector whose cosine with a text embedding gives SigLIP's logits.

Zero-shot (used by `radlens zeroshot`): `embed_text(texts)` returns `get_text_features` of the folder's
tokenizer's input_ids, padded to max_length (the text tower's 64 positions) and without an attention
mask — how SigLIP was trained and how Google's MedSigLIP serving code calls it — in the same space
as `embed()`. `zero_shot` carries the learned `logit_scale` (already exp'd) and
`logit_bias`, `activation="sigmoid"` (SigLIP scores each label independently):
    p = sigmoid(logit_scale * cos(image, text) + logit_bias)
and `prompt_template`. The model card gives no chest X-ray template; its zero-shot example scores
short plain-English descriptions ("a photo of an arm with a rash"), so radlens wraps each label in
"a chest X-ray showing {}" by default — a radlens choice, overridable with `prompt_template=`.

Not reproduced: Google's Vertex serving container zero-pads non-square images to a square before
resizing; the Hugging Face processor (reproduced here) squashes them. NIH images are square.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from radlens.encoders.hf_common import (CONFIG_FILE, PROCESSOR_FILE, HFImageEncoder, import_transformers,
                                        load_image_processor, load_model, pooled, processor_spec, quiet_transformers,
                                        read_config, resolve_folder, weight_files)
from radlens.encoders.registry import register
from radlens.encoders.upstream import files_digest

NAME = "medsiglip"
REPO_ID = "google/medsiglip-448"
WHERE = (f"the Hugging Face repository {REPO_ID} (gated: accept the Health AI Developer Foundations terms; "
         f"config.json, model.safetensors, preprocessor_config.json, tokenizer_config.json, spiece.model), "
         f"e.g. `huggingface-cli download {REPO_ID} --local-dir PATH` on a machine with access")
TOKENIZER_FILES = ("spiece.model", "tokenizer.json")
DEFAULT_PROMPT = "a chest X-ray showing {}"
EMBEDDING = "SiglipModel.get_image_features (vision tower attention-pool head output)"


class MedSigLIPEncoder(HFImageEncoder):
    def __init__(self, folder: Path, *, prompt_template: str | None = None, threads: int | None = None) -> None:
        transformers = import_transformers(NAME)
        read_config(NAME, folder, {"siglip"})
        proc = load_image_processor(NAME, folder)
        self.model, _ = load_model(NAME, transformers.SiglipModel, folder)
        with quiet_transformers():
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.name, self.threads, self.folder = NAME, threads, folder
        vcfg, tcfg = self.model.config.vision_config, self.model.config.text_config
        self.spec = processor_spec(proc, source=f"{NAME} ({folder / PROCESSOR_FILE})", embedding=EMBEDDING,
                                   channels=vcfg.num_channels)
        self.embedding_dim = int(vcfg.hidden_size)
        self.text_max_length = int(tcfg.max_position_embeddings)  # 64 for MedSigLIP
        self.encoder_id = f"{NAME}@{files_digest(weight_files(NAME, folder))}"
        bias = getattr(self.model, "logit_bias", None)
        self.zero_shot = {
            "logit_scale": float(self.model.logit_scale.detach().exp()),
            "logit_bias": float(bias.detach().reshape(-1)[0]) if bias is not None else None,
            "activation": "sigmoid",
            "prompt_template": prompt_template or DEFAULT_PROMPT,
        }

    def _embed(self, batch: torch.Tensor) -> torch.Tensor:
        return pooled(self.model.get_image_features(pixel_values=batch))

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """input_ids (N, 64), padded to max_length. No attention mask: SigLIP's text tower was trained
        without one, and Google's MedSigLIP serving code feeds input_ids only (transformers 5's
        SiglipTokenizer also returns an attention_mask, and passing it on changes the embedding)."""
        return self.tokenizer(list(texts), padding="max_length", max_length=self.text_max_length,
                              truncation=True, return_tensors="pt")["input_ids"]

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """Text embeddings (N, embedding_dim) in the image embeddings' space, un-normalised."""
        if not texts:
            return np.zeros((0, self.embedding_dim), np.float32)
        if self.threads:
            torch.set_num_threads(self.threads)
        with torch.inference_mode():
            out = pooled(self.model.get_text_features(input_ids=self.tokenize(texts)))
        return out.float().numpy()


@register(NAME, description="MedSigLIP-448 (Google) SigLIP image/text encoder for medical images; zero-shot capable",
          input_size=448, embedding_dim=1152,
          license="weights: Health AI Developer Foundations terms of use (see the model card)",
          weights=f"local folder from huggingface.co/{REPO_ID} (config.json, model.safetensors, "
                  f"preprocessor_config.json, tokenizer files); never downloaded unless --allow-download")
def create(weights: Path | None = None, allow_download: bool = False, threads: int | None = None,
           prompt_template: str | None = None) -> MedSigLIPEncoder:
    folder = resolve_folder(NAME, weights, [CONFIG_FILE, PROCESSOR_FILE, "tokenizer_config.json"], WHERE,
                            repo_id=REPO_ID, allow_download=allow_download,
                            any_of=[("model.safetensors", "model.safetensors.index.json"), TOKENIZER_FILES],
                            download_patterns=["*.json", "*.safetensors", "*.model"])
    return MedSigLIPEncoder(folder, prompt_template=prompt_template, threads=threads)
