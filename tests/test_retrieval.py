"""The retrieval classifier: its vote, its evidence, its persistence, and its place in the study."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from radlens.adapters import TaskSpec, build_targets, get_adapter
from radlens.adapters.artefact import load_adapter, save_adapter
from radlens.adapters.retrieval import RetrievalClassifier, estimator_evidence
from radlens.evaluate.study import FeatureSet, StudyConfig, evaluate_adapter


def _clusters(n=300, d=32, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    y = rng.integers(0, k, n)
    return centres[y] + 0.3 * rng.normal(size=(n, d)), y


def test_neighbours_are_the_exact_cosine_top_k_in_order():
    X, y = _clusters()
    clf = RetrievalClassifier(n_neighbors=7, block_rows=64).fit(X[:250], y[:250])  # several query blocks
    idx, sim = clf.kneighbors(X[250:])
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = U[250:] @ U[:250].T
    want = np.argsort(-S, axis=1, kind="stable")[:, :7]
    np.testing.assert_allclose(sim, np.take_along_axis(S, want, 1), rtol=1e-5)
    assert (np.diff(sim, axis=1) <= 1e-7).all()
    # ties aside, the same ids
    assert (idx == want).mean() > 0.99


def test_vote_follows_similarity_weighted_neighbour_labels_and_shrinks_to_the_prior():
    clf = RetrievalClassifier(n_neighbors=3, temperature=0.1, prior_weight=0.0)
    X = np.eye(4)
    Y = np.array([[1, 0], [1, 1], [0, 0], [0, 1]])
    clf.fit(X, Y)
    sim = np.array([[0.9, 0.8, 0.5]])
    idx = np.array([[0, 1, 2]])
    w = np.exp((sim[0] - 0.9) / 0.1)
    want = (w[:, None] * Y[[0, 1, 2]]).sum(0) / w.sum()
    np.testing.assert_allclose(clf.vote(sim, idx)[0], want, rtol=1e-6)
    # an infinite prior weight returns the training prevalence, whatever the neighbours say
    clf.prior_weight = 1e9
    np.testing.assert_allclose(clf.vote(sim, idx)[0], Y.mean(0), atol=1e-6)


def test_multiclass_probabilities_sum_to_one_and_evidence_names_training_rows():
    X, y = _clusters()
    clf = RetrievalClassifier(n_neighbors=10).fit(X[:200], y[:200])
    clf.sample_ids_ = np.array([f"case{i}" for i in range(200)])
    P = clf.predict_proba(X[200:])
    assert P.shape == (100, 3) and np.allclose(P.sum(1), 1)
    assert (clf.predict(X[200:]) == y[200:]).mean() > 0.95
    ev = clf.evidence(X[200:], k=5)
    assert ev["ids"].shape == (100, 5) and ev["ids"][0, 0] == f"case{ev['positions'][0, 0]}"
    np.testing.assert_array_equal(ev["labels"].argmax(2), y[:200][ev["positions"]])


def test_saved_retrieval_adapter_round_trips_with_its_evidence(tmp_path):
    X, y = _clusters()
    est = get_adapter("retrieval").build("multiclass", 0).fit(X, y)
    est.named_steps["clf"].sample_ids_ = np.array([f"h{i}" for i in range(len(y))])
    meta = {"adapter": "retrieval", "task": TaskSpec("t", "multiclass", column="c").to_dict(),
            "class_names": ["a", "b", "c"], "encoder_id": "enc@1", "preprocess_hash": "pp1", "calibration": None,
            "decision_operating_point": "youden",
            "operating_points": [{"class_name": c, "kind": "youden", "threshold": 0.5} for c in "abc"]}
    ad = load_adapter(save_adapter(tmp_path / "ad", est, meta), encoder_id="enc@1", preprocess_hash="pp1")
    np.testing.assert_allclose(ad.predict_proba(X[:20]), est.predict_proba(X[:20]))
    ev = estimator_evidence(ad.estimator, X[:20], k=4)
    np.testing.assert_array_equal(ev["ids"], estimator_evidence(est, X[:20], k=4)["ids"])
    assert ev["ids"][0, 0] == "h0"  # each training image is its own nearest neighbour


def test_study_keeps_out_of_fold_evidence_that_never_crosses_a_patient():
    X, y = _clusters(n=240)
    groups = np.arange(240) // 3
    frame = pd.DataFrame({"c": y.astype(str), "patient_id": groups.astype(str), "image_hash": [f"h{i}" for i in range(240)],
                          "path": [f"p{i}.png" for i in range(240)]})
    task = TaskSpec("t", "multiclass", column="c")
    res, _ = evaluate_adapter(FeatureSet("toy", "toy@1", "p", X), frame, build_targets(frame, task), task, "retrieval",
                              groups, StudyConfig(n_boot=50, fairness=()))
    assert res.macro_auc["point"] > 0.95
    ev = res.evidence
    assert len(ev["rows"]) == 240 and all(r is not None for r in ev["rows"])
    for i, (nbr, sim) in enumerate(zip(ev["rows"], ev["similarity"])):
        assert len(nbr) in (10, 25, 50) and (np.diff(sim) <= 1e-6).all()
        assert not (groups[nbr] == groups[i]).any()  # grouped CV: a patient never votes on their own image
