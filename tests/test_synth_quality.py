"""Embedding-space quality metrics for synthetic image sets (issue 8): Fréchet distance, k-NN precision/recall,
real-vs-synthetic AUC, memorization, and the real-vs-real yardstick. Pure-numpy checks against known answers,
then real NIH images embedded with the default encoder, with blurred / noisy copies standing in for a poor
generator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from radlens.synth import quality as q

# -- numpy: known answers ---------------------------------------------------------------------------------------


def test_frechet_distance_matches_the_closed_form_for_gaussians():
    rng = np.random.default_rng(0)
    d, n = 6, 40_000
    mu1, mu2 = np.zeros(d), np.linspace(0, 1, d)
    v1, v2 = np.linspace(0.5, 2, d), np.linspace(2, 0.5, d)
    a = mu1 + rng.normal(size=(n, d)) * np.sqrt(v1)
    b = mu2 + rng.normal(size=(n, d)) * np.sqrt(v2)
    exact = float(((mu1 - mu2) ** 2).sum() + (v1 + v2 - 2 * np.sqrt(v1 * v2)).sum())
    fd = q.frechet_distance(a, b)
    assert fd == pytest.approx(exact, rel=0.03)
    assert q.frechet_distance(b, a) == pytest.approx(fd, rel=1e-6)
    assert q.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_frechet_trace_term_agrees_with_the_symmetric_formula_when_covariances_are_singular():
    rng = np.random.default_rng(1)
    d = 200
    a = rng.normal(size=(40, d)) @ rng.normal(size=(d, d)) * 0.1  # n < d: both covariances singular
    b = rng.normal(size=(50, d)) @ rng.normal(size=(d, d)) * 0.1 + 0.3
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    via_sqrtm = q._trace_sqrt_product(s1, s2, 1e-6)
    assert via_sqrtm == pytest.approx(q._trace_sqrt_eigh(s1, s2), rel=1e-6)
    assert np.isfinite(q.frechet_distance(a, b)) and q.frechet_distance(a, b) > 0


def test_precision_recall_identical_disjoint_and_collapsed_sets():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(400, 16))
    same = q.precision_recall(real, real.copy(), k=3)
    assert (same.precision, same.recall) == (1.0, 1.0)
    fresh = q.precision_recall(real, rng.normal(size=(400, 16)), k=3)
    assert fresh.precision > 0.6 and fresh.recall > 0.6  # same distribution, new draws
    far = q.precision_recall(real, rng.normal(size=(400, 16)) + 20.0, k=3)
    assert far.precision == 0.0 and far.recall == 0.0
    collapsed = q.precision_recall(real, 0.15 * rng.normal(size=(400, 16)), k=3)  # faithful but not diverse
    assert collapsed.precision > 0.9 and collapsed.recall < 0.2


def test_auc_near_half_for_one_distribution_and_high_for_a_shift():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 32))
    null = q.real_vs_synthetic_auc(x[:100], x[100:], n_boot=40)
    assert null.ci_low <= 0.5 <= null.ci_high and abs(null.auc - 0.5) < 0.15, null
    shifted = q.real_vs_synthetic_auc(x[:100], x[100:] + 0.5, n_boot=40)
    assert shifted.auc > 0.9 and shifted.ci_low > 0.75, shifted
    fixed = q.real_vs_synthetic_auc(x[:100], x[100:] + 0.5, ci="fixed", n_boot=300)
    assert fixed.auc == shifted.auc and fixed.ci_low > 0.75


def test_folds_are_stratified_and_group_closed():
    rng = np.random.default_rng(4)
    y = np.r_[np.zeros(60, int), np.ones(40, int)]
    groups = np.r_[np.repeat(np.arange(30), 2), 100 + np.repeat(np.arange(20), 2)]  # two rows per group
    folds = q._fold_ids(y, groups, 5, rng)
    assert pd.Series(folds).groupby(groups).nunique().max() == 1
    per_fold = pd.crosstab(folds, y)
    assert per_fold[0].tolist() == [12] * 5 and per_fold[1].tolist() == [8] * 5
    r = q.real_vs_synthetic_auc(rng.normal(size=(60, 8)), rng.normal(size=(40, 8)), groups=groups, n_boot=20)
    assert r.grouped and r.n_boot_valid > 0
    with pytest.raises(ValueError, match="one id per row"):
        q.real_vs_synthetic_auc(rng.normal(size=(60, 8)), rng.normal(size=(40, 8)), groups=groups[:50])


def test_split_baseline_compares_at_equal_sample_size():
    rng = np.random.default_rng(5)
    real = rng.normal(size=(300, 8))
    fake = rng.normal(size=(90, 8)) + 1.0
    out = q.split_baseline(real, fake, repeats=3, seed=0)
    assert out["n_per_side"] == 90  # min(150, 150, 90)
    rr, rf = out["real_vs_real"]["value"], out["real_vs_fake"]["value"]
    assert len(rr["values"]) == 3 and rr["mean"] < 1.0 < 4.0 < rf["mean"]  # exact FD: 0 and 8
    pr = q.split_baseline(real, fake, metric=q.precision_recall, repeats=2)
    assert pr["real_vs_real"]["precision"]["mean"] > 0.6 > pr["real_vs_fake"]["precision"]["mean"]
    groups = np.repeat(np.arange(100), 3)
    a, b = q.split_halves(300, groups=groups, seed=1)
    assert not set(groups[a]) & set(groups[b]) and len(a) + len(b) == 300


def test_split_baseline_with_paired_fakes_leaves_out_fakes_of_the_compared_half():
    rng = np.random.default_rng(6)
    real = rng.normal(size=(300, 8))
    ids = np.array([f"p{i}" for i in range(300)])
    fake = real + rng.normal(0, 0.05, real.shape)  # each fake made from one real image's conditioning
    naive = q.split_baseline(real, fake, groups=ids, repeats=3)
    paired = q.split_baseline(real, fake, groups=ids, fake_groups=ids, repeats=3)
    rr = paired["real_vs_real"]["value"]["mean"]
    assert naive["real_vs_real"]["value"]["mean"] == rr
    assert naive["real_vs_fake"]["value"]["mean"] < 0.8 * rr  # fakes of A's own images: looks better than real
    assert paired["real_vs_fake"]["value"]["mean"] == pytest.approx(rr, rel=0.2)
    # the AUC's folds keep a real image and its fake together when they share an id
    r = q.real_vs_synthetic_auc(real[:100], fake[:100], groups=np.r_[ids[:100], ids[:100]], n_boot=20)
    assert r.grouped and r.n_boot_valid == 20 and r.ci_low <= 0.5 <= r.ci_high
    folds = q._fold_ids(np.r_[np.zeros(100, int), np.ones(100, int)], np.r_[ids[:100], ids[:100]], 5,
                        np.random.default_rng(0))
    assert (folds[:100] == folds[100:]).all()


# -- real NIH embeddings ---------------------------------------------------------------------------------------

N_IMAGES = 120


@pytest.fixture(scope="module")
def nih_embeddings(nih_dir):
    """radlens-cxr embeddings of 120 NIH images (one per patient), split into halves A and B, plus B blurred
    (Gaussian, sigma 8 px at 512 px) and B with noise (sd 0.2): the stand-ins for a poor generator."""
    from scipy import ndimage as ndi

    from radlens.encoders import get
    from radlens.io import load_image

    man = pd.read_csv(nih_dir / "manifest.csv", dtype={"patient_id": str}).drop_duplicates("patient_id")
    man = man.head(N_IMAGES)
    if len(man) < N_IMAGES:
        pytest.skip(f"need {N_IMAGES} NIH patients at {nih_dir}, found {len(man)}")
    enc = get("radlens-cxr", threads=1)
    images = [load_image(nih_dir / p).pixels for p in man.path]

    def embed(ims):
        return np.vstack([enc.embed(ims[i:i + 32]) for i in range(0, len(ims), 32)])

    a, b = q.split_halves(N_IMAGES, seed=0)
    rng = np.random.default_rng(0)
    emb = embed(images)
    blurred = embed([ndi.gaussian_filter(images[i], 8) for i in b])
    noisy = embed([np.clip(images[i] + rng.normal(0, 0.2, images[i].shape), 0, 1).astype(np.float32) for i in b])
    return {"A": emb[a], "B": emb[b], "blurred_B": blurred, "noisy_B": noisy}


def test_fd_between_real_halves_is_well_below_fd_to_degraded_images(nih_embeddings):
    e = nih_embeddings
    real = q.frechet_distance(e["A"], e["B"])
    blurred = q.frechet_distance(e["A"], e["blurred_B"])
    noisy = q.frechet_distance(e["A"], e["noisy_B"])
    # at 60 vs 60 in 1,024 dimensions most of the real-vs-real FD (~80 here) is small-sample bias; the same images
    # degraded add ~50 on top (measured 81 / 134 / 126 when written)
    assert blurred > 1.4 * real and noisy > 1.3 * real, (real, blurred, noisy)


def test_auc_is_chance_for_real_halves_and_high_for_blurred_images(nih_embeddings):
    e = nih_embeddings
    halves = q.real_vs_synthetic_auc(e["A"], e["B"], n_boot=50)
    assert halves.ci_low <= 0.5 <= halves.ci_high and abs(halves.auc - 0.5) < 0.15, halves
    blurred = q.real_vs_synthetic_auc(e["A"], e["blurred_B"], n_boot=50)
    assert blurred.auc > 0.9 and blurred.ci_low > 0.75, blurred


def test_precision_recall_and_memorization_on_real_embeddings(nih_embeddings):
    e = nih_embeddings
    same = q.precision_recall(e["A"], e["A"])
    assert (same.precision, same.recall) == (1.0, 1.0)
    # generator "trained" on A; 10 of its 30 outputs are exact copies of training images, 20 are new real images
    fake = np.vstack([e["A"][:10], e["B"][:20]])
    m = q.memorization(e["A"], fake, e["B"][20:])
    assert m.n_exact_copies == 10 and m.real_exact_in_train == 0
    assert set(range(10)) <= set(m.flagged) and len(m.flagged) <= 12, m.flagged
    assert (m.fake_nearest_train[:10] == np.arange(10)).all()
    honest = q.memorization(e["A"], e["B"][:20], e["B"][20:])
    assert honest.n_exact_copies == 0 and honest.frac_fake_below <= 0.1 and 0.6 < honest.ratio < 1.6, honest
    assert m.ratio < honest.ratio
    l2 = q.memorization(e["A"], fake, e["B"][20:], metric="l2")
    assert set(range(10)) <= set(l2.flagged) and l2.n_exact_copies == 10
