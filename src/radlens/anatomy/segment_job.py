"""The segment job: discover → hash → decode (thread pool) → batched anatomy model → masks, overlays, CSV, SEG.

Output folder:

    masks/<id>_lung_right.png, <id>_lung_left.png, <id>_heart.png   0/1 8-bit PNG at the input's size
    overlays/<id>.png                                                outlines + CTR diameters (long side ≤ 1024)
    seg/<id>.dcm                                                     DICOM SEG, for DICOM inputs only
    measures.csv                                                     one row per segmented image
    quarantine.csv                                                   files that could not be used, and why
    radlens.json                                                     model id, preprocessing, command, counts

`<id>` is the file's name without extension, or its path relative to the inputs' common folder when two
inputs share a name. Re-running over the same inputs skips images whose row (same content hash) and mask files
are already there, so a killed run resumes; every file is written atomically.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from radlens.anatomy.api import STRUCTURES, AnatomyMasks, AnatomyModel
from radlens.anatomy.measures import MEASURE_COLUMNS
from radlens.io import DecodeError, ImageRecord, QuarantineReport, discover, load_image
from radlens.store.embed_job import file_sha256

log = logging.getLogger(__name__)

CSV_NAME = "measures.csv"
QUARANTINE_NAME = "quarantine.csv"
INFO_NAME = "radlens.json"
ROW_COLUMNS = ("id", "path", "sha256", "format", "height", "width", "pixel_spacing_row", "pixel_spacing_col",
               *MEASURE_COLUMNS, "lungs_uncertain", "heart_uncertain", "masks", "overlay", "dicom_seg")


@dataclass
class SegmentSummary:
    discovered: int
    segmented: int
    cached: int
    quarantined: int
    flagged: int
    seconds: float
    out: str
    measures_csv: str
    quarantine_csv: str

    @property
    def images_per_s(self) -> float:
        return self.segmented / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "images_per_s": self.images_per_s}


def image_ids(records: Sequence[ImageRecord]) -> list[str]:
    """File stems, or common-folder-relative paths (``a__b__name``) when stems collide."""
    stems = [r.path.stem for r in records]
    if len(set(stems)) == len(stems):
        return stems
    root = Path(os.path.commonpath([str(r.path.parent) for r in records])) if records else Path(".")
    return [str(r.path.relative_to(root).with_suffix("")).replace(os.sep, "__") for r in records]


def _atomic_png(arr: np.ndarray | Image.Image, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    (arr if isinstance(arr, Image.Image) else Image.fromarray(arr)).save(tmp, format="PNG", compress_level=1)
    os.replace(tmp, path)


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=ROW_COLUMNS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_rows(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as fh:
        return {r["path"]: r for r in csv.DictReader(fh) if r.get("path")}


def segment_to_folder(source: str | Path | Sequence[str | Path], out: str | Path, model: AnatomyModel, *,
                      batch_size: int = 16, workers: int = 2, limit: int | None = None, overlays: bool = True,
                      dicom_seg: bool = True, progress: Callable[[int, int], None] | None = None,
                      command: str | None = None) -> SegmentSummary:
    """Segment every image of `source` into `out` (layout in the module docstring); resumable."""
    t0 = time.perf_counter()
    out = Path(out)
    for sub in ("masks", "overlays", "seg"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    records = discover(source)
    if limit is not None:
        records = records[:limit]
    ids = image_ids(records)
    qpath, cpath = out / QUARANTINE_NAME, out / CSV_NAME
    quarantine = QuarantineReport()
    quarantine.merge_existing(qpath)
    previous = _read_rows(cpath)
    rows: dict[str, dict[str, Any]] = {}
    total, done_n = len(records), 0
    n_seg = n_cached = n_quar = n_flag = 0
    version = str(model.config.get("version", "v1"))

    def tick(n: int = 1) -> None:
        nonlocal done_n
        done_n += n
        if progress:
            progress(done_n, total)

    def outputs_exist(image_id: str) -> bool:
        return all((out / "masks" / f"{image_id}_{s}.png").is_file() for s in STRUCTURES)

    def prepare(i: int) -> tuple[int, str | None, Any]:
        rec = records[i]
        try:
            h = file_sha256(rec.path)
        except OSError as e:
            return i, None, DecodeError(rec.path, f"cannot read file: {e.strerror or e}")
        prev = previous.get(str(rec.path))
        if prev and prev.get("sha256") == h and outputs_exist(ids[i]):
            return i, h, None
        try:
            img = load_image(rec.path)
            return i, h, (img, model.preprocess(img.pixels))
        except DecodeError as e:
            return i, h, e

    def write(i: int, h: str, img: Any, masks: AnatomyMasks) -> dict[str, Any]:
        rec, image_id = records[i], ids[i]
        m = masks.measures()
        names = []
        for s in STRUCTURES:
            p = out / "masks" / f"{image_id}_{s}.png"
            _atomic_png(getattr(masks, s).astype(np.uint8), p)
            names.append(str(p.relative_to(out)))
        row: dict[str, Any] = {"id": image_id, "path": str(rec.path), "sha256": h, "format": img.meta.get("format"),
                               "height": masks.shape[0], "width": masks.shape[1]}
        spacing = img.meta.get("pixel_spacing") or (None, None)
        row["pixel_spacing_row"], row["pixel_spacing_col"] = spacing[0], spacing[1]
        row.update(m.to_row())
        unc = masks.uncertainty()
        row["lungs_uncertain"], row["heart_uncertain"] = round(unc["lungs"], 4), round(unc["heart"], 4)
        row["masks"] = ";".join(names)
        if overlays:
            from radlens.anatomy.render import overlay

            p = out / "overlays" / f"{image_id}.png"
            _atomic_png(overlay(img.pixels, masks, m, title=image_id), p)
            row["overlay"] = str(p.relative_to(out))
        if dicom_seg and img.meta.get("format") == "dicom":
            from radlens.anatomy.dicom_seg import write_dicom_seg

            p = out / "seg" / f"{image_id}.dcm"
            try:
                write_dicom_seg(rec.path, masks, p, model_id=model.model_id, version=version)
                row["dicom_seg"] = str(p.relative_to(out))
            except Exception as e:  # noqa: BLE001 - one unusable header must not stop the batch
                row["dicom_seg"] = ""
                row["_seg_error"] = f"{type(e).__name__}: {e}"
        return row

    def flush() -> None:
        ordered = [rows[str(r.path)] for r in records if str(r.path) in rows]
        _write_csv(ordered, cpath)
        quarantine.write(qpath)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        window: deque[Future] = deque()
        writes: deque[Future] = deque()
        batch: list[tuple[int, str, Any, np.ndarray]] = []

        def collect(block: bool) -> None:
            nonlocal n_flag
            while writes and (block or writes[0].done()):
                row = writes.popleft().result()
                err = row.pop("_seg_error", None)
                if err:
                    quarantine.add(row["path"], err, stage="dicom-seg")
                rows[row["path"]] = row
                n_flag += bool(row.get("flags"))
                tick()

        def run_batch() -> None:
            nonlocal n_seg
            if not batch:
                return
            probs = model.probabilities(np.stack([b[3] for b in batch]))
            for (i, h, img, _), p in zip(batch, probs):
                masks = model.masks(p, img.pixels.shape, img.meta.get("pixel_spacing"))
                writes.append(pool.submit(write, i, h, img, masks))
            n_seg += len(batch)
            batch.clear()
            collect(block=False)

        it = iter(range(len(records)))
        lookahead = max(2 * batch_size, 4 * workers)
        for i in it:
            window.append(pool.submit(prepare, i))
            if len(window) >= lookahead:
                break
        since_flush = 0
        while window:
            i, h, res = window.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                window.append(pool.submit(prepare, nxt))
            path = str(records[i].path)
            if isinstance(res, DecodeError):
                quarantine.add(records[i].path, res.reason, stage="decode")
                rows.pop(path, None)
                n_quar += 1
                tick()
            elif res is None:
                rows[path] = previous[path]
                n_cached += 1
                tick()
            else:
                quarantine.discard(records[i].path)
                batch.append((i, h, res[0], res[1]))
                if len(batch) >= batch_size:
                    run_batch()
                    since_flush += batch_size
                    if since_flush >= 256:
                        collect(block=True)
                        flush()
                        since_flush = 0
        run_batch()
        collect(block=True)
    flush()
    summary = SegmentSummary(discovered=total, segmented=n_seg, cached=n_cached, quarantined=n_quar, flagged=n_flag,
                             seconds=time.perf_counter() - t0, out=str(out), measures_csv=str(cpath),
                             quarantine_csv=str(qpath))
    info = {"kind": "radlens-segmentation", "model_id": model.model_id, "model_folder": str(model.folder),
            "preprocess": model.spec.to_dict(), "preprocess_hash": model.spec.hash, "structures": list(STRUCTURES),
            "threshold": model.threshold, "command": command, "summary": summary.to_dict()}
    tmp = out / f".{INFO_NAME}.tmp"
    tmp.write_text(json.dumps(info, indent=1))
    os.replace(tmp, out / INFO_NAME)
    return summary
