"""med-flamingo: the visual side of Med-Flamingo (OpenFlamingo-9B fine-tuned on medical image-text data).

Med-Flamingo = OpenFlamingo: a frozen CLIP ViT-L/14 (OpenAI weights) → a Perceiver resampler (64
learned latents) → gated cross-attention into LLaMA-7B. Its released checkpoint (`model.pt` of
huggingface.co/med-flamingo/med-flamingo) holds the trained parts: `perceiver.*` and the LM's
cross-attention layers; the vision tower is the unchanged OpenAI CLIP ViT-L/14.

Folder (`--weights PATH`):
    PATH/clip-vit-large-patch14/   the Hugging Face folder of openai/clip-vit-large-patch14
                                   (config.json + model.safetensors; a CLIPModel or CLIPVisionModel folder)
    PATH/model.pt                  the Med-Flamingo checkpoint (or PATH/model.safetensors)
`model.pt` is read with `torch.load(weights_only=True, mmap=True)` — never unpickled — and only
its `perceiver.*` tensors are used (the LM's cross-attention layers and any `vision_encoder.*`
copies, which OpenFlamingo keeps frozen at the OpenAI weights, are ignored). The perceiver is
rebuilt in plain torch with OpenFlamingo's module layout (open_flamingo/src/helpers.py), so the
checkpoint's keys load strictly: every perceiver tensor is used and every parameter is set.

Embedding (`spec.extra["embedding"]`): the mean of the 64 perceiver latents (after the perceiver's
final LayerNorm), 1024-d. Why not CLIP's pooled output: the vision tower is frozen OpenAI CLIP, so its
pooled vector would be plain CLIP ViT-L/14 and carry nothing of Med-Flamingo; the perceiver is the
part Med-Flamingo trained on medical data, and its latents are exactly what the language model
cross-attends to. Its input is what OpenFlamingo feeds it: `vision_encoder(x)[1]`, open_clip's patch
tokens (CLS dropped). In the open_clip releases Med-Flamingo was trained with (open_flamingo 0.0.2,
open_clip 2.16-2.23) those tokens are taken *before* `ln_post` — in Hugging Face terms
`CLIPVisionModel(...).last_hidden_state[:, 1:]`; open_clip >= 2.24 applies `ln_post` first
(`vision_tokens="post-ln"` reproduces that; recorded in the spec).

Preprocessing: open_clip's OpenAI CLIP eval transform, which Med-Flamingo's processor uses: resize
the shortest edge to 224 (bicubic), centre crop 224 (torchvision offsets round((h - 224) / 2)),
RGB, /255, CLIP mean/std.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
import torch.nn as nn

from radlens.encoders.base import PreprocessSpec
from radlens.encoders.hf_common import HFImageEncoder, import_transformers, load_model, read_config, weight_files
from radlens.encoders.registry import register
from radlens.encoders.upstream import files_digest, require_files

log = logging.getLogger(__name__)

NAME = "med-flamingo"
CHECKPOINT_REPO = "med-flamingo/med-flamingo"
CLIP_REPO = "openai/clip-vit-large-patch14"
CLIP_DIR = "clip-vit-large-patch14"
CHECKPOINT_FILES = ("model.pt", "model.safetensors")
WHERE = (f"the Hugging Face repositories {CLIP_REPO} (config.json, model.safetensors → PATH/{CLIP_DIR}/) and "
         f"{CHECKPOINT_REPO} (model.pt → PATH/model.pt)")
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DIM_HEAD = 64  # OpenFlamingo's PerceiverResampler default (Flamingo builds it with dim=vis_dim only)
EMBEDDING = "mean of the 64 Perceiver-resampler latents (after perceiver.norm) over CLIP ViT-L/14 patch tokens"
VISION_TOKENS = {"pre-ln": "CLIPVisionModel last_hidden_state[:, 1:] (open_clip <=2.23 output_tokens, before ln_post)",
                 "post-ln": "post_layernorm(last_hidden_state[:, 1:]) (open_clip >=2.24 output_tokens)"}


def _feed_forward(dim: int, inner: int) -> nn.Sequential:
    # OpenFlamingo FeedForward: keys .0 (LayerNorm), .1 (Linear, no bias), .2 (GELU), .3 (Linear, no bias)
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, inner, bias=False), nn.GELU(),
                         nn.Linear(inner, dim, bias=False))


class PerceiverAttention(nn.Module):
    """OpenFlamingo's PerceiverAttention: latents attend to [media tokens; latents]."""

    def __init__(self, dim: int, dim_head: int = DIM_HEAD, heads: int = 8) -> None:
        super().__init__()
        self.scale, self.heads = dim_head ** -0.5, heads
        inner = dim_head * heads
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        # x: (B, M, D) media tokens, latents: (B, N, D)
        x, latents = self.norm_media(x), self.norm_latents(latents)
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat((x, latents), dim=-2)).chunk(2, dim=-1)

        def heads(t: torch.Tensor) -> torch.Tensor:  # "b n (h d) -> b h n d"
            return t.view(t.shape[0], t.shape[1], self.heads, -1).transpose(1, 2)

        q, k, v = heads(q) * self.scale, heads(k), heads(v)
        attn = (q @ k.transpose(-1, -2)).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(latents.shape[0], latents.shape[1], -1)
        return self.to_out(out)


class PerceiverResampler(nn.Module):
    """OpenFlamingo's PerceiverResampler for one single-frame image per sample (T = F = 1)."""

    def __init__(self, dim: int, depth: int = 6, dim_head: int = DIM_HEAD, heads: int = 8, num_latents: int = 64,
                 ff_inner: int | None = None, max_num_media: int | None = None,
                 max_num_frames: int | None = None) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, dim))
        self.frame_embs = nn.Parameter(torch.randn(max_num_frames, dim)) if max_num_frames else None
        self.media_time_embs = nn.Parameter(torch.randn(max_num_media, 1, dim)) if max_num_media else None
        self.layers = nn.ModuleList([
            nn.ModuleList([PerceiverAttention(dim, dim_head, heads), _feed_forward(dim, ff_inner or 4 * dim)])
            for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, V, D) visual tokens of one image → (B, num_latents, D)."""
        if self.frame_embs is not None:
            x = x + self.frame_embs[0]
        if self.media_time_embs is not None:
            x = x + self.media_time_embs[0]
        latents = self.latents.unsqueeze(0).expand(x.shape[0], -1, -1)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm(latents)

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], source: str) -> "PerceiverResampler":
        """Infer the hyperparameters from the tensors, build, load strictly."""
        if "latents" not in sd:
            raise ValueError(f"{source}: no perceiver.latents tensor "
                             f"(is this an OpenFlamingo/Med-Flamingo checkpoint?)")
        num_latents, dim = sd["latents"].shape
        depth = 1 + max((int(m.group(1)) for k in sd if (m := re.match(r"layers\.(\d+)\.", k))), default=-1)
        inner = sd["layers.0.0.to_q.weight"].shape[0] if depth else DIM_HEAD * 8
        if inner % DIM_HEAD:
            raise ValueError(f"{source}: perceiver inner width {inner} is not a multiple of dim_head={DIM_HEAD}")
        ff_inner = sd["layers.0.1.1.weight"].shape[0] if depth else 4 * dim
        model = cls(dim, depth, DIM_HEAD, inner // DIM_HEAD, num_latents, ff_inner,
                    max_num_media=sd["media_time_embs"].shape[0] if "media_time_embs" in sd else None,
                    max_num_frames=sd["frame_embs"].shape[0] if "frame_embs" in sd else None)
        try:
            model.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise ValueError(f"{source}: perceiver tensors do not match OpenFlamingo's PerceiverResampler: {e}") from e
        return model.eval()


def load_perceiver_state(path: Path) -> dict[str, torch.Tensor]:
    """The `perceiver.*` tensors of a Med-Flamingo/OpenFlamingo checkpoint, prefix stripped, float32.
    .safetensors are read key by key; .pt with weights_only=True (mmap where the format allows it, so
    the LM's gigabytes of cross-attention weights are never read)."""
    def wanted(k: str) -> str | None:
        k = k[len("module."):] if k.startswith("module.") else k
        return k[len("perceiver."):] if k.startswith("perceiver.") else None

    out: dict[str, torch.Tensor] = {}
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            for k in f.keys():
                if (name := wanted(k)) is not None:
                    out[name] = f.get_tensor(k).float()
        return out
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and isinstance(obj.get("model_state_dict"), dict):  # OpenFlamingo training checkpoint
        obj = obj["model_state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(obj).__name__}")
    for k, v in obj.items():
        if isinstance(v, torch.Tensor) and (name := wanted(k)) is not None:
            out[name] = v.float()
    return out


class MedFlamingoEncoder(HFImageEncoder):
    def __init__(self, clip_folder: Path, checkpoint: Path, *, vision_tokens: str = "pre-ln",
                 threads: int | None = None) -> None:
        if vision_tokens not in VISION_TOKENS:
            raise ValueError(f"{NAME}: vision_tokens {vision_tokens!r} unknown; "
                             f"expected one of {sorted(VISION_TOKENS)}")
        transformers = import_transformers(NAME)
        read_config(NAME, clip_folder, {"clip", "clip_vision_model"})
        self.vision, _ = load_model(NAME, transformers.CLIPVisionModel, clip_folder)
        sd = load_perceiver_state(checkpoint)
        if not sd:
            raise ValueError(f"{NAME}: {checkpoint} holds no perceiver.* tensors (expected the Med-Flamingo "
                             f"checkpoint from {CHECKPOINT_REPO})")
        self.perceiver = PerceiverResampler.from_state_dict(sd, f"{NAME} ({checkpoint})")
        vcfg = self.vision.config
        dim = self.perceiver.latents.shape[1]
        if vcfg.hidden_size != dim:
            raise ValueError(f"{NAME}: CLIP width {vcfg.hidden_size} ({clip_folder}) != "
                             f"perceiver width {dim} ({checkpoint})")
        self.name, self.threads, self.vision_tokens = NAME, threads, vision_tokens
        self.clip_folder, self.checkpoint = clip_folder, checkpoint
        n = int(vcfg.image_size)
        self.spec = PreprocessSpec(
            size=n, resize="shortest_edge", interpolation="bicubic", mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD,
            channels=3,
            extra={"pipeline": "pil-uint8", "mode": "RGB", "resize_to": "shortest_edge", "resize_size": n, "crop": n,
                   "crop_offset": "round", "rescale": 1 / 255, "resample": "bicubic",
                   "processor": "open_clip openai CLIP eval transform (torchvision Resize/CenterCrop)",
                   "embedding": EMBEDDING, "vision_tokens": VISION_TOKENS[vision_tokens],
                   "num_latents": int(self.perceiver.latents.shape[0])})
        self.embedding_dim = int(dim)
        self.encoder_id = f"{NAME}@{files_digest(weight_files(NAME, clip_folder) + [checkpoint])}"

    def visual_tokens(self, batch: torch.Tensor) -> torch.Tensor:
        tokens = self.vision(pixel_values=batch).last_hidden_state[:, 1:]
        if self.vision_tokens == "post-ln":
            tokens = getattr(self.vision, "vision_model", self.vision).post_layernorm(tokens)
        return tokens

    def latents(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, 64, D): the visual tokens Med-Flamingo's language model cross-attends to."""
        return self.perceiver(self.visual_tokens(batch))

    def _embed(self, batch: torch.Tensor) -> torch.Tensor:
        return self.latents(batch).mean(dim=1)


@register(NAME, description="Med-Flamingo visual features: CLIP ViT-L/14 + its medical Perceiver resampler, "
                            "mean of 64 latents",
          input_size=224, embedding_dim=1024,
          license="CLIP ViT-L/14: MIT; Med-Flamingo checkpoint: see its model card (research use)",
          weights=f"local folder: {CLIP_DIR}/ from huggingface.co/{CLIP_REPO} + model.pt from "
                  f"huggingface.co/{CHECKPOINT_REPO}; never downloaded unless --allow-download")
def create(weights: Path | None = None, allow_download: bool = False, threads: int | None = None,
           vision_tokens: str = "pre-ln") -> MedFlamingoEncoder:
    if weights is None and allow_download:
        from huggingface_hub import hf_hub_download, snapshot_download

        log.warning("%s: downloading %s and %s from the Hugging Face Hub (--allow-download)", NAME, CLIP_REPO,
                    CHECKPOINT_REPO)
        clip = Path(snapshot_download(CLIP_REPO, allow_patterns=["config.json", "model.safetensors"]))
        return MedFlamingoEncoder(clip, Path(hf_hub_download(CHECKPOINT_REPO, "model.pt")),
                                  vision_tokens=vision_tokens, threads=threads)
    folder = require_files(NAME, weights, [f"{CLIP_DIR}/config.json"], WHERE,
                           any_of=[(f"{CLIP_DIR}/model.safetensors", f"{CLIP_DIR}/model.safetensors.index.json"),
                                   CHECKPOINT_FILES])
    checkpoint = next(folder / f for f in CHECKPOINT_FILES if (folder / f).is_file())
    return MedFlamingoEncoder(folder / CLIP_DIR, checkpoint, vision_tokens=vision_tokens, threads=threads)
