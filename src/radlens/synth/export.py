"""Write generated (image, masks) pairs as a labelled dataset that segmentation and detection trainers load
directly, in one atomic folder swap (`radlens.atomic.folder_swap`: a crash leaves the previous folder or none).

    OUT/radlens.json                 kind, version, counts, categories, image sizes, prior ids, whether DICOM
    OUT/images/<id>.png              8-bit greyscale image (kept pairs only)
    OUT/masks/<id>/<channel>.png     one 0/255 mask per channel of the pair's sample, resized to the image with
                                     nearest neighbour (lung_right, lung_left, heart, then finding slugs)
    OUT/coco.json                    COCO detection + segmentation (kept pairs only)
    OUT/manifest.csv                 one row per kept pair; `path` column, so `radlens embed OUT` reads it
    OUT/dicom/<id>.dcm               (dicom=True) Secondary Capture, MONOCHROME2, 8-bit, marked synthetic
    OUT/rejected.csv                 pairs the filter rejected: id, prompt, reasons, QC scores
    OUT/rejected/<id>.png            their images, to audit the filter (no masks, no labels)

COCO conventions: categories have stable ids: findings 1..17 in `radlens.synth.vocab.FINDINGS` order (append-only),
anatomy 101 lung_right, 102 lung_left, 103 heart; ids do not depend on which findings a set contains. One
annotation per anatomy channel and one per placed finding instance (the sampler's `Instance`, e.g. a bilateral
effusion is two); an instance whose mask falls apart into pieces (the sampler sometimes draws a pneumothorax in two pieces) stays
one annotation whose `segmentation` lists one polygon per piece. Polygons follow the mask's pixel edges exactly
(integer vertices in COCO pixel coordinates, where pixel (x, y) covers [x, x+1] x [y, y+1]; see `mask_polygons`),
so pycocotools' `frPyObjects` + `decode` gives the mask back pixel for pixel (checked on sampler masks and random
blobs when this was written); polygons with fewer than 3 vertices or zero area are dropped, and holes are not
represented (COCO polygons cannot hold them). `bbox` = [x, y, w, h] of the mask's pixels, `area` = its pixel
count, `iscrowd` 0. Extra keys (`laterality`, `zone`, `severity`, `channel`) are ignored by COCO readers.

Manifest: `path` (images/<id>.png, relative to the manifest's folder, which is how `radlens.io.read_manifest`
resolves it), `id`, `prompt`, `findings` (|-joined), `negated`, `patient_id` (`synth-s<seed>-<index>`: the mask
sampler draws the same anatomy for the same seed and index, so grouped CV should keep such images together),
`sex`/`age`/`view` (the covariates the anatomy was drawn for), `mask_<channel>` (relative paths; empty = the sample
has no such channel, i.e. an all-background mask), `qc_passed`, `qc_reasons` ("; "-joined), `qc_<score>` for
scalar scores (one level of nested dicts flattened as `qc_<key>_<subkey>`), and `dicom_path` with dicom=True.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
from PIL import Image

from radlens.atomic import folder_swap
from radlens.synth.sampler import ANATOMY, MaskSample
from radlens.synth.vocab import FINDINGS

log = logging.getLogger(__name__)

KIND = "radlens-synth-dataset"
VERSION = 1
ANATOMY_CATEGORY_BASE = 101
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def categories() -> list[dict[str, Any]]:
    """COCO categories with stable ids (see the module docstring)."""
    cats = [{"id": i + 1, "name": f, "supercategory": "finding"} for i, f in enumerate(FINDINGS)]
    cats += [{"id": ANATOMY_CATEGORY_BASE + i, "name": a, "supercategory": "anatomy"} for i, a in enumerate(ANATOMY)]
    return cats


CATEGORY_ID = {c["name"]: c["id"] for c in categories()}
ANATOMY_SLUGS = tuple(slug(a) for a in ANATOMY)


@dataclass
class _Pair:
    id: str
    image: np.ndarray
    sample: MaskSample
    prompt: str
    qc: dict[str, Any]


def _field(pair: Any, name: str, index: int) -> Any:
    if isinstance(pair, Mapping):
        if name not in pair:
            raise ValueError(f"pair {index}: missing field {name!r} (expected id, image, sample, prompt, qc)")
        return pair[name]
    if not hasattr(pair, name):
        raise ValueError(f"pair {index}: missing attribute {name!r} (expected id, image, sample, prompt, qc)")
    return getattr(pair, name)


def _coerce(pair: Any, index: int) -> _Pair:
    pid, image, sample, prompt, qc = (_field(pair, k, index) for k in ("id", "image", "sample", "prompt", "qc"))
    pid = str(pid)
    if not _ID.match(pid):
        raise ValueError(f"pair {index}: id {pid!r} is not usable as a file name (expected letters, digits, '.', "
                         "'_', '-', not starting with '.' or '-')")
    image = np.asarray(image)
    if image.ndim != 2 or min(image.shape) < 1:
        raise ValueError(f"pair {pid}: image must be a 2-D array, got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"pair {pid}: image must be float in [0, 1], got dtype {image.dtype}")
    if not np.isfinite(image).all():
        raise ValueError(f"pair {pid}: image has non-finite pixels")
    lo, hi = float(image.min()), float(image.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"pair {pid}: image values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]")
    if not isinstance(sample, MaskSample):
        raise ValueError(f"pair {pid}: sample must be a radlens.synth.sampler.MaskSample, got {type(sample).__name__}")
    if not isinstance(qc, Mapping) or "passed" not in qc:
        raise ValueError(f"pair {pid}: qc must be a dict with 'passed' (bool), 'reasons' (list) and scores")
    return _Pair(pid, image.astype(np.float32, copy=False), sample, str(prompt), dict(qc))


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a bool mask to (H, W)."""
    if mask.shape == tuple(shape):
        return mask.astype(bool, copy=False)
    im = Image.fromarray(mask.astype(np.uint8) * 255).resize((shape[1], shape[0]), Image.NEAREST)
    return np.asarray(im) > 127


def mask_bbox(mask: np.ndarray) -> list[int]:
    """COCO [x, y, w, h] of the mask's pixels ([0, 0, 0, 0] when empty)."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return [0, 0, 0, 0]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def _shoelace(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _drop_collinear(p: np.ndarray) -> np.ndarray:
    """Remove vertices on a straight line between their neighbours (lossless for a closed polygon)."""
    if len(p) > 1 and np.allclose(p[0], p[-1]):
        p = p[:-1]
    while len(p) >= 3:
        prev, nxt = np.roll(p, 1, axis=0), np.roll(p, -1, axis=0)
        cross = (p[:, 0] - prev[:, 0]) * (nxt[:, 1] - p[:, 1]) - (p[:, 1] - prev[:, 1]) * (nxt[:, 0] - p[:, 0])
        keep = np.abs(cross) > 1e-9
        if keep.all():
            break
        p = p[keep]
    return p


def mask_polygons(mask: np.ndarray) -> list[list[int]]:
    """Outer outlines of a bool mask as COCO polygons ([x1, y1, x2, y2, ...], pixel corners at integers).

    The outline follows pixel edges exactly, so a polygon filled by pixel-centre test gives back the mask (less
    its holes). How: the 0.5 iso-line of the mask upsampled 2x (contourpy filled contours, which tell outer
    boundaries from holes; holes are dropped) runs along pixel edges and cuts each corner by a quarter pixel;
    rounding its vertices to integers puts every cut corner back on the pixel corner. Collinear vertices are
    removed; polygons with fewer than 3 vertices or zero area are dropped.
    """
    import contourpy

    if not mask.any():
        return []
    z = np.pad(np.kron(mask.astype(np.float32), np.ones((2, 2), np.float32)), 1)
    gen = contourpy.contour_generator(z=z, fill_type=contourpy.FillType.OuterOffset)
    points, offsets = gen.filled(0.5, 1.5)
    polys = []
    for pts, offs in zip(points, offsets):
        outer = np.rint(np.asarray(pts[offs[0]:offs[1]], np.float64) / 2 - 0.25)  # upsampled padded index -> COCO
        outer = outer[np.any(outer != np.roll(outer, 1, axis=0), axis=1)]  # repeated vertices (rounded corners)
        outer = _drop_collinear(outer)
        if len(outer) < 3 or abs(_shoelace(outer)) < 0.5:
            continue
        polys.append([int(v) for v in outer.reshape(-1)])
    return polys


def _annotation(mask: np.ndarray, cat: str, ann_id: int, image_id: int, **extra: Any) -> dict[str, Any] | None:
    polys = mask_polygons(mask)
    if not polys:
        return None
    return {"id": ann_id, "image_id": image_id, "category_id": CATEGORY_ID[cat], "segmentation": polys,
            "bbox": mask_bbox(mask), "area": int(mask.sum()), "iscrowd": 0, **extra}


def _qc_columns(qc: dict[str, Any]) -> dict[str, Any]:
    scores = qc.get("scores")
    if scores is None:  # scores given flat beside passed/reasons
        scores = {k: v for k, v in qc.items() if k not in ("passed", "reasons")}
    out: dict[str, Any] = {}
    for k, v in scores.items():
        if isinstance(v, Mapping):
            for k2, v2 in v.items():
                out[f"qc_{slug(str(k))}_{slug(str(k2))}"] = _scalar(v2)
        else:
            out[f"qc_{slug(str(k))}"] = _scalar(v)
    return out


def _scalar(v: Any) -> Any:
    if isinstance(v, (np.generic,)):
        v = v.item()
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, default=str)
    return v


def _reasons(qc: dict[str, Any]) -> list[str]:
    r = qc.get("reasons") or []
    return [str(r)] if isinstance(r, str) else [str(x) for x in r]


def write_dicom(pixels: np.ndarray, path: Path, *, pair_id: str, prompt: str) -> None:
    """8-bit MONOCHROME2 Secondary Capture, ConversionType SYN, comments saying it is synthetic."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    now = _dt.datetime.now()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName = f"SYNTHETIC^{pair_id}"[:64]
    ds.PatientID = f"synth-{pair_id}"[:64]
    ds.StudyDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.Modality = "OT"
    ds.ConversionType = "SYN"  # DICOM defined term: synthetic image
    ds.BurnedInAnnotation = "NO"
    ds.StudyDescription = "radlens synthetic chest radiograph"
    ds.SeriesDescription = "SYNTHETIC - not a patient image"
    ds.ImageComments = (f"SYNTHETIC IMAGE generated by radlens; not an image of a patient. "
                        f"Prompt: {prompt}")[:10240]
    ds.SeriesNumber = ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)


def _existing_kind(out: Path) -> str | None:
    try:
        return json.loads((out / "radlens.json").read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def export_dataset(pairs: Iterable[Any], out: Path, *, dicom: bool = False) -> dict[str, Any]:
    """Write `pairs` (dicts or objects with id, image, sample, prompt, qc) as a labelled dataset under `out`.

    `image`: 2-D float array in [0, 1] (any size; masks are resized to it with nearest neighbour); `sample`: the
    `MaskSample` the image was generated from; `qc`: {"passed": bool, "reasons": [...], "scores": {...}} (scores
    may also sit flat beside passed/reasons). Pairs whose qc did not pass go to rejected.csv only.

    All-or-nothing: the folder is built beside `out` and swapped in at the end; an exception (a bad pair, a full
    disk) leaves `out` as it was. An existing `out` is replaced only if it is empty or an earlier export (its
    radlens.json says so). Returns the radlens.json record.
    """
    import pandas as pd

    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and _existing_kind(out) != KIND)):
        raise FileExistsError(f"{out} exists and is not an earlier radlens synthetic dataset; refusing to replace it")
    seen: set[str] = set()
    coco_images, coco_anns, rows, rejected = [], [], [], []
    sizes, prior_ids, lost = set(), set(), []
    with folder_swap(out) as tmp:
        for d in ("images", "masks") + (("dicom",) if dicom else ()):
            (tmp / d).mkdir()
        for index, raw in enumerate(pairs):
            p = _coerce(raw, index)
            if p.id in seen:
                raise ValueError(f"pair {index}: duplicate id {p.id!r}")
            seen.add(p.id)
            pixels = to_uint8(p.image)
            qc_passed = bool(p.qc.get("passed"))
            reasons = _reasons(p.qc)
            s = p.sample
            base = {"id": p.id, "prompt": p.prompt, "findings": "|".join(s.channels[3:])}
            if not qc_passed:
                (tmp / "rejected").mkdir(exist_ok=True)
                Image.fromarray(pixels).save(tmp / "rejected" / f"{p.id}.png")
                rejected.append({"path": f"rejected/{p.id}.png", **base, "qc_reasons": "; ".join(reasons),
                                 **_qc_columns(p.qc)})
                continue
            h, w = pixels.shape
            sizes.add(f"{w}x{h}")
            prior_ids.add(s.prior_id)
            image_id = len(coco_images) + 1
            Image.fromarray(pixels).save(tmp / "images" / f"{p.id}.png")
            (tmp / "masks" / p.id).mkdir()
            mask_cols = {}
            for name, m in zip(s.channels, s.masks):
                rel = f"masks/{p.id}/{slug(name)}.png"
                Image.fromarray(resize_mask(m, (h, w)).astype(np.uint8) * 255).save(tmp / rel, optimize=True)
                mask_cols[f"mask_{slug(name)}"] = rel
            for k, name in enumerate(ANATOMY):
                a = _annotation(resize_mask(s.masks[k], (h, w)), name, len(coco_anns) + 1, image_id, channel=name)
                if a is None:
                    lost.append(f"{p.id}:{name}")
                else:
                    coco_anns.append(a)
            for j, inst in enumerate(s.instances):
                a = _annotation(resize_mask(inst.mask, (h, w)), inst.finding, len(coco_anns) + 1, image_id,
                                channel=inst.finding, instance_index=j, laterality=inst.side, zone=inst.zone,
                                severity=inst.severity)
                if a is None:
                    lost.append(f"{p.id}:{inst.finding}#{j}")
                else:
                    coco_anns.append(a)
            row = {"path": f"images/{p.id}.png", **base, "negated": "|".join(s.negated),
                   "patient_id": f"synth-s{s.seed[0]}-{s.seed[1]}", "sex": s.covariates.get("sex"),
                   "age": s.covariates.get("age"), "view": s.covariates.get("view"), **mask_cols,
                   "qc_passed": True, "qc_reasons": "; ".join(reasons), **_qc_columns(p.qc)}
            if dicom:
                write_dicom(pixels, tmp / "dicom" / f"{p.id}.dcm", pair_id=p.id, prompt=p.prompt)
                row["dicom_path"] = f"dicom/{p.id}.dcm"
            rows.append(row)
            coco_images.append({"id": image_id, "file_name": f"images/{p.id}.png", "width": w, "height": h,
                                "radlens_id": p.id, "prompt": p.prompt, "findings": s.channels[3:],
                                "negated": s.negated, "seed": list(s.seed), "prior_id": s.prior_id,
                                "covariates": s.covariates, "mask_size": list(s.masks.shape[1:])})
        if lost:
            log.warning("%d annotation(s) vanished when masks were resized to the image size: %s", len(lost),
                        ", ".join(lost[:10]))
        created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        coco = {"info": {"description": "radlens synthetic chest radiographs (not patient images)",
                         "version": str(VERSION), "date_created": created, "synthetic": True},
                "licenses": [], "images": coco_images, "annotations": coco_anns, "categories": categories()}
        (tmp / "coco.json").write_text(json.dumps(coco))
        _csv(pd, rows, tmp / "manifest.csv", ["path", "id", "prompt", "findings"])
        _csv(pd, rejected, tmp / "rejected.csv", ["path", "id", "prompt", "findings", "qc_reasons"])
        record = {"kind": KIND, "version": VERSION, "created": created, "images": len(rows),
                  "rejected": len(rejected), "annotations": len(coco_anns), "annotations_lost_in_resize": lost,
                  "image_sizes": sorted(sizes), "prior_ids": sorted(prior_ids), "dicom": dicom,
                  "categories": categories(), "synthetic": True,
                  "files": {"manifest": "manifest.csv", "coco": "coco.json", "rejected": "rejected.csv"}}
        (tmp / "radlens.json").write_text(json.dumps(record, indent=1))
    log.info("%s: %d images, %d rejected, %d annotations", out, len(rows), len(rejected), len(coco_anns))
    return record


def _csv(pd: Any, rows: list[dict[str, Any]], path: Path, first: list[str]) -> None:
    seen = list(dict.fromkeys(first + [k for r in rows for k in r]))
    group = lambda c: 0 if c in first else 3 if c == "dicom_path" else 2 if c.startswith("qc_") else 1  # noqa: E731
    cols = sorted(seen, key=lambda c: (group(c), c.startswith("mask_") and c[5:] not in ANATOMY_SLUGS))
    pd.DataFrame(rows, columns=cols).to_csv(path, index=False)
