"""Zero-shot classification: prompts, scores, `run_zeroshot`, and the zero-shot row of `radlens compare`.

A small CLIP-type encoder is part of these tests (registered as "test-clip"): image embedding = a fixed
random projection of the 32x32 image, text embedding = a fixed random vector per text. It is a real Encoder
going through radlens's code paths, not a mock of them. The tiny real families (BiomedCLIP via open_clip) are
tested in test_encoders_clip.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from radlens.adapters.targets import build_targets, task_from_name
from radlens.encoders import Encoder, PreprocessSpec, get
from radlens.encoders.registry import _REGISTRY, register
from radlens.evaluate.study import StudyConfig
from radlens.evaluate.zeroshot import (LabelPrompt, ZeroShotClassifier, ZeroShotSource, label_text, parse_labels,
                                       prompts_for, run_zeroshot, zero_shot_scores)

DIM = 8


class TinyCLIP(Encoder):
    name = "test-clip"
    spec = PreprocessSpec(size=32, channels=1, extra={"test": "clip"})
    embedding_dim = DIM

    def __init__(self, activation: str = "softmax", bias: float | None = None) -> None:
        g = torch.Generator().manual_seed(0)
        self.proj = torch.randn(32 * 32, DIM, generator=g)
        self.encoder_id = f"test-clip-{activation}"
        self.zero_shot = {"logit_scale": 20.0, "logit_bias": bias, "activation": activation,
                          "prompt_template": "a chest x-ray showing {}"}

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.flatten(1) @ self.proj

    def embed_text(self, texts):
        return np.stack([np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)).normal(size=DIM)
                         for t in texts]).astype(np.float32)


if "test-clip" not in _REGISTRY:
    register("test-clip", description="test-only CLIP-type encoder", input_size=32, embedding_dim=DIM,
             license="test", weights="none")(lambda weights=None, activation="softmax", bias=None, **kw:
                                                TinyCLIP(activation, bias))


def test_label_specs_map_data_names_to_prompt_text():
    got = parse_labels("Effusion=pleural effusion, cardiomegaly ,Pleural_Thickening=pleural thickening")
    assert got == [LabelPrompt("Effusion", "pleural effusion"), LabelPrompt("cardiomegaly", "cardiomegaly"),
                   LabelPrompt("Pleural_Thickening", "pleural thickening")]
    with pytest.raises(ValueError, match="more than once"):
        parse_labels("a,a")
    with pytest.raises(ValueError, match="NAME=prompt"):
        parse_labels("Effusion=")
    assert label_text("Pleural_Thickening") == "pleural thickening"
    # classes without a mapping get their own name as text; the order is the task's
    ps = prompts_for(["Atelectasis", "Effusion"], [LabelPrompt("Effusion", "pleural effusion")])
    assert [(p.name, p.text) for p in ps] == [("Atelectasis", "atelectasis"), ("Effusion", "pleural effusion")]


def test_scores_are_scaled_cosines_through_the_encoders_activation():
    rng = np.random.default_rng(1)
    img, txt = rng.normal(size=(5, DIM)) * 3, rng.normal(size=(3, DIM))
    cos = (img / np.linalg.norm(img, axis=1, keepdims=True)) @ (txt / np.linalg.norm(txt, axis=1, keepdims=True)).T
    P, logits = zero_shot_scores(img, txt, {"logit_scale": 10.0, "logit_bias": None, "activation": "softmax"})
    np.testing.assert_allclose(logits, 10 * cos, atol=1e-12)
    np.testing.assert_allclose(P, np.exp(10 * cos) / np.exp(10 * cos).sum(1, keepdims=True), atol=1e-12)
    P, logits = zero_shot_scores(img, txt, {"logit_scale": 10.0, "logit_bias": -3.0, "activation": "sigmoid"})
    np.testing.assert_allclose(P, 1 / (1 + np.exp(-(10 * cos - 3))), atol=1e-12)


def test_classifier_uses_the_encoders_template_and_refuses_image_only_encoders():
    clf = ZeroShotClassifier(get("test-clip"))
    assert clf.prompt(LabelPrompt("Effusion", "pleural effusion")) == "a chest x-ray showing pleural effusion"
    assert ZeroShotClassifier(get("test-clip"), "{}").prompt(LabelPrompt("x", "mass")) == "mass"
    with pytest.raises(ValueError, match="must contain"):
        ZeroShotClassifier(get("test-clip"), "no slot")
    with pytest.raises(ValueError, match="no text tower"):
        ZeroShotClassifier(get("radlens-cxr"))


def _subset(nih_dir: Path, tmp_path: Path, n: int = 40) -> Path:
    man = pd.read_csv(nih_dir / "manifest.csv", dtype={"patient_id": str}).head(n)
    man = man.assign(path=[str(nih_dir / p) for p in man.path])
    man.to_csv(tmp_path / "manifest.csv", index=False)
    return tmp_path / "manifest.csv"


def test_run_zeroshot_writes_scores_and_per_label_auc(nih_dir, tmp_path):
    manifest = _subset(nih_dir, tmp_path)
    enc = get("test-clip")
    labels = parse_labels("Effusion=pleural effusion,No Finding=no finding,Zebra=zebra stripes")
    out = tmp_path / "zs" / "preds.csv"
    s = run_zeroshot([str(manifest)], out, encoder=enc, labels=labels)
    df = pd.read_csv(out)
    assert len(df) == 40 and s["images"] == 40 and s["quarantined"] == 0
    P = df[["p_Effusion", "p_No_Finding", "p_Zebra"]].to_numpy()
    np.testing.assert_allclose(P.sum(1), 1.0, atol=1e-9)  # softmax over the labels
    assert set(df.top_label) <= {"Effusion", "No Finding", "Zebra"}
    # the same scores, computed here from the encoder's own outputs
    from radlens.io import load_image

    emb = enc.embed([load_image(p).pixels for p in df.path])
    ref, _ = zero_shot_scores(emb, enc.embed_text([f"a chest x-ray showing {t}" for t in
                                                    ("pleural effusion", "no finding", "zebra stripes")]), enc.zero_shot)
    np.testing.assert_allclose(P, ref, atol=1e-6)
    man = pd.read_csv(manifest)
    ev = s["evaluation"]["per_label"]
    y = man.finding_labels.str.split("|").map(lambda ls: "No Finding" in ls).astype(int).to_numpy()
    assert ev["No Finding"]["auc"] == pytest.approx(roc_auc_score(y, P[:, 1]))
    assert ev["Zebra"]["auc"] is None and "does not occur" in ev["Zebra"]["note"]
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["labels"][0] == {"name": "Effusion", "prompt": "a chest x-ray showing pleural effusion"}
    assert summary["activation"] == "softmax" and summary["logit_scale"] == 20.0


def test_run_zeroshot_from_a_store_checks_the_encoder_and_supports_sigmoid(nih_dir, tmp_path):
    from radlens.store.embed_job import embed_to_store

    manifest = _subset(nih_dir, tmp_path, 12)
    embed_to_store(str(manifest), tmp_path / "store", get("test-clip", activation="sigmoid", bias=-2.0))
    out = tmp_path / "preds.csv"
    s = run_zeroshot([str(tmp_path / "store")], out, encoder=get("test-clip", activation="sigmoid", bias=-2.0),
                     labels=parse_labels("Effusion,Mass"), template="{}")
    assert s["images"] == 12 and s["embeddings"].startswith("store")
    df = pd.read_csv(out)
    assert np.allclose(1 / (1 + np.exp(-df.logit_Effusion)), df.p_Effusion)  # sigmoid(scale*cos + bias)
    assert not np.allclose(df[["p_Effusion", "p_Mass"]].sum(axis=1), 1.0)
    from radlens.store.embedding_store import StoreMismatchError

    with pytest.raises(StoreMismatchError):  # a store from another encoder is refused
        run_zeroshot([str(tmp_path / "store")], out, encoder=get("test-clip"), labels=parse_labels("Mass"))


def test_compare_zero_shot_row_is_the_untrained_scores_under_the_same_evaluation(nih_store, tmp_path):
    from radlens.evaluate.runs import run_compare

    store, man = nih_store
    task = task_from_name("nih-findings")
    src = ZeroShotSource.parse("test-clip", parse_labels("Effusion=pleural effusion"), None)
    cfg = StudyConfig(n_boot=50, n_inner=1)
    payload, results = run_compare([store], tasks=[task], adapters=["logreg"], out=tmp_path / "cmp", cfg=cfg,
                                   zeroshot=[src])
    rows = {(r["encoder"], r["adapter"]): r for r in payload["rows"]}
    assert set(rows) == {("radlens-cxr", "logreg"), ("metadata-only", "logreg"), ("test-clip zero-shot", "zero-shot")}
    zs = rows[("test-clip zero-shot", "zero-shot")]
    assert zs["ci_low"] <= zs["macro_auc"] <= zs["ci_high"] and zs["n_images"] == rows[("radlens-cxr", "logreg")]["n_images"]
    # the row's per-class AUCs are those of the zero-shot scores themselves: nothing was trained, names map
    enc = get("test-clip")
    frame = pd.read_parquet(store).set_index("image_hash").loc[[r for r in _study_hashes(store)]]
    tg = build_targets(frame.reset_index(), task)
    from radlens.io import load_image

    emb = enc.embed([load_image(p).pixels for p in frame.reset_index().path[tg.rows]])
    texts = ["a chest x-ray showing " + ("pleural effusion" if c == "Effusion" else label_text(c)) for c in tg.class_names]
    P, _ = zero_shot_scores(emb, enc.embed_text(texts), enc.zero_shot)
    for j, c in enumerate(tg.class_names):
        if 0 < tg.y[:, j].sum() < len(tg.y):
            assert zs["per_class_auc"][c] == pytest.approx(roc_auc_score(tg.y[:, j], P[:, j]), abs=1e-9), c
    meta = payload["meta"]
    assert meta["zero_shot"]["test-clip zero-shot"]["prompts"]["nih-findings"]["Effusion"] == \
        "a chest x-ray showing pleural effusion"
    assert meta["zero_shot"]["test-clip zero-shot"]["embeddings"] == "embedded from paths"
    assert (tmp_path / "cmp" / "report.html").is_file()


def _study_hashes(store: Path) -> list[str]:
    from radlens.evaluate.runs import load_study_data

    return load_study_data([store], metadata_baseline=False).frame.image_hash.tolist()
