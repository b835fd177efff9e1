"""Small, valid images built from numpy (and pydicom), shared by the io tests and the bad-input corpus.

Kept in one place so a DICOM written by `test_io_dicom.py` and one mutated by the corpus are built the
same way: a corpus case is then "a valid file + one known defect", and the defect is the only variable.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

DX_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image - For Presentation


def make_ds(arr: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int | None = None, **elements) -> FileDataset:
    """A minimal, valid DX dataset holding ``arr`` uncompressed."""
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = DX_SOP_CLASS
    fm.MediaStorageSOPInstanceUID = generate_uid()
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=fm, preamble=b"\0" * 128)
    ds.SOPClassUID = fm.MediaStorageSOPClassUID
    ds.SOPInstanceUID = fm.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = arr.shape[:2]
    ds.SamplesPerPixel = 1 if arr.ndim == 2 else arr.shape[2]
    if arr.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
    ds.PixelData = np.ascontiguousarray(arr).tobytes()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


def dicom_bytes(ds: Dataset, **kwargs) -> bytes:
    """``ds`` serialised as a DICOM file (preamble + ``DICM`` unless kwargs say otherwise)."""
    buf = io.BytesIO()
    kwargs.setdefault("enforce_file_format", True)
    ds.save_as(buf, **kwargs)
    return buf.getvalue()


def png_chunk(tag: bytes, body: bytes) -> bytes:
    """One PNG chunk with a correct CRC."""
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def png_bytes_with_size(width: int, height: int) -> bytes:
    """A *valid* 1-bit grey PNG of ``width`` x ``height`` built row by row.

    All-zero rows compress ~1000:1, so a 30000x30000 image is ~100 KB on disk while
    decoding it would need ~900 MB: the classic decompression bomb.  Built with zlib
    directly because Pillow would need the full-size image in memory to write it.
    """
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def png_header_only(width: int, height: int, bit_depth: int = 8, colour_type: int = 0) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` but whose IDAT holds a few bytes: a lying header."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def radiograph_array(shape: tuple[int, int], seed: int, dtype: str = "uint8", hi: int = 255) -> np.ndarray:
    """A smooth ramp plus seeded noise: every seed gives different bytes (no accidental duplicates)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    ramp = (xx / max(shape[1] - 1, 1) * 0.6 + yy / max(shape[0] - 1, 1) * 0.3) * hi
    noise = rng.normal(0, 0.05 * hi, shape)
    return np.clip(ramp + noise, 0, hi).astype(dtype)


def pil_bytes(im: Image.Image, fmt: str, **kwargs) -> bytes:
    """``im`` encoded as ``fmt`` in memory."""
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def dicom_bytes_claiming(ds: Dataset, transfer_syntax: str) -> bytes:
    """``ds`` encoded explicit-VR little endian, with a file meta that *claims* ``transfer_syntax``.

    pydicom refuses to write raw pixel data under a compressed syntax; real exporters do not, so the
    file is assembled by hand: preamble + ``DICM`` + file meta + data set.
    """
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    meta = DicomBytesIO()
    meta.is_little_endian, meta.is_implicit_VR = True, False
    fm = FileMetaDataset()
    fm.update(ds.file_meta)
    fm.TransferSyntaxUID = transfer_syntax
    write_file_meta_info(meta, fm, enforce_standard=True)
    return b"\0" * 128 + b"DICM" + meta.getvalue() + body.getvalue()
