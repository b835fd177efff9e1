"""Write src/radlens/data/lung-masks-split.csv: a deterministic, patient-level split of the lung-masks set.

test  = one of 3 patient-grouped folds (~1/3 of the 48 patients), stratified on view (PA vs AP), never used by
        anatomy training in any form; the held-out lung Dice in the anatomy model card is measured there;
train = the rest. Run: python scripts/make_lung_split.py [../shared/data/lung-masks]
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared/data/lung-masks")
out = Path(__file__).resolve().parents[1] / "src/radlens/data/lung-masks-split.csv"
m = pd.read_csv(root / "manifest.csv", dtype={"patient_id": str})
view = m.view.fillna("unknown").str.startswith("AP").map({True: "AP", False: "PA"})
cv = StratifiedGroupKFold(n_splits=3, shuffle=True, random_state=0)
_, test = next(cv.split(np.arange(len(m)), view, m.patient_id))
split = np.array(["train"] * len(m), dtype=object)
split[test] = "test"
df = pd.DataFrame({"path": m.path, "patient_id": m.patient_id, "split": split})
assert df.groupby("patient_id").split.nunique().max() == 1, "a patient straddles splits"
df.to_csv(out, index=False)
pp = df.groupby("split").patient_id.nunique()
print(df.split.value_counts().to_dict(), "patients:", pp.to_dict(),
      "views in test:", view[split == "test"].value_counts().to_dict())
