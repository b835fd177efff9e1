"""Decode one radiograph file (PNG, JPEG, TIFF, BMP, DICOM, ...) into a float image.

Every downstream stage (encoders, store, cli) sees the same thing: a 2-D ``float32``
array in ``[0, 1]`` where *higher means brighter* (the DICOM MONOCHROME2 convention),
plus the file's content hash and a small, JSON-friendly ``meta`` dict.  Getting that
contract right in one place is the point of this module: a model trained on
MONOCHROME2 images silently degrades when fed an un-inverted MONOCHROME1 image or a
16-bit PNG divided by the wrong constant, and nobody notices until the metrics drop.

Anything wrong with a *file* (missing, empty, truncated, not an image, too large,
an unsupported compression) is raised as :class:`DecodeError`, which carries the path
and a short human-readable reason so callers can quarantine the file and move on.
Only ``KeyboardInterrupt``/``SystemExit`` and ``MemoryError`` are allowed through,
because those are about the process, not about the file.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from radlens.io.errors import FileProblem

__all__ = ["DEFAULT_MAX_PIXELS", "DecodeError", "Radiograph", "load_image", "sniff_format"]

logger = logging.getLogger(__name__)

#: Default pixel budget.  Large enough for any real detector (a 43x43 cm panel at
#: 100 um is ~18.5 MP), small enough that one hostile header cannot make us allocate
#: tens of GB.
DEFAULT_MAX_PIXELS = 64_000_000

# ITU-R BT.601 luma weights: the same ones Pillow's ``convert("L")`` uses, applied in
# float so we do not round to 8 bits before normalising.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)

# Magic bytes -> (our format name, Pillow's plugin name).  Pillow is only ever asked
# to open the one format the content says it is: some Pillow plugins (e.g. TGA) have
# no magic number and will happily "recognise" arbitrary bytes.
_PIL_MAGIC: tuple[tuple[bytes, str, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png", "PNG"),
    (b"\xff\xd8\xff", "jpeg", "JPEG"),
    (b"II*\x00", "tiff", "TIFF"),
    (b"MM\x00*", "tiff", "TIFF"),
    (b"II+\x00", "tiff", "TIFF"),  # BigTIFF: Pillow refuses it with a clear error
    (b"MM\x00+", "tiff", "TIFF"),
    (b"GIF87a", "gif", "GIF"),
    (b"GIF89a", "gif", "GIF"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "jpeg2000", "JPEG2000"),
    (b"\xff\x4f\xff\x51", "jpeg2000", "JPEG2000"),
)
# BMP's "BM" alone is too weak (plenty of text starts with it): also require a
# known DIB header size at offset 14.
_BMP_DIB_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})
_PIL_NAME = {ours: pil for _, ours, pil in _PIL_MAGIC} | {"bmp": "BMP", "webp": "WEBP", "pnm": "PPM"}

# Elements that can hold the image itself (integer, float and double-float pixels).
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)


class DecodeError(FileProblem):
    """A file that cannot be turned into a radiograph, and why."""


@dataclass
class Radiograph:
    """A decoded radiograph.

    Attributes:
        pixels: ``float32`` array of shape ``(H, W)``, values in ``[0, 1]``, higher =
            brighter (MONOCHROME2), whatever the file's own convention was.
        path: the file it came from.
        content_hash: sha256 hex digest of the file's bytes, so caches and stores can
            key on content rather than on a path that may move or be reused.
        meta: JSON-friendly facts about the file: always ``format``,
            ``original_shape`` (``[rows, cols]``), ``bits``, ``normalisation`` and
            ``pixel_spacing`` (``[row, col]`` in mm, or ``None``); for DICOM also
            ``photometric``, ``modality``, ``view``, ``patient_id``, ``sex``,
            ``age`` and the transfer syntax.
    """

    pixels: np.ndarray
    path: Path
    content_hash: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of :attr:`pixels`."""
        return (int(self.pixels.shape[0]), int(self.pixels.shape[1]))


# --------------------------------------------------------------------------- entry


def load_image(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Radiograph:
    """Decode ``path`` into a :class:`Radiograph`, or raise :class:`DecodeError`.

    The format is detected from the file's *content* (magic bytes, DICOM's ``DICM``
    marker at offset 128, or a preamble-less DICOM data set), never from the
    extension: exports are routinely misnamed (``.dcm`` PNGs, extension-less DICOMs).

    The file is read into memory once and both hashed and decoded from those bytes,
    so the hash always describes exactly the pixels that were returned even if the
    file is rewritten concurrently.

    Args:
        path: file to decode.
        max_pixels: refuse images with more than this many pixels, checked from the
            header *before* any pixel data is decompressed (decompression-bomb guard).

    Raises:
        DecodeError: for any problem with the file; ``err.reason`` says which.
    """
    path = Path(path)
    data, kind = _read_image_bytes(path, max_bytes=_max_file_bytes(max_pixels))
    return _decode(data, kind, path, max_pixels)


def decode_bytes(data: bytes, *, name: str = "upload", max_pixels: int = DEFAULT_MAX_PIXELS) -> Radiograph:
    """Decode an image held in memory (an upload): the same checks and contract as :func:`load_image`.

    `name` only labels errors and the result's `path`; nothing is read from or written to the filesystem,
    so a client-chosen file name can never reach it.
    """
    label = Path(Path(str(name)).name or "upload")  # the bare name, for messages only
    if not data:
        raise DecodeError(label, "0-byte file")
    kind = sniff_format(data[:4096])
    if kind is None:
        raise DecodeError(label, "not an image (unrecognised format)")
    if len(data) > _max_file_bytes(max_pixels):
        raise DecodeError(label, f"file too large: {len(data)} bytes exceeds limit of {_max_file_bytes(max_pixels)} bytes")
    return _decode(data, kind, label, max_pixels)


def _decode(data: bytes, kind: str, path: Path, max_pixels: int) -> Radiograph:
    content_hash = hashlib.sha256(data).hexdigest()
    try:
        if kind == "dicom":
            pixels, meta = _decode_dicom(path, data, max_pixels)
        else:
            pixels, meta = _decode_pillow(path, data, kind, max_pixels)
    except DecodeError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a bad file must never crash a batch
        raise DecodeError(path, f"could not decode {kind}: {type(exc).__name__}: {exc}") from exc

    # Enforce the contract whatever the path: float32, finite, within [0, 1]. The full-array repairs
    # cost ~4 ms on a 512x512 image, so they run only when a cheap sum/min/max says they are needed.
    pixels = np.asarray(pixels, dtype=np.float32)
    if not np.isfinite(pixels.sum()):
        pixels = np.nan_to_num(pixels, nan=0.0, posinf=1.0, neginf=0.0)
    if pixels.size and (pixels.min() < 0.0 or pixels.max() > 1.0):
        pixels = np.clip(pixels, 0.0, 1.0)
    if pixels.ndim != 2:  # pragma: no cover - guarded by the decoders
        raise DecodeError(path, f"decoded to a {pixels.ndim}-D array, expected 2-D")
    meta.setdefault("pixel_spacing", None)
    return Radiograph(pixels=pixels, path=path, content_hash=content_hash, meta=meta)


def _max_file_bytes(max_pixels: int) -> int:
    """Largest file worth reading for a given pixel budget.

    8 bytes per pixel covers every uncompressed layout we decode (16-bit RGB is 6,
    float64 is 8); the 64 MiB slack covers headers, ICC profiles and private DICOM
    tags.  Anything bigger cannot be a radiograph we would accept anyway.
    """
    return 8 * max_pixels + 64 * 2**20


def _read_image_bytes(path: Path, *, max_bytes: int) -> tuple[bytes, str]:
    """Read the file if it looks like an image; return ``(bytes, format)``.

    The first bytes are sniffed *before* the rest is read, so a stray multi-GB
    video or archive in a scanned folder is refused without loading it.
    Non-regular files are refused before opening so a FIFO or device cannot block
    the pipeline.  OS-level problems become DecodeErrors.
    """
    try:
        if not path.exists():
            if path.is_symlink():  # exists() follows links: a dangling link or a loop is not a missing file
                raise DecodeError(path, "broken symbolic link (missing target or a symlink loop)")
            raise DecodeError(path, "file not found")
        if path.is_dir():
            raise DecodeError(path, "is a directory, not a file")
        if not path.is_file():
            raise DecodeError(path, "not a regular file")
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                raise DecodeError(path, "0-byte file")
            head = fh.read(4096)
            kind = sniff_format(head)
            if kind is None:
                raise DecodeError(path, "not an image (unrecognised format)")
            if size > max_bytes:
                raise DecodeError(path, f"file too large: {size} bytes exceeds limit of {max_bytes} bytes")
            data = head + fh.read()
    except DecodeError:
        raise
    except PermissionError as exc:
        raise DecodeError(path, "permission denied") from exc
    except FileNotFoundError as exc:  # removed between the check and the read
        raise DecodeError(path, "file not found") from exc
    except OSError as exc:
        raise DecodeError(path, f"could not read file: {exc.strerror or exc}") from exc
    if not data:  # truncated to zero after fstat
        raise DecodeError(path, "0-byte file")
    return data, kind


def sniff_format(data: bytes) -> str | None:
    """Name the image format of ``data`` from its leading bytes, or ``None``.

    Returns one of ``"dicom"``, ``"png"``, ``"jpeg"``, ``"tiff"``, ``"gif"``,
    ``"jpeg2000"``, ``"bmp"``, ``"webp"``, ``"pnm"``.  DICOM is tested first because a
    DICOM preamble may legitimately contain a TIFF header (dual-personality files).
    """
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    for magic, name, _ in _PIL_MAGIC:
        if data.startswith(magic):
            return name
    if len(data) >= 18 and data[:2] == b"BM" and struct.unpack_from("<I", data, 14)[0] in _BMP_DIB_SIZES:
        return "bmp"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if len(data) >= 3 and data[0:1] == b"P" and data[1:2] in b"123456" and data[2:3].isspace():
        return "pnm"
    if _looks_like_raw_dicom(data):
        return "dicom"
    return None


def _looks_like_raw_dicom(data: bytes) -> bool:
    """Heuristic for DICOM written without the 128-byte preamble and ``DICM``.

    Such files (old ACR-NEMA style exports, some PACS dumps) start directly with a
    little-endian data element of group 0002 or 0008.  ``pydicom.dcmread(force=False)``
    rejects them outright, so we only pass ``force=True`` when this first element
    parses plausibly; otherwise arbitrary bytes would be "read" as DICOM.
    """
    if len(data) < 8:
        return False
    vr = data[4:6]
    explicit = vr.isalpha() and vr.isupper()
    group, element = struct.unpack_from("<HH", data, 0)
    if group in (0x0002, 0x0008) and element <= 0x0100:
        if explicit:
            return True
        (length,) = struct.unpack_from("<I", data, 4)  # implicit VR: a 32-bit length
        return 0 < length < min(len(data), 1024)
    group, element = struct.unpack_from(">HH", data, 0)  # explicit VR big endian (retired)
    return group in (0x0002, 0x0008) and element <= 0x0100 and explicit


# ----------------------------------------------------------------- normalisation


def _minmax(arr: np.ndarray) -> np.ndarray:
    """Scale to ``[0, 1]`` by the image's own range; a constant image becomes zeros.

    Non-finite values (possible in float TIFFs) are ignored for the range and set to 0
    so one NaN cannot turn the whole image into NaN.
    """
    arr = np.asarray(arr, dtype=np.float64)
    finite = np.isfinite(arr)
    if not finite.all():
        if not finite.any():
            return np.zeros(arr.shape, dtype=np.float64)
        arr = np.where(finite, arr, np.nan)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        arr = np.nan_to_num(arr, nan=lo)
    else:
        lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.float64)
    return (arr - lo) / (hi - lo)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of an ``(H, W, 3+)`` array, in the input's units (alpha dropped)."""
    return np.asarray(rgb[..., :3], dtype=np.float64) @ _LUMA


def _bomb_reason(width: int, height: int, max_pixels: int) -> str:
    return f"decompression bomb: {width}x{height} exceeds limit of {max_pixels} pixels"


# ------------------------------------------------------------------------ pillow


def _decode_pillow(path: Path, data: bytes, kind: str, max_pixels: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode PNG/JPEG/TIFF/BMP/GIF/... with Pillow.

    Scaling rules, and why:

    * 8-bit (and 1-bit, palette, colour) images are divided by 255 (``"fixed"``):
      8 bits is an explicit, universal display range.
    * 16-bit and 32-bit integer images are min-max normalised per image
      (``"minmax"``): 16-bit PNG/TIFF exports of radiographs carry arbitrary bit
      depths (10, 12, 14, 15 or 16 significant bits, sometimes shifted) and no header
      says which, so any fixed divisor leaves some exports nearly black.  Min-max is
      the only rule that treats all of them the same.
    * Float images are min-max normalised for the same reason.
    """
    label = kind.upper()
    incomplete = _truncation_reason(kind, data)
    if incomplete:
        raise DecodeError(path, incomplete)
    try:
        # Pillow runs its own bomb check inside open(): an error above
        # 2 * Image.MAX_IMAGE_PIXELS (~179 MP), a warning above it.  We deliberately
        # do not wrap this in warnings.catch_warnings() to turn the warning into an
        # error: that context manager swaps process-global state and is not
        # thread-safe (load_image runs in thread pools).  Our own max_pixels check
        # below is the authoritative limit; the warning is caught here only when the
        # process runs with warnings-as-errors.
        im = Image.open(io.BytesIO(data), formats=[_PIL_NAME[kind]])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(path, f"decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise DecodeError(path, f"corrupt or truncated {label} header") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise DecodeError(path, _pil_failure(label, exc)) from exc

    with im:
        width, height = im.size
        if width * height > max_pixels:
            raise DecodeError(path, _bomb_reason(width, height, max_pixels))
        n_frames = int(getattr(im, "n_frames", 1) or 1)
        if n_frames > 1 and im.format != "MPO":  # MPO: frame 0 is the primary JPEG
            raise DecodeError(path, f"multi-frame {label} ({n_frames} frames) is not a single radiograph")
        try:
            im.load()
        except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as exc:
            raise DecodeError(path, _pil_failure(label, exc)) from exc

        orientation = im.getexif().get(0x0112)  # EXIF Orientation
        if orientation not in (None, 1):
            im = ImageOps.exif_transpose(im)
        mode = im.mode
        pixels, bits, normalisation = _pil_to_unit(path, im)

    meta: dict[str, Any] = {
        "format": kind,
        "original_shape": [int(pixels.shape[0]), int(pixels.shape[1])],
        "bits": bits,
        "mode": mode,
        "normalisation": normalisation,
        "exif_orientation": int(orientation) if orientation is not None else None,
        "pixel_spacing": None,
    }
    return pixels, meta


def _truncation_reason(kind: str, data: bytes) -> str | None:
    """Cheap structural end-of-file check for PNG and JPEG, or ``None`` if complete.

    Pillow detects most truncation itself, but only while the process-wide
    ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is ``False``; any library that flips it
    would make half-written files decode silently as grey padding.  This check does
    not depend on that global.  A PNG must end its chunk list with IEND (a file cut
    exactly between two IDAT chunks is otherwise undetectable without decoding); a
    JPEG must have an EOI marker after its last start-of-scan.
    """
    if kind == "png":
        pos, size = 8, len(data)
        while pos + 8 <= size:
            (length,) = struct.unpack_from(">I", data, pos)
            chunk_type = data[pos + 4 : pos + 8]
            end = pos + 12 + length  # length + type + body + CRC
            if end > size:
                name = chunk_type.decode("latin-1", "replace")
                return f"truncated PNG: {name} chunk is cut off ({end - size} bytes missing)"
            if chunk_type == b"IEND":
                return None
            pos = end
        return "truncated PNG: no IEND chunk"
    if kind == "jpeg":
        # FFDA (SOS) and FFD9 (EOI) cannot occur inside entropy-coded data (0xFF is
        # byte-stuffed there), so an EOI after the last SOS means the scan finished.
        last_sos = data.rfind(b"\xff\xda")
        if last_sos < 0:
            return "truncated or corrupt JPEG: no image scan (SOS marker)"
        if data.rfind(b"\xff\xd9") < last_sos:
            return "truncated JPEG: no end-of-image marker after the last scan"
    return None


def _pil_failure(label: str, exc: BaseException) -> str:
    msg = str(exc) or type(exc).__name__
    if "truncat" in msg.lower() or isinstance(exc, EOFError):
        return f"truncated {label}: {msg}"
    return f"corrupt {label}: {msg}"


def _pil_to_unit(path: Path, im: Image.Image) -> tuple[np.ndarray, int, str]:
    """Return ``(pixels in [0,1], bits per sample, normalisation rule)``."""
    mode = im.mode
    if mode == "1":
        return np.asarray(im, dtype=np.float64), 1, "fixed"
    if mode == "L":  # float32 division of an 8-bit value is correctly rounded: identical to a float64 path
        return np.asarray(im, dtype=np.float32) / np.float32(255.0), 8, "fixed"
    if mode == "LA":
        return np.asarray(im, dtype=np.float64)[..., 0] / 255.0, 8, "fixed"
    if mode.startswith("I;16"):
        return _minmax(np.asarray(im)), 16, "minmax"
    if mode == "I":
        return _minmax(np.asarray(im)), 32, "minmax"
    if mode == "F":
        return _minmax(np.asarray(im)), 32, "minmax"
    if mode in ("RGB", "RGBA", "RGBX", "RGBa", "P", "PA", "CMYK", "YCbCr"):
        rgb = np.asarray(im.convert("RGB"))  # P: via palette; RGBA: alpha dropped
        return _luminance(rgb) / 255.0, 8, "fixed"
    raise DecodeError(path, f"unsupported image mode {mode!r}")


# ------------------------------------------------------------------------- DICOM


def _decode_dicom(path: Path, data: bytes, max_pixels: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode a single-frame DICOM image to MONOCHROME2 ``[0, 1]``.

    Order matters: header checks (frames, size, pixel data present, decoder
    available) all happen before ``pixel_array`` so that a bad or hostile file costs
    nothing to reject.  The grey-scale pipeline follows PS3.4's: stored values ->
    Modality LUT/rescale -> VOI (window or LUT) -> MONOCHROME1 inversion.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    has_preamble = data[128:132] == b"DICM"
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=not has_preamble)
    except InvalidDicomError as exc:
        raise DecodeError(path, f"corrupt DICOM: {exc}") from exc
    except (EOFError, struct.error) as exc:
        raise DecodeError(path, f"truncated DICOM header: {exc}") from exc
    except (OSError, ValueError, KeyError, TypeError, AttributeError, NotImplementedError) as exc:
        raise DecodeError(path, f"corrupt DICOM header: {type(exc).__name__}: {exc}") from exc
    if not has_preamble and len(ds) == 0:
        raise DecodeError(path, "not an image (unrecognised format)")
    cut = _cut_element(ds)  # before any element is read (and converted) below
    if has_preamble and not any(tag in ds for tag in _PIXEL_TAGS):
        # pydicom stops quietly at the end of the bytes: a file cut inside its header reads as a short,
        # pixel-less data set. A 'DICM' file without its required file meta or any data set was cut.
        file_meta = getattr(ds, "file_meta", None)
        if file_meta is None or "TransferSyntaxUID" not in file_meta:
            raise DecodeError(path, "truncated DICOM header: the file meta information ends early (no TransferSyntaxUID)")
        if len(ds) == 0:
            raise DecodeError(path, "truncated DICOM: nothing after the file meta information")

    tsyntax = _ensure_transfer_syntax(ds)
    meta = _dicom_meta(ds, tsyntax)
    meta["dicom_preamble"] = has_preamble

    if not any(tag in ds for tag in _PIXEL_TAGS):
        if cut:
            raise DecodeError(path, f"truncated DICOM: {cut}, so the pixel data is missing")
        hint = " (file may be truncated)" if "Rows" in ds else ""
        raise DecodeError(path, f"DICOM has no pixel data{hint}")
    _check_pixel_description(path, ds, meta["photometric"])
    frames = _int_or(ds.get("NumberOfFrames"), 1)
    if frames > 1:
        raise DecodeError(path, f"multi-frame DICOM ({frames} frames) is not a single radiograph")
    if "Rows" not in ds or "Columns" not in ds:
        raise DecodeError(path, "DICOM pixel data has no Rows/Columns (image pixel module missing)")
    rows, cols = _int_or(ds.get("Rows"), 0), _int_or(ds.get("Columns"), 0)
    if rows <= 0 or cols <= 0:
        raise DecodeError(path, f"DICOM has invalid Rows/Columns ({rows}x{cols})")
    if rows * cols > max_pixels:
        raise DecodeError(path, _bomb_reason(cols, rows, max_pixels))
    _check_decoder(path, tsyntax)

    try:
        arr = ds.pixel_array
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001
        msg = str(exc)
        if "less than expected" in msg or "truncat" in msg.lower() or isinstance(exc, EOFError):
            raise DecodeError(path, f"truncated DICOM pixel data: {msg}") from exc
        name = getattr(tsyntax, "name", "unknown")
        raise DecodeError(
            path, f"could not decode DICOM pixel data ({tsyntax} {name}): {type(exc).__name__}: {msg}"
        ) from exc

    photometric = meta["photometric"] or "MONOCHROME2"
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        if arr.ndim != 2:
            raise DecodeError(path, f"grey-scale DICOM decoded to shape {arr.shape}, expected 2-D")
        pixels = _dicom_grey(path, arr, ds, meta)
        if photometric == "MONOCHROME1":
            pixels = 1.0 - pixels  # MONOCHROME1: minimum value is displayed white
    else:
        pixels = _dicom_colour(path, arr, ds, meta, photometric)

    meta["original_shape"] = [int(pixels.shape[0]), int(pixels.shape[1])]
    return pixels, meta


# Photometric interpretations radlens decodes, and the samples per pixel each one requires (PS3.3 C.7.6.3.1.2).
_SAMPLES_PER_PIXEL = {"MONOCHROME1": 1, "MONOCHROME2": 1, "PALETTE COLOR": 1, "RGB": 3, "YBR_FULL": 3,
                      "YBR_FULL_422": 3, "YBR_PARTIAL_420": 3, "YBR_ICT": 3, "YBR_RCT": 3}
_INT_FIELDS = ("Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "BitsAllocated", "BitsStored", "HighBit",
               "PixelRepresentation")


def _check_pixel_description(path: Path, ds: Any, photometric: str | None) -> None:
    """Refuse, naming the element, a header whose description of the pixels cannot be right.

    Without this, text in an integer element, a non-numeric rescale or a photometric interpretation
    that contradicts SamplesPerPixel surface from deep inside pydicom/numpy as an unrelated
    ``ValueError``/``UFuncTypeError`` (or, for a rescale slope, decide the image's polarity from
    garbage). Checked from the header, before any pixel is decoded.
    """
    for keyword in _INT_FIELDS:
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        try:
            int(value)
        except (TypeError, ValueError):
            raise DecodeError(path, f"DICOM {keyword} is not an integer ({str(value)!r})") from None
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if not np.isfinite(number) or (keyword == "RescaleSlope" and number == 0):
            raise DecodeError(path, f"DICOM {keyword} is not a usable number ({str(value)!r})")
    allocated = _int_or(ds.get("BitsAllocated"), None)
    if allocated is not None and allocated not in (1, 8, 16, 32, 64):
        raise DecodeError(path, f"DICOM BitsAllocated is {allocated}, expected 1, 8, 16, 32 or 64")
    stored = _int_or(ds.get("BitsStored"), None)
    if allocated is not None and stored is not None and not 0 < stored <= allocated:
        raise DecodeError(path, f"DICOM BitsStored ({stored}) does not fit in BitsAllocated ({allocated})")
    if photometric is None:
        return
    if photometric not in _SAMPLES_PER_PIXEL:
        raise DecodeError(path, f"unsupported DICOM PhotometricInterpretation {photometric!r}")
    samples = _int_or(ds.get("SamplesPerPixel"), 1)
    if samples != _SAMPLES_PER_PIXEL[photometric]:
        raise DecodeError(path, f"DICOM PhotometricInterpretation {photometric} needs SamplesPerPixel "
                                f"{_SAMPLES_PER_PIXEL[photometric]}, the file has {samples}")


def _cut_element(ds: Any) -> str | None:
    """Describe the data set's last element if its value is shorter than its declared length, else ``None``.

    pydicom reads a value that runs past the end of the bytes without complaint; the element then swallows
    everything after it (often the pixel data), and the file would be reported as having none.
    """
    if not len(ds):
        return None
    tag = list(ds.keys())[-1]
    raw = ds.get_item(tag)
    declared, value = getattr(raw, "length", None), getattr(raw, "value", None)
    if not isinstance(declared, int) or declared == 0xFFFFFFFF or not isinstance(value, (bytes, bytearray)):
        return None
    if len(value) < declared:
        return f"element {tag} declares {declared} bytes but the file ends after {len(value)}"
    return None


def _ensure_transfer_syntax(ds: Any) -> Any:
    """Return the transfer syntax UID, filling it in for preamble-less files.

    Files read with ``force=True`` have no File Meta group; pydicom still knows how
    it parsed them (``original_encoding``) but ``pixel_array`` insists on the UID.
    """
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    file_meta = getattr(ds, "file_meta", None)
    if file_meta is None:
        file_meta = ds.file_meta = FileMetaDataset()
    uid = file_meta.get("TransferSyntaxUID")
    if uid:
        return UID(str(uid))
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if implicit:
        uid = ImplicitVRLittleEndian
    else:
        uid = ExplicitVRLittleEndian if little in (True, None) else ExplicitVRBigEndian
    file_meta.TransferSyntaxUID = uid
    return uid


def _check_decoder(path: Path, tsyntax: Any) -> None:
    """Fail early, naming the transfer syntax, when no installed plugin can decode it."""
    from pydicom.pixels.decoders.base import get_decoder

    name = getattr(tsyntax, "name", "unknown")
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError as exc:
        raise DecodeError(path, f"unsupported DICOM transfer syntax {tsyntax} ({name}): {exc}") from exc
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "no plugin available"
        raise DecodeError(
            path, f"unsupported DICOM transfer syntax {tsyntax} ({name}): no decoder installed ({missing})"
        )


def _dicom_grey(path: Path, arr: np.ndarray, ds: Any, meta: dict[str, Any]) -> np.ndarray:
    """Modality LUT, then VOI, then scale the VOI output range to ``[0, 1]``.

    When both a VOI LUT Sequence and a window are present the LUT wins, as in
    pydicom's ``apply_voi_lut(prefer_lut=True)``.

    The VOI output range is *not* the pixel range: pydicom 3's windowing returns
    values in ``[y_min, y_max]`` = the stored-value range mapped through the rescale
    (e.g. ``[0, 4095]`` for 12-bit, ``[-1024, 3071]`` with intercept -1024), with
    everything below the window at ``y_min`` and above it at ``y_max``.  We ask
    pydicom for that range by pushing two extreme values through the same function,
    so the mapping stays correct for LINEAR, LINEAR_EXACT and SIGMOID alike.
    """
    from pydicom.pixels import apply_modality_lut, apply_windowing

    values = apply_modality_lut(arr, ds)
    meta["normalisation"] = "minmax"
    meta["voi"] = None

    if _has_voi_lut(ds):
        try:
            out, lo, hi = _apply_voi_lut_sequence(values, ds)
            meta["voi"], meta["normalisation"] = "lut", "voi_lut"
            return _scale(out, lo, hi)
        except (ValueError, TypeError, KeyError, AttributeError, IndexError, struct.error) as exc:
            _voi_fallback(path, meta, f"VOI LUT Sequence unusable ({exc})")
    elif ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        try:
            center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
            out = apply_windowing(values, ds, index=0)
            with np.errstate(over="ignore", invalid="ignore"):
                lo, hi = (float(v) for v in apply_windowing(np.array([-1e30, 1e30]), ds, index=0))
            meta.update(
                voi="window",
                normalisation="window",
                window_center=center,
                window_width=width,
                voi_function=str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper(),
            )
            return _scale(out, lo, hi)
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
            _voi_fallback(path, meta, f"window unusable ({exc})")
    return _minmax(values)


def _voi_fallback(path: Path, meta: dict[str, Any], why: str) -> None:
    # A broken display hint should not cost us an otherwise valid image.
    logger.warning("%s: %s; falling back to min-max", path, why)
    meta["voi_warning"] = why
    meta["voi"] = None
    meta["normalisation"] = "minmax"


def _scale(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map ``[lo, hi]`` linearly to ``[0, 1]`` (``lo > hi`` allowed: negative slope)."""
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi == lo:
        return _minmax(arr)
    return (np.asarray(arr, dtype=np.float64) - lo) / (hi - lo)


def _has_voi_lut(ds: Any) -> bool:
    seq = ds.get("VOILUTSequence")
    if not seq:
        return False
    item = seq[0]
    return item.get("LUTDescriptor") is not None and item.get("LUTData") is not None


def _apply_voi_lut_sequence(values: np.ndarray, ds: Any) -> tuple[np.ndarray, float, float]:
    """Apply the first VOI LUT; return ``(output, lut_min, lut_max)``.

    Implemented here rather than with ``pydicom.pixels.apply_voi``: pydicom 3.0.2
    computes LUT *indices* in the LUT's entry dtype, so an 8-bit-entry LUT with more
    than 256 entries (the usual 12-bit -> 8-bit display LUT) wraps indices modulo 256
    and returns garbage.  The output is normalised by the LUT's own min/max rather
    than by ``2**bits - 1`` because many LUTs declare 16 bits but only use 12.
    """
    item = ds.VOILUTSequence[0]
    descriptor = [int(v) for v in item.LUTDescriptor]
    n_entries = descriptor[0] or 65536
    first_map = descriptor[1]
    if first_map > 32767 and int(ds.get("PixelRepresentation", 0) or 0) == 1:
        first_map -= 65536  # descriptor read as US while the LUT starts at a negative value
    elem = item["LUTData"]
    if isinstance(elem.value, (bytes, bytearray)):  # OW: 16-bit words
        little = getattr(ds, "original_encoding", (None, True))[1] is not False
        lut = np.frombuffer(bytes(elem.value), dtype="<u2" if little else ">u2")
    elif isinstance(elem.value, (int, float)):  # a one-entry LUT read as a scalar
        lut = np.asarray([elem.value], dtype=np.int64)
    else:  # US/SS: a sequence of ints
        lut = np.asarray(list(elem.value), dtype=np.int64)
    lut = np.asarray(lut[:n_entries], dtype=np.float64)
    if lut.size == 0:
        raise ValueError("empty LUTData")
    index = np.clip(np.rint(np.asarray(values, dtype=np.float64)) - first_map, 0, lut.size - 1).astype(np.int64)
    return lut[index], float(lut.min()), float(lut.max())


def _dicom_colour(path: Path, arr: np.ndarray, ds: Any, meta: dict[str, Any], photometric: str) -> np.ndarray:
    """Colour DICOM (secondary captures, photos) -> luminance.

    pydicom's ``pixel_array`` already converts YBR_FULL/YBR_FULL_422 to RGB, and the
    JPEG 2000 codecs undo YBR_ICT/RCT, so we only need luma.  Colour images carry no
    windowing, so the stored bit depth is the display range.
    """
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = apply_color_lut(arr, ds)
        meta["normalisation"] = "minmax"
        return _minmax(_luminance(rgb))
    if arr.ndim != 3 or arr.shape[-1] < 3:
        raise DecodeError(path, f"{photometric} DICOM decoded to shape {arr.shape}, expected (H, W, 3)")
    bits = _int_or(ds.get("BitsStored"), 8)
    meta["normalisation"] = "fixed"
    return _luminance(arr) / float(2**bits - 1)


# --------------------------------------------------------------------- DICOM meta


def _dicom_meta(ds: Any, tsyntax: Any) -> dict[str, Any]:
    """Header facts as plain Python values (str/int/float/list/None)."""
    spacing, source = _pixel_spacing(ds)
    return {
        "format": "dicom",
        "original_shape": [_int_or(ds.get("Rows"), 0), _int_or(ds.get("Columns"), 0)],
        "bits": _int_or(ds.get("BitsStored"), None) or _int_or(ds.get("BitsAllocated"), None),
        "photometric": _str_or_none(ds.get("PhotometricInterpretation")),
        "modality": _str_or_none(ds.get("Modality")),
        "view": _str_or_none(ds.get("ViewPosition")),
        "pixel_spacing": spacing,
        "pixel_spacing_source": source,
        "patient_id": _str_or_none(ds.get("PatientID")),
        "sex": _str_or_none(ds.get("PatientSex")),
        "age": parse_dicom_age(ds.get("PatientAge")),
        "sop_instance_uid": _str_or_none(ds.get("SOPInstanceUID")),
        "transfer_syntax": str(tsyntax),
        "transfer_syntax_name": getattr(tsyntax, "name", None),
        "presentation_lut_shape": _str_or_none(ds.get("PresentationLUTShape")),
    }


def _pixel_spacing(ds: Any) -> tuple[list[float] | None, str | None]:
    """``[row, col]`` spacing in mm from PixelSpacing, else ImagerPixelSpacing.

    PixelSpacing is calibrated to the patient plane when present; ImagerPixelSpacing
    is at the detector (includes geometric magnification) but is all most DX/CR
    files have.  Which one was used is recorded so callers can tell.
    """
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            value = ds.get(keyword)
            if value is None or value == "":
                continue
            values = [float(v) for v in (value if hasattr(value, "__len__") and not isinstance(value, str) else [value])]
        except (ValueError, TypeError):
            logger.debug("ignoring malformed %s", keyword)
            continue
        if len(values) == 2 and all(np.isfinite(v) and v > 0 for v in values):
            return values, keyword
    return None, None


_AGE_RE = re.compile(r"^\s*(\d{1,3})\s*([DWMY]?)\s*$", re.IGNORECASE)


def parse_dicom_age(value: Any) -> int | None:
    """Parse a DICOM Age String (``"054Y"``, ``"006M"``, ``"003W"``, ``"010D"``).

    Returns whole years (infants -> 0) so the type matches manifest ages; a bare
    number (non-conformant but common) is taken as years; garbage -> ``None``.
    """
    if value is None:
        return None
    match = _AGE_RE.match(str(value))
    if not match:
        return None
    number, unit = int(match.group(1)), (match.group(2) or "Y").upper()
    return {"Y": number, "M": number // 12, "W": number * 7 // 365, "D": number // 365}[unit]


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _int_or(value: Any, default: Any) -> Any:
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _first(value: Any) -> float:
    """First value of a possibly multi-valued DS element, as float."""
    if hasattr(value, "__len__") and not isinstance(value, str):
        return float(value[0])
    return float(value)
