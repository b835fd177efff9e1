"""Downstream test of synthetic pairs: does a segmenter trained on a few real masks get better on held-out real
images when synthetic (image, mask) pairs are added to its training set?

Task: lung-field segmentation, because it is the one task here with human masks on held-out patients (the
lung-masks `test` split, drawn by V7 annotators, never seen by the generator, the mask prior's fit or the anatomy
expert's selection). Arms, paired by seed (same real subset, same initialisation, same step budget):
- real only: `n_real` images drawn from the lung-masks `train` split;
- real + synthetic: the same images, plus synthetic pairs (prompt -> masks -> generator -> expert filter, kept
  pairs only), batches drawn half real and half synthetic.
The segmenter is the anatomy network's architecture at reduced width (one lung channel), trained from scratch with
BCE + soft Dice and affine jitter. Dice is measured per test image, averaged per patient, then over patients;
the comparison is the per-seed difference (real+synthetic minus real only) with its mean and range.

Pathology segmentation/detection is not measured here: the only real pathology outlines are 119 ChestX-Det
polygons over 15 findings, too few to hold out a test set that could show a difference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_PROMPTS = (
    "normal heart size, no effusion or pneumothorax",
    "moderate right pleural effusion with cardiomegaly",
    "large left pneumothorax",
    "bilateral lower zone consolidation",
    "right upper zone mass",
    "severe cardiomegaly with bilateral effusions",
)


@dataclass
class SegData:
    images: torch.Tensor  # (N, 1, S, S) float32 in [0, 1]
    targets: torch.Tensor  # (N, 1, S, S) float32 0/1
    weights: torch.Tensor  # (N, 1, S, S) float32; 0 where the mask says "ignore"
    patients: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def take(self, idx: np.ndarray) -> "SegData":
        return SegData(self.images[idx], self.targets[idx], self.weights[idx], self.patients[idx])


def real_lungs(root: Path, size: int, split: str) -> SegData:
    """Human lung masks of one lung-masks split at `size` px (values as the anatomy training reads them)."""
    from radlens.anatomy.data import LUNG_T, LUNG_W, load_lung_masks

    s = load_lung_masks(root, size, split)
    return SegData(s.images.float(), s.targets[:, LUNG_T:LUNG_T + 1].float(), s.targets[:, LUNG_W:LUNG_W + 1].float(),
                   s.info.patient_id.to_numpy())


def synthetic_lungs(n: int, size: int, *, prompts: Sequence[str] = DEFAULT_PROMPTS, generator: str | None = None,
                    filter_dir: str | None = None, seed: int = 0) -> tuple[SegData, dict[str, Any]]:
    """Kept synthetic pairs (filtered by the expert filter) with their conditioning lung masks, ~n in all."""
    from radlens.synth.checks import check_sample
    from radlens.synth.condition import resize_planes
    from radlens.synth.expert_filter import ExpertFilter
    from radlens.synth.image_gen import ImageGenerator
    from radlens.synth.prompt import parse_prompt
    from radlens.synth.sampler import MaskSampler

    sampler, gen, filt = MaskSampler(), ImageGenerator(generator), ExpertFilter(filter_dir)
    per = -(-n // len(prompts))
    images, masks, drawn, kept = [], [], 0, 0
    for k, p in enumerate(prompts):
        parsed = parse_prompt(p)
        samples = sampler.sample(parsed, n=per, seed=seed * 1000 + k)
        imgs = gen.generate(samples, seed=seed * 1000 + k)
        viol = [[str(v) for v in check_sample(s, parsed, sampler.prior)] for s in samples]
        qc = filt.judge(imgs, samples, mask_violations=viol)
        drawn += len(samples)
        for im, s, q in zip(imgs, samples, qc):
            if not q.passed:
                continue
            kept += 1
            lungs = (s.channel("lung_right") | s.channel("lung_left")).astype(np.float32)
            if im.shape[-1] != size:
                im = resize_planes(im[None], size)[0]
            images.append(im)
            masks.append(resize_planes(lungs[None], size)[0] > 0.5)
    x = torch.from_numpy(np.stack(images)[:, None].astype(np.float32))
    t = torch.from_numpy(np.stack(masks)[:, None].astype(np.float32))
    info = {"drawn": drawn, "kept": kept, "generator_id": gen.model_id, "prompts": list(prompts)}
    return SegData(x, t, torch.ones_like(t), np.array([f"synthetic-{i}" for i in range(len(x))])), info


def _model(seed: int) -> torch.nn.Module:
    from radlens.anatomy.model import AnatomyUNet

    torch.manual_seed(seed)
    return AnatomyUNet(widths=(12, 16, 32, 64), head=12, n_out=1)


def _loss(logits: torch.Tensor, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    bce = (F.binary_cross_entropy_with_logits(logits, t, reduction="none") * w).sum() / w.sum().clamp_min(1)
    p = torch.sigmoid(logits) * w
    dice = 1 - (2 * (p * t).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + (t * w).sum((1, 2, 3)) + 1)
    return bce + dice.mean()


def train_segmenter(real: SegData, synthetic: SegData | None, *, steps: int, batch_size: int = 8, seed: int = 0,
                    lr: float = 3e-3) -> tuple[torch.nn.Module, list[float]]:
    """Train from scratch; with `synthetic`, each batch is half real, half synthetic. Returns (model, losses)."""
    from radlens.synth.gen_train import jitter

    model = _model(seed)
    opt = torch.optim.AdamW(model.parameters(), lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.15)
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for _ in range(steps):
        if synthetic is None:
            parts = [real.take(rng.integers(0, len(real), batch_size))]
        else:
            half = batch_size // 2
            parts = [real.take(rng.integers(0, len(real), half)),
                     synthetic.take(rng.integers(0, len(synthetic), batch_size - half))]
        x = torch.cat([p.images for p in parts])
        tw = torch.cat([torch.cat([p.targets, p.weights], 1) for p in parts])
        x, tw = jitter(x, tw, g)
        gamma = torch.exp((torch.rand(len(x), 1, 1, 1, generator=g) - 0.5) * 0.6)  # contrast varies between sites
        x = x.clamp(0, 1) ** gamma
        t, w = (tw[:, :1] > 0.5).float(), (tw[:, 1:] > 0.5).float()
        loss = _loss(model(x), t, w)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    model.eval()
    return model, losses


@torch.no_grad()
def dice_per_patient(model: torch.nn.Module, test: SegData) -> dict[str, float]:
    """Mean Dice per patient (ignore pixels excluded), then summarised over patients."""
    p = torch.cat([torch.sigmoid(model(test.images[i:i + 32])) for i in range(0, len(test), 32)]) > 0.5
    t, w = test.targets > 0.5, test.weights > 0.5
    inter = (p & t & w).sum((1, 2, 3)).double()
    denom = ((p & w).sum((1, 2, 3)) + (t & w).sum((1, 2, 3))).double()
    per_image = (2 * inter / denom.clamp_min(1)).numpy()
    per_patient = np.array([per_image[test.patients == q].mean() for q in np.unique(test.patients)])
    return {"mean": float(per_patient.mean()), "std": float(per_patient.std()), "min": float(per_patient.min()),
            "patients": int(len(per_patient)), "images": int(len(per_image))}


def lung_downstream(lung_root: Path, *, n_real: int = 6, n_synthetic: int = 192, seeds: Sequence[int] = (0, 1, 2),
                    steps: int = 300, size: int = 128, generator: str | None = None, filter_dir: str | None = None,
                    threads: int | None = None) -> dict[str, Any]:
    """Both arms per seed on the lung-masks test patients; see the module docstring."""
    if threads:
        torch.set_num_threads(threads)
    t0 = time.time()
    pool, test = real_lungs(lung_root, size, "train"), real_lungs(lung_root, size, "test")
    synth, synth_info = synthetic_lungs(n_synthetic, size, generator=generator, filter_dir=filter_dir)
    runs = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        patients = rng.permutation(np.unique(pool.patients))
        chosen = np.flatnonzero(np.isin(pool.patients, patients[:n_real]))[:n_real]  # n_real images, distinct patients first
        if len(chosen) < n_real:
            chosen = rng.choice(len(pool), n_real, replace=False)
        real = pool.take(chosen)
        row = {"seed": int(seed), "real_images": int(len(real))}
        for arm, syn in (("real_only", None), ("real_plus_synthetic", synth)):
            model, losses = train_segmenter(real, syn, steps=steps, seed=seed)
            row[arm] = dice_per_patient(model, test)
            row[f"{arm}_loss_first_last"] = [round(float(np.mean(losses[:20])), 4), round(float(np.mean(losses[-20:])), 4)]
        row["difference"] = row["real_plus_synthetic"]["mean"] - row["real_only"]["mean"]
        runs.append(row)
    diffs = np.array([r["difference"] for r in runs])
    summary = {arm: {"mean_dice": float(np.mean([r[arm]["mean"] for r in runs])),
                     "seeds": [round(r[arm]["mean"], 4) for r in runs]} for arm in ("real_only", "real_plus_synthetic")}
    return {"task": "lung segmentation, lung-masks test patients (human masks)", "size": size, "n_real": n_real,
            "steps": steps, "synthetic": {**synth_info, "used": int(len(synth))}, "runs": runs, "summary": summary,
            "difference": {"mean": float(diffs.mean()), "min": float(diffs.min()), "max": float(diffs.max()),
                           "seeds_improved": int((diffs > 0).sum()), "seeds": int(len(diffs))},
            "seconds": round(time.time() - t0, 1)}
