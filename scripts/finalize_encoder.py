"""Copy a finished `radlens train-encoder` run into the package and write its model card.

Run: python scripts/finalize_encoder.py runs/encoder-v1 PROBE.json [--compute "..."]
The probe JSON comes from scripts/probe_encoder.py on a store of the NIH images embedded with the
new weights (evaluation split only).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from radlens.encoders.radlens_cxr import CONFIG_FILE, PACKAGED_WEIGHTS, WEIGHTS_FILE

CARD = """# radlens-cxr v1 — model card

The default encoder of radlens: a compact residual CNN trained by radlens, from random initialisation,
on chest radiographs only. It ships inside the package (`{weights}`, {size_mb:.1f} MB) and loads with no network.

## Model
- Architecture: `RadlensCXRNet` — 5x5 stride-2 stem (32 ch), then 4 stages of [3x3 stride-2 conv + BN + ReLU,
  residual 3x3 conv + BN] with widths {widths}; {params:.2f} M parameters; {gflops:.2f} GFLOP per image at {size} px.
- Embedding: global average pool ‖ global max pool of the last stage → **{dim}-d float32**.
- Preprocessing (hash `{phash}`): decode to float [0,1] with higher = brighter (MONOCHROME2; DICOM modality +
  VOI LUT/window applied, MONOCHROME1 inverted), squash to {size}x{size} with antialiased bilinear resize,
  normalise (x − 0.5) / 0.25, one channel.
- Encoder id: `{encoder_id}` (name + first 12 hex of the weights' sha256).

## Data
- NIH ChestX-ray14 subset in `../shared/data/nih-cxr14` (1,510 frontal images, 512 px, CC0; Wang et al. 2017).
- Committed patient-level split `src/radlens/data/nih-cxr14-split.csv` (`scripts/make_nih_split.py`): train
  {n_train} images, val {n_val} images (model selection), **eval {n_eval} images / {p_eval} patients ({eval_share:.1%} of
  patients), never used by encoder training in any form**.
- Labels: the 14 NIH findings + "No Finding" (text-mined, noisy).

## Training recipe (`radlens train-encoder ../shared/data/nih-cxr14 --out runs/encoder-v1`)
- Multi-label BCE on 15 outputs (a dropout-0.3 linear head on the embedding; the head is not part of the embedding).
- AdamW lr {lr} (2-epoch warm-up, cosine decay), weight decay {wd}, batch {bs}, {epochs} epochs, EMA of weights (decay {ema}).
- Trained at {train_size} px; augmentation: random zoom 0.75–1.0, rotation ±10°, shift ±8 %, aspect ±10 %, gamma
  0.7–1.4, contrast/brightness jitter, Gaussian noise, cutout. No horizontal flips (laterality is anatomy).
- Model selection: best epoch by EMA-model macro AUC on the val split (epoch {best_epoch}); inference size chosen
  on the val split among {eval_sizes}: {by_size}.
- Compute: {compute}.
- Decode: the run decoded NIH PNGs as Pillow `L` / 255, which is bit-identical to `radlens.io.load_image` for these
  8-bit PNGs (asserted by `tests/test_encoders.py::test_nih_decode_matches_the_training_decode`).

## Evaluation — linear probe on the evaluation split (never seen in training)
Protocol: {protocol}. {n_probe} images, {p_probe} patients.

| features | macro AUC, pooled out-of-fold (14 findings) | mean of the 5 folds' macro AUCs |
|---|---|---|
| **radlens-cxr v1 embedding** | **{auc:.3f}** | **{auc_fold:.3f}** |
| age + sex + view only (same protocol, same images) | {auc_meta:.3f} | {auc_meta_fold:.3f} |

Per finding (embedding probe): {per_finding}

Context from `../shared/docs/environment.md` (5-fold CV on all 1,510 images, not the same protocol): metadata only
0.611, raw pixels 0.628, HOG+LBP 0.645, a small CNN from scratch 0.662. The goal set for this encoder was ≥ 0.75;
it falls short. Why: ~880 training images with text-mined labels is very little data for learning radiograph
features from scratch; published encoders that reach 0.8+ on NIH were trained on 100k–1M images.

## Intended use and limits
- For embedding chest radiographs for lightweight adapters, retrieval and tests on a CPU; not a diagnostic device.
- Trained on one hospital's frontal CXRs (NIH Clinical Center), disease-enriched; expect shifts elsewhere.
- The embedding encodes acquisition shortcuts (AP vs PA view is easily read from it); check subgroup results.
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("probe", type=Path)
    ap.add_argument("--compute", default="2 vCPU AMD EPYC (AVX2), PyTorch 2.13 CPU, 2 threads")
    a = ap.parse_args()
    import torch

    from radlens.encoders.radlens_cxr import build_model
    from radlens.io.splits import load_split

    cfg = json.loads((a.run / CONFIG_FILE).read_text())
    hist = json.loads((a.run / "history.json").read_text())
    probe = json.loads(a.probe.read_text())
    PACKAGED_WEIGHTS.mkdir(parents=True, exist_ok=True)
    for f in (CONFIG_FILE, WEIGHTS_FILE):
        shutil.copy(a.run / f, PACKAGED_WEIGHTS / f)
    from radlens.encoders import get

    enc = get("radlens-cxr")
    model = build_model(cfg).eval()
    size = cfg["preprocess"]["size"]
    total = 0

    def hook(m, i, o):
        nonlocal total
        if isinstance(m, torch.nn.Conv2d):
            total += 2 * o.numel() * m.in_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups

    hs = [m.register_forward_hook(hook) for m in model.modules()]
    model.features(torch.zeros(1, 1, size, size))
    [h.remove() for h in hs]
    split = load_split("nih-cxr14")
    counts = split.split.value_counts()
    pp = split.groupby("split").patient_id.nunique()
    tc = cfg["train_config"]
    minutes = sum(h["seconds"] for h in hist) / 60
    card = CARD.format(
        weights=f"src/radlens/encoders/weights/{PACKAGED_WEIGHTS.name}/{WEIGHTS_FILE}",
        size_mb=(PACKAGED_WEIGHTS / WEIGHTS_FILE).stat().st_size / 1e6, widths=tuple(cfg["widths"]),
        params=sum(p.numel() for p in model.parameters() if p.ndim) / 1e6, gflops=total / 1e9, size=size,
        dim=cfg["embedding_dim"], phash=cfg["preprocess_hash"], encoder_id=enc.encoder_id, n_train=counts["train"],
        n_val=counts["val"], n_eval=counts["eval"], p_eval=pp["eval"], eval_share=pp["eval"] / pp.sum(), lr=tc["lr"],
        wd=tc["weight_decay"], bs=tc["batch_size"], epochs=tc["epochs"], ema=tc["ema_decay"], train_size=tc["train_size"],
        best_epoch=cfg["best_epoch"], eval_sizes=tc["eval_sizes"],
        by_size=", ".join(f"{k} px {v:.3f}" for k, v in cfg["val_macro_auc_by_size"].items()),
        compute=f"{a.compute}; {len(hist)} epochs, {minutes:.0f} min of epoch time (wall time shared with other work)",
        protocol=probe["protocol"], n_probe=probe["images"], p_probe=probe["patients"], auc=probe["encoder"]["macro_auc"],
        auc_meta=probe["metadata_only"]["macro_auc"], auc_fold=probe["encoder"]["macro_auc_fold_mean"],
        auc_meta_fold=probe["metadata_only"]["macro_auc_fold_mean"],
        per_finding=", ".join(f"{k} {v:.3f}" for k, v in probe["encoder"]["per_finding_auc"].items()))
    (PACKAGED_WEIGHTS / "MODEL_CARD.md").write_text(card)
    (PACKAGED_WEIGHTS / "probe_eval.json").write_text(json.dumps(probe, indent=1))
    (PACKAGED_WEIGHTS / "training_history.json").write_text(json.dumps(hist, indent=1))
    print(card)


if __name__ == "__main__":
    main()
