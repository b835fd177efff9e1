"""Downstream test of synthetic pairs: does a segmenter trained on a few real masks get better on held-out real
images when synthetic (image, mask) pairs are added to its training set?

Two tasks, each with real held-out outlines the generator, the mask prior and the experts never saw:
- `lungs`: lung-field segmentation; real data = human masks of lung-masks (`train` split to draw from, `test`
  patients to measure on; V7 annotators, another hospital than NIH);
- `findings`: "where is the finding" segmentation (one channel, the union of finding masks); real data = NIH images
  with ChestX-Det polygons or NIH boxes drawn as ellipses inside the lungs (`train` split to draw from, the `eval`
  split's 262 annotated images to measure on). Boxes are loose outlines, so Dice here is low for any model; the
  comparison between arms is what it is for. Detection is measured on the same predictions: connected components of
  the predicted mask become boxes (score = mean probability), matched to the real components' boxes at IoU >= 0.3,
  average precision over all test images.
Arms, paired by seed (same real subset, same initialisation, same step budget):
- real only: `n_real` images drawn from the real training pool;
- real + synthetic: the same images, plus synthetic pairs (prompt -> masks -> generator -> expert filter, kept
  pairs only), batches drawn half real and half synthetic.
The segmenter is the anatomy network's architecture at reduced width (one output channel), trained from scratch
with BCE + soft Dice and affine jitter. Dice is measured per test image, averaged per patient, then over patients;
the comparison is the per-seed difference (real+synthetic minus real only) with its mean and range.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

PROMPTS = {
    "lungs": ("normal heart size, no effusion or pneumothorax", "moderate right pleural effusion with cardiomegaly",
              "large left pneumothorax", "bilateral lower zone consolidation", "right upper zone mass",
              "severe cardiomegaly with bilateral effusions"),
    # the finding groups the generator has planes for, in rough proportion to the real annotated images
    "findings": ("right pleural effusion", "left pleural effusion", "bilateral effusions", "large left pneumothorax",
                 "right apical pneumothorax", "left basal atelectasis", "right lower zone consolidation",
                 "bilateral lower zone pneumonia", "left upper zone infiltrate", "right upper zone mass",
                 "12 mm nodule in the left mid zone", "pleural thickening"),
}


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


def real_findings(root: Path, size: int, split: str) -> SegData:
    """NIH images of one split that have a finding outline, with the union of their finding planes as target (the
    generator's training conditioning: ChestX-Det polygons, NIH boxes as ellipses inside the lungs)."""
    from radlens.synth.condition import ANATOMY, PLANES
    from radlens.synth.gen_data import load_pairs

    p = load_pairs(root, size, (split,))
    t = p.planes[:, len(ANATOMY):len(PLANES)].max(1) > 127
    keep = np.flatnonzero(t.any((1, 2)))
    x = torch.from_numpy(p.images[keep].astype(np.float32) / 255.0)[:, None]
    tt = torch.from_numpy(t[keep].astype(np.float32))[:, None]
    return SegData(x, tt, torch.ones_like(tt), p.info.patient_id.astype(str).to_numpy()[keep])


def _target(sample, task: str, size: int) -> np.ndarray:
    from radlens.synth.condition import ANATOMY, PLANES, planes_from_sample, resize_planes

    if task == "lungs":
        lungs = (sample.channel("lung_right") | sample.channel("lung_left")).astype(np.float32)
        return resize_planes(lungs[None], size)[0] > 0.5
    return planes_from_sample(sample, size)[len(ANATOMY):len(PLANES)].max(0) > 0.5


def synthetic_pairs(n: int, size: int, *, task: str = "lungs", prompts: Sequence[str] | None = None,
                    generator: str | None = None, filter_dir: str | None = None, seed: int = 0
                    ) -> tuple[SegData, dict[str, Any]]:
    """Kept synthetic pairs (filtered by the expert filter) with the task's target from their conditioning masks,
    ~n drawn in all, spread over the task's prompts."""
    from radlens.synth.condition import resize_planes
    from radlens.synth.expert_filter import ExpertFilter
    from radlens.synth.generate_job import render_and_judge
    from radlens.synth.image_gen import ImageGenerator
    from radlens.synth.prompt import parse_prompt
    from radlens.synth.sampler import MaskSampler

    prompts = tuple(prompts or PROMPTS[task])
    sampler, gen, filt = MaskSampler(), ImageGenerator(generator), ExpertFilter(filter_dir)
    per = -(-n // len(prompts))
    images, masks, drawn, kept = [], [], 0, 0
    for k, p in enumerate(prompts):
        parsed = parse_prompt(p)
        samples = sampler.sample(parsed, n=per, seed=seed * 1000 + k)
        imgs, qc = render_and_judge(samples, parsed, sampler.prior, gen, filt, seed * 1000 + k)
        drawn += len(samples)
        for im, s, q in zip(imgs, samples, qc):
            if not q.passed:
                continue
            kept += 1
            images.append(im if im.shape[-1] == size else resize_planes(im[None], size)[0])
            masks.append(_target(s, task, size))
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
def predict(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.sigmoid(model(images[i:i + 32])) for i in range(0, len(images), 32)])


def dice_per_patient(model: torch.nn.Module, test: SegData, probs: torch.Tensor | None = None) -> dict[str, float]:
    """Mean Dice per patient (ignore pixels excluded), then summarised over patients."""
    p = (predict(model, test.images) if probs is None else probs) > 0.5
    t, w = test.targets > 0.5, test.weights > 0.5
    inter = (p & t & w).sum((1, 2, 3)).double()
    denom = ((p & w).sum((1, 2, 3)) + (t & w).sum((1, 2, 3))).double()
    per_image = (2 * inter / denom.clamp_min(1)).numpy()
    per_patient = np.array([per_image[test.patients == q].mean() for q in np.unique(test.patients)])
    return {"mean": float(per_patient.mean()), "std": float(per_patient.std()), "min": float(per_patient.min()),
            "patients": int(len(per_patient)), "images": int(len(per_image))}


def _components(mask: np.ndarray, prob: np.ndarray | None = None, min_px: int = 16) -> list[tuple[float, tuple]]:
    """(score, (x0, y0, x1, y1)) per connected component of at least `min_px` pixels (a 4x4 block at 128 px:
    smaller specks are noise, and the smallest real outlines, nodules, cover more)."""
    from scipy import ndimage

    lab, _ = ndimage.label(mask)
    out = []
    for k, sl in enumerate(ndimage.find_objects(lab), 1):
        region = lab[sl] == k
        if region.sum() < min_px:
            continue
        score = float(prob[sl][region].mean()) if prob is not None else 1.0
        out.append((score, (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)))
    return out


def _iou(a: tuple, b: tuple) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def box_ap(probs: torch.Tensor, targets: torch.Tensor, iou: float = 0.3) -> dict[str, float]:
    """Detection AP of predicted components against true components (one class), all-point interpolated (VOC):
    predictions ranked by score over all images, each true box matched at most once."""
    dets, n_true = [], 0
    for i in range(len(probs)):
        pr = probs[i, 0].numpy()
        truth = [b for _, b in _components(targets[i, 0].numpy() > 0.5, min_px=1)]
        n_true += len(truth)
        used = np.zeros(len(truth), bool)
        for score, box in sorted(_components(pr > 0.5, pr), key=lambda d: -d[0]):
            ious = [_iou(box, t) for t in truth]
            j = int(np.argmax(ious)) if ious else -1
            hit = j >= 0 and ious[j] >= iou and not used[j]
            if hit:
                used[j] = True
            dets.append((score, hit))
    dets.sort(key=lambda d: -d[0])
    tp = np.cumsum([h for _, h in dets]) if dets else np.zeros(0)
    recall = tp / max(n_true, 1)
    precision = tp / np.arange(1, len(dets) + 1) if dets else np.zeros(0)
    r = np.concatenate([[0.0], recall, [recall[-1] if len(recall) else 0.0]])
    p = np.concatenate([[1.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    ap = float(np.sum((r[1:] - r[:-1]) * p[1:]))
    return {"ap": ap, "iou": iou, "true_boxes": int(n_true), "detections": len(dets),
            "recall": float(recall[-1]) if len(recall) else 0.0}


def _evaluate(model: torch.nn.Module, test: SegData, task: str) -> dict[str, Any]:
    probs = predict(model, test.images)
    out = dice_per_patient(model, test, probs)
    if task == "findings":
        out["box"] = box_ap(probs, test.targets)
    return out


# task -> (description, real-data loader, (pool split, test split), default real images per seed, data folder)
TASKS = {
    "lungs": ("lung segmentation, lung-masks test patients (human masks)", real_lungs, ("train", "test"), 6,
              "lung-masks"),
    "findings": ("finding segmentation/detection, NIH eval images with boxes/polygons", real_findings,
                 ("train", "eval"), 32, "NIH"),
}


def downstream(task: str, *, lung_root: Path | None = None, nih_root: Path | None = None, n_real: int | None = None,
               n_synthetic: int = 192, seeds: Sequence[int] = (0, 1, 2), steps: int = 600, size: int = 128,
               generator: str | None = None, filter_dir: str | None = None, threads: int | None = None
               ) -> dict[str, Any]:
    """Both arms per seed for one task (`lungs` needs `lung_root`, `findings` needs `nih_root`)."""
    if threads:
        torch.set_num_threads(threads)
    t0 = time.time()
    if task not in TASKS:
        raise ValueError(f"unknown downstream task {task!r} ({', '.join(TASKS)})")
    name, loader, (train_split, test_split), default_real, folder_name = TASKS[task]
    root = {"lungs": lung_root, "findings": nih_root}[task]
    if root is None:
        raise ValueError(f"the {task} task needs the {folder_name} folder")
    pool, test = loader(root, size, train_split), loader(root, size, test_split)
    n_real = n_real or default_real
    synth, synth_info = synthetic_pairs(n_synthetic, size, task=task, generator=generator, filter_dir=filter_dir)
    runs = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        first = {}  # one image per patient first, so n_real images are n_real patients where the pool allows
        for i in rng.permutation(len(pool)):
            first.setdefault(pool.patients[i], int(i))
        firsts = set(first.values())
        order = list(first.values()) + [int(i) for i in rng.permutation(len(pool)) if i not in firsts]
        real = pool.take(np.array(order[:n_real]))
        row = {"seed": int(seed), "real_images": int(len(real)), "real_patients": int(len(set(real.patients)))}
        for arm, syn in (("real_only", None), ("real_plus_synthetic", synth)):
            model, losses = train_segmenter(real, syn, steps=steps, seed=seed)
            row[arm] = _evaluate(model, test, task)
            row[f"{arm}_loss_first_last"] = [round(float(np.mean(losses[:20])), 4), round(float(np.mean(losses[-20:])), 4)]
        row["difference"] = row["real_plus_synthetic"]["mean"] - row["real_only"]["mean"]
        runs.append(row)
    diffs = np.array([r["difference"] for r in runs])
    summary = {arm: {"mean_dice": float(np.mean([r[arm]["mean"] for r in runs])),
                     "seeds": [round(r[arm]["mean"], 4) for r in runs]} for arm in ("real_only", "real_plus_synthetic")}
    if task == "findings":
        for arm in summary:
            summary[arm]["box_ap"] = float(np.mean([r[arm]["box"]["ap"] for r in runs]))
            summary[arm]["box_ap_seeds"] = [round(r[arm]["box"]["ap"], 4) for r in runs]
    return {"task": name, "size": size, "n_real": n_real, "steps": steps, "test_images": int(len(test)),
            "synthetic": {**synth_info, "used": int(len(synth))}, "runs": runs, "summary": summary,
            "difference": {"mean": float(diffs.mean()), "min": float(diffs.min()), "max": float(diffs.max()),
                           "seeds_improved": int((diffs > 0).sum()), "seeds": int(len(diffs))},
            "seconds": round(time.time() - t0, 1)}
