"""Turn "where the images are" into an ordered list of :class:`ImageRecord`.

A source is a folder, a CSV manifest, a single file, or a list of paths.  Discovery
deliberately does *not* judge whether a file is an image: everything that is not
hidden goes into the list and :func:`radlens.io.load_image` decides, so a stray
``.txt`` or a broken export ends up in the quarantine report with a reason instead
of disappearing without trace.  For the same reason a manifest row whose file is
missing is kept (``load_image`` reports "file not found").

Order is deterministic (sorted paths for folders, row order for manifests) so runs
are reproducible and resumable.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from radlens.io.errors import FileProblem

__all__ = ["MANIFEST_NAME", "QUARANTINE_NAME", "ImageRecord", "ManifestError", "discover", "read_manifest"]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.csv"
QUARANTINE_NAME = "quarantine.csv"
# Bookkeeping files that live next to images but are never images themselves.
_NOT_INPUTS = frozenset({MANIFEST_NAME, QUARANTINE_NAME})
# Identifier columns must stay strings: "00032" read as the integer 32 would no
# longer match the same patient elsewhere.  Matches id, patient_id, PatientID, ...
_ID_COLUMN = re.compile(r"(^|_)id$|ID$", re.IGNORECASE)

Source = Union[str, os.PathLike, Iterable[Union[str, os.PathLike]]]


class ManifestError(FileProblem, ValueError):
    """A manifest CSV that cannot be used; the message names the file and the problem."""


@dataclass
class ImageRecord:
    """One input to process.

    Attributes:
        path: absolute, resolved path (the file may not exist; decoding reports it).
        meta: the manifest's other columns for this row as plain Python scalars
            (``NaN`` -> ``None``); empty for folder and list sources.
    """

    path: Path
    meta: dict[str, Any] = field(default_factory=dict)


def discover(source: Source) -> list[ImageRecord]:
    """List the images named by ``source``.

    Args:
        source: one of

            * a folder: if it has a ``manifest.csv`` at its top level that manifest is
              used; otherwise every non-hidden file below it (recursively, sorted),
              except ``manifest.csv``/``quarantine.csv`` files;
            * a ``.csv`` file: a manifest with a ``path`` column (paths relative to the
              manifest's folder); other columns become ``meta``;
            * any other single file: a one-record list;
            * a list/tuple (any non-string iterable) of paths, kept in order.

    Raises:
        FileNotFoundError: the folder/manifest/file ``source`` does not exist.
        ManifestError: the manifest is unreadable or has no ``path`` column.
        TypeError: ``source`` is not a path or an iterable of paths.
    """
    if isinstance(source, (str, os.PathLike)):
        root = Path(source).expanduser()
        if root.is_dir():
            manifest = root / MANIFEST_NAME
            if manifest.is_file():
                logger.info("%s: using %s", root, MANIFEST_NAME)
                return read_manifest(manifest)
            return _walk(root)
        if root.is_file():
            if root.suffix.lower() == ".csv":
                return read_manifest(root)
            return [ImageRecord(path=_absolute(root))]
        raise FileNotFoundError(f"{root}: source not found (expected a folder, a .csv manifest or a file)")
    if isinstance(source, (bytes, bytearray)) or not isinstance(source, Iterable):
        raise TypeError(f"discover() needs a path or a list of paths, not {type(source).__name__}")
    return _dedupe([ImageRecord(path=_absolute(Path(p).expanduser())) for p in source], where="path list")


def _absolute(path: Path, base: Path | None = None) -> Path:
    """Absolute, resolved path; ``base`` anchors relative paths (a manifest's folder)."""
    if not path.is_absolute() and base is not None:
        path = base / path
    try:
        resolved = path.resolve()
    except (RuntimeError, OSError):  # a symlink loop (RuntimeError on Python 3.11): report the link itself
        return Path(os.path.abspath(path))
    if path.is_symlink() and not resolved.exists():
        # a dangling link resolves to its missing target's name: keep the link's, the file a person can find
        return Path(os.path.abspath(path))
    return resolved


def _walk(root: Path) -> list[ImageRecord]:
    """Every non-hidden file under ``root``, sorted by relative path.

    Hidden files *and* hidden folders (``.git``, ``.cache``, macOS ``._*``) are
    skipped; symlinked folders are not followed (no cycles).  Broken symlinks are
    kept so they are reported rather than silently lost.
    """
    root = root.resolve()
    found: list[tuple[tuple[str, ...], Path]] = []

    def on_error(err: OSError) -> None:
        logger.warning("%s: cannot list folder (%s); its files are skipped", err.filename, err.strerror)

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or name in _NOT_INPUTS:
                continue
            path = Path(dirpath) / name
            if path.is_file() or path.is_symlink():
                found.append((path.relative_to(root).parts, path))
    found.sort(key=lambda item: item[0])
    logger.info("%s: found %d files", root, len(found))
    return _dedupe([ImageRecord(path=_absolute(path)) for _, path in found], where=str(root))


def read_manifest(manifest: str | os.PathLike[str]) -> list[ImageRecord]:
    """Read a manifest CSV (a ``path`` column plus any metadata columns).

    Relative paths are taken relative to the manifest's folder, so a dataset folder
    can be moved or mounted elsewhere without rewriting it.  Identifier-like columns
    (``id``, ``*_id``, ``*ID``) are read as strings; float columns whose values are
    all whole numbers (an integer column with a gap, e.g. ``age``) come back as ints.
    Rows with an empty ``path`` are skipped with a warning; duplicate paths keep the
    first row, with a warning.
    """
    import pandas as pd

    manifest = Path(manifest).expanduser()
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: manifest not found")
    try:
        columns = list(pd.read_csv(manifest, nrows=0).columns)
    except pd.errors.EmptyDataError as exc:
        raise ManifestError(manifest, "empty file, expected a CSV header with a 'path' column") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise ManifestError(manifest, f"not a readable CSV ({exc})") from exc
    if "path" not in columns:
        raise ManifestError(manifest, f"missing required column 'path' (columns: {', '.join(map(str, columns))})")
    as_text = {c: str for c in columns if c == "path" or _ID_COLUMN.search(str(c))}
    try:
        frame = pd.read_csv(manifest, dtype=as_text)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise ManifestError(manifest, f"not a readable CSV ({exc})") from exc

    base = manifest.resolve().parent
    meta_columns = [c for c in frame.columns if c != "path"]
    column_values = {c: _python_values(frame[c]) for c in meta_columns}
    records: list[ImageRecord] = []
    empty_rows: list[int] = []
    for i, raw in enumerate(frame["path"].tolist()):
        if _is_missing(raw) or not str(raw).strip():
            empty_rows.append(i + 2)  # 1-based, after the header line
            continue
        meta = {str(c): column_values[c][i] for c in meta_columns}
        records.append(ImageRecord(path=_absolute(Path(str(raw).strip()).expanduser(), base), meta=meta))
    if empty_rows:
        logger.warning("%s: skipped %d row(s) with an empty path (lines %s)", manifest, len(empty_rows),
                       _preview(empty_rows))
    logger.info("%s: %d records", manifest, len(records))
    return _dedupe(records, where=str(manifest))


def _python_values(series: Any) -> list[Any]:
    """Column -> list of plain Python scalars with ``None`` for missing values."""
    import pandas as pd

    values = series.tolist()
    if pd.api.types.is_float_dtype(series.dtype):
        present = [v for v in values if not _is_missing(v)]
        if present and all(float(v).is_integer() for v in present):
            values = [v if _is_missing(v) else int(v) for v in values]
    return [None if _is_missing(v) else v for v in values]


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    try:
        import pandas as pd

        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _dedupe(records: list[ImageRecord], *, where: str) -> list[ImageRecord]:
    """Keep the first record per resolved path; warn once about the rest."""
    seen: set[Path] = set()
    kept: list[ImageRecord] = []
    dropped: list[str] = []
    for record in records:
        if record.path in seen:
            dropped.append(str(record.path))
            continue
        seen.add(record.path)
        kept.append(record)
    if dropped:
        logger.warning("%s: %d duplicate path(s) ignored, keeping the first occurrence: %s", where,
                       len(dropped), _preview(dropped))
    return kept


def _preview(items: list[Any], limit: int = 5) -> str:
    shown = ", ".join(map(str, items[:limit]))
    return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")
