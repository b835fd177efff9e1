"""DICOM decoding: pixel values after rescale/VOI/inversion, codecs, refusals.

Every DICOM here is built in ``tmp_path`` with pydicom, so the expected pixel values
are known exactly.
"""

from __future__ import annotations

import io
import pickle

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

from corpus.builders import make_ds
from radlens.io import DecodeError, load_image


def save(ds: Dataset, tmp_path, name: str = "image.dcm"):
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    return path


def ramp12() -> np.ndarray:
    """64x64 12-bit ramp covering 0..4095."""
    return (np.arange(64 * 64).reshape(64, 64)).astype(np.uint16)


def pixel_of(rad, arr: np.ndarray, stored: int) -> float:
    """Decoded value at the first position where ``arr == stored``."""
    r, c = np.argwhere(arr == stored)[0]
    return float(rad.pixels[r, c])


# --------------------------------------------------------------------- VOI / LUTs


def test_window_with_rescale_maps_window_edges_to_0_and_1(tmp_path):
    # modality value = 2 * stored - 100; window 1000 +/- 200 -> stored 450..650
    arr = ramp12()
    path = save(make_ds(arr, bits_stored=12, RescaleSlope=2, RescaleIntercept=-100,
                        WindowCenter=1000, WindowWidth=400), tmp_path)
    rad = load_image(path)
    assert rad.pixels.dtype == np.float32 and rad.pixels.shape == (64, 64)
    assert pixel_of(rad, arr, 450) == pytest.approx(0.0, abs=1e-6)  # center - width/2
    assert pixel_of(rad, arr, 650) == pytest.approx(1.0, abs=1e-6)  # center + width/2
    assert pixel_of(rad, arr, 550) == pytest.approx(0.5, abs=0.01)  # center
    assert pixel_of(rad, arr, 500) == pytest.approx(0.25, abs=0.01)
    assert pixel_of(rad, arr, 0) == 0.0 and pixel_of(rad, arr, 4095) == 1.0  # clamped outside
    assert rad.meta["normalisation"] == "window"
    assert rad.meta["window_center"] == 1000 and rad.meta["window_width"] == 400


def test_multi_valued_window_uses_the_first(tmp_path):
    arr = ramp12()
    path = save(make_ds(arr, bits_stored=12, RescaleSlope=2, RescaleIntercept=-100,
                        WindowCenter=[1000, 50], WindowWidth=[400, 10]), tmp_path)
    rad = load_image(path)
    # the second window (50 +/- 5) would make stored 550 saturate to 1.0
    assert pixel_of(rad, arr, 550) == pytest.approx(0.5, abs=0.01)
    assert pixel_of(rad, arr, 450) == pytest.approx(0.0, abs=1e-6)
    assert rad.meta["window_center"] == 1000.0


def test_window_without_rescale_uses_stored_range(tmp_path):
    arr = ramp12()
    path = save(make_ds(arr, bits_stored=12, WindowCenter=2048, WindowWidth=1024), tmp_path)
    rad = load_image(path)
    assert pixel_of(rad, arr, 2048 - 512) == pytest.approx(0.0, abs=1e-6)
    assert pixel_of(rad, arr, 2048 + 512) == pytest.approx(1.0, abs=1e-6)
    assert pixel_of(rad, arr, 2048) == pytest.approx(0.5, abs=0.01)


def test_voi_lut_sequence_is_applied_including_8bit_lut_over_256_entries(tmp_path):
    # The common 12-bit -> 8-bit display LUT.  pydicom 3.0.2's apply_voi wraps
    # indices > 255 for 8-bit LUTs; stored value 300 catches that.
    arr = ramp12()
    lut = [255 - i // 16 for i in range(4096)]  # decreasing: cannot be mistaken for identity
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 8]
    item.add_new(0x00283006, "US", lut)  # LUTData
    ds = make_ds(arr, bits_stored=12)
    ds.VOILUTSequence = [item]
    rad = load_image(save(ds, tmp_path))
    for stored in (0, 100, 300, 2000, 4095):
        assert pixel_of(rad, arr, stored) == pytest.approx(lut[stored] / 255, abs=1e-6), stored
    assert rad.meta["voi"] == "lut" and rad.meta["normalisation"] == "voi_lut"


def test_monochrome1_is_inverted_so_stored_minimum_is_brightest(tmp_path):
    arr = (np.arange(100, dtype=np.uint16).reshape(10, 10) * 10)  # 0..990
    rad = load_image(save(make_ds(arr, photometric="MONOCHROME1", bits_stored=12), tmp_path))
    assert pixel_of(rad, arr, 0) == pytest.approx(1.0)
    assert pixel_of(rad, arr, 990) == pytest.approx(0.0)
    expected = 1.0 - arr / 990.0
    np.testing.assert_allclose(rad.pixels, expected, atol=1e-6)
    assert rad.meta["photometric"] == "MONOCHROME1" and rad.meta["normalisation"] == "minmax"


def test_monochrome1_with_window_inverts_after_windowing(tmp_path):
    arr = ramp12()
    rad = load_image(save(make_ds(arr, photometric="MONOCHROME1", bits_stored=12,
                                  WindowCenter=2048, WindowWidth=1024), tmp_path))
    assert pixel_of(rad, arr, 2048 - 512) == pytest.approx(1.0, abs=1e-6)
    assert pixel_of(rad, arr, 2048 + 512) == pytest.approx(0.0, abs=1e-6)


def test_invalid_window_falls_back_to_minmax(tmp_path):
    arr = ramp12()
    rad = load_image(save(make_ds(arr, bits_stored=12, WindowCenter=100, WindowWidth=0), tmp_path))
    np.testing.assert_allclose(rad.pixels, arr / 4095.0, atol=1e-6)
    assert rad.meta["normalisation"] == "minmax" and "window" in rad.meta["voi_warning"]


def test_signed_pixels_with_ct_style_rescale(tmp_path):
    arr = np.array([[-1000, 0], [500, 1000]], dtype=np.int16)
    rad = load_image(save(make_ds(arr, bits_stored=16, RescaleSlope=1, RescaleIntercept=0,
                                  WindowCenter=0, WindowWidth=2000), tmp_path))
    np.testing.assert_allclose(rad.pixels, [[0.0, 0.5], [0.75, 1.0]], atol=0.002)


# ----------------------------------------------------------------------- metadata


def test_header_metadata(tmp_path):
    arr = ramp12()
    ds = make_ds(arr, bits_stored=12, PixelSpacing=[0.139, 0.143], ImagerPixelSpacing=[0.15, 0.15],
                 PatientID="00042", PatientSex="F", PatientAge="054Y", ViewPosition="PA")
    rad = load_image(save(ds, tmp_path))
    m = rad.meta
    assert m["format"] == "dicom" and m["original_shape"] == [64, 64] and m["bits"] == 12
    assert m["pixel_spacing"] == [0.139, 0.143] and m["pixel_spacing_source"] == "PixelSpacing"
    assert all(type(v) is float for v in m["pixel_spacing"])
    assert (m["patient_id"], m["sex"], m["age"], m["view"]) == ("00042", "F", 54, "PA")
    assert m["modality"] == "DX" and m["photometric"] == "MONOCHROME2"
    assert m["transfer_syntax"] == ExplicitVRLittleEndian


def test_imager_pixel_spacing_fallback_and_absent_fields(tmp_path):
    ds = make_ds(ramp12(), bits_stored=12, ImagerPixelSpacing=[0.2, 0.2])
    m = load_image(save(ds, tmp_path)).meta
    assert m["pixel_spacing"] == [0.2, 0.2] and m["pixel_spacing_source"] == "ImagerPixelSpacing"
    assert m["patient_id"] is None and m["age"] is None and m["view"] is None
    m2 = load_image(save(make_ds(ramp12(), bits_stored=12), tmp_path, "b.dcm")).meta
    assert m2["pixel_spacing"] is None


@pytest.mark.parametrize("text, years", [("054Y", 54), ("006M", 0), ("030M", 2), ("003W", 0), ("54", 54),
                                         ("", None), ("abc", None)])
def test_parse_dicom_age(text, years):
    from radlens.io.decode import parse_dicom_age

    assert parse_dicom_age(text) == years


# -------------------------------------------------------------------------- codecs


def test_jpeg_baseline_dicom_decodes_close_to_source(tmp_path):
    yy, xx = np.mgrid[0:64, 0:64]
    src = ((xx * 3 + yy) % 256).astype(np.uint8)  # smooth ramp, JPEG-friendly
    buf = io.BytesIO()
    Image.fromarray(src).save(buf, "JPEG", quality=95)
    ds = make_ds(src)
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    rad = load_image(save(ds, tmp_path))
    decoded_8bit = rad.pixels * (src.max() - src.min()) + src.min()  # undo min-max
    assert np.abs(decoded_8bit - src).max() <= 6
    assert np.abs(decoded_8bit - src).mean() <= 1.5
    assert rad.meta["transfer_syntax"] == JPEGBaseline8Bit


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless], ids=["rle", "jpeg2000"])
def test_lossless_compressed_dicom_is_exact(tmp_path, syntax):
    arr = ramp12()
    ds = make_ds(arr, bits_stored=12)
    try:
        ds.compress(syntax)
    except (RuntimeError, NotImplementedError, ValueError) as exc:
        pytest.skip(f"no {syntax.name} encoder available: {exc}")
    rad = load_image(save(ds, tmp_path))
    np.testing.assert_allclose(rad.pixels, arr / 4095.0, atol=1e-7)
    assert rad.meta["transfer_syntax"] == syntax


def test_rgb_dicom_becomes_luminance(tmp_path):
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[0, 1] = (0, 255, 0)
    rgb[1, 0] = (0, 0, 255)
    rgb[1, 1] = (255, 255, 255)
    rad = load_image(save(make_ds(rgb, photometric="RGB"), tmp_path))
    np.testing.assert_allclose(rad.pixels, [[0.299, 0.587], [0.114, 1.0]], atol=1e-6)


def test_dicom_detected_by_content_not_extension_and_without_preamble(tmp_path):
    arr = ramp12()
    ds = make_ds(arr, bits_stored=12)
    misnamed = save(ds, tmp_path, "looks_like.png")
    assert load_image(misnamed).meta["format"] == "dicom"

    bare = Dataset()  # no preamble, no 'DICM', no file meta: an old-style raw dump
    bare.update(ds)
    raw = tmp_path / "IM0001"
    pydicom.dcmwrite(raw, bare, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert raw.read_bytes()[128:132] != b"DICM"
    rad = load_image(raw)
    assert rad.meta["format"] == "dicom" and rad.meta["dicom_preamble"] is False
    np.testing.assert_allclose(rad.pixels, arr / 4095.0, atol=1e-7)


# ------------------------------------------------------------------------ refusals


def test_no_pixel_data_is_refused(tmp_path):
    ds = make_ds(ramp12(), bits_stored=12)
    del ds.PixelData
    with pytest.raises(DecodeError, match="DICOM has no pixel data"):
        load_image(save(ds, tmp_path))


def test_multi_frame_is_refused(tmp_path):
    frames = np.zeros((3, 8, 8), dtype=np.uint16)
    ds = make_ds(frames[0])
    ds.NumberOfFrames = 3
    ds.PixelData = frames.tobytes()
    with pytest.raises(DecodeError) as info:
        load_image(save(ds, tmp_path))
    assert info.value.reason == "multi-frame DICOM (3 frames) is not a single radiograph"


def test_huge_dicom_refused_from_header_before_pixel_data(tmp_path, monkeypatch):
    ds = make_ds(np.zeros((4, 4), dtype=np.uint16))
    ds.Rows, ds.Columns = 9000, 8000  # 72 MP > default 64 MP; pixel data never read
    path = save(ds, tmp_path)
    monkeypatch.setattr(FileDataset, "pixel_array", property(lambda self: pytest.fail("pixel data read")))
    with pytest.raises(DecodeError) as info:
        load_image(path)
    assert info.value.reason == "decompression bomb: 8000x9000 exceeds limit of 64000000 pixels"


def test_unsupported_transfer_syntax_is_named(tmp_path):
    ds = make_ds(np.zeros((8, 8), dtype=np.uint8))
    ds.PixelData = encapsulate([b"\x00" * 16])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 MP@ML
    with pytest.raises(DecodeError) as info:
        load_image(save(ds, tmp_path))
    assert "unsupported DICOM transfer syntax 1.2.840.10008.1.2.4.100" in info.value.reason
    assert "MPEG2" in info.value.reason


def test_truncated_dicom_is_refused(tmp_path):
    path = save(make_ds(ramp12(), bits_stored=12), tmp_path)
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(DecodeError, match="truncated"):
        load_image(path)


def test_decode_error_pickles(tmp_path):
    err = DecodeError(tmp_path / "x.dcm", "DICOM has no pixel data")
    clone = pickle.loads(pickle.dumps(err))
    assert (clone.path, clone.reason, str(clone)) == (err.path, err.reason, str(err))
