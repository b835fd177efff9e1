"""DICOM Segmentation (SEG) objects for anatomy masks, written with highdicom.

One binary SEG per source image, one segment per structure (right lung, left lung, heart; they may overlap),
coded with SNOMED CT, referencing the source image's study, series and instance so a PACS or viewer shows it over
the radiograph. The masks must be at the source's Rows x Columns, which `radlens.anatomy` guarantees.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np

from radlens.anatomy.api import STRUCTURES, AnatomyMasks

# SNOMED CT codes of the structures and of their category ("Anatomical structure").
_SCT = {"lung_right": ("3341006", "Right lung"), "lung_left": ("44029006", "Left lung"), "heart": ("80891009", "Heart")}
_CATEGORY = ("91723000", "Anatomical Structure")
# Type-2 attributes (present, may be empty) that highdicom copies from the source into the SEG.
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber")


class SegWriteError(Exception):
    """The source DICOM cannot be referenced by a SEG (e.g. it lacks its study/series/instance UIDs)."""


def write_dicom_seg(source: str | os.PathLike, masks: AnatomyMasks, out: str | os.PathLike, *, model_id: str,
                    version: str) -> Path:
    """Write `out` (a DICOM SEG referencing `source`); returns its path. Atomic (temporary file + rename)."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    ds = pydicom.dcmread(source, stop_before_pixels=True)
    missing = [k for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID") if k not in ds]
    if missing:
        raise SegWriteError(f"source DICOM lacks {', '.join(missing)}, which a SEG must reference")
    if (int(ds.Rows), int(ds.Columns)) != masks.shape:
        raise SegWriteError(f"masks are {masks.shape}, the source is {int(ds.Rows)}x{int(ds.Columns)}")
    src = copy.deepcopy(ds)
    for k in _TYPE2:
        if k not in src:
            setattr(src, k, "")
    # highdicom inspects the source's pixel description, not its pixels
    algo = hd.AlgorithmIdentificationSequence(name="radlens-anatomy", version=version,
                                              family=codes.cid7162.ArtificialIntelligence,
                                              source=model_id)
    descriptions = []
    for i, name in enumerate(STRUCTURES, start=1):
        value, meaning = _SCT[name]
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=i, segment_label=meaning,
            segmented_property_category=hd.sr.CodedConcept(_CATEGORY[0], "SCT", _CATEGORY[1]),
            segmented_property_type=hd.sr.CodedConcept(value, "SCT", meaning),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algo,
            tracking_uid=hd.UID(), tracking_id=f"radlens {name}"))
    pixel_array = np.stack([getattr(masks, s) for s in STRUCTURES], axis=-1)[None].astype(np.uint8)
    seg = hd.seg.Segmentation(
        source_images=[src], pixel_array=pixel_array, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=9001,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="radlens",
        manufacturer_model_name="radlens-anatomy", software_versions=f"radlens-anatomy {version}",
        device_serial_number="none", series_description="radlens anatomy (lungs, heart)",
        omit_empty_frames=False)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    seg.save_as(tmp)
    os.replace(tmp, out)
    return out
