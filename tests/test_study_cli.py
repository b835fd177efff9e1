"""`radlens compare / train / predict` end to end on real NIH embeddings."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import NIH_STORE_IMAGES as N_IMAGES, run_cli
from radlens.adapters.artefact import load_adapter

def _pngs_in(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def test_compare_writes_table_report_and_results(nih_store, tmp_path):
    store, _ = nih_store
    out = tmp_path / "cmp"
    proc = run_cli("compare", str(store), "--out", str(out), "--adapters", "logreg,knn", "--label-column", "view",
                   "--task-kind", "multiclass", "--n-boot", "100")
    res = json.loads((out / "results.json").read_text())
    rows = {(r["encoder"], r["adapter"]): r for r in res["rows"]}
    assert set(rows) == {("radlens-cxr", "logreg"), ("radlens-cxr", "knn"), ("metadata-only", "logreg")}
    for r in res["rows"]:
        for key in ("macro_auc", "ci_low", "ci_high", "balanced_accuracy", "fit_seconds", "predict_seconds_per_1000"):
            assert r[key] is not None, key
        assert r["ci_low"] <= r["macro_auc"] <= r["ci_high"]
    # AP vs PA is visible in the pixels (AUC ~0.95 in the literature); an encoder that sees nothing fails this
    assert rows[("radlens-cxr", "logreg")]["macro_auc"] > 0.85
    # the metadata row has `view` itself as a feature: it must be perfect, a check that the baseline is wired
    assert rows[("metadata-only", "logreg")]["macro_auc"] > 0.99
    attrs = {f["attribute"] for f in res["fairness"]}
    assert attrs == {"sex", "age_group", "view"} and {g["attribute"] for g in res["fairness_gaps"]} == attrs
    html = (out / "report.html").read_text()
    pngs = _pngs_in(html)
    assert len(pngs) >= 5 and "<script" not in html.lower() and " src=\"http" not in html
    for png in pngs:  # every embedded figure is a real, non-blank image
        im = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
        assert im.shape[0] > 100 and im.std() > 5
    assert "radlens-cxr" in proc.stdout and "metadata-only" in proc.stdout


def test_train_then_predict_from_store_and_from_images_agree(nih_store, nih_dir, tmp_path):
    store, man = nih_store
    ad_dir = tmp_path / "adapter"
    run_cli("train", str(store), "--out", str(ad_dir), "--adapter", "logreg", "--task", "nih-findings",
            "--target-sensitivity", "0.8", "--decision", "sensitivity", "--n-boot", "100")
    ad = load_adapter(ad_dir)
    assert ad.meta["decision_operating_point"] == "sensitivity" and len(ad.class_names) == 14
    assert {o["kind"] for o in ad.meta["operating_points"]} == {"youden", "sensitivity", "specificity"}
    assert (ad_dir / "report.html").is_file() and json.loads((ad_dir / "results.json").read_text())["rows"]
    run_cli("predict", str(ad_dir), str(store), "--out", str(tmp_path / "from_store.csv"))
    files = man.path.head(5).tolist()
    run_cli("predict", str(ad_dir), *files, "--out", str(tmp_path / "from_images.csv"))
    a = pd.read_csv(tmp_path / "from_store.csv").set_index("path")
    b = pd.read_csv(tmp_path / "from_images.csv").set_index("path")
    pcols = [c for c in a.columns if c.startswith("p_")]
    np.testing.assert_allclose(b[pcols].to_numpy(), a.loc[b.index, pcols].to_numpy(), atol=1e-5)
    thr = ad.thresholds()
    np.testing.assert_array_equal(a[[c.replace("p_", "decision_") for c in pcols]].to_numpy(),
                                  (a[pcols].to_numpy() >= thr).astype(int))
    summary = json.loads((tmp_path / "from_store.summary.json").read_text())
    assert summary["evaluation"]["rows"] == N_IMAGES and (tmp_path / "from_store.html").is_file()


def test_predict_refuses_a_store_from_another_encoder(nih_store, tmp_path):
    store, _ = nih_store
    ad_dir = tmp_path / "adapter"
    run_cli("train", str(store), "--out", str(ad_dir), "--adapter", "knn", "--label-column", "sex",
            "--task-kind", "multiclass", "--n-boot", "20")
    meta = json.loads((ad_dir / "radlens.json").read_text())
    meta["encoder_id"] = "another-encoder@000"
    (ad_dir / "radlens.json").write_text(json.dumps(meta))
    proc = run_cli("predict", str(ad_dir), str(store), "--out", str(tmp_path / "p.csv"), check=False)
    assert proc.returncode != 0 and "another-encoder@000" in (proc.stderr + proc.stdout)


def test_retrieval_adapter_keeps_evidence_in_compare_train_and_predict(nih_store, tmp_path):
    store, man = nih_store
    out = tmp_path / "cmp"
    run_cli("compare", str(store), "--out", str(out), "--adapters", "retrieval", "--label-column", "view",
            "--task-kind", "multiclass", "--n-boot", "50", "--no-metadata-baseline")
    res = json.loads((out / "results.json").read_text())
    assert res["rows"][0]["adapter"] == "retrieval" and res["rows"][0]["macro_auc"] > 0.8
    ev = pd.read_parquet(next((out / "evidence").glob("*retrieval.parquet")))
    assert len(ev) == N_IMAGES and set(ev.path) == set(man.path)
    pid = dict(zip(man.path, man.patient_id))
    view = dict(zip(man.path, man.view))
    for _, r in ev.iterrows():
        assert r.path not in list(r.neighbour_paths)
        assert all(pid[p] != pid[r.path] for p in r.neighbour_paths)  # grouped CV: no patient votes on itself
        assert list(r.neighbour_labels) == [view[p] for p in r.neighbour_paths]
        assert (np.diff(r.neighbour_similarity) <= 1e-6).all()
    # neighbours share the query's view far more often than chance
    same = np.mean([np.mean([lab == r.labels for lab in r.neighbour_labels]) for _, r in ev.iterrows()])
    base = (man.view.value_counts(normalize=True) ** 2).sum()
    assert same > base + 0.1

    ad_dir = tmp_path / "adapter"
    run_cli("train", str(store), "--out", str(ad_dir), "--adapter", "retrieval", "--label-column", "view",
            "--task-kind", "multiclass", "--n-boot", "20")
    run_cli("predict", str(ad_dir), *man.path[:5], "--out", str(tmp_path / "p.csv"))
    p = pd.read_csv(tmp_path / "p.csv")
    ids = [s.split("|") for s in p.evidence_ids]
    assert all(len(i) == 10 for i in ids)
    trained = set(pd.concat([pd.read_parquet(f, columns=["image_hash"]) for f in store.glob("part-*.parquet")]).image_hash)
    assert all(set(i) <= trained for i in ids)
    # predicting a training image: it is its own most similar case
    sims = [float(s.split("|")[0]) for s in p.evidence_similarity]
    assert min(sims) > 0.999
