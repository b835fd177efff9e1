"""An adapter on disk: `radlens.json` (provenance, classes, calibration, operating points) + `model.skops`.

Never pickle: skops refuses to build any type it is not told to trust, and radlens trusts only the
exact types its own adapters are made of, so a planted object in a user-supplied folder is refused
before anything is constructed. Provenance is checked on load: an adapter trained on one encoder's
embeddings refuses embeddings from another encoder or another preprocessing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from radlens.atomic import folder_swap
from radlens.safe_files import UnsafeArtefactError

ADAPTER_KIND = "adapter"
ADAPTER_VERSION = 1
META_FILE = "radlens.json"
MODEL_FILE = "model.skops"

# Types (beyond skops' defaults) that make up radlens's own adapters; nothing else is loaded.
TRUSTED_TYPES = frozenset({
    "collections.OrderedDict",
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMClassifier",
    "radlens.adapters.retrieval.RetrievalClassifier",
    "radlens.adapters.zoo.CappedPCA",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.tree._tree.Tree",
})


class AdapterMismatchError(ValueError):
    """Embeddings from a different encoder/preprocessing than the adapter was trained on."""


@dataclass
class Adapter:
    """A fitted adapter with everything `predict` needs; `meta` is the parsed radlens.json."""

    estimator: BaseEstimator
    meta: dict[str, Any]
    folder: Path

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def task_kind(self) -> str:
        return self.meta["task"]["kind"]

    def check_features(self, encoder_id: str, preprocess_hash: str | None, source: str = "embeddings") -> None:
        want_e, want_p = self.meta["encoder_id"], self.meta.get("preprocess_hash")
        if encoder_id != want_e or (want_p is not None and preprocess_hash != want_p):
            raise AdapterMismatchError(
                f"{self.folder}: adapter was trained on encoder {want_e} (preprocess {want_p}) but {source} come "
                f"from encoder {encoder_id} (preprocess {preprocess_hash}); embed with the same encoder first")

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (n, K)."""
        from radlens.adapters.calibration import Calibrator
        from radlens.adapters.cv import proba_matrix

        P = proba_matrix(self.estimator, X, self.task_kind, len(self.class_names))
        cal = self.meta.get("calibration")
        return Calibrator.from_dict(cal).transform(P) if cal else P

    def thresholds(self, kind: str | None = None) -> np.ndarray:
        """Per-class thresholds of the stored operating point `kind` (default: the one chosen at training)."""
        kind = kind or self.meta["decision_operating_point"]
        by_class = {op["class_name"]: op["threshold"] for op in self.meta["operating_points"] if op["kind"] == kind}
        missing = [c for c in self.class_names if c not in by_class]
        if missing:
            raise KeyError(f"{self.folder}: no {kind!r} operating point for classes {missing}")
        return np.array([by_class[c] for c in self.class_names], dtype=float)

    def decide(self, P: np.ndarray, kind: str | None = None) -> np.ndarray:
        """0/1 decisions, `p >= threshold` per class (the operating-point contract)."""
        return (P >= self.thresholds(kind)[None, :]).astype(int)


def save_adapter(folder: str | Path, estimator: BaseEstimator, meta: dict[str, Any]) -> Path:
    """Write the folder atomically: build it beside the target, then swap it in."""
    import skops.io as sio

    folder = Path(folder)
    with folder_swap(folder) as tmp:
        sio.dump(estimator, tmp / MODEL_FILE)
        payload = {"kind": ADAPTER_KIND, "version": ADAPTER_VERSION,
                   "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **meta}
        (tmp / META_FILE).write_text(json.dumps(payload, indent=1, default=_json_default))
    return folder


def load_adapter(folder: str | Path, *, encoder_id: str | None = None, preprocess_hash: str | None = None) -> Adapter:
    import skops.io as sio

    folder = Path(folder)
    meta_path, model_path = folder / META_FILE, folder / MODEL_FILE
    if not meta_path.is_file() or not model_path.is_file():
        raise FileNotFoundError(f"{folder}: not an adapter folder (expected {META_FILE} and {MODEL_FILE})")
    meta = json.loads(meta_path.read_text())
    if meta.get("kind") != ADAPTER_KIND:
        raise ValueError(f"{meta_path}: kind is {meta.get('kind')!r}, expected {ADAPTER_KIND!r}")
    try:
        untrusted = sio.get_untrusted_types(file=model_path)
    except Exception as e:  # not a skops archive at all (e.g. a pickle renamed)
        raise UnsafeArtefactError(f"{model_path}: not a skops file ({type(e).__name__}: {e}); refusing to load") from e
    unknown = sorted(set(untrusted) - TRUSTED_TYPES)
    if unknown:
        raise UnsafeArtefactError(f"{model_path}: refusing to load untrusted types {unknown}")
    adapter = Adapter(sio.load(model_path, trusted=list(untrusted)), meta, folder)
    if encoder_id is not None:
        adapter.check_features(encoder_id, preprocess_hash)
    return adapter


class AdapterScorer:
    """Calibrated probabilities from an adapter folder, loaded on first use in whichever process calls it.

    Why: distributed prediction (the Ray engine's encoder actors) must not pickle a fitted model across
    processes; this handle pickles as the folder path and each process loads the model once, through
    `load_adapter` and its type allowlist, and checks it against the encoder the caller names.
    """

    def __init__(self, folder: str | Path, encoder_id: str, preprocess_hash: str | None) -> None:
        self.folder, self.encoder_id, self.preprocess_hash = str(folder), encoder_id, preprocess_hash
        self._adapter: Adapter | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_adapter": None}

    def __call__(self, X: np.ndarray) -> np.ndarray:
        if self._adapter is None:
            self._adapter = load_adapter(self.folder, encoder_id=self.encoder_id, preprocess_hash=self.preprocess_hash)
        return self._adapter.predict_proba(X)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
