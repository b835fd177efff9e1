"""Generate the bad-input corpus: hundreds of broken, hostile or merely unusual image files.

Generated, never committed: every file is "a small valid image + one known defect", built from numpy
and pydicom at test time, so the corpus is reproducible (fixed seeds), reviewable (this file is the
whole corpus) and free of licensing questions. Each case carries the outcome radlens promises for it:
it *loads* (with a shape, and optionally a named property of the pixels), or it is *quarantined*
with a reason matching a pattern. `radlens.io.decode` is the policy these expectations follow
(content sniffing, not extensions; multi-frame refused; min-max for 16-bit/float; MONOCHROME1
inverted; header checks before any pixel is decoded).

    python tests/corpus/make_corpus.py OUT_DIR      # writes the files and prints the breakdown
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import sys
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import (
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

if __package__ in (None, ""):  # run as a script: make `corpus` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corpus.builders import (  # noqa: E402
    dicom_bytes,
    dicom_bytes_claiming,
    make_ds,
    pil_bytes,
    png_bytes_with_size,
    png_header_only,
    radiograph_array,
)

__all__ = ["CHECKS", "CorpusCase", "build_corpus"]

SHAPE = (48, 64)  # rows, cols of every base image: small, non-square (catches transposes)

# Reason patterns (regular expressions, matched case-insensitively against DecodeError.reason).
TRUNCATED = r"truncat"
NOT_IMAGE = r"not an image"
EMPTY = r"0-byte"
BOMB = r"decompression bomb"


@dataclass(frozen=True)
class CorpusCase:
    """One corpus file and what radlens must do with it.

    Attributes:
        name: path relative to the corpus folder.
        group: the breakdown bucket (truncated-png, bitflip-dicom, ...).
        expect: ``"loads"`` or ``"quarantine"``.
        reason: for quarantine, a regex the DecodeError reason must match (case-insensitive).
        shape: for loads, the expected ``(H, W)`` of the pixels.
        check: for loads, a key of :data:`CHECKS` naming a property the pixels must have.
        regular: False for a directory or a symlink: it cannot be uploaded.
        listed: whether folder discovery lists it (a directory is walked into, not listed; links are listed).
        duplicate_of: the case whose bytes this one repeats: it loads, but an embed job stores it once.
    """

    name: str
    group: str
    expect: str
    reason: str = ""
    shape: tuple[int, int] | None = None
    check: str | None = None
    regular: bool = True
    listed: bool = True
    duplicate_of: str | None = None


def _is_inverted(px: np.ndarray) -> bool:
    # MONOCHROME1 base: stored values rise left to right, so displayed brightness must fall
    return px[:, :8].mean() > px[:, -8:].mean() + 0.2


def _rises_left_to_right(px: np.ndarray) -> bool:
    return px[:, -8:].mean() > px[:, :8].mean() + 0.2


#: Named pixel properties a "loads" case can ask for (on top of the universal float32/finite/[0,1] contract).
CHECKS: dict[str, Callable[[np.ndarray], bool]] = {
    "inverted": _is_inverted,
    "ramp": _rises_left_to_right,
    "zeros": lambda px: bool((px == 0).all()),
    "full_range": lambda px: float(px.min()) == 0.0 and float(px.max()) == 1.0,
    "not_constant": lambda px: float(px.max()) > float(px.min()),
}


class _Writer:
    """Collects cases while writing their files; every content gets a fresh seed (no duplicate bytes)."""

    def __init__(self, root: Path) -> None:
        self.root, self.cases, self._seed = root, [], 1000

    def seed(self) -> int:
        self._seed += 1
        return self._seed

    def file(self, name: str, data: bytes, group: str, expect: str, reason: str = "", shape=None,
             check: str | None = None, duplicate_of: str | None = None) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.cases.append(CorpusCase(name, group, expect, reason, tuple(shape) if shape else None, check,
                                     duplicate_of=duplicate_of))

    def special(self, name: str, group: str, reason: str, listed: bool = True) -> None:
        self.cases.append(CorpusCase(name, group, "quarantine", reason, regular=False, listed=listed))


# ----------------------------------------------------------------------------- valid bases


def _png(seed: int, mode: str = "L") -> bytes:
    return pil_bytes(Image.fromarray(radiograph_array(SHAPE, seed)).convert(mode), "PNG")


def _jpeg(seed: int) -> bytes:
    return pil_bytes(Image.fromarray(radiograph_array(SHAPE, seed)), "JPEG", quality=90)


def _tiff(seed: int) -> bytes:
    return pil_bytes(Image.fromarray(radiograph_array(SHAPE, seed)), "TIFF")


def _dicom_ds(seed: int, **elements) -> Dataset:
    return make_ds(radiograph_array(SHAPE, seed, "uint16", 4095), bits_stored=12, **elements)


def _dicom(seed: int, **elements) -> bytes:
    return dicom_bytes(_dicom_ds(seed, **elements))


# ----------------------------------------------------------------------------- the cases


def _truncations(w: _Writer) -> None:
    """Files cut at several points: inside the signature, the header, the pixel data, the trailer."""
    bases = {"png": (_png(w.seed()), 8), "jpeg": (_jpeg(w.seed()), 3), "dicom": (_dicom(w.seed()), 132),
             "tiff": (_tiff(w.seed()), 4)}
    for kind, (data, magic_len) in bases.items():
        n = len(data)
        cuts = {1, 2, magic_len - 1, magic_len, magic_len + 5, 40, 100, 200, n // 8, n // 4, n // 3,
                n // 2, 2 * n // 3, 3 * n // 4, 7 * n // 8, n - 100, n - 13, n - 2, n - 1}
        if kind == "dicom":  # inside the data set's header, before and inside the PixelData element
            pixel_tag = data.rfind(b"\xe0\x7f\x10\x00")
            cuts |= {pixel_tag // 2, pixel_tag - 30, pixel_tag - 3, pixel_tag + 2, pixel_tag + 7, pixel_tag + 12}
        cuts = sorted(cuts)
        ext = {"png": "png", "jpeg": "jpg", "dicom": "dcm", "tiff": "tif"}[kind]
        for cut in cuts:
            if not 0 < cut < n:
                continue
            if kind == "dicom" and cut < magic_len:
                # the preamble is zeros: what is left does not look like any format
                reason = NOT_IMAGE
            elif cut < magic_len:
                reason = NOT_IMAGE
            else:
                reason = TRUNCATED
            w.file(f"truncated/{kind}_cut{cut:06d}.{ext}", data[:cut], f"truncated-{kind}", "quarantine", reason)


def _flip_bits(data: bytes, rng: np.random.Generator, lo: int, hi: int, n: int,
               ok: Callable[[bytes, int, int], bool] = lambda d, i, b: True) -> bytes:
    out = bytearray(data)
    done = 0
    while done < n:
        i = int(rng.integers(lo, hi))
        bit = 1 << int(rng.integers(0, 8))
        if ok(bytes(out), i, bit):
            out[i] ^= bit
            done += 1
    return bytes(out)


def _png_idat_span(data: bytes) -> tuple[int, int]:
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        if data[pos + 4 : pos + 8] == b"IDAT":
            return pos + 8, pos + 8 + length
        pos += 12 + length
    raise ValueError("no IDAT")


def _jpeg_scan_span(data: bytes) -> tuple[int, int]:
    sos = data.rfind(b"\xff\xda")
    (hdr_len,) = struct.unpack_from(">H", data, sos + 2)
    return sos + 2 + hdr_len, data.rfind(b"\xff\xd9")


def _jpeg_safe_flip(d: bytes, i: int, bit: int) -> bool:
    """Flip entropy-coded bytes without creating or destroying a marker (0xFF and its stuffed 0x00)."""
    return d[i] != 0xFF and d[i - 1] != 0xFF and (d[i] ^ bit) != 0xFF


def _bitflips(w: _Writer, per_kind: int = 15) -> None:
    """Seeded random bit flips where the right outcome is known.

    PNG: flips in IDAT break the chunk CRC and the zlib stream -> refused as corrupt (PNG has
    checksums: silently returning garbage pixels would be a bug). JPEG: flips in the entropy-coded
    scan have no checksum to fail; the image must still decode at its size (corrupted pixels are
    the file's truth). DICOM: flips in uncompressed pixel data likewise load at full size.
    """
    for i in range(per_kind):
        rng = np.random.default_rng(100 + i)
        data = _png(w.seed())
        lo, hi = _png_idat_span(data)
        flipped = _flip_bits(data, rng, lo, hi, 1 + i % 4)
        w.file(f"bitflip/png_{i:02d}.png", flipped, "bitflip-png", "quarantine", r"corrupt PNG|crc|decompress")

        data = _jpeg(w.seed())
        lo, hi = _jpeg_scan_span(data)
        flipped = _flip_bits(data, rng, lo + 1, hi - 1, 1 + i % 4, _jpeg_safe_flip)
        w.file(f"bitflip/jpeg_{i:02d}.jpg", flipped, "bitflip-jpeg", "loads", shape=SHAPE)

        data = _dicom(w.seed())
        npix = SHAPE[0] * SHAPE[1] * 2
        flipped = _flip_bits(data, rng, len(data) - npix, len(data), 1 + i % 4)
        w.file(f"bitflip/dicom_{i:02d}.dcm", flipped, "bitflip-dicom", "loads", shape=SHAPE)


def _empty_and_not_images(w: _Writer) -> None:
    for name in ("empty.png", "empty.jpg", "empty.dcm", "empty.tif", "empty"):
        w.file(f"empty/{name}", b"", "empty", "quarantine", EMPTY)
    png, dcm = _png(w.seed()), _dicom(w.seed())
    gz = gzip.compress(png)
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        zf.writestr("image.dcm", dcm)
    rng = np.random.default_rng(7)
    junk = {
        "text.png": b"patient notes, definitely not pixels\n" * 20,
        "text.dcm": b"BMI 23.4, see report\n" * 20,
        "csv.jpg": b"path,label\na.png,Effusion\n" * 10,
        "html.png": b"<!doctype html><html><body>404 Not Found</body></html>\n",
        "pdf.jpg": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n",
        "gzip_of_png.png": gz,
        "gzip_of_png.png.gz": gz,
        "zip_of_dicom.dcm": zbuf.getvalue(),
        "zip_of_dicom.png": zbuf.getvalue(),
        "random.png": rng.bytes(4096),
        "random.dcm": rng.bytes(300),
        "nul_bytes.jpg": b"\x00" * 1000,
        "mp4_header.png": b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200,
        "bm_text.bmp": b"BM is a text file too" * 10,
    }
    for name, data in junk.items():
        w.file(f"not_image/{name}", data, "not-an-image", "quarantine", NOT_IMAGE)


def _wrong_extensions(w: _Writer) -> None:
    """Content decides, not the name: every one of these is a good image under a misleading name."""
    makers = {"png": lambda: _png(w.seed()), "jpeg": lambda: _jpeg(w.seed()), "tiff": lambda: _tiff(w.seed()),
              "dicom": lambda: _dicom(w.seed())}
    names = {"png": ("dcm", "jpg", "tif", "txt", ""), "jpeg": ("png", "dcm", "bmp"),
             "tiff": ("png", "jpg"), "dicom": ("png", "jpg", "tif", "")}
    for kind, exts in names.items():
        for ext in exts:
            suffix = f".{ext}" if ext else ""
            w.file(f"wrong_ext/{kind}_as_{ext or 'noext'}{suffix}", makers[kind](), "wrong-extension", "loads",
                   shape=SHAPE)
    # the same bytes twice, under two names (this one sorts second): both load; an embed job embeds the
    # first and lists this one as its duplicate
    first = "wrong_ext/png_as_dcm.dcm"
    w.file("wrong_ext/png_as_dcm_copy.png", (w.root / first).read_bytes(), "duplicate", "loads", shape=SHAPE,
           duplicate_of=first)


def _bombs(w: _Writer) -> None:
    """Headers that claim more pixels than the budget: refused from the header, before decoding."""
    for wd, ht in ((100_000, 100_000), (65_535, 65_535), (1, 2**31 - 1), (2**31 - 1, 1), (9000, 8000)):
        w.file(f"bomb/png_ihdr_{wd}x{ht}.png", png_header_only(wd, ht), "bomb", "quarantine", BOMB)
    w.file("bomb/png_valid_30000x30000.png", png_bytes_with_size(30_000, 30_000), "bomb", "quarantine", BOMB)
    # JPEG SOF0 rewritten to 65500 x 65500
    jpg = bytearray(_jpeg(w.seed()))
    sof = jpg.find(b"\xff\xc0")
    struct.pack_into(">HH", jpg, sof + 5, 65500, 65500)
    w.file("bomb/jpeg_sof_65500x65500.jpg", bytes(jpg), "bomb", "quarantine", BOMB)
    # TIFF ImageWidth/ImageLength tags rewritten
    tif = Image.fromarray(radiograph_array(SHAPE, w.seed()))
    dims = {256: 70_000, 257: 70_000}  # ImageWidth, ImageLength
    buf = bytearray(pil_bytes(tif, "TIFF"))
    _patch_tiff_dims(buf, dims)
    w.file("bomb/tiff_70000x70000.tif", bytes(buf), "bomb", "quarantine", BOMB)
    # DICOM headers that lie about the size
    ds = _dicom_ds(w.seed())
    ds.Rows, ds.Columns = 65535, 65535
    w.file("bomb/dicom_65535x65535_short_data.dcm", dicom_bytes(ds), "bomb", "quarantine", BOMB)
    ds = _dicom_ds(w.seed())
    ds.Rows, ds.Columns = 4000, 4000  # within budget, but the pixel data is 48x64: truncated, not a crash
    w.file("bomb/dicom_4000x4000_short_data.dcm", dicom_bytes(ds), "bomb", "quarantine", TRUNCATED)


def _patch_tiff_dims(buf: bytearray, values: dict[int, int]) -> None:
    """Rewrite SHORT/LONG tags of the first IFD of a little-endian TIFF in place (as LONG)."""
    (ifd,) = struct.unpack_from("<I", buf, 4)
    (count,) = struct.unpack_from("<H", buf, ifd)
    for k in range(count):
        at = ifd + 2 + 12 * k
        tag, _typ, _n = struct.unpack_from("<HHI", buf, at)
        if tag in values:
            struct.pack_into("<HHII", buf, at, tag, 4, 1, values[tag])


def _pillow_modes(w: _Writer) -> None:
    """Every pixel layout radlens claims to read, each a valid file."""
    s = w.seed
    arr16 = radiograph_array(SHAPE, s(), "uint16", 60000)
    arr32f = radiograph_array(SHAPE, s(), "float32", 1).astype(np.float32) * 1000 - 200
    nanf = arr32f.copy()
    nanf[5:9, 5:9] = np.nan
    nanf[0, 0], nanf[1, 1] = np.inf, -np.inf
    L = Image.fromarray(radiograph_array(SHAPE, s()))
    rgb = Image.merge("RGB", [Image.fromarray(radiograph_array(SHAPE, s())) for _ in range(3)])
    cases = {
        "png16.png": (pil_bytes(Image.fromarray(arr16), "PNG"), "full_range"),
        "tiff16.tif": (pil_bytes(Image.fromarray(arr16), "TIFF"), "full_range"),
        "tiff16_lzw.tif": (pil_bytes(Image.fromarray(radiograph_array(SHAPE, s(), "uint16", 4095)), "TIFF",
                                     compression="tiff_lzw"), "full_range"),
        "tiff_float.tif": (pil_bytes(Image.fromarray(arr32f, "F"), "TIFF"), "full_range"),
        "tiff_float_nan_inf.tif": (pil_bytes(Image.fromarray(nanf, "F"), "TIFF"), "not_constant"),
        "tiff_float_all_nan.tif": (pil_bytes(Image.fromarray(np.full(SHAPE, np.nan, np.float32), "F"), "TIFF"),
                                   "zeros"),
        "tiff_int32.tif": (pil_bytes(Image.fromarray(radiograph_array(SHAPE, s(), "int32", 10**6)), "TIFF"),
                           "full_range"),
        "png16_constant.png": (pil_bytes(Image.fromarray(np.full(SHAPE, 777, np.uint16)), "PNG"), "zeros"),
        "rgba.png": (pil_bytes(Image.merge("RGBA", [*rgb.split(), L]), "PNG"), "ramp"),
        "la.png": (pil_bytes(Image.merge("LA", [Image.fromarray(radiograph_array(SHAPE, s())), L]), "PNG"), "ramp"),
        "palette.png": (pil_bytes(Image.fromarray(radiograph_array(SHAPE, s())).convert("RGB").convert("P"), "PNG"),
                        "ramp"),
        "palette_transparency.png": (pil_bytes(Image.fromarray(radiograph_array(SHAPE, s())).convert("P"), "PNG",
                                              transparency=0), "ramp"),
        "rgb.png": (pil_bytes(rgb, "PNG"), "ramp"),
        "onebit.png": (pil_bytes(Image.fromarray(radiograph_array(SHAPE, s())).convert("1"), "PNG"), None),
        "onebit.tif": (pil_bytes(Image.fromarray(radiograph_array(SHAPE, s())).convert("1"), "TIFF"), None),
        "onebit_g4.tif": (pil_bytes(Image.fromarray(radiograph_array(SHAPE, s())).convert("1"), "TIFF",
                                    compression="group4"), None),
        "cmyk.jpg": (pil_bytes(Image.fromarray(radiograph_array(SHAPE, s())).convert("CMYK"), "JPEG"), "ramp"),
        "rgb.jpg": (pil_bytes(rgb, "JPEG", quality=90), "ramp"),
        "progressive.jpg": (pil_bytes(Image.fromarray(radiograph_array(SHAPE, s())), "JPEG", progressive=True), "ramp"),
        "grey.bmp": (pil_bytes(Image.fromarray(radiograph_array(SHAPE, s())), "BMP"), "ramp"),
        "grey.gif": (pil_bytes(Image.fromarray(radiograph_array(SHAPE, s())), "GIF"), "ramp"),
        "rgb.tif": (pil_bytes(rgb, "TIFF"), "ramp"),
        "grey.webp": (pil_bytes(Image.fromarray(radiograph_array(SHAPE, s())), "WEBP", lossless=True), "ramp"),
        "grey.pgm": (pil_bytes(Image.fromarray(radiograph_array(SHAPE, s())), "PPM"), "ramp"),
    }
    for name, (data, check) in cases.items():
        w.file(f"modes/{name}", data, "pixel-mode", "loads", shape=SHAPE, check=check)
    frames = [Image.fromarray(radiograph_array(SHAPE, s())) for _ in range(3)]
    for fmt, ext in (("TIFF", "tif"), ("GIF", "gif")):
        buf = io.BytesIO()
        frames[0].save(buf, fmt, save_all=True, append_images=frames[1:])
        w.file(f"modes/multi_frame.{ext}", buf.getvalue(), "pixel-mode", "quarantine", r"multi-frame")


def _dicom_variants(w: _Writer) -> None:
    """Header defects and unusual-but-legal DICOMs."""
    s = w.seed
    ok = lambda name, data, check="ramp": w.file(f"dicom/{name}", data, "dicom", "loads", shape=SHAPE, check=check)  # noqa: E731
    bad = lambda name, data, reason: w.file(f"dicom/{name}", data, "dicom", "quarantine", reason)  # noqa: E731

    ok("plain.dcm", _dicom(s()))
    ok("monochrome1.dcm", _dicom(s(), PhotometricInterpretation="MONOCHROME1"), "inverted")
    ds = _dicom_ds(s())
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ok("implicit_vr.dcm", dicom_bytes(ds))
    bare = Dataset()
    bare.update(_dicom_ds(s()))
    buf = io.BytesIO()
    import pydicom

    pydicom.dcmwrite(buf, bare, implicit_vr=True, little_endian=True, enforce_file_format=False)
    ok("no_preamble_implicit", buf.getvalue())
    bare = Dataset()
    bare.update(_dicom_ds(s()))
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, bare, implicit_vr=False, little_endian=True, enforce_file_format=False)
    ok("no_preamble_explicit.dcm", buf.getvalue())
    ok("bad_window_text.dcm", _patched(_dicom(s(), WindowCenter="1234.5", WindowWidth="2345.5"),
                                       {b"1234.5": b"abc.de", b"2345.5": b"xyz\\12"}))
    ok("zero_window_width.dcm", _dicom(s(), WindowCenter=100, WindowWidth=0))
    ok("bad_spacing.dcm", _patched(_dicom(s(), PixelSpacing=[0.1375, 0.1375], ImagerPixelSpacing=[-1, 0]),
                                   {b"0.1375\\0.1375": b"x.yyyy\\nan   "}))
    ok("bad_age.dcm", _dicom(s(), PatientAge="ABCD", PatientSex="Q"))
    bad("frames_text.dcm", _patched(_dicom(s(), NumberOfFrames="7654"), {b"7654": b"ab c"}),
        r"NumberOfFrames is not an integer \('ab c'\)")
    bad("rescale_text.dcm", _patched(_dicom(s(), RescaleSlope="1.0", RescaleIntercept="0.0"), {b"1.0 ": b"one "}),
        r"RescaleSlope is not a usable number")
    bad("rescale_slope_zero.dcm", _dicom(s(), RescaleSlope=0), r"RescaleSlope")
    bad("rows_text.dcm", _rows_as_text(s()), r"Rows is not an integer")
    ok("frames_zero.dcm", _dicom(s(), NumberOfFrames=0))
    ok("frames_one.dcm", _dicom(s(), NumberOfFrames=1))
    ok("voi_lut_empty.dcm", _voi_lut_empty(s()))
    ok("rescale_negative_slope.dcm", _dicom(s(), RescaleSlope=-1, RescaleIntercept=4095), "inverted")
    arr8 = radiograph_array(SHAPE, s())
    ok("eight_bit.dcm", dicom_bytes(make_ds(arr8)))
    ok("signed16.dcm", dicom_bytes(make_ds(radiograph_array(SHAPE, s(), "int16", 2000) - 1000)))
    ok("bits_stored_lt_allocated.dcm", dicom_bytes(make_ds(radiograph_array(SHAPE, s(), "uint16", 1023),
                                                          bits_stored=10)))
    rgb = np.stack([radiograph_array(SHAPE, s()) for _ in range(3)], axis=-1)
    ok("rgb.dcm", dicom_bytes(make_ds(rgb, photometric="RGB")))
    ok("ybr_full.dcm", dicom_bytes(make_ds(rgb, photometric="YBR_FULL")), None)

    ds = _dicom_ds(s())
    del ds.PixelData
    bad("no_pixel_data.dcm", dicom_bytes(ds), r"no pixel data")
    ds = _dicom_ds(s())
    del ds.Rows
    bad("no_rows.dcm", dicom_bytes(ds), r"Rows/Columns")
    bad("rows_zero.dcm", _dicom(s(), Rows=0), r"Rows/Columns")
    frames = np.stack([radiograph_array(SHAPE, s(), "uint16", 4095) for _ in range(3)])
    ds = make_ds(frames[0], bits_stored=12, NumberOfFrames=3)
    ds.PixelData = frames.tobytes()
    bad("multi_frame.dcm", dicom_bytes(ds), r"multi-frame DICOM \(3 frames\)")
    bad("palette_without_lut.dcm", dicom_bytes(make_ds(radiograph_array(SHAPE, s()), photometric="PALETTE COLOR")),
        r"palette")
    bad("photometric_bogus.dcm", _dicom(s(), PhotometricInterpretation="BOGUS"), r"unsupported DICOM PhotometricInterpretation 'BOGUS'")
    bad("ybr_one_sample.dcm", _dicom(s(), PhotometricInterpretation="YBR_FULL"), r"YBR_FULL needs SamplesPerPixel 3, the file has 1")
    # BitsAllocated/BitsStored mismatches
    bad("bits_stored_gt_allocated.dcm", _dicom(s(), BitsStored=16, BitsAllocated=8, HighBit=15), r"BitsStored \(16\) does not fit")
    bad("bits_allocated_12.dcm", _dicom(s(), BitsAllocated=12), r"BitsAllocated is 12")
    bad("bits_allocated_32_short.dcm", _dicom(s(), BitsAllocated=32, BitsStored=32, HighBit=31), TRUNCATED)
    # twice the bytes 8-bit pixels need: pydicom reads two frames out of it; not one radiograph
    bad("bits_allocated_8_long.dcm", _dicom(s(), BitsAllocated=8, BitsStored=8, HighBit=7), r"decoded to shape")
    bad("samples_per_pixel_3_mono.dcm", _dicom(s(), SamplesPerPixel=3), r"MONOCHROME2 needs SamplesPerPixel 1")
    # compressed transfer syntax, raw (not encapsulated) pixel data
    for uid, tag in ((JPEGBaseline8Bit, "jpeg"), (RLELossless, "rle"), (JPEG2000Lossless, "j2k")):
        bad(f"raw_data_under_{tag}_syntax.dcm", dicom_bytes_claiming(_dicom_ds(s()), uid), r"could not decode DICOM pixel data|encapsulated")
    bad("mpeg2_syntax.dcm", dicom_bytes_claiming(_dicom_ds(s()), "1.2.840.10008.1.2.4.100"),
        r"unsupported DICOM transfer syntax")
    bad("bogus_syntax.dcm", dicom_bytes_claiming(_dicom_ds(s()), "1.2.3.4.5.6.7"), r"transfer syntax")
    # a tag whose declared length runs past the end of the file
    data = bytearray(_dicom(s()))
    at = data.find(b"\x08\x00\x60\x00CS")
    struct.pack_into("<H", data, at + 6, 0xFFF0)
    bad("element_length_lies.dcm", bytes(data), r"truncated DICOM: element \(0008,0060\) declares 65520 bytes")
    # PixelData length field says 2 GB: pydicom reads to the end of the file, where every pixel is
    data = bytearray(_dicom(s()))
    at = data.rfind(b"\xe0\x7f\x10\x00OW")
    struct.pack_into("<I", data, at + 8, 0x7FFFFFF0)
    ok("pixel_length_lies.dcm", bytes(data))
    data = bytearray(_dicom(s()))
    struct.pack_into("<I", data, at + 8, 0x7FFFFFF0)
    bad("pixel_length_lies_and_cut.dcm", bytes(data[:-500]), TRUNCATED)


def _patched(data: bytes, replacements: dict[bytes, bytes]) -> bytes:
    """Overwrite values in an encoded file (same length), to write what pydicom refuses to: wrong-VR text."""
    for old, new in replacements.items():
        assert len(old) == len(new) and data.count(old) == 1, (old, new)
        data = data.replace(old, new)
    return data


def _rows_as_text(seed: int) -> bytes:
    """Rows written with VR IS ("text integer") holding letters: a wrong VR with a wrong value."""
    ds = _dicom_ds(seed)
    del ds.Rows
    ds.add_new(0x00280010, "IS", "4848")
    return _patched(dicom_bytes_claiming(ds, "1.2.840.10008.1.2.1"), {b"4848": b"rows"})


def _voi_lut_empty(seed: int) -> bytes:
    ds = _dicom_ds(seed)
    item = Dataset()
    item.LUTDescriptor = [0, 0, 16]
    item.add_new(0x00283006, "OW", b"")
    ds.VOILUTSequence = [item]
    return dicom_bytes(ds)


def _special_files(w: _Writer) -> None:
    """Things that are not regular files at all."""
    (w.root / "special" / "folder.png").mkdir(parents=True, exist_ok=True)
    w.special("special/folder.png", "special", r"directory", listed=False)
    loop_a, loop_b = w.root / "special" / "loop_a.png", w.root / "special" / "loop_b.png"
    try:
        os.symlink(loop_b.name, loop_a)
        os.symlink(loop_a.name, loop_b)
    except (OSError, NotImplementedError):  # pragma: no cover - filesystems without symlinks
        return
    w.special("special/loop_a.png", "special", r"symbolic link")
    w.special("special/loop_b.png", "special", r"symbolic link")
    dangling = w.root / "special" / "dangling.dcm"
    os.symlink("does-not-exist.dcm", dangling)
    w.special("special/dangling.dcm", "special", r"symbolic link|no such file")


def build_corpus(out_dir: str | os.PathLike[str]) -> list[CorpusCase]:
    """Write every corpus file under ``out_dir`` (created if needed) and return the cases, in a fixed order."""
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    w = _Writer(root)
    for part in (_truncations, _bitflips, _empty_and_not_images, _wrong_extensions, _bombs, _pillow_modes,
                 _dicom_variants, _special_files):
        part(w)
    names = [c.name for c in w.cases]
    assert len(names) == len(set(names)), "corpus case names must be unique"
    return w.cases


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent / "generated"
    cases = build_corpus(out)
    by = Counter((c.group, c.expect) for c in cases)
    for (group, expect), n in sorted(by.items()):
        print(f"{group:18s} {expect:10s} {n:4d}")
    print(f"{len(cases)} cases written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
