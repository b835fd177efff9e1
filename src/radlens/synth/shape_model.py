"""A conditional point distribution model of chest anatomy (right lung, left lung, heart outlines together).

Why this model: lungs and heart must be drawn jointly (the heart sits between the lungs, a wide thorax has wide
lungs), anatomy must look like real anatomy, and sampling must take milliseconds on a CPU. A PCA over corresponding
outline landmarks (Cootes' active shape models) gives all three with a few hundred numbers, and its modes can be
inspected. Conditioning: the PCA scores are regressed linearly on covariates (sex, age, AP view, cardiomegaly) and
the residual spread is kept per mode, so a sample is mean(covariates) + residual. Scores are drawn within
`TRUNCATE` residual standard deviations, which keeps outlines from folding over themselves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radlens.synth.geometry import N_HEART, N_LUNG, fill_polygon

COVARIATES = ("male", "age_decades", "ap_view", "cardiomegaly")
TRUNCATE = 2.5


@dataclass
class ShapeModel:
    mean: np.ndarray  # (D,) flattened (x, y) landmarks, D = 2 * (2 * N_LUNG + N_HEART)
    components: np.ndarray  # (K, D) orthonormal modes
    coef: np.ndarray  # (1 + len(COVARIATES), K) regression of scores on [1, covariates]
    residual_sd: np.ndarray  # (K,)
    covariate_mean: np.ndarray  # (len(COVARIATES),) used when a covariate is unknown
    explained: float  # share of landmark variance the K modes keep

    @property
    def k(self) -> int:
        return int(self.components.shape[0])

    def scores_mean(self, covariates: np.ndarray) -> np.ndarray:
        c = np.where(np.isnan(covariates), self.covariate_mean, covariates)
        return np.concatenate([[1.0], c]) @ self.coef

    def sample_scores(self, rng: np.random.Generator, covariates: np.ndarray) -> np.ndarray:
        z = rng.standard_normal(self.k)
        while np.any(np.abs(z) > TRUNCATE):
            bad = np.abs(z) > TRUNCATE
            z[bad] = rng.standard_normal(int(bad.sum()))
        return self.scores_mean(covariates) + z * self.residual_sd

    def landmarks(self, scores: np.ndarray) -> np.ndarray:
        return (self.mean + scores @ self.components).reshape(-1, 2)

    def project(self, landmarks: np.ndarray) -> np.ndarray:
        return (landmarks.reshape(-1) - self.mean) @ self.components.T

    def mahalanobis(self, landmarks: np.ndarray, covariates: np.ndarray) -> float:
        """Residual distance of real landmarks from the model, in residual standard deviations (RMS over modes)."""
        r = (self.project(landmarks) - self.scores_mean(covariates)) / self.residual_sd
        return float(np.sqrt(np.mean(r ** 2)))

    # -- persistence --------------------------------------------------------------------------------------------
    def tensors(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "components": self.components, "coef": self.coef,
                "residual_sd": self.residual_sd, "covariate_mean": self.covariate_mean}

    @classmethod
    def from_tensors(cls, t: dict[str, np.ndarray], explained: float) -> "ShapeModel":
        return cls(*(np.asarray(t[k], np.float64) for k in ("mean", "components", "coef", "residual_sd",
                                                            "covariate_mean")), explained)


def split_landmarks(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(right lung, left lung, heart) outlines from the joint (2*N_LUNG + N_HEART, 2) landmark array."""
    return points[:N_LUNG], points[N_LUNG:2 * N_LUNG], points[2 * N_LUNG:2 * N_LUNG + N_HEART]


def rasterize(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(3, H, W) bool masks (lung_right, lung_left, heart) of joint landmarks."""
    return np.stack([fill_polygon(p, shape) for p in split_landmarks(points)])


def fit_shape_model(landmarks: np.ndarray, covariates: np.ndarray, variance: float = 0.98,
                    max_modes: int = 24) -> ShapeModel:
    """PCA of (N, L, 2) landmarks keeping `variance` of the total (at most `max_modes`), then a least-squares
    regression of the scores on the covariates (unknown covariates imputed with their mean)."""
    x = landmarks.reshape(len(landmarks), -1).astype(np.float64)
    mean = x.mean(0)
    u, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    var = s ** 2
    k = int(min(max_modes, np.searchsorted(np.cumsum(var) / var.sum(), variance) + 1))
    comps = vt[:k]
    scores = (x - mean) @ comps.T
    cov = np.asarray(covariates, np.float64)
    cmean = np.nanmean(cov, axis=0)
    cov = np.where(np.isnan(cov), cmean, cov)
    design = np.concatenate([np.ones((len(cov), 1)), cov], axis=1)
    coef, *_ = np.linalg.lstsq(design, scores, rcond=None)
    resid = scores - design @ coef
    return ShapeModel(mean, comps, coef, resid.std(0, ddof=design.shape[1]), cmean,
                      float(var[:k].sum() / var.sum()))


def save(model: ShapeModel, folder: Path, meta: dict) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in model.tensors().items()},
              str(folder / "shape_model.safetensors"))
    (folder / "shape_model.json").write_text(json.dumps({"explained": model.explained, "modes": model.k,
                                                         "covariates": list(COVARIATES), **meta}, indent=1))


def load(folder: Path) -> ShapeModel:
    from radlens.safe_files import read_safetensors

    meta = json.loads((folder / "shape_model.json").read_text())
    if tuple(meta["covariates"]) != COVARIATES:
        raise ValueError(f"{folder}: shape model covariates {meta['covariates']} differ from {list(COVARIATES)}")
    return ShapeModel.from_tensors(read_safetensors(folder / "shape_model.safetensors", "numpy"), meta["explained"])
