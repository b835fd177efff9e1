"""Input/output for radlens: decode radiographs, discover inputs, quarantine bad files.

Typical use::

    from radlens.io import DecodeError, QuarantineReport, discover, load_image

    report = QuarantineReport()
    for record in discover("/data/cxr"):
        try:
            image = load_image(record.path)
        except DecodeError as err:
            report.add(err.path, err.reason)
            continue
        ...
    report.write("/data/cxr-out/quarantine.csv")
"""

from radlens.io.decode import DEFAULT_MAX_PIXELS, DecodeError, Radiograph, decode_bytes, load_image, sniff_format
from radlens.io.quarantine import QuarantineEntry, QuarantineReport
from radlens.io.sources import ImageRecord, ManifestError, discover, read_manifest

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DecodeError",
    "ImageRecord",
    "ManifestError",
    "QuarantineEntry",
    "QuarantineReport",
    "Radiograph",
    "decode_bytes",
    "discover",
    "load_image",
    "read_manifest",
    "sniff_format",
]
