"""Errors about one input file: the file and the reason are kept apart for quarantine reports."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class FileProblem(Exception):
    """`path` and `reason` as attributes (not only in the message) so reports can store them in columns."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions pickle via ``self.args`` by default, which would call ``__init__(message)`` and
        # fail; worker processes need them to round-trip.
        return (type(self), (self.path, self.reason))
