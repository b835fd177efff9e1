"""`radlens synth fit-filter`: build the expert filter's artefact from real images only.

- finding expert: the default encoder's embeddings of NIH `train` images and a logistic-regression adapter on the
  14 NIH findings (`radlens train` machinery: nested CV, calibration, operating points at 90 % sensitivity and 90 %
  specificity), written to `finding-expert/`;
- anatomy thresholds: the anatomy expert on real images resized to the generator's size, Dice against human
  outlines (`anatomy_thresholds`); the 5th percentile per structure is the bar a generated image must clear.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from radlens.atomic import folder_swap
from radlens.synth.condition import resize_planes
from radlens.synth.expert_filter import dice


def _small(px: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    from radlens.synth.real_anatomy import pad_square

    sq, _ = pad_square(np.clip(px * 255 + 0.5, 0, 255).astype(np.uint8))
    return np.asarray(Image.fromarray(sq).resize((size, size), Image.LANCZOS), np.float32) / 255.0


def anatomy_thresholds(nih_root: Path, lung_root: Path | None, size: int, quantile: float = 5.0) -> dict:
    """Dice bars from real images at the generator's size: how well the expert's masks of a real image agree with
    human outlines (lungs: lung-masks test patients; heart: ChestX-Det Cardiomegaly polygons of NIH val/eval
    images, which the expert never trained on). A generated image must be as legible to the expert as a real one."""
    from PIL import Image, ImageDraw

    from radlens.anatomy import api as anatomy
    from radlens.io import load_image
    from radlens.io.splits import load_split
    from radlens.synth.real_anatomy import pad_square

    model = anatomy.load()
    out: dict = {"quantile": quantile}
    lung_scores = {"lung_right": [], "lung_left": []}
    if lung_root is not None:
        import pandas as pd

        from radlens.anatomy.postprocess import split_lungs

        man = pd.read_csv(lung_root / "manifest.csv")
        sp = load_split("lung-masks")
        man = man[man.path.isin(sp.path[sp.split == "test"])]
        imgs = [_small(load_image(lung_root / p).pixels, size) for p in man.path]
        for m, mp in zip(model.segment(imgs), man["mask"]):
            human = np.asarray(Image.open(lung_root / mp).convert("L")) == 255
            sq, _ = pad_square(human)
            right, left, _ = split_lungs(resize_planes(sq[None].astype(np.float32), size)[0] >= 0.5)
            lung_scores["lung_right"].append(dice(m.lung_right, right))
            lung_scores["lung_left"].append(dice(m.lung_left, left))
    heart_scores = []
    split = load_split("nih-cxr14")
    keep = set(split.path[split.split.isin(["val", "eval"])])
    recs = [r for r in json.loads((nih_root / "chestxdet.json").read_text()) if r["path"] in keep]
    polys, imgs = [], []
    for r in recs:
        for sym, poly in zip(r["syms"], r["polygons"]):
            if sym == "Cardiomegaly" and len(poly) >= 3:
                canvas = Image.new("1", (512, 512), 0)
                ImageDraw.Draw(canvas).polygon([tuple(p) for p in poly], fill=1)
                polys.append(resize_planes(np.asarray(canvas, np.float32)[None], size)[0] >= 0.5)
                imgs.append(_small(load_image(nih_root / r["path"]).pixels, size))
    for m, want in zip(model.segment(imgs) if imgs else [], polys):
        heart_scores.append(dice(m.heart, want))
    scores = {**lung_scores, "heart": heart_scores}
    out["dice_min"] = {k: round(float(np.percentile(v, quantile)), 4) if v else None for k, v in scores.items()}
    out["dice_real_median"] = {k: round(float(np.median(v)), 4) if v else None for k, v in scores.items()}
    out["calibration_images"] = {k: len(v) for k, v in scores.items()}
    return out


def fit_filter(nih_root: Path, out: Path, *, size: int, lung_root: Path | None = None,
               store: Path | None = None) -> dict:
    from radlens.adapters.targets import task_from_name
    from radlens.anatomy import api as anatomy
    from radlens.encoders import get
    from radlens.evaluate.runs import run_train
    from radlens.store.embed_job import embed_to_store

    enc = get("radlens-cxr")
    with tempfile.TemporaryDirectory() as scratch:
        if store is None:
            store = Path(scratch) / "store"
            embed_to_store(nih_root, store, enc)
        with folder_swap(out) as tmp:
            adapter = run_train(store, task=task_from_name("nih-findings"), adapter="logreg",
                                out=tmp / "finding-expert", split="nih-cxr14:train",
                                command="radlens synth fit-filter")
            cfg = {"kind": "radlens-synth-filter", "version": "v1", "size": size, "encoder": "radlens-cxr",
                   "encoder_id": enc.encoder_id, "anatomy_model": anatomy.load().model_id,
                   **anatomy_thresholds(nih_root, lung_root, size),
                   "finding_expert_cv": adapter.meta.get("cv_metrics", {})}
            (tmp / "filter.json").write_text(json.dumps(cfg, indent=1, default=str))
    return cfg
