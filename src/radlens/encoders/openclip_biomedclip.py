"""biomedclip: Microsoft's BiomedCLIP (PubMedBERT text tower + ViT-B/16 image tower) from its open_clip folder.

The released folder (microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224) holds
`open_clip_config.json` (model_cfg + preprocess_cfg), `open_clip_pytorch_model.bin` (or a
`.safetensors` copy) and the PubMedBERT tokenizer files (`vocab.txt` / `tokenizer.json`,
`tokenizer_config.json`). radlens builds the model with open_clip's own factory from that local
config — never by hub name — and loads the weights with `weights_only=True`.

Offline detail: the config names its text tower by hub id
(`text_cfg.hf_model_name` = microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract) and open_clip would
fetch that model's `config.json` and weights. The BERT weights are inside the CLIP checkpoint anyway, so
radlens points `hf_model_name` at a local BERT config and sets `hf_model_pretrained=False`. The BERT
config is, in order: a `config.json` (model_type bert) in the folder, the same in a subfolder named after
the hub id's last part, or one derived from the checkpoint's tensor shapes with BERT-base conventions
(64-d heads, GELU, LayerNorm eps 1e-12, pad id 0). The image embedding never depends on it.

Embedding: open_clip `encode_image` — the ViT-B/16 class token after the final LayerNorm, linearly
projected to 512-d (`visual.head.proj`), not L2-normalised. Preprocessing: exactly open_clip's
validation transform for the config's preprocess_cfg (defaults: resize the shortest edge to 224 with
PIL bicubic, centre crop 224, RGB, OpenAI CLIP mean/std), applied by radlens to the 8-bit image.

Zero-shot: `embed_text` is open_clip `encode_text` (CLS token of PubMedBERT → MLP projection, 512-d) with
the folder's own tokenizer (open_clip HFTokenizer, context length 256); scores = softmax over labels of
exp(logit_scale) x cosine. Prompt template "this is a photo of {}" — the one BiomedCLIP's model card uses
in its zero-shot example (template + label).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from copy import deepcopy
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from radlens.encoders.base import Encoder, PreprocessSpec
from radlens.encoders.registry import register
from radlens.encoders.upstream import MissingWeightsError, files_digest, pil_preprocess, require_files

log = logging.getLogger(__name__)

NAME = "biomedclip"
CONFIG_FILE = "open_clip_config.json"
WEIGHT_FILES = ("open_clip_pytorch_model.safetensors", "open_clip_model.safetensors", "open_clip_pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
WHERE = ("the Hugging Face repository microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224 (download the folder "
         "on a connected machine, e.g. `huggingface-cli download microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224 "
         "--local-dir BiomedCLIP`, and copy it here); MIT license")
PROMPT_TEMPLATE = "this is a photo of {}"
HUB_REPO = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"

# open_clip's PreprocessCfg defaults (open_clip/transform.py), which a folder's preprocess_cfg overrides.
OPENCLIP_PREPROCESS_DEFAULTS: dict[str, Any] = {
    "size": 224, "mode": "RGB", "mean": (0.48145466, 0.4578275, 0.40821073),
    "std": (0.26862954, 0.26130258, 0.27577711), "interpolation": "bicubic", "resize_mode": "shortest",
    "fill_color": 0}


def read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{NAME}: {path} is not valid JSON ({e})") from None
    if "model_cfg" not in cfg:
        raise ValueError(f"{NAME}: {path} has no 'model_cfg' (keys: {sorted(cfg)}); expected an open_clip config")
    return cfg


def weights_file(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise MissingWeightsError(f"{NAME}: {folder} lacks {' or '.join(WEIGHT_FILES)}. Get them from {WHERE}")


def preprocess_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """open_clip's final preprocess cfg: defaults < preprocess_cfg < the vision tower's image size."""
    pp = {**OPENCLIP_PREPROCESS_DEFAULTS, **{k: v for k, v in (cfg.get("preprocess_cfg") or {}).items()
                                            if k in OPENCLIP_PREPROCESS_DEFAULTS}}
    size = (cfg["model_cfg"].get("vision_cfg") or {}).get("image_size", pp["size"])
    pp["size"] = size
    return pp


def spec_from_config(cfg: dict[str, Any]) -> PreprocessSpec:
    """open_clip's validation transform (`image_transform(is_train=False)`) as a radlens pil-uint8 spec."""
    pp = preprocess_config(cfg)
    size = pp["size"]
    if isinstance(size, (list, tuple)):
        if size[0] != size[1]:
            raise ValueError(f"{NAME}: non-square image size {size} is not supported")
        size = size[0]
    size = int(size)
    interp = pp["interpolation"]
    if interp not in ("bicubic", "bilinear"):  # open_clip maps anything else to bicubic
        interp = "bicubic"
    mode = pp["resize_mode"]
    if mode == "shortest":
        extra = {"resize_to": "shortest_edge", "resize_size": size, "crop": size}
    elif mode == "squash":
        extra = {"resize_to": "square", "resize_size": size}
    else:
        raise ValueError(f"{NAME}: open_clip resize_mode {mode!r} is not supported (radlens reproduces 'shortest' "
                         "and 'squash')")
    extra = {"pipeline": "pil-uint8", "family": NAME, "mode": "RGB", **extra, "resample": interp,
             "rescale": 1 / 255, "source": "open_clip image_transform(is_train=False) from preprocess_cfg"}
    return PreprocessSpec(size=size, resize=f"openclip-{mode}", interpolation=f"pil-{interp}",
                          mean=tuple(float(m) for m in pp["mean"]), std=tuple(float(s) for s in pp["std"]),
                          channels=3, extra=extra)


def _bert_config_from_state(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """A BERT config.json from the checkpoint's text-tower tensor shapes (BERT-base conventions for the rest)."""
    p = "text.transformer."
    words = state[p + "embeddings.word_embeddings.weight"]
    hidden = int(words.shape[1])
    layers = 1 + max(int(k[len(p + "encoder.layer."):].split(".")[0]) for k in state if k.startswith(p + "encoder.layer."))
    return {"model_type": "bert", "architectures": ["BertModel"], "vocab_size": int(words.shape[0]),
            "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": max(1, hidden // 64),
            "intermediate_size": int(state[p + "encoder.layer.0.intermediate.dense.weight"].shape[0]),
            "max_position_embeddings": int(state[p + "embeddings.position_embeddings.weight"].shape[0]),
            "type_vocab_size": int(state[p + "embeddings.token_type_embeddings.weight"].shape[0]),
            "hidden_act": "gelu", "layer_norm_eps": 1e-12, "pad_token_id": 0,
            "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02,
            "_radlens_note": "derived from the checkpoint's tensor shapes (BERT-base conventions)"}


def _text_config_source(folder: Path, hf_name: str) -> Path | None:
    for cand in (folder, folder / Path(hf_name).name):
        cfg = cand / "config.json"
        if cfg.is_file():
            try:
                if json.loads(cfg.read_text()).get("model_type"):
                    return cand
            except json.JSONDecodeError:
                continue
    return None


class BiomedCLIPEncoder(Encoder):
    name = NAME

    def __init__(self, folder: Path, threads: int | None = None) -> None:
        try:
            import open_clip
        except ImportError as e:
            raise ImportError(f"{NAME} needs open_clip_torch (and timm, transformers, torchvision): "
                              "pip install 'radlens[zoo]' (see README: the zoo environment)") from e
        self.folder = folder
        self.config = read_config(folder)
        ckpt = weights_file(folder)
        self.spec = spec_from_config(self.config)
        self.threads = threads
        self.model, self.text_config_source = self._build(open_clip, ckpt)
        self.model.eval()
        self.embedding_dim = int(self.config["model_cfg"]["embed_dim"])
        self.encoder_id = f"{NAME}@{files_digest([ckpt, folder / CONFIG_FILE])}"
        scale = float(self.model.logit_scale.detach().exp().reshape(-1)[0])
        bias = getattr(self.model, "logit_bias", None)
        self.zero_shot = {"logit_scale": scale,
                          "logit_bias": None if bias is None else float(bias.detach().reshape(-1)[0]),
                          "activation": "softmax", "prompt_template": PROMPT_TEMPLATE}
        self._tokenizer = None

    def _build(self, open_clip, ckpt: Path):
        """open_clip's factory on a local-dir copy of the config whose text tower points at a local BERT config."""
        cfg = deepcopy(self.config)
        mcfg = cfg["model_cfg"]
        vcfg, tcfg = mcfg.setdefault("vision_cfg", {}), mcfg.setdefault("text_cfg", {})
        if "timm_model_name" in vcfg:
            vcfg["timm_model_pretrained"] = False  # the image tower's weights are in the checkpoint
        with tempfile.TemporaryDirectory(prefix="radlens-biomedclip-") as tmp:
            tmp = Path(tmp)
            source = "none (no Hugging Face text tower)"
            if tcfg.get("hf_model_name"):
                hf_name = str(tcfg["hf_model_name"])
                local = _text_config_source(self.folder, hf_name)
                if local is None:
                    from open_clip.factory import load_state_dict

                    state = load_state_dict(str(ckpt), weights_only=True)
                    local = tmp / "text_config"
                    local.mkdir()
                    (local / "config.json").write_text(json.dumps(_bert_config_from_state(state)))
                    del state
                    source = f"derived from {ckpt.name} tensor shapes (was {hf_name})"
                else:
                    source = f"{local / 'config.json'} (was {hf_name})"
                tcfg["hf_model_name"] = str(local)
                tcfg["hf_model_pretrained"] = False
            (tmp / CONFIG_FILE).write_text(json.dumps(cfg))
            os.symlink(ckpt.resolve(), tmp / ckpt.name)
            model = open_clip.create_model(f"local-dir:{tmp}", device="cpu", precision="fp32", weights_only=True,
                                           require_pretrained=True)
        return model, source

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self.threads:
            torch.set_num_threads(self.threads)
        return self.model.encode_image(batch, normalize=False)

    def preprocess(self, pixels: np.ndarray) -> np.ndarray:
        return pil_preprocess(pixels, self.spec)

    def tokenizer(self):
        """The folder's PubMedBERT tokenizer through open_clip's HFTokenizer (local files only)."""
        if self._tokenizer is None:
            require_files(NAME, self.folder, [], WHERE, any_of=[TOKENIZER_FILES])
            import open_clip

            self._tokenizer = open_clip.get_tokenizer(f"local-dir:{self.folder}", local_files_only=True)
        return self._tokenizer

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """open_clip `encode_text` of each text (same 512-d space as `embed`, not normalised)."""
        tokens = self.tokenizer()(list(texts))
        with torch.inference_mode():
            return self.model.encode_text(tokens, normalize=False).float().numpy()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "embedding": "open_clip encode_image: ViT class token after final LayerNorm, "
                                                   "linear projection to embed_dim, not L2-normalised",
                "text_config": self.text_config_source, "zero_shot": self.zero_shot}


@register(NAME, description="BiomedCLIP (PubMedBERT + ViT-B/16, PMC-15M) via open_clip; image embedding = projected "
                            "class token (encode_image); zero-shot capable",
          input_size=224, embedding_dim=512, license="MIT (weights and code, Microsoft)", weights=WHERE)
def create(weights: Path | None = None, threads: int | None = None, allow_download: bool = False) -> BiomedCLIPEncoder:
    """`allow_download` (only with no `weights`): fetch the released folder through huggingface_hub first."""
    from radlens.encoders.hf_common import resolve_folder

    folder = resolve_folder(NAME, weights, [CONFIG_FILE], WHERE, repo_id=HUB_REPO, allow_download=allow_download,
                            any_of=[WEIGHT_FILES])
    return BiomedCLIPEncoder(folder, threads=threads)
