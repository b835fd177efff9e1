"""Evaluate a finished `radlens train-anatomy` run on held-out data, copy it into the package, write its model card.

Run: python scripts/finalize_anatomy.py runs/anatomy-v1 [--shared ../shared/data] [--compute "..."] [--notes FILE]

Held-out data only: lung-masks `test` patients (lungs) and NIH `eval` patients (heart, CTR); NIH `val` is reported
beside it for reference. The round-1 model (before self-refinement) is evaluated too, for the comparison row.
`--notes` is a markdown file appended to the card (e.g. what the overlays showed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from radlens.anatomy.api import CONFIG_FILE, PACKAGED_WEIGHTS, WEIGHTS_FILE, AnatomyModel
from radlens.anatomy.evaluate import heart_and_ctr, lung_heldout

CARD = """# radlens-anatomy v1 — model card

Lung (right/left) and heart segmentation for frontal chest radiographs, trained by radlens from random
initialisation (no pretrained weights). Ships inside the package (`{weights}`, {size_mb:.1f} MB) and loads with no
network; `radlens.anatomy.segment(images)` and `radlens segment DATA --out DIR` use it.

## Model
- `AnatomyUNet`: input 256x256 rearranged losslessly to 4 channels at 128x128 (pixel unshuffle), a U-Net of widths
  {widths} (two 3x3 conv + BN + ReLU per level, max-pool down, nearest-upsample + skip concat up), a head that
  re-reads the full-resolution input and predicts each 2x2 block of full-resolution logits (pixel shuffle).
  {params:,} parameters, {gflops:.2f} GFLOP per image. Two independent sigmoid outputs: lungs, heart (they may overlap:
  the human lung polygons include lung behind the heart).
- Preprocessing (hash `{phash}`): radlens.io decode (float [0,1], higher = brighter; DICOM modality/VOI applied,
  MONOCHROME1 inverted), squash to 256x256 (antialiased bilinear), (x − 0.5)/0.25.
- Post-processing: threshold 0.5; the two largest lung components (a merged one is cut at the column of least lung
  in the central band), assigned right/left by side (patient's right = image left); holes filled; the largest heart
  component. Masks are returned at the input's size (components decided at 256 px, outline from the upsampled
  probabilities). Measures: lung areas (px, cm² when the DICOM gives pixel spacing), right/left area ratio, CTR =
  the heart's widest row / the widest outer-edge-to-outer-edge lung row, heart/lung area ratio, and flags for
  implausible values (e.g. a lung running along the film's edge).
- Model id: `{model_id}`.

## Data
- Lungs: `../shared/data/lung-masks` (90 frontal CXRs of 48 patients, human lung masks; V7 Labs CC BY 4.0 on
  Cohen et al. / Hannover images, CC BY). Committed patient split `src/radlens/data/lung-masks-split.csv`
  (`scripts/make_lung_split.py`, stratified by view): **train {lung_train_images} images / {lung_train_patients}
  patients; test {lung_test_images} images / {lung_test_patients} patients, never used in training**.
- Heart (no human heart masks exist here; weak supervision only), all from the NIH `train` split of
  `src/radlens/data/nih-cxr14-split.csv`: {n_box} NIH Cardiomegaly boxes, {n_poly} ChestX-Det Cardiomegaly polygons
  (coarse outlines), anatomical priors, and round-1 pseudo-labels on {n_nih_train} NIH training images.
  NIH `val` and `eval` patients are never used in training.

## Training recipe (`radlens train-anatomy --lung-data ../shared/data/lung-masks --nih-data ../shared/data/nih-cxr14 --out runs/anatomy-v1`)
- Round 1 ({r1_epochs} epochs): human lung masks (each repeated x{rep1} per epoch) + NIH heart-annotated images.
  Lung loss: BCE + soft Dice (the masks' "ignore" pixels left out). Heart: outside an NIH box (grown by 3 % of the
  side) = not heart; every row and column of the box must contain heart (projection/tightness Dice, BoxInst-style);
  polygons as full targets; on lung-mask images, the heart is a known negative above the lungs' upper third, below
  their lowest point and outside their lateral extent.
- Round 2 ({r2_epochs} epochs, self-refinement, lr as below): the round-1 EMA model labels every NIH training image; confident
  (p > {hi} or < {lo}), anatomically plausible predictions become pseudo-labels (lungs: two plausible lungs; heart:
  largest component inside the thorax window with a plausible size, place and CTR, or inside its box when there is
  one); human lung masks stay (x{rep2}). Pseudo-labels: {pseudo}.{round3}
- Augmentation: affine (rotation ±12°, zoom 0.78–1.3 with black borders, aspect ±12 %, shear ±0.1, shift ±10 %),
  simulated devices (tubes, lines, wires as Bézier curves, solid or hollow; ECG electrodes; corner markers),
  patchy opacities, windowing, gamma 0.55–1.8, contrast/brightness, blur or sharpening, Gaussian noise. No flips
  (laterality is anatomy).
- AdamW (lr {lr} then {lr2}, 1-epoch warm-up, cosine), weight decay {wd}, batch {bs}, EMA of weights ({ema}); the EMA
  weights ship. No model selection on test or eval data: the last epoch ships.
- Compute: {compute}.

## Held-out results

### Lungs: Dice on the lung-masks test patients (never trained on)
| | mean | std | min | median | n |
|---|---|---|---|---|---|
| **per patient** (a patient's images averaged) | **{lp_mean:.3f}** | {lp_std:.3f} | {lp_min:.3f} | {lp_med:.3f} | {lp_n} |
| per image | {li_mean:.3f} | {li_std:.3f} | {li_min:.3f} | {li_med:.3f} | {li_n} |
| round-1 model (human lung masks + heart boxes only), per patient | {r1_lp_mean:.3f} | {r1_lp_std:.3f} | {r1_lp_min:.3f} | {r1_lp_med:.3f} | {lp_n} |
{r2_row}

By view (mean of patient means): {by_view}. Per patient (id: Dice, images): {per_patient}.

### Heart and cardiothoracic ratio on NIH `eval` patients (never trained on; {eval_images} images, {eval_patients} patients, {eval_pos} labelled Cardiomegaly)
- Heart bounding box vs NIH Cardiomegaly box: IoU mean {iou_mean:.3f} (median {iou_med:.3f}, std {iou_std:.3f},
  min {iou_min:.3f}; {iou_share:.0%} of {iou_n} boxes at IoU ≥ 0.5).
- Heart mask vs ChestX-Det Cardiomegaly polygon ({poly_n} images): Dice mean {poly_dice:.3f} (min {poly_min:.3f}); box IoU {poly_iou:.3f}.
- CTR vs the NIH Cardiomegaly label: **ROC AUC {auc:.3f} (95 % CI {auc_lo:.3f}–{auc_hi:.3f}, patient bootstrap)**;
  within PA: {auc_pa}; within AP: {auc_ap}. For context, the view alone (AP vs PA) gives AUC {view_auc:.3f}.
  Other readings of the same masks: CTR from the heart mask's bounding-box width (the two sides at different
  heights) AUC {auc_bbox:.3f} ({auc_bbox_lo:.3f}–{auc_bbox_hi:.3f}); heart/lung area ratio AUC {auc_area:.3f}
  ({auc_area_lo:.3f}–{auc_area_hi:.3f}).
  CTR > 0.5 rule: sensitivity {sens:.3f}, specificity {spec:.3f}. CTR median {ctr_pos:.3f} (Cardiomegaly) vs {ctr_neg:.3f} (other).
  CTR could not be measured on {ctr_missing} images; {ctr_flagged} images carry a plausibility flag.
- Round-1 model (before self-refinement), same images: box IoU mean {r1_iou:.3f}; CTR AUC {r1_auc:.3f}.{r2_heart}
- Lung masks that run along the film's edge (flag "lung reaches the image edge"; mostly air outside the body taken
  for lung on AP films, sometimes a cropped film): {edge_n} of {eval_images} eval images{edge_r2}.
- NIH `val` split (not trained on; used for two choices only: reading the heart's diameter from its widest single row
  instead of its bounding box, `measures.py`, and shipping round 3 over round 2: on val, edge flags 7 → 4 of 126,
  CTR AUC 0.715 → 0.730, area-ratio AUC 0.778 → 0.817): box IoU mean {val_iou:.3f} ({val_iou_n} boxes); CTR AUC {val_auc:.3f}.

## Intended use and limits
- For outlining lungs and heart, deriving lung areas and the CTR, conditioning and checking synthetic images; not a
  diagnostic device.
- The lung model learned from 59 images of 31 patients of one hospital (Hannover, COVID-19, many in intensive care)
  plus its own pseudo-labels on NIH; its held-out Dice is measured on 17 patients of that same source only. Another
  hospital's images will differ; check there before relying on it.
- The heart outline is weakly supervised: its targets were NIH boxes (loose, annotator-dependent), 10 coarse
  polygons, anatomical rules and the model's own predictions. Its extent (hence the CTR) is as good as the numbers
  above, not as good as a human outline; the heart's upper border (great vessels) and its lower border against the
  diaphragm are the least certain parts.
- The CTR is biased high: the heart masks are too wide, mostly at their lower corners, where they spread along the
  diaphragm and over the lower left lung (median CTR {ctr_neg:.2f} on images without the Cardiomegaly label, where a
  normal adult PA film is below 0.5). The textbook CTR > 0.5 threshold therefore flags almost everyone; use the CTR
  to rank or compare images, not with that threshold. The heart/lung area ratio separates the label better.
- NIH Cardiomegaly labels are text-mined and noisy; AUCs against them understate and overstate in unknown ways.
{notes}"""


def export_round(run: Path, k: int) -> Path:
    """A loadable folder for the round-k EMA weights (same config)."""
    folder = run / f"round{k}"
    folder.mkdir(exist_ok=True)
    state = torch.load(run / f"round{k}_ema.pt", weights_only=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / WEIGHTS_FILE))
    shutil.copy(run / CONFIG_FILE, folder / CONFIG_FILE)
    return folder


def _edge_count(ev: dict) -> int:
    return sum("reaches the image edge" in r["flags"] for r in ev["per_image"])


def _auc_text(d: dict | None) -> str:
    if not d:
        return "n/a"
    return f"{d['point']:.3f} ({d['low']:.3f}–{d['high']:.3f}; {d['images']} images, {d['positives']} positive)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--compute", default="2 vCPU AMD EPYC (AVX2), PyTorch 2.13 CPU, 2 threads")
    ap.add_argument("--notes", type=Path, default=None)
    ap.add_argument("--dest", type=Path, default=PACKAGED_WEIGHTS)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lung_root, nih_root = args.shared / "lung-masks", args.shared / "nih-cxr14"
    model = AnatomyModel(args.run)
    r1 = AnatomyModel(export_round(args.run, 1))
    r2 = AnatomyModel(export_round(args.run, 2)) if (args.run / "round2_ema.pt").exists() else None
    print("evaluating lungs", file=sys.stderr)
    lungs, lungs_r1 = lung_heldout(model, lung_root), lung_heldout(r1, lung_root)
    lungs_r2 = lung_heldout(r2, lung_root) if r2 else None
    print("evaluating heart / CTR (eval, val)", file=sys.stderr)
    ev, ev_r1, val = heart_and_ctr(model, nih_root, "eval"), heart_and_ctr(r1, nih_root, "eval"), heart_and_ctr(model, nih_root, "val")
    ev_r2 = heart_and_ctr(r2, nih_root, "eval") if r2 else None
    edges = {"eval": _edge_count(ev), "eval_round1": _edge_count(ev_r1), "eval_round2": _edge_count(ev_r2) if r2 else None}
    drop = lambda d: {k: v for k, v in d.items() if k != "per_image"}  # noqa: E731
    metrics = {"model_id": model.model_id, "lungs_test": lungs, "lungs_test_round1": drop(lungs_r1),
               "nih_eval": drop(ev), "nih_eval_round1": drop(ev_r1), "nih_val": drop(val)}
    metrics["edge_flags"] = edges
    if r2:
        metrics.update(lungs_test_round2=drop(lungs_r2), nih_eval_round2=drop(ev_r2))
    dest = args.dest
    dest.mkdir(parents=True, exist_ok=True)
    for f in (WEIGHTS_FILE, CONFIG_FILE):
        shutil.copy(args.run / f, dest / f)
    shutil.copy(args.run / "history.json", dest / "training_history.json")
    (dest / "metrics.json").write_text(json.dumps(metrics, indent=1))
    (args.run / "eval_per_image.json").write_text(json.dumps({"nih_eval": ev["per_image"], "nih_val": val["per_image"]}))
    cfg, tc = model.config, model.config["train_config"]
    lp, li, r1p = lungs["per_patient_summary"], lungs["per_image_summary"], lungs_r1["per_patient_summary"]
    pc = cfg["pseudo_labels"]
    pc3 = pc.get("round3")
    pc = pc.get("round2", pc)
    split_counts = {s: (sum(1 for r in lungs["per_image"]) if s == "test" else None) for s in ("test",)}
    from radlens.io.splits import load_split

    ls = load_split("lung-masks")
    tr = ls[ls.split == "train"]
    card = CARD.format(
        weights=f"src/radlens/anatomy/weights/{dest.name}/{WEIGHTS_FILE}", size_mb=(dest / WEIGHTS_FILE).stat().st_size / 1e6,
        widths=tuple(cfg["widths"]), params=cfg["parameters"], gflops=cfg["gflops_per_image"], phash=cfg["preprocess_hash"],
        model_id=AnatomyModel(dest).model_id, lung_train_images=len(tr), lung_train_patients=tr.patient_id.nunique(),
        lung_test_images=split_counts["test"], lung_test_patients=lungs["patients"],
        n_box=pc["heart_box"], n_poly=pc["heart_polygon"], n_nih_train=pc["images"] - pc["lungs_human"],
        r1_epochs=tc["round1_epochs"], r2_epochs=tc["round2_epochs"], rep1=tc["lung_repeat_r1"], rep2=tc["lung_repeat_r2"],
        hi=tc["pseudo_hi"], lo=round(1 - tc["pseudo_hi"], 2), pseudo=json.dumps({k: v for k, v in pc.items() if k != "seconds"}),
        lr=tc["lr"], lr2=tc["lr_round2"], wd=tc["weight_decay"], bs=tc["batch_size"], ema=tc["ema_decay"],
        compute=f"{args.compute}; {cfg['epoch_seconds'] / 60:.1f} min of epoch time in all",
        lp_mean=lp["mean"], lp_std=lp["std"], lp_min=lp["min"], lp_med=lp["median"], lp_n=lp["n"],
        li_mean=li["mean"], li_std=li["std"], li_min=li["min"], li_med=li["median"], li_n=li["n"],
        r1_lp_mean=r1p["mean"], r1_lp_std=r1p["std"], r1_lp_min=r1p["min"], r1_lp_med=r1p["median"],
        by_view=json.dumps(lungs["per_view_patient_mean"]),
        per_patient=", ".join(f"{r['patient_id']}: {r['dice']:.3f} ({r['images']})" for r in lungs["per_patient"]),
        eval_images=ev["images"], eval_patients=ev["patients"], eval_pos=ev["cardiomegaly_images"],
        iou_mean=ev["box_iou"]["mean"], iou_med=ev["box_iou"]["median"], iou_std=ev["box_iou"]["std"],
        iou_min=ev["box_iou"]["min"], iou_share=ev["box_iou"]["share_ge_0.5"], iou_n=ev["box_iou"]["n"],
        poly_n=ev["polygon"]["dice"].get("n", 0), poly_dice=ev["polygon"]["dice"].get("mean", float("nan")),
        poly_min=ev["polygon"]["dice"].get("min", float("nan")), poly_iou=ev["polygon"]["box_iou"].get("mean", float("nan")),
        auc=ev["ctr_auc"]["point"], auc_lo=ev["ctr_auc"]["low"], auc_hi=ev["ctr_auc"]["high"],
        auc_pa=_auc_text(ev["ctr_auc_by_view"].get("PA")), auc_ap=_auc_text(ev["ctr_auc_by_view"].get("AP")),
        view_auc=ev["view_ap_auc"], auc_bbox=ev["ctr_bbox_auc"]["point"], auc_bbox_lo=ev["ctr_bbox_auc"]["low"],
        auc_bbox_hi=ev["ctr_bbox_auc"]["high"], auc_area=ev["heart_lung_area_ratio_auc"]["point"],
        auc_area_lo=ev["heart_lung_area_ratio_auc"]["low"], auc_area_hi=ev["heart_lung_area_ratio_auc"]["high"], sens=ev["ctr_gt_0.5"]["sensitivity"], spec=ev["ctr_gt_0.5"]["specificity"],
        ctr_pos=ev["ctr_by_label"]["cardiomegaly"]["median"], ctr_neg=ev["ctr_by_label"]["other"]["median"],
        ctr_missing=ev["ctr_missing"], ctr_flagged=ev["ctr_flagged"],
        r1_iou=ev_r1["box_iou"]["mean"], r1_auc=ev_r1["ctr_auc"]["point"],
        val_iou=val["box_iou"]["mean"], val_iou_n=val["box_iou"]["n"], val_auc=val["ctr_auc"]["point"],
        notes=("\n" + args.notes.read_text()) if args.notes else "",
        r2_row=(f"| round-2 model (before round 3), per patient | {lungs_r2['per_patient_summary']['mean']:.3f} | "
                f"{lungs_r2['per_patient_summary']['std']:.3f} | {lungs_r2['per_patient_summary']['min']:.3f} | "
                f"{lungs_r2['per_patient_summary']['median']:.3f} | {lp['n']} |") if r2 else "",
        r2_heart=(f" Round-2 model: box IoU mean {ev_r2['box_iou']['mean']:.3f}; CTR AUC {ev_r2['ctr_auc']['point']:.3f}; "
                  f"heart/lung area ratio AUC {ev_r2['heart_lung_area_ratio_auc']['point']:.3f}.") if r2 else "",
        edge_n=_edge_count(ev), edge_r2=(f" (round-2 model: {_edge_count(ev_r2)})" if r2 else ""),
        round3=(f"\n- Round 3 ({tc['round3_epochs']} epochs, lr {tc['lr_round3']}): relabelled by the round-2 EMA model with the same "
                f"rules, plus: lung pseudo-labels whose lungs run along the film's edge are refused (air outside the body "
                f"taken for lung); augmentation adds simulated air outside the body beside the chest (a dark gap and an "
                f"arm band lateral to the lung, labelled background; p={tc['p_air']}). Pseudo-labels: "
                f"{json.dumps({k: v for k, v in pc3.items() if k != 'seconds'})}.") if pc3 else "")
    (dest / "MODEL_CARD.md").write_text(card)
    print(json.dumps({"model_id": metrics["model_id"], "lung_dice_per_patient": lp, "lung_dice_round1": r1p,
                      "box_iou": ev["box_iou"], "ctr_auc": ev["ctr_auc"], "ctr_auc_by_view": ev["ctr_auc_by_view"],
                      "view_ap_auc": ev["view_ap_auc"], "round1_eval": {"box_iou": ev_r1["box_iou"]["mean"],
                                                                          "ctr_auc": ev_r1["ctr_auc"]["point"]}},
                     indent=1))


if __name__ == "__main__":
    main()
