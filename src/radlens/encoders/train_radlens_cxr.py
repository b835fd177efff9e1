"""Train the radlens-cxr default encoder on the training split of NIH ChestX-ray14.

Recipe (why): with ~900 labelled images the model is data-limited, so the recipe leans on strong
geometric/intensity augmentation, weight decay, an EMA of the weights and model selection on a
patient-disjoint validation split. Training runs at a lower resolution than inference (FixRes:
random zoom during training makes lesions look larger, which a higher test resolution matches),
and the inference resolution is chosen on the validation split, never on the evaluation split.

Checkpoints every epoch (torch.save of tensors only, reloaded with weights_only=True) so a killed
run resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from radlens.encoders.base import PreprocessSpec, preprocess_pixels
from radlens.encoders.radlens_cxr import CONFIG_FILE, WEIGHTS_FILE, RadlensCXRNet
from radlens.io import load_image
from radlens.io.splits import load_split

log = logging.getLogger(__name__)

NIH_FINDINGS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema", "Fibrosis",
                "Hernia", "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia", "Pneumothorax"]
LABELS = NIH_FINDINGS + ["No Finding"]
CACHE_SIZE = 256  # decoded images are held at this size; augmentation samples crops from it


@dataclass
class TrainConfig:
    data: str
    out: str
    epochs: int = 60
    batch_size: int = 32
    train_size: int = 160
    eval_sizes: tuple[int, ...] = (160, 192, 224, 256)
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 2
    ema_decay: float = 0.998
    widths: tuple[int, ...] = (64, 128, 256, 512)
    stem: int = 32
    dropout: float = 0.3
    seed: int = 0
    threads: int = 2
    limit: int | None = None  # for tests: use only the first N training images
    version: str = "v1"
    labels: list[str] = field(default_factory=lambda: list(LABELS))


def label_matrix(finding_labels: pd.Series, labels: list[str]) -> np.ndarray:
    sets = finding_labels.fillna("").str.split("|").map(set)
    return np.array([[lab in s for lab in labels] for s in sets], dtype=np.float32)


def load_cached(paths: list[Path]) -> torch.Tensor:
    """Decode through radlens.io (the same decoder inference uses) and hold images at CACHE_SIZE."""
    spec = PreprocessSpec(size=CACHE_SIZE, mean=(0.0,), std=(1.0,))
    out = torch.empty(len(paths), 1, CACHE_SIZE, CACHE_SIZE, dtype=torch.float16)
    for i, p in enumerate(paths):
        out[i] = torch.from_numpy(preprocess_pixels(load_image(p).pixels, spec))
    return out


def augment(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Random zoom/rotation/shift/aspect, gamma, contrast, noise, cutout; x in [0,1], (N,1,H,W)."""
    n = x.shape[0]
    u = lambda lo, hi: torch.rand(n, generator=gen) * (hi - lo) + lo  # noqa: E731
    zoom, rot, asp = u(0.75, 1.0), u(-0.17, 0.17), u(0.9, 1.1)  # zoom<1 samples a smaller field = magnify
    tx, ty = u(-0.08, 0.08), u(-0.08, 0.08)
    cos, sin, sx, sy = torch.cos(rot), torch.sin(rot), zoom * asp, zoom / asp
    theta = torch.stack([torch.stack([sx * cos, -sy * sin, tx], 1),
                         torch.stack([sx * sin, sy * cos, ty], 1)], 1)
    grid = F.affine_grid(theta, (n, 1, size, size), align_corners=False)
    y = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    y = y.clamp(0, 1) ** u(0.7, 1.4).view(n, 1, 1, 1)
    c, b = u(0.8, 1.2).view(n, 1, 1, 1), u(-0.08, 0.08).view(n, 1, 1, 1)
    y = (y - 0.5) * c + 0.5 + b
    y = y + torch.randn(y.shape, generator=gen) * u(0, 0.03).view(n, 1, 1, 1)
    # cutout: one random box per image, filled with the image mean, so no single region is relied on
    for i in range(n):
        if torch.rand(1, generator=gen).item() < 0.5:
            h = int(size * (0.1 + 0.2 * torch.rand(1, generator=gen).item()))
            r0, c0 = torch.randint(0, size - h, (2,), generator=gen).tolist()
            y[i, :, r0:r0 + h, c0:c0 + h] = y[i].mean()
    return (y - 0.5) / 0.25


def resize_norm(x: torch.Tensor, size: int) -> torch.Tensor:
    x = x.float()
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x - 0.5) / 0.25


def macro_auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    aucs = [roc_auc_score(y[:, j], p[:, j]) for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    return float(np.mean(aucs)) if aucs else float("nan")


@torch.inference_mode()
def predict(model: RadlensCXRNet, x: torch.Tensor, size: int, bs: int = 64) -> np.ndarray:
    model.eval()
    outs = [torch.sigmoid(model(resize_norm(x[i:i + bs], size))) for i in range(0, len(x), bs)]
    return torch.cat(outs).numpy()


def train(cfg: TrainConfig) -> dict:
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(cfg.data)
    manifest = pd.read_csv(root / "manifest.csv", dtype={"patient_id": str})
    split = load_split("nih-cxr14")
    df = manifest.merge(split[["path", "split"]], on="path", how="left", validate="one_to_one")
    if df.split.isna().any():
        raise ValueError(f"{root}/manifest.csv has images not in the committed split: {df.path[df.split.isna()].head().tolist()}")
    tr, va = df[df.split == "train"], df[df.split == "val"]
    assert not (set(tr.patient_id) | set(va.patient_id)) & set(df[df.split == "eval"].patient_id)
    if cfg.limit:
        tr, va = tr.head(cfg.limit), va.head(max(8, cfg.limit // 4))
    t0 = time.time()
    xtr, xva = load_cached([root / p for p in tr.path]), load_cached([root / p for p in va.path])
    ytr, yva = torch.from_numpy(label_matrix(tr.finding_labels, cfg.labels)), label_matrix(va.finding_labels, cfg.labels)
    log.info("decoded %d train + %d val images in %.0fs", len(xtr), len(xva), time.time() - t0)

    model = RadlensCXRNet(cfg.widths, cfg.stem, len(cfg.labels), cfg.dropout)
    ema = RadlensCXRNet(cfg.widths, cfg.stem, len(cfg.labels), cfg.dropout)
    ema.load_state_dict(model.state_dict())
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(xtr) / cfg.batch_size)
    total, warm = cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm))))
    gen = torch.Generator().manual_seed(cfg.seed)
    history, start_epoch, best = [], 0, {"val_macro_auc": -1.0}
    ckpt = out / "checkpoint.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        model.load_state_dict(state["model"]), ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"]), sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        start_epoch = int(state["epoch"]) + 1
        history = json.loads((out / "history.json").read_text()) if (out / "history.json").exists() else []
        best = max(history, key=lambda h: h["val_macro_auc"], default=best)
        log.info("resumed from epoch %d", start_epoch)

    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        t_ep, losses = time.time(), []
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(perm), cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            if len(idx) < 2:
                continue
            xb = augment(xtr[idx], cfg.train_size, gen).contiguous(memory_format=torch.channels_last)
            loss = F.binary_cross_entropy_with_logits(model(xb), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            with torch.no_grad():
                d = min(cfg.ema_decay, (1 + sched.last_epoch) / (10 + sched.last_epoch))
                for pe, pm in zip(ema.state_dict().values(), model.state_dict().values()):
                    pe.copy_(pe * d + pm * (1 - d)) if pe.dtype.is_floating_point else pe.copy_(pm)
        aucs = {s: macro_auc(yva, predict(ema, xva, s)) for s in (cfg.train_size, max(cfg.eval_sizes))}
        rec = {"epoch": epoch, "loss": float(np.mean(losses)), "val_macro_auc": aucs[cfg.train_size],
               "val_macro_auc_hi": aucs[max(cfg.eval_sizes)], "seconds": time.time() - t_ep}
        history.append(rec)
        log.info("epoch %d loss %.4f val mAUC@%d %.4f @%d %.4f (%.0fs)", epoch, rec["loss"], cfg.train_size,
                 rec["val_macro_auc"], max(cfg.eval_sizes), rec["val_macro_auc_hi"], rec["seconds"])
        score = rec["val_macro_auc"] if np.isfinite(rec["val_macro_auc"]) else -0.5  # tiny smoke-test val sets
        if score > best["val_macro_auc"]:
            best = {**rec, "val_macro_auc": score}
            torch.save({k: v.clone() for k, v in ema.state_dict().items()}, out / "best_ema.pt")
        tmp = out / "checkpoint.pt.tmp"
        torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                    "sched": sched.state_dict(), "gen": gen.get_state(), "epoch": epoch}, tmp)
        os.replace(tmp, ckpt)
        (out / "history.json").write_text(json.dumps(history, indent=1))
    return finalize(cfg, out, xva, yva, history, best)


def finalize(cfg: TrainConfig, out: Path, xva: torch.Tensor, yva: np.ndarray, history: list, best: dict) -> dict:
    """Pick the inference resolution on the validation split and write config.json + model.safetensors."""
    from safetensors.torch import save_file

    model = RadlensCXRNet(cfg.widths, cfg.stem, len(cfg.labels), cfg.dropout)
    model.load_state_dict(torch.load(out / "best_ema.pt", weights_only=True))
    by_size = {s: macro_auc(yva, predict(model, xva, s)) for s in cfg.eval_sizes}
    size = max(by_size, key=by_size.get)
    log.info("val mAUC by inference size: %s -> %d", by_size, size)
    spec = PreprocessSpec(size=size)
    config = {"version": cfg.version, "architecture": "RadlensCXRNet", "widths": list(cfg.widths), "stem": cfg.stem,
              "dropout": cfg.dropout, "labels": cfg.labels, "embedding_dim": model.embedding_dim,
              "preprocess": spec.to_dict(), "preprocess_hash": spec.hash, "train_config": asdict(cfg),
              "best_epoch": best.get("epoch"), "val_macro_auc_by_size": by_size}
    tmp = out / (WEIGHTS_FILE + ".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, out / WEIGHTS_FILE)
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=1))
    return config
