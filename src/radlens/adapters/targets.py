"""Which rows and which labels an adapter learns: a task spec turned into y (or Y) and class names."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

NIH_FINDINGS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema", "Fibrosis",
                "Hernia", "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia", "Pneumothorax")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # "multilabel" | "multiclass"
    column: str = "finding_labels"
    separator: str = "|"
    classes: tuple[str, ...] | None = None  # None: inferred from the data
    exclude: tuple[str, ...] = field(default_factory=tuple)  # labels that are not classes (e.g. "No Finding")
    single_label_only: bool = False  # multiclass from a multi-label column: keep rows with exactly one label
    min_class_size: int = 1  # multiclass: drop classes with fewer rows (the rows go too, and are counted)

    def __post_init__(self) -> None:
        if self.kind not in ("multilabel", "multiclass"):
            raise ValueError(f"task {self.name!r}: kind must be 'multilabel' or 'multiclass', not {self.kind!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"] = list(self.classes) if self.classes else None
        d["exclude"] = list(self.exclude)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TaskSpec":
        d = dict(d)
        d["classes"] = tuple(d["classes"]) if d.get("classes") else None
        d["exclude"] = tuple(d.get("exclude") or ())
        return cls(**d)


PRESETS = {
    "nih-findings": TaskSpec("nih-findings", "multilabel", classes=NIH_FINDINGS, exclude=("No Finding",)),
    "nih-single": TaskSpec("nih-single", "multiclass", single_label_only=True, min_class_size=10),
}


def task_from_name(name: str) -> TaskSpec:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; presets: {', '.join(PRESETS)}") from None


@dataclass
class Targets:
    rows: np.ndarray  # bool mask over the input frame: rows that take part
    y: np.ndarray  # multiclass: (n,) int; multilabel: (n, K) int 0/1 — for the rows in the mask
    class_names: list[str]
    dropped: dict[str, int]  # why rows were left out, with counts (never silent)


def _labels(df: pd.DataFrame, spec: TaskSpec) -> pd.Series:
    if spec.column not in df:
        raise KeyError(f"task {spec.name!r}: label column {spec.column!r} not in the data (columns: {list(df.columns)})")
    col = df[spec.column]
    return col.map(lambda v: [] if v is None or (isinstance(v, float) and np.isnan(v))
                   else [s.strip() for s in str(v).split(spec.separator) if s.strip()])


def build_targets(df: pd.DataFrame, spec: TaskSpec) -> Targets:
    labels = _labels(df, spec)
    dropped: dict[str, int] = {}
    missing = labels.map(len) == 0
    if missing.any():
        dropped["no label"] = int(missing.sum())
    if spec.kind == "multilabel":
        names = list(spec.classes) if spec.classes else sorted(
            {lab for ls in labels for lab in ls} - set(spec.exclude))
        rows = ~missing.to_numpy()
        Y = np.array([[lab in set(ls) for lab in names] for ls in labels[rows]], dtype=int).reshape(-1, len(names))
        return Targets(rows, Y, names, dropped)
    single = labels.map(lambda ls: ls[0] if len(ls) == 1 else None)
    if spec.single_label_only:
        multi = labels.map(len) > 1
        if multi.any():
            dropped["more than one label"] = int(multi.sum())
    elif (labels.map(len) > 1).any():
        raise ValueError(f"task {spec.name!r}: multiclass but some rows have several labels; "
                         "set single_label_only to keep rows with exactly one")
    single = single.where(~single.isin(spec.exclude))
    counts = single.value_counts()
    names = list(spec.classes) if spec.classes else sorted(counts[counts >= spec.min_class_size].index)
    small = single.notna() & ~single.isin(names)
    if small.any():
        dropped[f"class with < {spec.min_class_size} rows"] = int(small.sum())
    rows = single.isin(names).to_numpy()
    index = {n: i for i, n in enumerate(names)}
    return Targets(rows, single[rows].map(index).to_numpy(dtype=int), names, dropped)
