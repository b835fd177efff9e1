"""Train the radlens anatomy model (lungs + heart) and write its shipped artefact.

Recipe (why):
- Lungs: 59 human-masked images of 31 patients (the committed lung-masks train split) are all the human lung
  labels there are, so the recipe leans on heavy augmentation (geometry, intensity, devices, opacities) and a
  small network (~0.9 M parameters) trained for many short epochs, with an EMA of the weights.
- Heart (weak supervision, no human heart masks): round 1 learns from NIH Cardiomegaly boxes (outside = not
  heart; every row/column of the box holds heart: projection loss), ChestX-Det Cardiomegaly polygons (coarse
  outlines) and anatomical negatives on the lung-mask images. Round 2 (self-refinement) predicts on every NIH
  training-split image and keeps the confident, anatomically plausible part of each prediction as pseudo-labels
  for lungs and heart (inside the box when there is one), then fine-tunes on them plus the human lung masks.
- Only training splits are used: lung-masks `test` patients and NIH `val`/`eval` patients are never seen.

Checkpoints every epoch (tensors only, reloaded with weights_only=True): a killed run resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from radlens.anatomy import data as D
from radlens.anatomy.model import CHANNELS, AnatomyUNet, count_parameters, conv_gflops
from radlens.anatomy.postprocess import clean_heart, clean_lungs, thorax_window, touches_edge
from radlens.encoders.base import PreprocessSpec

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


@dataclass
class TrainConfig:
    lung_data: str
    nih_data: str
    out: str
    size: int = 256
    widths: tuple[int, ...] = (16, 24, 48, 96, 128)
    head: int = 16
    dropout: float = 0.1
    batch_size: int = 16
    round1_epochs: int = 30
    round2_epochs: int = 6
    lung_repeat_r1: int = 2  # human lung masks are repeated per epoch so they are not swamped
    lung_repeat_r2: int = 4
    round3_epochs: int = 4  # round 3: pseudo-labels from round 2, edge-touching lungs refused, outside-body air
    lr_round3: float = 5e-4
    p_air: float = 0.35
    lr: float = 3e-3
    lr_round2: float = 1e-3
    weight_decay: float = 1e-4
    ema_decay: float = 0.995
    proj_weight: float = 1.0
    pseudo_hi: float = 0.85  # pseudo-label confidence band: p > hi is 1, p < 1-hi is 0, in between ignored
    seed: int = 0
    threads: int = 2
    limit: int | None = None  # tests: first N images of each source
    version: str = "v1"


# ------------------------------------------------------------------------------------------------- losses


def _soft_dice(p: torch.Tensor, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """1 − Dice per sample over weighted pixels; (N,) ."""
    inter = (w * p * t).flatten(1).sum(1)
    denom = (w * (p + t)).flatten(1).sum(1)
    return 1 - (2 * inter + 1) / (denom + 1)


def _projection_dice(p: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Box tightness: the max-projections of the mask onto each axis should equal the box's (BoxInst)."""
    loss = 0
    for dim in (1, 2):
        pp, bb = p.amax(dim), box.amax(dim)
        loss = loss + 1 - (2 * (pp * bb).sum(1) + 1) / ((pp * pp).sum(1) + (bb * bb).sum(1) + 1)
    return loss


def losses(logits: torch.Tensor, t: torch.Tensor, has_box: torch.Tensor, proj_weight: float = 1.0
           ) -> dict[str, torch.Tensor]:
    pl, ph = logits[:, 0], logits[:, 1]
    out = {}
    for name, z, ti, wi in (("lung", pl, D.LUNG_T, D.LUNG_W), ("heart", ph, D.HEART_T, D.HEART_W)):
        tt, ww = t[:, ti], t[:, wi]
        bce = F.binary_cross_entropy_with_logits(z, tt, reduction="none")
        out[f"{name}_bce"] = (bce * ww).sum() / ww.sum().clamp(min=1.0)
        # Dice only where the structure is labelled positive somewhere (a box-only sample has no positives yet)
        has = (tt * ww).flatten(1).sum(1) > 0
        out[f"{name}_dice"] = (_soft_dice(torch.sigmoid(z[has]), tt[has], ww[has]).mean() if has.any()
                               else z.sum() * 0)
    if has_box.any():
        out["heart_proj"] = proj_weight * _projection_dice(torch.sigmoid(ph[has_box]), t[has_box, D.BOX]).mean()
    else:
        out["heart_proj"] = ph.sum() * 0
    out["total"] = sum(out.values())
    return out


# ------------------------------------------------------------------------------------------------- helpers


@torch.inference_mode()
def predict_probs(model: torch.nn.Module, images: torch.Tensor, bs: int = 32) -> torch.Tensor:
    """Sigmoid outputs (N,2,S,S) for cached [0,1] images."""
    model.eval()
    outs = []
    for i in range(0, len(images), bs):
        x = ((images[i:i + bs].float() - 0.5) / 0.25).contiguous(memory_format=torch.channels_last)
        outs.append(torch.sigmoid(model(x)).float())
    return torch.cat(outs) if outs else torch.zeros(0, 2, images.shape[-2], images.shape[-1])


def make_pseudo_labels(probs: torch.Tensor, base: D.AnatomySet, hi: float, refuse_edge: bool = False
                       ) -> tuple[D.AnatomySet, dict[str, int]]:
    """Round-2 targets from round-1 predictions (see module docstring); returns counts too.

    Human lung masks are kept as they are (and give the heart its anatomical window); elsewhere confident,
    plausible lungs become lung pseudo-labels. Heart: polygons are kept; inside an NIH box the cleaned prediction
    becomes the target (outside stays negative); elsewhere a plausible cleaned prediction inside the thorax
    window becomes the target, with confident pixels only, and the anatomical negatives around it.
    """
    targets = base.targets.clone()
    lo = 1 - hi
    counts = {"images": len(base), "lungs_human": 0, "lungs_accepted": 0, "heart_accepted": 0, "heart_box": 0,
              "heart_polygon": 0}
    for i in range(len(base)):
        pl, ph = probs[i, 0].numpy(), probs[i, 1].numpy()
        kind = base.info.heart.iloc[i]
        if base.info.source.iloc[i] == "lung-masks":
            lungs, ok_lungs = base.targets[i, D.LUNG_T].numpy().astype(bool), True
            counts["lungs_human"] += 1
        else:
            lungs, ok_lungs = clean_lungs(pl > 0.5)
            if ok_lungs and refuse_edge and touches_edge(lungs):  # round 3: outside-body air taken for lung
                ok_lungs = False
                counts["lungs_refused_edge"] = counts.get("lungs_refused_edge", 0) + 1
        if ok_lungs and base.info.source.iloc[i] != "lung-masks":
            conf = ((pl > hi) & lungs) | ((pl < lo) & ~lungs)
            targets[i, D.LUNG_T] = torch.from_numpy(lungs.astype(np.uint8))
            targets[i, D.LUNG_W] = torch.from_numpy(conf.astype(np.uint8))
            counts["lungs_accepted"] += 1
        if kind == "polygon":
            counts["heart_polygon"] += 1
            continue
        if kind == "box":
            box = base.targets[i, D.BOX].numpy().astype(bool)
            outside = base.targets[i, D.HEART_W].numpy().astype(bool)
            heart, _ = clean_heart((ph > 0.5) & ~outside)
            conf = ((ph > hi) & heart) | ((ph < lo) & ~heart & ~box)
            targets[i, D.HEART_T] = torch.from_numpy(heart.astype(np.uint8))
            targets[i, D.HEART_W] = torch.from_numpy((conf | outside).astype(np.uint8))
            counts["heart_box"] += 1
            continue
        if not ok_lungs:
            continue
        window = thorax_window(lungs)
        heart, ok_heart = clean_heart((ph > 0.5) & window, lungs)
        prior = ~window
        if ok_heart:
            conf = ((ph > hi) & heart) | ((ph < lo) & ~heart)
            targets[i, D.HEART_T] = torch.from_numpy(heart.astype(np.uint8))
            targets[i, D.HEART_W] = torch.from_numpy((conf | prior).astype(np.uint8))
            counts["heart_accepted"] += 1
        else:
            targets[i, D.HEART_W] = torch.from_numpy(prior.astype(np.uint8))
    return D.AnatomySet(base.images, targets, base.box, base.info), counts


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, pm in zip(ema.state_dict().values(), model.state_dict().values()):
            pe.copy_(pe * decay + pm * (1 - decay)) if pe.dtype.is_floating_point else pe.copy_(pm)


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------- training


def _round(cfg: TrainConfig, rnd: int, model: AnatomyUNet, ema: AnatomyUNet, ds: D.AnatomySet, repeat: np.ndarray,
           epochs: int, lr: float, out: Path, history: list, gen: torch.Generator, resume: dict | None,
           p_air: float = 0.0) -> None:
    """One training round over `ds`, each image repeated `repeat[i]` times per epoch."""
    index = torch.from_numpy(np.repeat(np.arange(len(ds)), repeat))
    steps_per_epoch = max(1, len(index) // cfg.batch_size)
    total, warm = epochs * steps_per_epoch, steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm))))
    start = 0
    if resume and resume["round"] == rnd:
        opt.load_state_dict(resume["opt"])
        sched.load_state_dict(resume["sched"])
        start = int(resume["epoch"]) + 1
    for epoch in range(start, epochs):
        model.train()
        t0, parts = time.time(), []
        perm = index[torch.randperm(len(index), generator=gen)]
        batches = [perm[s * cfg.batch_size:(s + 1) * cfg.batch_size] for s in range(steps_per_epoch)]
        # Augmentation runs one batch ahead in a second thread (torch releases the GIL), overlapping the step.
        with ThreadPoolExecutor(max_workers=1) as pool:
            nxt = pool.submit(D.augment, ds.images[batches[0]], ds.targets[batches[0]], gen, p_air=p_air)
            for s, idx in enumerate(batches):
                x, t = nxt.result()
                if s + 1 < len(batches):
                    nxt = pool.submit(D.augment, ds.images[batches[s + 1]], ds.targets[batches[s + 1]], gen, p_air=p_air)
                logits = model(x.contiguous(memory_format=torch.channels_last))
                ls = losses(logits.float(), t, ds.box[idx], cfg.proj_weight)
                opt.zero_grad(set_to_none=True)
                ls["total"].backward()
                opt.step()
                sched.step()
                _ema_update(ema, model, min(cfg.ema_decay, (1 + sched.last_epoch) / (10 + sched.last_epoch)))
                parts.append({k: float(v.detach()) for k, v in ls.items()})
        rec = {"round": rnd, "epoch": epoch, **{k: float(np.mean([p[k] for p in parts])) for k in parts[0]},
               "lr": float(sched.get_last_lr()[0]), "seconds": time.time() - t0, "images": int(len(perm))}
        history.append(rec)
        log.info("round %d epoch %d loss %.4f (lung %.3f/%.3f heart %.3f/%.3f proj %.3f) %.0fs", rnd, epoch,
                 rec["total"], rec["lung_bce"], rec["lung_dice"], rec["heart_bce"], rec["heart_dice"], rec["heart_proj"],
                 rec["seconds"])
        _atomic_save({"round": rnd, "epoch": epoch, "model": model.state_dict(), "ema": ema.state_dict(),
                      "opt": opt.state_dict(), "sched": sched.state_dict(), "gen": gen.get_state()},
                     out / "checkpoint.pt")
        (out / "history.json").write_text(json.dumps(history, indent=1))


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Both rounds, then the artefact (config.json + model.safetensors) in `cfg.out`. Resumes from `cfg.out`."""
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    lung_root, nih_root = Path(cfg.lung_data), Path(cfg.nih_data)
    lungs = D.load_lung_masks(lung_root, cfg.size, "train", cfg.limit)
    nih_ann = D.load_nih(nih_root, cfg.size, ("train",), annotated_only=True, limit=cfg.limit)
    log.info("round 1 data: %d lung-mask images (%d patients), %d NIH heart-annotated images (%s) in %.0fs",
             len(lungs), lungs.info.patient_id.nunique(), len(nih_ann), nih_ann.info.heart.value_counts().to_dict(),
             time.time() - t_start)

    model = AnatomyUNet(cfg.widths, cfg.head, len(CHANNELS), cfg.dropout).to(memory_format=torch.channels_last)
    ema = AnatomyUNet(cfg.widths, cfg.head, len(CHANNELS), cfg.dropout).to(memory_format=torch.channels_last)
    ema.load_state_dict(model.state_dict())
    for p in ema.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list = []
    resume = None
    ckpt = out / "checkpoint.pt"
    if ckpt.exists():
        resume = torch.load(ckpt, weights_only=True)
        model.load_state_dict(resume["model"])
        ema.load_state_dict(resume["ema"])
        gen.set_state(resume["gen"])
        history = json.loads((out / "history.json").read_text()) if (out / "history.json").exists() else []
        log.info("resuming after round %d epoch %d", resume["round"], resume["epoch"])

    r1 = D.AnatomySet.concat([lungs, nih_ann])
    rep1 = np.where(r1.info.source == "lung-masks", cfg.lung_repeat_r1, 1)
    if resume is None or resume["round"] == 1:
        _round(cfg, 1, model, ema, r1, rep1, cfg.round1_epochs, cfg.lr, out, history, gen, resume)
        resume = None
    if not (out / "round1_ema.pt").exists():  # kept for the model card's round-1 vs round-2 comparison
        _atomic_save({k: v.clone() for k, v in ema.state_dict().items()}, out / "round1_ema.pt")

    # Round 2 sees every NIH training-split image and the human lung masks again, with round-1 pseudo-labels.
    base = D.AnatomySet.concat([lungs, D.load_nih(nih_root, cfg.size, ("train",),
                                                  limit=cfg.limit * 4 if cfg.limit else None)])
    pseudo_file = out / "pseudo_labels.pt"
    if pseudo_file.exists():
        r2 = D.AnatomySet(base.images, torch.load(pseudo_file, weights_only=True)["targets"], base.box, base.info)
        counts = json.loads((out / "pseudo_labels.json").read_text())
    else:
        t0 = time.time()
        # labelled by the round-1 EMA model (the kind of model that ships), on un-augmented images
        r2, counts = make_pseudo_labels(predict_probs(ema, base.images), base, cfg.pseudo_hi)
        counts["seconds"] = round(time.time() - t0, 1)
        _atomic_save({"targets": r2.targets}, pseudo_file)
        (out / "pseudo_labels.json").write_text(json.dumps(counts, indent=1))
    log.info("round 2 pseudo-labels: %s", counts)

    rep2 = np.where(r2.info.source == "lung-masks", cfg.lung_repeat_r2, 1)
    if resume is None or resume["round"] == 2:
        _round(cfg, 2, model, ema, r2, rep2, cfg.round2_epochs, cfg.lr_round2, out, history, gen, resume)
        resume = None
    if cfg.round3_epochs:
        if not (out / "round2_ema.pt").exists():
            _atomic_save({k: v.clone() for k, v in ema.state_dict().items()}, out / "round2_ema.pt")
        # Round 3: relabel with the round-2 model, refusing lungs that run along the film's edge (air outside the
        # body taken for lung, the main lung failure seen on NIH AP films), and teach that failure away with the
        # outside-body-air augmentation.
        pseudo3 = out / "pseudo_labels_round3.pt"
        if pseudo3.exists():
            r3 = D.AnatomySet(base.images, torch.load(pseudo3, weights_only=True)["targets"], base.box, base.info)
            counts3 = json.loads((out / "pseudo_labels_round3.json").read_text())
        else:
            t0 = time.time()
            r3, counts3 = make_pseudo_labels(predict_probs(ema, base.images), base, cfg.pseudo_hi, refuse_edge=True)
            counts3["seconds"] = round(time.time() - t0, 1)
            _atomic_save({"targets": r3.targets}, pseudo3)
            (out / "pseudo_labels_round3.json").write_text(json.dumps(counts3, indent=1))
        log.info("round 3 pseudo-labels: %s", counts3)
        _round(cfg, 3, model, ema, r3, rep2, cfg.round3_epochs, cfg.lr_round3, out, history, gen, resume, cfg.p_air)
        counts = {"round2": counts, "round3": counts3}
    return finalize(cfg, out, ema, history, counts, time.time() - t_start)


def finalize(cfg: TrainConfig, out: Path, ema: AnatomyUNet, history: list, pseudo_counts: dict,
             wall_seconds: float) -> dict[str, Any]:
    from safetensors.torch import save_file

    spec = PreprocessSpec(size=cfg.size)
    model = ema.to(memory_format=torch.contiguous_format).eval()
    config = {"kind": "radlens-anatomy", "version": cfg.version, "architecture": "AnatomyUNet",
              "channels": list(CHANNELS), "structures": ["lung_right", "lung_left", "heart"],
              "widths": list(cfg.widths), "head": cfg.head, "dropout": cfg.dropout, "threshold": 0.5,
              "preprocess": spec.to_dict(), "preprocess_hash": spec.hash,
              "parameters": count_parameters(model), "gflops_per_image": round(conv_gflops(model, cfg.size), 3),
              "train_config": asdict(cfg), "pseudo_labels": pseudo_counts,
              "epoch_seconds": round(sum(h["seconds"] for h in history), 1), "wall_seconds": round(wall_seconds, 1)}
    tmp = out / (WEIGHTS_FILE + ".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, out / WEIGHTS_FILE)
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=1))
    return config
