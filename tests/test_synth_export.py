"""Labelled synthetic dataset export (issue 8): COCO round trip, manifest, rejected list, atomicity, DICOM, and
`radlens embed` on the exported manifest. Images are stand-ins (the masks drawn as grey levels plus noise); the
masks are real MaskSampler output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from conftest import run_cli
from radlens.synth.export import CATEGORY_ID, KIND, export_dataset, slug
from radlens.synth.sampler import MaskSampler
from radlens.synth.vocab import FINDINGS

PROMPTS = [
    ("moderate right pleural effusion with cardiomegaly", 256),
    ("small left apical pneumothorax and a 12 mm nodule in the right mid zone", 256),
    ("bilateral lower zone consolidation", 200),  # not a divisor of 512: nearest-neighbour resize is uneven
    ("3 cm mass in the left upper zone", 512),
    ("right basal atelectasis", 256),  # rejected below
]
REJECTED = {"p4"}


def stand_in_image(sample, size: int, seed: int) -> np.ndarray:
    """Masks drawn as grey levels + noise, at `size` (float32 in [0, 1])."""
    img = np.full((512, 512), 0.55, np.float32)
    img[sample.masks[0] | sample.masks[1]] = 0.2
    img[sample.masks[2]] = 0.75
    for m in sample.masks[3:]:
        img[m] = 0.6
    im = Image.fromarray(img, mode="F").resize((size, size), Image.BILINEAR)
    noisy = np.asarray(im) + np.random.default_rng(seed).normal(0, 0.03, (size, size))
    return np.clip(noisy, 0, 1).astype(np.float32)


def make_pairs() -> list[dict]:
    sampler = MaskSampler()
    pairs = []
    for k, (prompt, size) in enumerate(PROMPTS):
        s = sampler.sample(prompt, n=1, seed=5 + k)[0]
        pid = f"p{k}"
        passed = pid not in REJECTED
        qc = {"passed": passed, "reasons": [] if passed else ["anatomy: heart Dice 0.41 < 0.77", "sanity: flat"],
              "scores": {"dice_heart": 0.9 if passed else 0.41, "intensity_std": 0.2,
                         "finding_probs": {"Atelectasis": 0.3}}}
        pairs.append({"id": pid, "image": stand_in_image(s, size, k), "sample": s, "prompt": prompt, "qc": qc})
    return pairs


@pytest.fixture(scope="module")
def pairs() -> list[dict]:
    return make_pairs()


@pytest.fixture(scope="module")
def exported(pairs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "set"
    export_dataset(iter(pairs), out)  # a generator, as a streaming caller would pass
    return out


def nearest(mask: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize written independently of the exporter: output pixel i samples source
    floor((i + 0.5) * 512 / size)."""
    idx = np.floor((np.arange(size) + 0.5) * mask.shape[0] / size).astype(int)
    return mask[np.ix_(idx, idx)]


def rasterise(polygons: list[list[float]], h: int, w: int, ss: int = 4) -> np.ndarray:
    """COCO polygons -> mask with PIL. PIL fills boundary pixels inclusively and rounds vertices to integers, so the
    polygon is drawn at ss-times resolution and a pixel is inside when at least half of it is covered (COCO's
    convention: pixel (x, y) covers [x, x+1] x [y, y+1])."""
    im = Image.new("L", (w * ss, h * ss), 0)
    draw = ImageDraw.Draw(im)
    for p in polygons:
        draw.polygon([(p[i] * ss, p[i + 1] * ss) for i in range(0, len(p), 2)], fill=1)
    return np.asarray(im, np.float32).reshape(h, ss, w, ss).mean(axis=(1, 3)) >= 0.5


def xywh(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() + 1 - xs.min()), int(ys.max() + 1 - ys.min())]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_coco_polygons_bboxes_and_masks_match_the_samples(exported, pairs):
    coco = json.loads((exported / "coco.json").read_text())
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    assert len(cats) == len(coco["categories"]) == len(FINDINGS) + 3
    assert [cats[i + 1] for i in range(len(FINDINGS))] == list(FINDINGS)  # stable ids, whatever the set holds
    assert (cats[101], cats[102], cats[103]) == ("lung_right", "lung_left", "heart")
    kept = [p for p in pairs if p["qc"]["passed"]]
    assert [im["radlens_id"] for im in coco["images"]] == [p["id"] for p in kept]
    by_image = {im["id"]: [] for im in coco["images"]}
    for a in coco["annotations"]:
        by_image[a["image_id"]].append(a)
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    ious = []
    for im, p in zip(coco["images"], kept):
        size, s = p["image"].shape[0], p["sample"]
        png = np.asarray(Image.open(exported / im["file_name"]))
        assert png.dtype == np.uint8 and png.shape == (size, size) == (im["height"], im["width"])
        assert np.abs(png.astype(float) / 255 - p["image"]).max() <= 0.5 / 255 + 1e-6
        expected = [(name, s.masks[k]) for k, name in enumerate(s.channels[:3])]
        expected += [(inst.finding, inst.mask) for inst in s.instances]
        anns = by_image[im["id"]]
        assert [cats[a["category_id"]] for a in anns] == [name for name, _ in expected]
        for a, (name, m512) in zip(anns, expected):
            m = nearest(m512, size)
            assert a["iscrowd"] == 0 and a["area"] == int(m.sum()) > 0
            assert a["bbox"] == xywh(m), (p["id"], name)
            assert a["segmentation"] and all(len(poly) >= 6 and len(poly) % 2 == 0 for poly in a["segmentation"])
            back = rasterise(a["segmentation"], size, size)
            ious.append(iou(back, m))
            assert ious[-1] >= 0.9, (p["id"], name, ious[-1])
        # per-channel mask files = the channel (union of its instances), resized with nearest neighbour
        for k, name in enumerate(s.channels):
            f = np.asarray(Image.open(exported / "masks" / p["id"] / f"{slug(name)}.png"))
            assert set(np.unique(f)) <= {0, 255}
            assert np.array_equal(f > 0, nearest(s.masks[k], size)), (p["id"], name)
    # outlines follow pixel edges, so the round trip is exact unless a mask has holes
    assert np.mean(ious) > 0.995, sorted(ious)[:5]
    assert CATEGORY_ID["Effusion"] == FINDINGS.index("Effusion") + 1


def test_manifest_rows_and_rejected_list(exported, pairs):
    man = pd.read_csv(exported / "manifest.csv", dtype={"id": str})
    kept = [p for p in pairs if p["qc"]["passed"]]
    assert list(man.columns[:4]) == ["path", "id", "prompt", "findings"]
    assert man.id.tolist() == [p["id"] for p in kept]
    assert man.prompt.tolist() == [p["prompt"] for p in kept]
    assert man.qc_passed.all()
    for (_, row), p in zip(man.iterrows(), kept):
        assert row.path == f"images/{p['id']}.png" and (exported / row.path).is_file()
        assert row.findings.split("|") == p["sample"].channels[3:]
        assert row.patient_id == f"synth-s{p['sample'].seed[0]}-{p['sample'].seed[1]}"
        assert row.qc_dice_heart == pytest.approx(0.9) and row.qc_finding_probs_atelectasis == pytest.approx(0.3)
        for name in p["sample"].channels:
            assert (exported / row[f"mask_{slug(name)}"]).is_file()
        absent = [c for c in man.columns if c.startswith("mask_") and c[5:] not in map(slug, p["sample"].channels)]
        assert all(pd.isna(row[c]) for c in absent)  # empty cell = the sample has no such channel
    rej = pd.read_csv(exported / "rejected.csv", dtype={"id": str})
    assert set(rej.id) == REJECTED
    assert "heart Dice 0.41" in rej.qc_reasons.iloc[0] and "sanity: flat" in rej.qc_reasons.iloc[0]
    assert (exported / rej.path.iloc[0]).is_file()
    assert not any((exported / "images" / f"{r}.png").exists() or (exported / "masks" / r).exists() for r in REJECTED)
    record = json.loads((exported / "radlens.json").read_text())
    assert record["kind"] == KIND and record["images"] == len(kept) and record["rejected"] == len(REJECTED)
    assert not (exported / "dicom").exists()
    # radlens.io resolves the relative paths against the manifest's folder
    from radlens.io.sources import discover

    recs = discover(exported)
    assert [r.path for r in recs] == [(exported / f"images/{p['id']}.png").resolve() for p in kept]
    assert recs[0].meta["id"] == kept[0]["id"]


def test_a_failure_mid_write_leaves_no_partial_folder_and_keeps_the_old_one(pairs, tmp_path):
    def failing():
        yield pairs[0]
        yield pairs[1]
        raise RuntimeError("generator crashed")

    out = tmp_path / "set"
    with pytest.raises(RuntimeError, match="generator crashed"):
        export_dataset(failing(), out)
    assert list(tmp_path.iterdir()) == []  # no out folder, no hidden temporary folder
    export_dataset(pairs[:1], out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    bad = dict(pairs[2], image=pairs[2]["image"] * 3)  # values outside [0, 1]
    with pytest.raises(ValueError, match=r"p2: image values must lie in \[0, 1\]"):
        export_dataset([pairs[1], bad], out)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir()] == ["set"]
    with pytest.raises(ValueError, match="duplicate id 'p0'"):
        export_dataset([pairs[0], pairs[0]], out)
    with pytest.raises(ValueError, match="not usable as a file name"):
        export_dataset([dict(pairs[0], id="../escape")], out)
    export_dataset(pairs[1:2], out)  # an earlier export is replaced
    assert pd.read_csv(out / "manifest.csv", dtype={"id": str}).id.tolist() == ["p1"]
    other = tmp_path / "someone_elses"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an earlier radlens synthetic dataset"):
        export_dataset(pairs[:1], other)
    assert (other / "notes.txt").read_text() == "keep me"


def test_dicom_is_readable_and_says_it_is_synthetic(pairs, tmp_path):
    import pydicom

    from radlens.io import load_image

    out = tmp_path / "set"
    export_dataset(pairs[:2], out, dicom=True)
    man = pd.read_csv(out / "manifest.csv", dtype={"id": str})
    for _, row in man.iterrows():
        ds = pydicom.dcmread(out / row.dicom_path)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
        assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.BitsAllocated == 8 and ds.BitsStored == 8
        assert ds.ConversionType == "SYN" and "SYNTHETIC" in ds.ImageComments and row.prompt in ds.ImageComments
        png = np.asarray(Image.open(out / row.path))
        assert np.array_equal(ds.pixel_array, png)
        rg = load_image(out / row.dicom_path)  # and radlens' own decoder takes it
        assert rg.pixels.shape == png.shape


def test_radlens_embed_reads_the_exported_manifest(exported, pairs, tmp_path):
    kept = [p["id"] for p in pairs if p["qc"]["passed"]]
    assert len(kept) <= 4
    store = tmp_path / "store"
    proc = run_cli("embed", str(exported / "manifest.csv"), "--out", str(store), "--workers", "1", "--threads", "1")
    assert f"embedded {len(kept)}" in proc.stdout and "quarantined 0" in proc.stdout, proc.stdout
    from radlens.store import load_store

    df, emb, _ = load_store(store)
    assert sorted(df["id"]) == sorted(kept) and emb.shape[0] == len(kept) and np.isfinite(emb).all()
    assert set(df["path"]) == {str((exported / f"images/{i}.png").resolve()) for i in kept}
    assert set(df["patient_id"]) == {f"synth-s{p['sample'].seed[0]}-{p['sample'].seed[1]}" for p in pairs
                                     if p["qc"]["passed"]}
