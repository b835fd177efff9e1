"""`radlens embed` end to end: mixed good/broken inputs, idempotent re-runs, SIGKILL and resume."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, SecondaryCaptureImageStorage, generate_uid

from conftest import REPO, run_cli
from radlens.encoders import DEFAULT_ENCODER, get
from radlens.io import load_image
from radlens.store import load_store


def _dicom(path, pixels: np.ndarray, *, photometric="MONOCHROME2", jpeg=False, with_pixels=True) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEGBaseline8Bit if jpeg else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.PatientSex, ds.PatientAge, ds.ViewPosition = "DX", "P77", "F", "063Y", "PA"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelSpacing = [0.25, 0.25]
    ds.WindowCenter, ds.WindowWidth = 127.5, 256  # the full 8-bit range, so values map back to [0, 1] exactly
    if with_pixels:
        if jpeg:
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
            ds.PixelData = encapsulate([buf.getvalue()])
            ds["PixelData"].VR = "OB"
        else:
            ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="module")
def mixed_folder(nih_dir, tmp_path_factory):
    """Good PNG/JPEG/DICOM files (some nested) and broken ones, with what we expect of each."""
    root = tmp_path_factory.mktemp("mixed")
    (root / "nested" / "deeper").mkdir(parents=True)
    paths = pd.read_csv(nih_dir / "manifest.csv").path.head(6).tolist()
    good = []
    for i, p in enumerate(paths[:4]):
        dst = root / ("nested/deeper" if i % 2 else "") / os.path.basename(p)
        shutil.copy(nih_dir / p, dst)
        good.append(dst)
    src5 = np.asarray(Image.open(nih_dir / paths[4]).convert("L"))
    _dicom(root / "nested" / "mono1.dcm", 255 - src5, photometric="MONOCHROME1")
    src6 = np.asarray(Image.open(nih_dir / paths[5]).convert("L"))
    _dicom(root / "jpeg.dcm", src6, jpeg=True)
    Image.fromarray(src6).convert("RGB").save(root / "colour.jpg", quality=95)
    good += [root / "nested" / "mono1.dcm", root / "jpeg.dcm", root / "colour.jpg"]
    data = (nih_dir / paths[0]).read_bytes()
    broken = {
        "truncated.png": data[: len(data) // 2],
        "empty.png": b"",
        "notes.png": b"this is a radiology report, not an image\n",
        "nested/no_pixels.dcm": None,
        "bomb.png": None,
    }
    for name, payload in broken.items():
        if payload is not None:
            (root / name).write_bytes(payload)
    _dicom(root / "nested" / "no_pixels.dcm", src5, with_pixels=False)
    Image.new("1", (20000, 20000)).save(root / "bomb.png")  # 400 Mpx declared in a few KB
    return root, good, sorted(broken), {"mono1": paths[4], "jpeg": paths[5]}


def _counts(stdout: str) -> dict[str, int]:
    m = re.search(r"embedded (\d+), skipped as cached (\d+), quarantined (\d+)", stdout)
    assert m, stdout
    return dict(zip(("embedded", "cached", "quarantined"), map(int, m.groups())))


def test_mixed_folder_embeds_good_files_and_quarantines_each_broken_one(mixed_folder, nih_dir, tmp_path):
    root, good, broken, sources = mixed_folder
    out = tmp_path / "store"
    first = run_cli("embed", str(root), "--out", str(out), "--batch-size", "4")
    assert _counts(first.stdout) == {"embedded": len(good), "cached": 0, "quarantined": len(broken)}
    df, emb, info = load_store(out)
    assert sorted(df.path) == sorted(str(p.resolve()) for p in good)
    q = pd.read_csv(out / "_quarantine.csv")
    assert sorted(os.path.relpath(p, root) for p in q.path) == broken
    assert q.reason.str.len().gt(5).all()
    reasons = dict(zip(q.path.map(lambda p: os.path.relpath(p, root)), q.reason.str.lower()))
    assert "truncat" in reasons["truncated.png"] and "bomb" in reasons["bomb.png"]
    assert "0-byte" in reasons["empty.png"] or "empty" in reasons["empty.png"]
    assert "pixel data" in reasons["nested/no_pixels.dcm"]
    # pixels, not just "it ran": DICOMs decode to the image they were made from
    enc = get(DEFAULT_ENCODER)
    by_path = dict(zip(df.path.map(lambda p: os.path.basename(p)), emb))
    for name, src in (("mono1.dcm", sources["mono1"]), ("jpeg.dcm", sources["jpeg"])):
        ref = enc.embed([load_image(nih_dir / src).pixels])[0]
        cos = ref @ by_path[name] / np.linalg.norm(ref) / np.linalg.norm(by_path[name])
        assert cos > (0.9999 if name == "mono1.dcm" else 0.99), (name, cos)
    mono = df[df.path.str.endswith("mono1.dcm")].iloc[0]
    assert mono.format == "dicom" and mono.pixel_spacing_row == 0.25 and mono.patient_id == "P77" and mono.age == 63
    # second run: nothing recomputed, the quarantine still lists every broken file once
    second = run_cli("embed", str(root), "--out", str(out))
    assert _counts(second.stdout) == {"embedded": 0, "cached": len(good), "quarantined": len(broken)}
    assert len(pd.read_parquet(out)) == len(good)
    assert len(pd.read_csv(out / "_quarantine.csv")) == len(broken)


def test_store_refuses_another_encoder(tmp_path, mixed_folder):
    from radlens.store import StoreMismatchError
    from radlens.store.embed_job import embed_to_store

    root, good, *_ = mixed_folder
    enc = get(DEFAULT_ENCODER)
    embed_to_store([good[0]], tmp_path / "s", enc)
    enc.encoder_id = "someone-else@123"
    with pytest.raises(StoreMismatchError, match="refusing to mix"):
        embed_to_store([good[0]], tmp_path / "s", enc)


def test_sigkill_mid_run_then_resume_stores_every_image_once(nih_dir, tmp_path):
    out, n = tmp_path / "store", 192
    cmd = [sys.executable, "-m", "radlens.cli", "embed", str(nih_dir), "--out", str(out), "--limit", str(n),
           "--chunk-rows", "16", "--batch-size", "8", "--threads", "1"]
    kills = 0
    for target_parts in (2, 5):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
        deadline = time.time() + 120
        while time.time() < deadline and len(list(out.glob("part-*.parquet"))) < target_parts and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "embed finished before it could be killed; raise n"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        partial = pd.read_parquet(out)  # readable after every kill: no half-written chunk is visible
        assert partial.image_hash.is_unique and 0 < len(partial) < n
    final = run_cli("embed", str(nih_dir), "--out", str(out), "--limit", str(n), "--chunk-rows", "16")
    counts = _counts(final.stdout)
    assert counts["cached"] == len(partial) and counts["embedded"] == n - len(partial)
    df = pd.read_parquet(out)
    assert len(df) == n and df.image_hash.is_unique and df.path.is_unique and kills == 2
    expected = pd.read_csv(nih_dir / "manifest.csv").path.head(n).map(lambda p: str((nih_dir / p).resolve()))
    assert set(df.path) == set(expected)


@pytest.mark.slow
def test_whole_nih_set_embeds_and_second_run_recomputes_nothing(nih_dir, tmp_path):
    out = tmp_path / "store"
    first = _counts(run_cli("embed", str(nih_dir), "--out", str(out)).stdout)
    assert first == {"embedded": 1510, "cached": 0, "quarantined": 0}
    second = _counts(run_cli("embed", str(nih_dir), "--out", str(out)).stdout)
    assert second == {"embedded": 0, "cached": 1510, "quarantined": 0}
    df, emb, _ = load_store(out)
    assert len(df) == 1510 and df.image_hash.is_unique and np.isfinite(emb).all()
    assert df.patient_id.nunique() == 1330 and set(df.view) == {"AP", "PA"}
