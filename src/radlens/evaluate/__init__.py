"""radlens.evaluate: honest evaluation of out-of-fold predictions.

Arrays in, numbers and JSON-safe records out; nothing here knows about encoders or files.
Every confidence interval resamples *patients* (``groups``), never images.

Task conventions: ``"multiclass"`` — ``y`` int (n,) in 0..K-1, ``P`` (n, K) rows sum to 1;
``"multilabel"`` — ``y`` (n, K) 0/1, ``P`` (n, K) independent probabilities.
Decision contract for thresholds: positive iff ``p >= threshold``.
"""

from radlens.arrays import to_jsonable
from .bootstrap import BootstrapResult, PatientSampler, bootstrap_ci, bootstrap_cis, patient_resample_indices
from .calibration import METHODS, Calibrator, choose_calibrator, expected_calibration_error, reliability_bins
from .fairness import UNKNOWN, SubgroupGap, SubgroupRow, age_group, subgroup_table
from .metrics import (
    balanced_accuracy,
    brier_score,
    confusion_matrix,
    macro_auc,
    macro_f1,
    one_vs_rest,
    per_class_auc,
    pr_curves,
    roc_curves,
    summarize,
)
from .operating_points import (
    OperatingPoint,
    fit_operating_points,
    rates_at,
    threshold_for_sensitivity,
    threshold_for_specificity,
    youden_threshold,
)

__all__ = [
    "BootstrapResult",
    "Calibrator",
    "METHODS",
    "OperatingPoint",
    "PatientSampler",
    "SubgroupGap",
    "SubgroupRow",
    "UNKNOWN",
    "age_group",
    "balanced_accuracy",
    "bootstrap_ci",
    "bootstrap_cis",
    "brier_score",
    "choose_calibrator",
    "confusion_matrix",
    "expected_calibration_error",
    "fit_operating_points",
    "macro_auc",
    "macro_f1",
    "one_vs_rest",
    "patient_resample_indices",
    "per_class_auc",
    "pr_curves",
    "rates_at",
    "reliability_bins",
    "roc_curves",
    "subgroup_table",
    "summarize",
    "threshold_for_sensitivity",
    "threshold_for_specificity",
    "to_jsonable",
    "youden_threshold",
]
