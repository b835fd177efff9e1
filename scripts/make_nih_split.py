"""Write src/radlens/data/nih-cxr14-split.csv: a deterministic, patient-level split of NIH ChestX-ray14.

eval  = one of 3 patient-grouped folds (~1/3 of patients), stratified on each image's rarest finding;
val   = 1/8 of the remaining patients (model selection during encoder training);
train = the rest. Run: python scripts/make_nih_split.py [../shared/data/nih-cxr14]
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared/data/nih-cxr14")
out = Path(__file__).resolve().parents[1] / "src/radlens/data/nih-cxr14-split.csv"
m = pd.read_csv(root / "manifest.csv", dtype={"patient_id": str})
labels = m.finding_labels.str.split("|")
freq = labels.explode().value_counts()
rarest = labels.map(lambda ls: min(ls, key=lambda lab: freq[lab]))


def first_fold(idx: np.ndarray, n_splits: int) -> np.ndarray:
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=0)
    _, test = next(cv.split(idx, rarest.iloc[idx], m.patient_id.iloc[idx]))
    return idx[test]


split = np.array(["train"] * len(m), dtype=object)
eval_idx = first_fold(np.arange(len(m)), 3)
split[eval_idx] = "eval"
rest = np.flatnonzero(split == "train")
split[first_fold(rest, 8)] = "val"
df = pd.DataFrame({"path": m.path, "patient_id": m.patient_id, "split": split})
assert df.groupby("patient_id").split.nunique().max() == 1, "a patient straddles splits"
df.to_csv(out, index=False)
pp = df.groupby("split").patient_id.nunique()
print(df.split.value_counts().to_dict(), "patients:", pp.to_dict(), f"eval patient share {pp['eval'] / pp.sum():.3f}")
