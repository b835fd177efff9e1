"""radlens.anatomy: augmentation, measures, a short training run, the shipped weights on held-out patients, and
`radlens segment` on real NIH PNGs, a DICOM and broken files. Never trains the shipped model."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from conftest import run_cli
from radlens.anatomy import STRUCTURES, AnatomyModel, measure, segment
from radlens.anatomy import data as D
from radlens.anatomy.postprocess import clean_lungs, split_lungs

HELDOUT_LUNG_DICE_FLOOR = 0.93  # the bar, per-patient mean on the lung-masks test patients
HELDOUT_LUNG_PATIENT_MIN = 0.80  # a regression floor; the worst test patient is at 0.83


# ------------------------------------------------------------------------------------------- pure functions


def test_warp_moves_targets_with_the_image_and_pads_weights_as_known_background():
    g = torch.Generator().manual_seed(0)
    img = torch.zeros(4, 1, 64, 64)
    img[:, :, 20:40, 10:30] = 1.0
    t = torch.zeros(4, D.N_PLANES, 64, 64)
    t[:, D.LUNG_T, 20:40, 10:30] = 1
    t[:, D.LUNG_W] = 1
    x, tt = D.warp(img, t, g)
    assert x.shape == img.shape and tt.shape == t.shape
    assert set(tt.unique().tolist()) <= {0.0, 1.0}
    assert (tt[:, D.LUNG_W] == 1).all()  # outside the warped field there is no lung: weight 1, target 0
    bright, lung = x[:, 0] > 0.5, tt[:, D.LUNG_T] > 0.5
    overlap = (bright & lung).sum() / lung.sum()
    assert overlap > 0.85  # the label moved with the anatomy


def test_augment_output_is_normalised_and_devices_are_drawn():
    g = torch.Generator().manual_seed(1)
    x, t = D.augment(torch.full((3, 1, 64, 64), 0.3), torch.zeros(3, D.N_PLANES, 64, 64), g, p_devices=1.0)
    assert x.shape == (3, 1, 64, 64) and torch.isfinite(x).all()
    assert float(x.min()) >= -2.0 - 1e-5 and float(x.max()) <= 2.0 + 1e-5
    dev = D.devices(64, g)
    assert dev.shape == (64, 64) and float(dev.max()) > 0.1


def test_measures_on_drawn_masks():
    right = np.zeros((100, 200), bool)
    left = np.zeros_like(right)
    heart = np.zeros_like(right)
    right[10:90, 20:80] = True  # image left = patient's right
    left[10:90, 120:170] = True
    heart[50:85, 70:150] = True
    m = measure(right, left, heart, pixel_spacing=(0.5, 0.5))
    assert m.thorax_width_px == 170 - 20 and m.heart_width_px == 80
    assert m.ctr == pytest.approx(80 / 150)
    assert m.lr_area_ratio == pytest.approx(80 * 60 / (80 * 50))
    assert m.lung_right_area_cm2 == pytest.approx(80 * 60 * 0.25 / 100)
    assert m.flags == []
    m2 = measure(right, np.zeros_like(left), np.zeros_like(heart))
    assert math.isnan(m2.ctr) and "heart missing" in m2.flags and "a lung is missing" in m2.flags


def test_split_lungs_cuts_a_merged_component_and_orders_by_side():
    lungs = np.zeros((100, 100), bool)
    lungs[10:90, 10:45] = True
    lungs[10:90, 55:90] = True
    lungs[10:15, 40:60] = True  # a bridge over the mediastinum
    right, left, notes = split_lungs(lungs)
    assert notes and right.any() and left.any()
    assert np.nonzero(right)[1].max() < np.nonzero(left)[1].min()
    cleaned, ok = clean_lungs(lungs)
    assert cleaned.sum() >= lungs.sum() - 20 and not ok  # merged lungs are not trusted as a pseudo-label


# ------------------------------------------------------------------------------------------- training


def test_short_training_run_loss_falls_and_artefact_round_trips(lung_dir, nih_dir, tmp_path):
    from safetensors.torch import load_file

    from radlens.anatomy.train import TrainConfig, train

    out = tmp_path / "run"
    cfg = TrainConfig(lung_data=str(lung_dir), nih_data=str(nih_dir), out=str(out), round1_epochs=4, round2_epochs=1,
                      round3_epochs=1, batch_size=6, limit=6, threads=2, lr=3e-3)
    config = train(cfg)
    hist = json.loads((out / "history.json").read_text())
    r1 = [h["total"] for h in hist if h["round"] == 1]
    assert len(r1) == 4 and r1[-1] < r1[0], r1
    assert json.loads((out / "pseudo_labels.json").read_text())["images"] > 0
    model = AnatomyModel(out)
    assert model.model_id.startswith("radlens-anatomy-v1@") and model.config["preprocess_hash"] == config["preprocess_hash"]
    state = load_file(str(out / "model.safetensors"))
    assert sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k) == config["parameters"]
    img = np.asarray(Image.open(nih_dir / "images" / "00000377_004.png").convert("L"), np.float32)[:400, :300] / 255
    (m,) = model.segment([img])
    assert m.heart.shape == (400, 300) and m.lung_right.dtype == bool and m.array().shape == (3, 400, 300)
    # a second call resumes from the finished run: no new epochs, same weights
    train(cfg)
    assert len(json.loads((out / "history.json").read_text())) == len(hist)
    assert all(torch.equal(state[k], v) for k, v in load_file(str(out / "model.safetensors")).items())


# ------------------------------------------------------------------------------------------- shipped weights


def test_shipped_weights_reach_the_heldout_lung_dice(lung_dir):
    from radlens.anatomy.evaluate import lung_heldout

    res = lung_heldout(AnatomyModel(), lung_dir, "test")
    s = res["per_patient_summary"]
    assert res["patients"] >= 15
    assert s["mean"] >= HELDOUT_LUNG_DICE_FLOOR, s
    assert s["min"] >= HELDOUT_LUNG_PATIENT_MIN, res["per_patient"]
    # the numbers in the shipped metrics.json are these numbers
    shipped = json.loads((AnatomyModel().folder / "metrics.json").read_text())
    assert shipped["lungs_test"]["per_patient_summary"]["mean"] == pytest.approx(s["mean"], abs=2e-3)


def test_shipped_weights_give_plausible_hearts_on_nih_eval_images(nih_dir):
    from radlens.io.splits import load_split

    sp = load_split("nih-cxr14")
    paths = [nih_dir / p for p in sp.path[sp.split == "eval"].head(16)]
    masks = segment(paths)
    ctrs = np.array([m.measures().ctr for m in masks])
    assert np.isfinite(ctrs).sum() >= 15
    assert ((ctrs > 0.3) & (ctrs < 0.8)).sum() >= 14, ctrs
    for m in masks:
        assert m.lung_right.shape == (512, 512)
        # patient's right lung on the image's left, heart between the lungs' outer edges
        assert np.nonzero(m.lung_right)[1].mean() < np.nonzero(m.lung_left)[1].mean()


def test_segment_api_takes_arrays_radiographs_and_paths(nih_dir):
    from radlens.io import load_image

    p = nih_dir / "images" / "00000377_004.png"
    rad = load_image(p)
    u8 = np.asarray(Image.open(p).convert("L"))
    a, b, c = segment([rad.pixels, rad, p])
    (d,) = segment(u8)
    for m in (b, c, d):
        assert np.array_equal(a.array(), m.array())


# ------------------------------------------------------------------------------------------- radlens segment


def _dicom_from_png(png: Path, path: Path) -> np.ndarray:
    """A 12-bit MONOCHROME1 DX built from an NIH PNG (inverted), with study/series UIDs and pixel spacing."""
    arr = np.asarray(Image.open(png).convert("L"), np.uint16)[:, 16:496] * 16  # 512 x 480: not square
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    fm.MediaStorageSOPInstanceUID = generate_uid()
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=fm, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = fm.MediaStorageSOPClassUID, fm.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID, ds.PatientSex, ds.ViewPosition = "DX", "P42", "M", "PA"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing = [0.7, 0.7]
    ds.PixelData = (4095 - arr).astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return arr


@pytest.fixture(scope="module")
def segment_run(nih_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("segin")
    names = ["00000377_004.png", "00000442_000.png", "00000468_033.png"]
    for n in names:
        (root / n).write_bytes((nih_dir / "images" / n).read_bytes())
    _dicom_from_png(nih_dir / "images" / "00000493_000.png", root / "chest.dcm")
    (root / "notes.png").write_text("not an image")
    (root / "truncated.png").write_bytes((nih_dir / "images" / names[0]).read_bytes()[:3000])
    out = tmp_path_factory.mktemp("segout") / "out"
    proc = run_cli("segment", str(root), "--out", str(out), "--threads", "2")
    return root, out, proc


def test_segment_cli_writes_masks_overlays_csv_and_dicom_seg(segment_run):
    root, out, proc = segment_run
    assert "segmented 4" in proc.stdout and "quarantined 2" in proc.stdout, proc.stdout
    rows = list(csv.DictReader(open(out / "measures.csv")))
    assert sorted(r["id"] for r in rows) == ["00000377_004", "00000442_000", "00000468_033", "chest"]
    for r in rows:
        h, w = int(r["height"]), int(r["width"])
        for s in STRUCTURES:
            m = np.asarray(Image.open(out / "masks" / f"{r['id']}_{s}.png"))
            assert m.shape == (h, w) and set(np.unique(m)) <= {0, 1} and m.sum() > 0.01 * h * w, (r["id"], s)
        assert 0.3 < float(r["ctr"]) < 0.8 and 0.5 < float(r["lr_area_ratio"]) < 2.0
        assert (out / r["overlay"]).is_file()
        assert Image.open(out / r["overlay"]).size == (w, h)
    dcm = next(r for r in rows if r["id"] == "chest")
    assert (int(dcm["height"]), int(dcm["width"])) == (512, 480)
    assert float(dcm["lung_right_area_cm2"]) == pytest.approx(int(dcm["lung_right_area_px"]) * 0.49 / 100)
    assert all(r["dicom_seg"] == "" for r in rows if r["id"] != "chest")
    info = json.loads((out / "radlens.json").read_text())
    assert info["model_id"].startswith("radlens-anatomy-v1@") and info["summary"]["segmented"] == 4


def test_dicom_seg_references_the_source_and_matches_the_png_masks(segment_run):
    import pydicom

    root, out, _ = segment_run
    seg = pydicom.dcmread(out / "seg" / "chest.dcm")
    src = pydicom.dcmread(root / "chest.dcm", stop_before_pixels=True)
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == src.StudyInstanceUID
    ref = seg.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == src.SeriesInstanceUID
    assert ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    assert labels == ["Right lung", "Left lung", "Heart"]
    assert [s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in seg.SegmentSequence] == ["3341006", "44029006",
                                                                                                 "80891009"]
    frames = seg.pixel_array
    assert frames.shape == (3, 512, 480)
    for k, s in enumerate(STRUCTURES):
        png = np.asarray(Image.open(out / "masks" / f"chest_{s}.png"))
        assert np.array_equal(frames[k], png)


def test_segment_quarantines_bad_files_and_a_rerun_resumes(segment_run):
    root, out, _ = segment_run
    q = pd.read_csv(out / "quarantine.csv")
    assert sorted(Path(p).name for p in q.path) == ["notes.png", "truncated.png"]
    assert set(q.stage) == {"decode"}
    assert q.reason.str.len().min() > 5
    again = run_cli("segment", str(root), "--out", str(out), "--threads", "2")
    assert "segmented 0, skipped as done 4, quarantined 2" in again.stdout, again.stdout
    assert len(pd.read_csv(out / "measures.csv")) == 4
