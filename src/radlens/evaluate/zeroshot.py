"""Zero-shot classification with CLIP-type encoders: label prompts → text embeddings → per-image scores.

An encoder is zero-shot capable when it has `embed_text(texts) -> (K, D)` (the same space as `embed`) and a
`zero_shot` dict: `logit_scale` (already exponentiated), `logit_bias` (SigLIP) or None, `activation`
("softmax" over the labels for CLIP-type models, "sigmoid" per label for SigLIP-type) and `prompt_template`
(the model's own, e.g. BiomedCLIP's "this is a photo of {}").

Scores: logits = logit_scale · cos(image, prompt) + logit_bias, then the activation. Softmax couples the
labels (they compete, as in the upstream zero-shot examples); per-label AUCs on a multi-label task are still
well defined because they only use each column's ranking.

Two uses: `radlens zeroshot` (scores → CSV, AUC per label when the data carries labels) and a zero-shot row in
`radlens compare`, whose scores go through the same fold-averaged AUC, patient bootstrap, calibration and
operating-point machinery as the adapters (via the `zero-shot` pass-through adapter: nothing is trained).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import roc_auc_score

from radlens.adapters.registry import register_adapter
from radlens.arrays import to_jsonable

log = logging.getLogger(__name__)

ZERO_SHOT_ADAPTER = "zero-shot"
ACTIVATIONS = ("softmax", "sigmoid")


@dataclass(frozen=True)
class LabelPrompt:
    """`name`: the label as the data spells it (e.g. "Effusion"); `text`: what the prompt template wraps."""

    name: str
    text: str


def label_text(name: str) -> str:
    """A data label as prompt text: "Pleural_Thickening" → "pleural thickening"."""
    return name.replace("_", " ").strip().lower()


def parse_labels(spec: str | Sequence[str]) -> list[LabelPrompt]:
    """ "Effusion=pleural effusion,cardiomegaly" → [(Effusion, pleural effusion), (cardiomegaly, cardiomegaly)]."""
    items = [s for part in ([spec] if isinstance(spec, str) else spec) for s in part.split(",")]
    out: list[LabelPrompt] = []
    for item in (s.strip() for s in items):
        if not item:
            continue
        name, sep, text = item.partition("=")
        name, text = name.strip(), text.strip()
        if sep and (not name or not text):
            raise ValueError(f"label {item!r}: expected NAME=prompt text (both non-empty)")
        out.append(LabelPrompt(name, text if sep else name))
    names = [p.name for p in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"labels named more than once: {dup}")
    if not out:
        raise ValueError("give at least one label")
    return out


def prompts_for(classes: Sequence[str], mapping: Sequence[LabelPrompt] | None = None) -> list[LabelPrompt]:
    """One prompt per class, in the classes' order: the mapping's text where given, else `label_text(class)`."""
    given = {p.name: p.text for p in (mapping or [])}
    unknown = sorted(set(given) - set(classes))
    if unknown:
        log.warning("zero-shot prompts for labels not in the task ignored: %s", unknown)
    return [LabelPrompt(c, given.get(c, label_text(c))) for c in classes]


def check_zero_shot(encoder: Any) -> dict[str, Any]:
    zs = getattr(encoder, "zero_shot", None)
    if not callable(getattr(encoder, "embed_text", None)) or not isinstance(zs, dict):
        raise ValueError(f"encoder {getattr(encoder, 'name', encoder)!r} has no text tower (embed_text + zero_shot); "
                         "zero-shot needs a CLIP-type encoder (e.g. biomedclip, medsiglip, medimageinsight)")
    if zs.get("activation") not in ACTIVATIONS:
        raise ValueError(f"encoder {encoder.name!r}: zero_shot activation must be one of {ACTIVATIONS}, "
                         f"not {zs.get('activation')!r}")
    return zs


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def zero_shot_scores(image_emb: np.ndarray, text_emb: np.ndarray, zs: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, logits), each (N, K): logit_scale · cosine + logit_bias, then softmax or sigmoid."""
    cos = _unit(image_emb) @ _unit(text_emb).T
    logits = float(zs["logit_scale"]) * cos + float(zs.get("logit_bias") or 0.0)
    if zs["activation"] == "softmax":
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        P = z / z.sum(axis=1, keepdims=True)
    else:
        P = 1.0 / (1.0 + np.exp(-logits))
    return P, logits


@dataclass
class ZeroShotClassifier:
    """An encoder's text tower turned into a classifier over prompts; text embeddings cached per prompt."""

    encoder: Any
    template: str | None = None
    _cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.zs = check_zero_shot(self.encoder)
        self.template = self.template if self.template is not None else self.zs.get("prompt_template") or "{}"
        if "{}" not in self.template:
            raise ValueError(f"prompt template {self.template!r} must contain {{}} where the label goes")

    def prompt(self, p: LabelPrompt) -> str:
        return self.template.replace("{}", p.text)

    def text_embeddings(self, prompts: Sequence[LabelPrompt]) -> np.ndarray:
        texts = [self.prompt(p) for p in prompts]
        new = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if new:
            for t, e in zip(new, self.encoder.embed_text(new)):
                self._cache[t] = np.asarray(e, dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])

    def scores(self, image_emb: np.ndarray, prompts: Sequence[LabelPrompt]) -> np.ndarray:
        return zero_shot_scores(image_emb, self.text_embeddings(prompts), self.zs)[0]

    def describe(self) -> dict[str, Any]:
        return {"encoder": self.encoder.name, "encoder_id": self.encoder.encoder_id,
                "preprocess_hash": self.encoder.preprocess_hash, "template": self.template, **self.zs}


# ---------------------------------------------------------------- compare: a pass-through "adapter"

class PrecomputedScores(ClassifierMixin, BaseEstimator):
    """Returns its input as probabilities: the zero-shot scores are the features, nothing is learned.

    It lets a zero-shot row go through exactly the adapters' evaluation (grouped folds, fold-averaged AUC,
    bootstrap, calibration chosen by grouped CV, cross-fitted operating points)."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> "PrecomputedScores":
        X = np.asarray(X, dtype=float)
        self.n_features_in_ = X.shape[1]
        self.classes_ = np.arange(X.shape[1])
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"expected {self.n_features_in_} score columns, got {X.shape[1]}")
        return X

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_proba(X).argmax(1)


@register_adapter(ZERO_SHOT_ADAPTER, description="zero-shot scores used as they are (no training); "
                                                 "only meaningful on zero-shot score features")
def _build_zero_shot(task: str, seed: int) -> BaseEstimator:
    from sklearn.pipeline import Pipeline

    return Pipeline([("clf", PrecomputedScores())])


@dataclass
class ZeroShotSource:
    """A zero-shot row for `radlens compare`: encoder (+ weights), prompt mapping and template."""

    encoder_name: str
    weights: Path | None = None
    prompts: list[LabelPrompt] = field(default_factory=list)
    template: str | None = None

    @classmethod
    def parse(cls, spec: str, prompts: list[LabelPrompt] | None = None, template: str | None = None) -> "ZeroShotSource":
        """ "biomedclip=/models/BiomedCLIP" or just a name (an encoder whose weights need no path)."""
        name, sep, weights = spec.partition("=")
        if not name.strip() or (sep and not weights.strip()):
            raise ValueError(f"--zeroshot {spec!r}: expected NAME or NAME=WEIGHTS")
        return cls(name.strip(), Path(weights.strip()) if sep else None, list(prompts or []), template)


def embed_frame_images(encoder: Any, paths: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """Decode and embed the study's own images (used when no compared store was made with this encoder)."""
    from radlens.io import DecodeError, load_image

    out, batch = [], []
    for p in paths:
        try:
            batch.append(encoder.preprocess(load_image(p).pixels))
        except DecodeError as e:
            raise ValueError(f"zero-shot: cannot decode {p} ({e.reason}); it was embedded into a store before, "
                             "has it changed?") from None
        if len(batch) >= batch_size:
            out.append(encoder.embed(np.stack(batch)))
            batch = []
    if batch:
        out.append(encoder.embed(np.stack(batch)))
    return np.concatenate(out) if out else np.zeros((0, encoder.embedding_dim), np.float32)


def prepare_sources(sources: Sequence[ZeroShotSource], frame: pd.DataFrame, features: Sequence[Any],
                    batch_size: int = 32) -> list[tuple[ZeroShotSource, ZeroShotClassifier, np.ndarray, str]]:
    """For each source: its classifier and image embeddings of the study rows — taken from a compared store made
    with the same encoder id and preprocessing when there is one, else embedded from the rows' paths."""
    from radlens.encoders import get

    out = []
    for src in sources:
        enc = get(src.encoder_name, weights=src.weights)
        clf = ZeroShotClassifier(enc, src.template)
        same = [f for f in features if f.encoder_id == enc.encoder_id and f.preprocess_hash == enc.preprocess_hash]
        if same:
            emb, origin = same[0].X, f"store {same[0].info.get('store', same[0].name)}"
        else:
            log.info("zero-shot %s: no compared store from this encoder; embedding %d images", enc.name, len(frame))
            emb, origin = embed_frame_images(enc, frame.path.astype(str).tolist(), batch_size), "embedded from paths"
        out.append((src, clf, emb, origin))
    return out


# ---------------------------------------------------------------- radlens zeroshot

def _load_data(data: Sequence[str], encoder: Any, *, split: str | None, store: Path | None, batch_size: int,
               workers: int) -> tuple[pd.DataFrame, np.ndarray, list[tuple[str, str]], str]:
    from radlens.io import DecodeError, discover, load_image
    from radlens.io.splits import split_mask
    from radlens.store import load_store
    from radlens.store.embedding_store import META_FILE

    single = Path(data[0]) if len(data) == 1 else None
    bad: list[tuple[str, str]] = []
    if single is not None and (single / META_FILE).is_file():
        df, emb, _ = load_store(single, encoder_id=encoder.encoder_id, preprocess_hash=encoder.preprocess_hash)
        origin = f"store {single}"
    else:
        source = data[0] if single is not None and (single.is_dir() or single.suffix.lower() == ".csv") else list(data)
        if store is not None:
            from radlens.store.embed_job import embed_to_store

            embed_to_store(source, store, encoder, batch_size=batch_size, workers=workers,
                           provenance={"command": "radlens zeroshot"})
            df, emb, _ = load_store(store)
            qpath = store / "_quarantine.csv"
            if qpath.is_file():
                q = pd.read_csv(qpath)
                bad = list(zip(q.path.astype(str), q.reason.astype(str)))
            origin = f"store {store}"
        else:
            rows, arrays = [], []
            for rec in discover(source):
                try:
                    img = load_image(rec.path)
                except DecodeError as e:
                    bad.append((str(rec.path), e.reason))
                    continue
                rows.append({"path": str(rec.path), "image_hash": img.content_hash, **rec.meta})
                arrays.append(encoder.preprocess(img.pixels))
            df = pd.DataFrame(rows)
            emb = np.concatenate([encoder.embed(np.stack(arrays[i:i + batch_size]))
                                  for i in range(0, len(arrays), batch_size)]) if arrays \
                else np.zeros((0, encoder.embedding_dim), np.float32)
            origin = "decoded and embedded"
    if split and len(df):
        m = split_mask(df.path, split).to_numpy()
        df, emb = df[m].reset_index(drop=True), emb[m]
    return df.reset_index(drop=True), emb, bad, origin


def label_aucs(df: pd.DataFrame, P: np.ndarray, prompts: Sequence[LabelPrompt], column: str,
               separator: str = "|") -> dict[str, Any] | None:
    """AUC of each label's score against the data's label column (rows with no label left out)."""
    if column not in df or not len(df):
        return None
    labels = df[column].map(lambda v: set() if v is None or (isinstance(v, float) and np.isnan(v))
                            else {s.strip() for s in str(v).split(separator) if s.strip()})
    rows = (labels.map(len) > 0).to_numpy()
    vocab = set().union(*labels[rows]) if rows.any() else set()
    per: dict[str, Any] = {}
    for j, p in enumerate(prompts):
        y = labels[rows].map(lambda s, n=p.name: n in s).to_numpy().astype(int)
        entry: dict[str, Any] = {"prompt_text": p.text, "n_pos": int(y.sum()), "n": int(rows.sum())}
        if p.name not in vocab:
            entry.update(auc=None, note=f"label {p.name!r} does not occur in column {column!r}")
        elif 0 < y.sum() < len(y):
            entry["auc"] = float(roc_auc_score(y, P[rows, j]))
        else:
            entry.update(auc=None, note="every labelled row is positive")
        per[p.name] = entry
    aucs = [e["auc"] for e in per.values() if e["auc"] is not None]
    return {"column": column, "rows_with_labels": int(rows.sum()), "per_label": per,
            "macro_auc": float(np.mean(aucs)) if aucs else None, "labels_scored": len(aucs)}


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def run_zeroshot(data: Sequence[str], out_csv: Path, *, encoder: Any, labels: Sequence[LabelPrompt],
                 template: str | None = None, split: str | None = None, label_column: str = "finding_labels",
                 separator: str = "|", store: Path | None = None, batch_size: int = 32, workers: int = 2,
                 command: str = "") -> dict[str, Any]:
    """Score every image of `data` against `labels`; write the CSV and `<out>.summary.json`; return the summary."""
    t0 = time.perf_counter()
    clf = ZeroShotClassifier(encoder, template)
    df, emb, bad, origin = _load_data(data, encoder, split=split, store=store, batch_size=batch_size,
                                      workers=workers)
    P, logits = zero_shot_scores(emb, clf.text_embeddings(labels), clf.zs) if len(emb) else \
        (np.zeros((0, len(labels))), np.zeros((0, len(labels))))
    out = pd.DataFrame({"path": df.path.to_numpy() if len(df) else []})
    if "image_hash" in df:
        out["image_hash"] = df.image_hash.to_numpy()
    for j, p in enumerate(labels):
        out[f"p_{_safe(p.name)}"] = P[:, j]
    for j, p in enumerate(labels):
        out[f"logit_{_safe(p.name)}"] = logits[:, j]
    if len(out):
        out["top_label"] = [labels[i].name for i in P.argmax(1)]
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_csv.with_name(f".{out_csv.name}.tmp")
    out.to_csv(tmp, index=False)
    os.replace(tmp, out_csv)
    if bad:
        pd.DataFrame(bad, columns=["path", "reason"]).to_csv(out_csv.with_suffix(".quarantine.csv"), index=False)
    summary = {"command": command, "images": len(out), "quarantined": len(bad), "embeddings": origin,
               "split": split or "all rows", **clf.describe(),
               "labels": [{"name": p.name, "prompt": clf.prompt(p)} for p in labels],
               "evaluation": label_aucs(df, P, labels, label_column, separator),
               "seconds": round(time.perf_counter() - t0, 2)}
    summary = to_jsonable(summary)
    out_csv.with_suffix(".summary.json").write_text(json.dumps(summary, indent=1))
    return summary
