"""radlens.io: Pillow-format decoding, input discovery and the quarantine report.

DICOM decoding lives in ``test_io_dicom.py``.  Every image here is generated in
``tmp_path``; the only external data is the optional shared NIH subset.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from corpus.builders import png_bytes_with_size
from radlens.io import (
    DecodeError,
    ImageRecord,
    ManifestError,
    QuarantineReport,
    Radiograph,
    discover,
    load_image,
)


def save_pil(im: Image.Image, path: Path, fmt: str | None = None, **kwargs) -> Path:
    im.save(path, fmt, **kwargs)
    return path


# ----------------------------------------------------------------- PNG / JPEG


def test_png_8bit_exact_values_and_hash(tmp_path):
    arr = np.arange(256, dtype=np.uint8).reshape(16, 16)
    path = save_pil(Image.fromarray(arr), tmp_path / "a.png")
    rad = load_image(path)
    assert isinstance(rad, Radiograph) and rad.path == path
    assert rad.pixels.dtype == np.float32 and rad.pixels.shape == (16, 16)
    np.testing.assert_array_equal(rad.pixels, (arr / 255.0).astype(np.float32))
    assert rad.content_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    assert rad.meta["format"] == "png" and rad.meta["bits"] == 8 and rad.meta["normalisation"] == "fixed"
    assert rad.meta["original_shape"] == [16, 16] and rad.meta["pixel_spacing"] is None


def test_png_16bit_is_minmax_normalised(tmp_path):
    arr = np.linspace(1000, 3000, 64 * 32).reshape(64, 32).astype(np.uint16)
    path = save_pil(Image.fromarray(arr), tmp_path / "a16.png")
    assert Image.open(path).mode == "I;16"
    rad = load_image(path)
    np.testing.assert_allclose(rad.pixels, (arr - 1000.0) / 2000.0, atol=1e-6)
    assert rad.pixels.min() == 0.0 and rad.pixels.max() == 1.0
    assert rad.meta["bits"] == 16 and rad.meta["normalisation"] == "minmax"


def test_constant_16bit_image_is_zeros_not_nan(tmp_path):
    path = save_pil(Image.fromarray(np.full((8, 8), 700, dtype=np.uint16)), tmp_path / "flat.png")
    rad = load_image(path)
    assert not np.isnan(rad.pixels).any() and (rad.pixels == 0).all()


@pytest.mark.parametrize("fmt, suffix", [("TIFF", ".tif"), ("BMP", ".bmp")])
def test_other_pillow_formats(tmp_path, fmt, suffix):
    arr = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    rad = load_image(save_pil(Image.fromarray(arr), tmp_path / f"x{suffix}", fmt))
    np.testing.assert_array_equal(rad.pixels, (arr / 255.0).astype(np.float32))
    assert rad.meta["format"] == fmt.lower()


def test_16bit_tiff_minmax(tmp_path):
    arr = np.array([[0, 100], [200, 400]], dtype=np.uint16)
    rad = load_image(save_pil(Image.fromarray(arr), tmp_path / "x.tif", "TIFF"))
    np.testing.assert_allclose(rad.pixels, [[0, 0.25], [0.5, 1.0]], atol=1e-6)


LUMA_CASES = {(255, 0, 0): 0.299, (0, 255, 0): 0.587, (0, 0, 255): 0.114, (255, 255, 255): 1.0}


def _colour_grid() -> np.ndarray:
    return np.array(list(LUMA_CASES), dtype=np.uint8).reshape(2, 2, 3)


def test_rgb_and_rgba_become_luminance_alpha_dropped(tmp_path):
    rgb = _colour_grid()
    expected = np.array(list(LUMA_CASES.values())).reshape(2, 2)
    rad = load_image(save_pil(Image.fromarray(rgb, "RGB"), tmp_path / "rgb.png"))
    np.testing.assert_allclose(rad.pixels, expected, atol=1e-6)
    rgba = np.concatenate([rgb, np.zeros((2, 2, 1), np.uint8)], axis=2)  # fully transparent
    rad = load_image(save_pil(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png"))
    np.testing.assert_allclose(rad.pixels, expected, atol=1e-6)
    assert rad.meta["mode"] == "RGBA"


def test_palette_png_goes_through_palette(tmp_path):
    im = Image.new("P", (2, 2))
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255] + [0] * (256 * 3 - 12))
    im.putdata([0, 1, 2, 3])
    path = save_pil(im, tmp_path / "p.png")
    assert Image.open(path).mode == "P"
    rad = load_image(path)
    np.testing.assert_allclose(rad.pixels, [[0.299, 0.587], [0.114, 1.0]], atol=1e-6)


def test_la_png_keeps_luminance(tmp_path):
    la = np.stack([np.array([[0, 51], [102, 255]], np.uint8), np.full((2, 2), 7, np.uint8)], axis=2)
    rad = load_image(save_pil(Image.fromarray(la, "LA"), tmp_path / "la.png"))
    np.testing.assert_allclose(rad.pixels, [[0, 0.2], [0.4, 1.0]], atol=1e-6)


def test_jpeg_8bit(tmp_path):
    yy, xx = np.mgrid[0:64, 0:64]
    arr = (xx * 2 + yy * 2).astype(np.uint8)
    rad = load_image(save_pil(Image.fromarray(arr), tmp_path / "a.jpg", quality=95))
    assert rad.meta["format"] == "jpeg" and rad.meta["normalisation"] == "fixed"
    assert np.abs(rad.pixels * 255 - arr).max() <= 6


def test_jpeg_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40), np.uint8)
    arr[:, :10] = 255  # bright band on the left of the stored image
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    rad = load_image(save_pil(im, tmp_path / "rot.jpg", exif=exif, quality=95))
    assert rad.pixels.shape == (40, 20)  # portrait once rotated
    assert rad.pixels[:8].mean() > 0.9 and rad.pixels[-20:].mean() < 0.1  # band now on top
    assert rad.meta["exif_orientation"] == 6 and rad.meta["original_shape"] == [40, 20]


def test_format_comes_from_content_not_extension(tmp_path):
    arr = np.full((4, 4), 51, np.uint8)
    path = tmp_path / "scan.dcm"
    Image.fromarray(arr).save(path, "PNG")
    rad = load_image(path)
    assert rad.meta["format"] == "png" and np.allclose(rad.pixels, 0.2)


# ------------------------------------------------------------------- refusals


def test_truncated_png(tmp_path):
    rng = np.random.default_rng(0)
    path = save_pil(Image.fromarray(rng.integers(0, 256, (128, 128), dtype=np.uint8)), tmp_path / "t.png")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeError) as info:
        load_image(path)
    assert "truncat" in info.value.reason and "PNG" in info.value.reason
    assert info.value.path == path and str(info.value) == f"{path}: {info.value.reason}"


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("JPEG", ".jpg")])
def test_truncation_refused_even_if_pillow_is_told_to_accept_it(tmp_path, monkeypatch, fmt, suffix):
    # Another library in the process may flip this global; we must still refuse.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    rng = np.random.default_rng(1)
    path = save_pil(Image.fromarray(rng.integers(0, 256, (128, 128), dtype=np.uint8)), tmp_path / f"t{suffix}", fmt)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DecodeError, match=f"truncated {fmt}"):
        load_image(path)


def test_truncated_jpeg(tmp_path):
    rng = np.random.default_rng(2)
    path = save_pil(Image.fromarray(rng.integers(0, 256, (128, 128), dtype=np.uint8)), tmp_path / "t.jpg")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DecodeError, match="truncat"):
        load_image(path)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.touch()
    with pytest.raises(DecodeError) as info:
        load_image(path)
    assert info.value.reason == "0-byte file"


@pytest.mark.parametrize("text", ["patient notes, definitely not pixels\n" * 5, "BMI 23.4, see report\n" * 5])
def test_text_named_png_is_not_an_image(tmp_path, text):
    path = tmp_path / "x.png"
    path.write_text(text)
    with pytest.raises(DecodeError) as info:
        load_image(path)
    assert info.value.reason == "not an image (unrecognised format)"


def test_large_non_image_is_refused_without_reading_it(tmp_path, monkeypatch):
    path = tmp_path / "video.mp4"
    with path.open("wb") as fh:  # sparse: 2 GiB on paper, nothing on disk
        fh.write(b"\x00\x00\x00\x18ftypmp42")
        fh.truncate(2 * 2**30)
    with pytest.raises(DecodeError) as info:
        load_image(path)
    assert info.value.reason == "not an image (unrecognised format)"
    big = tmp_path / "huge.png"
    with big.open("wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.truncate(80 * 2**20)  # sparse; over 8 B/pixel + 64 MiB slack
    with pytest.raises(DecodeError, match="file too large"):
        load_image(big, max_pixels=1000)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DecodeError, match="file not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(DecodeError, match="directory"):
        load_image(tmp_path)


@pytest.fixture
def no_pixel_decoding(monkeypatch):
    """Fail loudly if Pillow starts decoding pixel data."""
    calls: list[str] = []
    original = ImageFile.ImageFile.load

    def spy(self):
        calls.append(self.format)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return calls


def test_decompression_bomb_refused_before_decoding(tmp_path, no_pixel_decoding):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bytes_with_size(30000, 30000))  # 900 MP in ~110 KB
    assert path.stat().st_size < 200_000
    start = time.perf_counter()
    with pytest.raises(DecodeError) as info:
        load_image(path)
    assert time.perf_counter() - start < 1.0
    assert info.value.reason.startswith("decompression bomb")
    assert no_pixel_decoding == []


def test_our_pixel_limit_applies_below_pillows(tmp_path, no_pixel_decoding):
    path = tmp_path / "big.png"
    path.write_bytes(png_bytes_with_size(9000, 8000))  # 72 MP: under Pillow's limit, over ours
    with pytest.raises(DecodeError) as info:
        load_image(path)
    assert info.value.reason == "decompression bomb: 9000x8000 exceeds limit of 64000000 pixels"
    assert no_pixel_decoding == []
    small = save_pil(Image.new("L", (20, 20)), tmp_path / "small.png")
    with pytest.raises(DecodeError, match="20x20 exceeds limit of 100 pixels"):
        load_image(small, max_pixels=100)


def test_multi_frame_tiff_refused(tmp_path):
    frames = [Image.new("L", (4, 4), v) for v in (0, 128)]
    path = tmp_path / "stack.tif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with pytest.raises(DecodeError, match=r"multi-frame TIFF \(2 frames\)"):
        load_image(path)


# ---------------------------------------------------------------------- discover


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_discover_folder_recurses_sorted_and_skips_hidden(tmp_path):
    for rel in ["b/z.png", "b/a/y.dcm", "a.png", "notes.txt", "c/d/e/deep.jpg",
                ".hidden.png", ".git/objects/ab", "b/.cache/x.png", "quarantine.csv", "b/manifest.csv"]:
        _touch(tmp_path / rel)
    records = discover(tmp_path)
    rels = [r.path.relative_to(tmp_path.resolve()).as_posix() for r in records]
    assert rels == ["a.png", "b/a/y.dcm", "b/z.png", "c/d/e/deep.jpg", "notes.txt"]
    assert all(r.path.is_absolute() and r.meta == {} for r in records)
    assert discover(str(tmp_path)) == records  # str and Path sources agree, and it is deterministic


def test_discover_uses_top_level_manifest(tmp_path):
    _touch(tmp_path / "imgs" / "a.png")
    _touch(tmp_path / "imgs" / "unlisted.png")
    (tmp_path / "manifest.csv").write_text("path,label\nimgs/a.png,cat\nimgs/gone.png,dog\n")
    records = discover(tmp_path)
    assert [r.path for r in records] == [(tmp_path / "imgs/a.png").resolve(), (tmp_path / "imgs/gone.png").resolve()]
    assert records[1].meta == {"label": "dog"}  # missing files are kept: decoding reports them


def test_csv_manifest_meta_types(tmp_path, caplog):
    data = tmp_path / "data"
    _touch(data / "a.png")
    manifest = tmp_path / "lists" / "train.csv"
    manifest.parent.mkdir()
    manifest.write_text(
        "path,patient_id,age,sex,score,flag\n"
        "../data/a.png,00032,54,F,0.5,True\n"
        f"{(data / 'b.png').as_posix()},7,,M,,False\n"
        "../data/a.png,99,1,F,1.0,True\n"
    )
    with caplog.at_level(logging.WARNING, logger="radlens.io.sources"):
        records = discover(manifest)
    assert [r.path for r in records] == [(data / "a.png").resolve(), (data / "b.png").resolve()]
    assert records[0].meta == {"patient_id": "00032", "age": 54, "sex": "F", "score": 0.5, "flag": True}
    assert records[1].meta == {"patient_id": "7", "age": None, "sex": "M", "score": None, "flag": False}
    assert type(records[0].meta["age"]) is int and type(records[0].meta["score"]) is float
    assert "duplicate" in caplog.text and "a.png" in caplog.text


def test_manifest_without_path_column(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("file,label\na.png,x\n")
    with pytest.raises(ManifestError) as info:
        discover(manifest)
    assert str(manifest) in str(info.value) and "'path'" in str(info.value)


def test_discover_list_and_single_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _touch(tmp_path / "b.png")
    records = discover(["b.png", tmp_path / "a.png", Path("b.png")])
    assert records == [ImageRecord(tmp_path.resolve() / "b.png"), ImageRecord(tmp_path.resolve() / "a.png")]
    assert discover(tmp_path / "b.png") == [ImageRecord(tmp_path.resolve() / "b.png")]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        discover(tmp_path / "nowhere")


def test_shared_nih_subset(nih_dir):
    """The real shared subset (conftest's ``nih_dir`` skips when ../shared/data is absent)."""
    root = nih_dir
    records = discover(root)
    assert len(records) == 1510
    assert all(r.path.is_file() for r in records)
    first = records[0]
    assert set(first.meta) == {"patient_id", "finding_labels", "age", "sex", "view"}
    assert all(isinstance(r.meta["patient_id"], str) for r in records)
    assert all(isinstance(r.meta["age"], int) for r in records)
    rad = load_image(first.path)
    assert rad.pixels.shape == (512, 512) and 0.0 <= rad.pixels.min() < rad.pixels.max() <= 1.0


# -------------------------------------------------------------------- quarantine


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_quarantine_add_dedupe_and_write(tmp_path):
    report = QuarantineReport()
    report.add("/x/a.png", "truncated PNG")
    report.add("/x/a.png", "0-byte file")  # same path+stage: latest reason, one entry
    report.add("/x/a.png", "NaN embedding", stage="embed")
    report.add("/x/b,c.png", 'reason with, comma and "quotes"\nand a newline')
    assert len(report) == 3
    out = report.write(tmp_path / "out" / "quarantine.csv")
    assert out.read_text().splitlines()[0] == "path,stage,reason"
    rows = read_csv_rows(out)
    assert rows == [
        {"path": "/x/a.png", "stage": "decode", "reason": "0-byte file"},
        {"path": "/x/a.png", "stage": "embed", "reason": "NaN embedding"},
        {"path": "/x/b,c.png", "stage": "decode", "reason": 'reason with, comma and "quotes" and a newline'},
    ]
    assert [e.path for e in QuarantineReport.read(out).entries] == [Path("/x/a.png"), Path("/x/a.png"), Path("/x/b,c.png")]


def test_quarantine_merge_existing_keeps_old_without_duplicates(tmp_path):
    path = tmp_path / "quarantine.csv"
    first = QuarantineReport()
    first.add("/x/a.png", "old reason")
    first.add("/x/b.png", "truncated PNG")
    first.write(path)

    resumed = QuarantineReport()
    resumed.add("/x/a.png", "new reason")
    resumed.add("/x/c.png", "0-byte file")
    assert resumed.merge_existing(path) == 1  # only b.png is new
    assert resumed.merge_existing(path) == 0  # idempotent
    resumed.write(path)
    rows = {(r["path"], r["stage"]): r["reason"] for r in read_csv_rows(path)}
    assert rows == {("/x/a.png", "decode"): "new reason", ("/x/c.png", "decode"): "0-byte file",
                    ("/x/b.png", "decode"): "truncated PNG"}
    assert QuarantineReport().merge_existing(tmp_path / "absent.csv") == 0


def test_quarantine_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "quarantine.csv"
    report = QuarantineReport()
    report.add("/x/a.png", "truncated PNG")
    report.write(path)
    before = path.read_bytes()

    report.add("/x/b.png", "0-byte file")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        report.write(path)
    assert path.read_bytes() == before  # old report untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quarantine.csv"]  # no temp left behind


def test_quarantine_add_error_and_bad_file(tmp_path):
    report = QuarantineReport()
    report.add_error(DecodeError(tmp_path / "a.png", "0-byte file"))
    assert report.entries[0].reason == "0-byte file" and tmp_path / "a.png" in report
    assert report.discard(tmp_path / "a.png") == 1 and len(report) == 0
    bogus = tmp_path / "other.csv"
    bogus.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="missing column"):
        report.merge_existing(bogus)


def test_bad_files_in_a_folder_end_up_quarantined(tmp_path):
    """End to end: discover -> load -> quarantine, nothing crashes or disappears."""
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "good.png")
    (tmp_path / "empty.png").touch()
    (tmp_path / "readme.txt").write_text("hello")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 64), dtype=np.uint8)).save(buf, "PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[:200])
    report = QuarantineReport()
    loaded = []
    for record in discover(tmp_path):
        try:
            loaded.append(load_image(record.path).path.name)
        except DecodeError as err:
            report.add(err.path, err.reason)
    assert loaded == ["good.png"]
    reasons = {e.path.name: e.reason for e in report.entries}
    assert reasons["empty.png"] == "0-byte file"
    assert reasons["readme.txt"] == "not an image (unrecognised format)"
    assert "truncat" in reasons["cut.png"]
