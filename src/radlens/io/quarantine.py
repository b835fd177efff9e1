"""Record files that could not be used, and why, in a ``quarantine.csv``.

A batch over thousands of radiographs always meets a few bad files.  Rather than
crash or silently skip them, each one is listed with the stage that refused it and
a human-readable reason, so a person can fix or delete them and re-run.  The CSV is
written atomically (a crash never leaves a half-written report) and a resumed run can
merge the previous report so nothing is lost or listed twice.
"""

from __future__ import annotations

import csv
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["QUARANTINE_COLUMNS", "QuarantineEntry", "QuarantineReport"]

logger = logging.getLogger(__name__)

QUARANTINE_COLUMNS = ("path", "stage", "reason")


@dataclass(frozen=True)
class QuarantineEntry:
    """One refused file: where it is, which stage refused it (``"decode"``,
    ``"embed"``, ...), and why."""

    path: Path
    stage: str
    reason: str

    @property
    def key(self) -> tuple[str, str]:
        """Identity for de-duplication: a file is listed at most once per stage."""
        return (str(self.path), self.stage)


class QuarantineReport:
    """An ordered, de-duplicated collection of :class:`QuarantineEntry`.

    Entries are unique on ``(path, stage)``: adding the same file and stage again
    replaces the reason (the latest attempt is the most informative) but keeps its
    original position, so re-runs produce stable files.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], QuarantineEntry] = {}

    def add(self, path: str | os.PathLike[str], reason: str, stage: str = "decode") -> QuarantineEntry:
        """Record ``path`` as refused by ``stage`` because of ``reason``."""
        entry = QuarantineEntry(Path(path), str(stage), " ".join(str(reason).split()))
        self._entries[entry.key] = entry
        logger.warning("quarantined %s (%s): %s", entry.path, entry.stage, entry.reason)
        return entry

    def add_error(self, error: Exception, stage: str = "decode") -> QuarantineEntry:
        """Record an error that has ``path``/``reason`` attributes (e.g. ``DecodeError``)."""
        path = getattr(error, "path", None)
        if path is None:
            raise ValueError(f"{type(error).__name__} has no 'path' attribute to quarantine")
        return self.add(path, getattr(error, "reason", None) or str(error), stage=stage)

    def discard(self, path: str | os.PathLike[str], stage: str | None = None) -> int:
        """Forget ``path`` (for one stage, or all), e.g. after it was fixed; returns how many."""
        keys = [k for k in self._entries if k[0] == str(Path(path)) and (stage is None or k[1] == stage)]
        for key in keys:
            del self._entries[key]
        return len(keys)

    @property
    def entries(self) -> list[QuarantineEntry]:
        """A copy of the entries, in insertion order."""
        return list(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[QuarantineEntry]:
        return iter(self.entries)

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, (str, os.PathLike)):
            return False
        wanted = str(Path(path))
        return any(k[0] == wanted for k in self._entries)

    # ------------------------------------------------------------------ files

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> QuarantineReport:
        """Load a report written by :meth:`write`."""
        report = cls()
        report.merge_existing(path)
        return report

    def merge_existing(self, path: str | os.PathLike[str]) -> int:
        """Add the entries of an earlier ``quarantine.csv`` that are not already here.

        Meant for resumed runs: call it before (or after) processing so the final
        report contains both old and new refusals, each once.  Entries already in
        memory win over the file's, since they are newer.  A missing file is fine
        (first run); returns the number of entries added.
        """
        path = Path(path)
        if not path.exists():
            return 0
        added = 0
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in QUARANTINE_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{path}: not a quarantine report, missing column(s) {', '.join(missing)}")
            for row in reader:
                if not row.get("path"):
                    continue
                entry = QuarantineEntry(Path(row["path"]), row.get("stage") or "decode", row.get("reason") or "")
                if entry.key not in self._entries:
                    self._entries[entry.key] = entry
                    added += 1
        return added

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write ``path,stage,reason`` CSV atomically and return the path.

        The rows go to a temporary file in the destination folder (same filesystem,
        so ``os.replace`` is atomic), which is flushed to disk and then renamed over
        the destination.  Readers see the old report or the new one, never a
        partial one; on any error the temporary file is removed.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh, lineterminator="\n")
                writer.writerow(QUARANTINE_COLUMNS)
                for entry in self._entries.values():
                    writer.writerow((str(entry.path), entry.stage, entry.reason))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            try:
                os.unlink(tmp_name)
            except FileNotFoundError:
                pass
            raise
        logger.info("%s: %d quarantined file(s)", path, len(self._entries))
        return path
