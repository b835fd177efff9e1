"""Image-set quality in an encoder's embedding space: how far synthetic images are from real ones, whether a
classifier can tell them apart, whether they cover the real distribution, and whether they copy training images.

Callers embed the images (e.g. `radlens.encoders.get("radlens-cxr")` or a store) and pass (n, d) arrays; nothing
here loads a model. Every figure needs a yardstick: two sets of *real* images differ too (by chance, by patient
mix), so `split_baseline` reports each metric between two halves of the real set beside the same metric between
a real half and the synthetic set, at the same sample size (Fréchet distance is biased upward at small n, roughly
by trace terms / n, so only equal-n values compare). Measured with radlens-cxr (1,024-d) on NIH images, 60 vs 60:
FD between two real halves 81, between a real half and the other half blurred (sigma 8 px at 512 px) 134, with
noise (sd 0.2) 126: at this n most of the real-vs-real value is bias. The real half and the synthetic set must be
independent: synthetic images derived from the very real images they are compared with look closer than new real
ones (FD 60 for blurred copies that included half A's own images).

- `frechet_distance(a, b)`: FD = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)), the Fréchet (2-Wasserstein)
  distance between Gaussians fitted to the two sets (the formula of FID, Heusel et al. 2017, on any encoder).
- `precision_recall(real, fake, k)`: Kynkäänniemi et al. 2019 k-NN manifolds: precision = share of fakes inside
  the real manifold (the union of balls around each real embedding with radius its k-th nearest real neighbour),
  recall = share of reals inside the fake manifold. Precision ~ fidelity, recall ~ diversity.
- `real_vs_synthetic_auc(real, fake)`: a classifier two-sample test; ~0.5 = the encoder cannot tell them apart.
- `memorization(train, fake, real_holdout)`: nearest-training-image distances of fakes against those of held-out
  real images.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)


def _matrix(x: Any, name: str, min_rows: int = 2) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected an (n, d) array of embeddings, got shape {a.shape}")
    if len(a) < min_rows:
        raise ValueError(f"{name}: need at least {min_rows} embeddings, got {len(a)}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: embeddings contain NaN or inf")
    return a.astype(np.float64, copy=False)


def _same_dim(*arrays: tuple[str, np.ndarray]) -> None:
    dims = {name: a.shape[1] for name, a in arrays}
    if len(set(dims.values())) > 1:
        raise ValueError(f"embedding dimensions differ: {dims} (embeddings from different encoders?)")


# -- Fréchet distance ---------------------------------------------------------------------------------------------

def _trace_sqrt_eigh(s1: np.ndarray, s2: np.ndarray) -> float:
    """Tr((S1 S2)^(1/2)) as Tr((S1^(1/2) S2 S1^(1/2))^(1/2)): symmetric eigen-decompositions only, so eigenvalue
    noise can only be small and negative (clipped to 0), never complex."""
    w, v = np.linalg.eigh(s1)
    r = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    return float(np.sqrt(np.clip(np.linalg.eigvalsh(r @ s2 @ r), 0, None)).sum())


def _trace_sqrt_product(s1: np.ndarray, s2: np.ndarray, eps: float) -> float:
    """Tr((S1 S2)^(1/2)) with scipy.linalg.sqrtm, guarded.

    S1 S2 is similar to the PSD matrix S1^(1/2) S2 S1^(1/2), so its eigenvalues are real and >= 0 and the trace
    of its square root is real. With fewer samples than dimensions both covariances are singular; sqrtm (Schur
    method) then returns a complex matrix whose imaginary part is rounding noise from eigenvalues at ~0 that came
    out slightly negative or complex: the real part is kept. A non-finite result (singular product) is retried
    with eps on the diagonals (as pytorch-fid does); a result that does not square back to S1 S2 (relative
    Frobenius error > 1e-6) is replaced by the symmetric-eigen formula `_trace_sqrt_eigh`.
    """
    from scipy.linalg import sqrtm

    prod = s1 @ s2
    root = sqrtm(prod)
    if not np.isfinite(root).all():
        log.info("frechet_distance: sqrtm of a singular product; adding %g to the covariance diagonals", eps)
        off = eps * np.eye(len(s1))
        prod = (s1 + off) @ (s2 + off)
        root = sqrtm(prod)
    if np.isfinite(root).all():
        err = np.linalg.norm(root @ root - prod) / max(np.linalg.norm(prod), 1e-300)
        if err <= 1e-6:
            return float(np.real(np.trace(root)))
        log.warning("frechet_distance: sqrtm inaccurate (relative error %.2g); using the eigen formula", err)
    return _trace_sqrt_eigh(s1, s2)


def frechet_distance(a: Any, b: Any, *, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two embedding sets (n_a, d) and (n_b, d).

    FD = ||mu_a - mu_b||^2 + Tr(S_a) + Tr(S_b) - 2 Tr((S_a S_b)^(1/2)), with S the unbiased sample covariances.
    Units are squared embedding units, so values from different encoders do not compare. Biased upward at small
    n (compare only values computed at the same sample sizes; see `split_baseline`). Clipped at 0 (tiny negative
    values are rounding).
    """
    a, b = _matrix(a, "a"), _matrix(b, "b")
    _same_dim(("a", a), ("b", b))
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    diff = mu1 - mu2
    fd = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * _trace_sqrt_product(s1, s2, eps))
    return max(fd, 0.0)


# -- precision / recall ----------------------------------------------------------------------------------------

@dataclass
class PrecisionRecall:
    precision: float  # share of fakes inside the real manifold (fidelity)
    recall: float  # share of reals inside the fake manifold (diversity)
    k: int
    n_real: int
    n_fake: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _kth_neighbour_radius(x: np.ndarray, k: int) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(x)
    d, _ = nn.kneighbors(x)
    return d[:, k]  # column 0 is the point itself (distance 0)


def _inside_any_ball(points: np.ndarray, centres: np.ndarray, radii: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """For each point: is it within radius_j of some centre j (Euclidean, boundary included)?"""
    c2 = (centres ** 2).sum(1)
    r2 = radii ** 2
    out = np.empty(len(points), bool)
    for i in range(0, len(points), chunk):
        p = points[i:i + chunk]
        d2 = (p ** 2).sum(1)[:, None] + c2[None, :] - 2.0 * p @ centres.T
        # squared distances by expansion lose ~1e-12 relative to the norms; a point at distance 0 must count
        tol = 1e-9 * ((p ** 2).sum(1)[:, None] + c2[None, :])
        out[i:i + chunk] = (d2 <= r2[None, :] + tol).any(1)
    return out


def precision_recall(real: Any, fake: Any, k: int = 3) -> PrecisionRecall:
    """Improved precision and recall (Kynkäänniemi et al., NeurIPS 2019), Euclidean, exact.

    Each set's manifold is the union of balls centred on its embeddings with radius the distance to the k-th
    nearest other embedding of the same set. Cost O(n_real * n_fake * d) in chunks; fine for a few thousand.
    """
    real, fake = _matrix(real, "real", k + 1), _matrix(fake, "fake", k + 1)
    _same_dim(("real", real), ("fake", fake))
    if k < 1:
        raise ValueError(f"k: expected a positive int, got {k}")
    p = _inside_any_ball(fake, real, _kth_neighbour_radius(real, k)).mean()
    r = _inside_any_ball(real, fake, _kth_neighbour_radius(fake, k)).mean()
    return PrecisionRecall(float(p), float(r), k, len(real), len(fake))


# -- classifier two-sample test --------------------------------------------------------------------------------

@dataclass
class AUCResult:
    """Real-vs-synthetic AUC: the mean of the per-fold AUCs (radlens' headline convention, NOTES "Decisions") with
    a bootstrap 95 % interval (see `real_vs_synthetic_auc` for the two kinds)."""

    auc: float
    ci_low: float
    ci_high: float
    ci: str  # "refit" or "fixed"
    fold_aucs: list[float]
    auc_pooled_oof: float
    n_real: int
    n_fake: int
    folds: int
    grouped: bool
    n_boot: int
    n_boot_valid: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rank_auc(y: np.ndarray, s: np.ndarray) -> float:
    from scipy.stats import rankdata

    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def _mean_fold_auc(y: np.ndarray, P: np.ndarray) -> float:
    scores, folds = P[:, 0], P[:, 1]
    aucs = [_rank_auc(y[folds == f], scores[folds == f]) for f in np.unique(folds)]
    return float("nan") if any(np.isnan(aucs)) else float(np.mean(aucs))


def _fold_ids(y: np.ndarray, groups: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray | None:
    """Stratified, group-closed k-fold assignment: groups are sorted into strata (all real, all fake, mixed, e.g.
    a real image and the synthetic image made from its conditioning under one id), shuffled within each stratum
    and dealt to the folds in turn, so every fold holds ~1/k of each stratum and no group is split. None when some
    fold would lack one of the classes."""
    codes, n_groups = _codes(groups)
    n1 = np.bincount(codes, weights=y, minlength=n_groups)
    n0 = np.bincount(codes, minlength=n_groups) - n1
    stratum = (n1 > 0).astype(int) + 2 * (n0 > 0)  # 1 fake only, 2 real only, 3 both
    fold_of_group = np.empty(n_groups, int)
    start = int(rng.integers(k))
    for st in (1, 2, 3):
        members = rng.permutation(np.nonzero(stratum == st)[0])
        fold_of_group[members] = (np.arange(len(members)) + start) % k
        start = (start + len(members)) % k
    folds = fold_of_group[codes]
    for f in range(k):
        yf = y[folds == f]
        if not len(yf) or yf.min() == yf.max():
            return None
    return folds


def _codes(groups: np.ndarray) -> tuple[np.ndarray, int]:
    import pandas as pd

    codes, uniques = pd.factorize(pd.Series(groups, dtype=object), sort=False)
    if (codes < 0).any():
        raise ValueError("groups: ids contain missing values (None/NaN)")
    return codes, len(uniques)


def _cv_scores(X: np.ndarray, y: np.ndarray, folds: np.ndarray, C: float) -> np.ndarray:
    """Out-of-fold decision scores of standardize + L2 logistic regression, one model per fold."""
    from sklearn.linear_model import LogisticRegression

    scores = np.empty(len(X))
    for f in np.unique(folds):
        tr, te = folds != f, folds == f
        mu, sd = X[tr].mean(0), X[tr].std(0)
        sd[sd == 0] = 1.0  # StandardScaler's convention for constant columns
        model = LogisticRegression(C=C, max_iter=5000).fit((X[tr] - mu) / sd, y[tr])
        scores[te] = model.decision_function((X[te] - mu) / sd)
    return scores


def real_vs_synthetic_auc(real: Any, fake: Any, groups: Any = None, seed: int = 0, *, folds: int = 5,
                          C: float = 1.0, n_boot: int = 200, ci: str = "refit") -> AUCResult:
    """Can a linear probe tell synthetic from real embeddings? A classifier two-sample test: logistic regression
    (L2, `C`) on standardized embeddings (label 1 = fake), scored out of fold in stratified `folds`-fold CV;
    with `groups` (one id per row of `real` then `fake`, e.g. patient ids for real images and anatomy seeds for
    synthetic ones) the folds are group-closed. AUC = mean of the per-fold AUCs. ~0.5 with an interval covering
    0.5: the encoder sees no difference; near 1: the synthetic images are recognisable.

    Interval (`ci`):
    - "refit" (default): `n_boot` bootstrap resamples of rows (of groups, with `groups`), each scored by a fresh
      cross-validation (copies of a row/group stay in one fold); interval = AUC +- 1.96 x the bootstrap standard
      deviation, clipped to [0, 1] (not percentiles: copies shrink the effective sample, so resampled AUCs sit
      below the full-data one and a percentile interval would be shifted down). Refitting is needed because the
      fold AUCs are positively correlated: two similar rows in two folds push both folds' AUCs the same way
      through the two models, each trained on the other's row. Measured on 40 random halvings of 120 NIH
      embeddings (radlens-cxr, 60 vs 60, no difference by construction): the mean-of-folds AUC had sd 0.075,
      while resampling the fixed out-of-fold scores implied 0.055 (their 95 % intervals covered 0.5 in 85 % of
      the halvings). The "refit" intervals (n_boot=100) covered 0.5 in 30 of 30 other halvings with half-width
      0.17 (the AUC's sd over those halvings was 0.054): conservative, mostly because copies inside a resample
      add variance.
    - "fixed": percentile interval from resampling the out-of-fold scores with their fold labels, no refitting
      (radlens' convention for adapters; fast, but too narrow here, see above).
    Cost of "refit": n_boot x folds logistic fits (~20 ms each at 96 x 1024 on one core: ~20 s for n_boot=200;
    it grows with n).
    """
    from threadpoolctl import threadpool_limits

    from radlens.evaluate.bootstrap import PatientSampler, bootstrap_ci

    if ci not in ("refit", "fixed"):
        raise ValueError(f"ci must be 'refit' or 'fixed', not {ci!r}")
    real, fake = _matrix(real, "real", folds), _matrix(fake, "fake", folds)
    _same_dim(("real", real), ("fake", fake))
    X = np.vstack([real, fake])
    y = np.r_[np.zeros(len(real), int), np.ones(len(fake), int)]
    if groups is not None:
        groups = np.asarray(groups, dtype=object)
        if groups.shape != (len(X),):
            raise ValueError(f"groups: expected one id per row of real then fake ({len(X)}), got shape "
                             f"{groups.shape}")
    g = groups if groups is not None else np.arange(len(X))
    rng = np.random.default_rng(seed)
    fold_of = _fold_ids(y, g, folds, rng)
    if fold_of is None:
        raise ValueError(f"{folds}-fold CV needs both classes in every fold: too few "
                         f"{'groups' if groups is not None else 'rows'} of one class")
    with threadpool_limits(1):
        scores = _cv_scores(X, y, fold_of, C)
        fold_aucs = [_rank_auc(y[fold_of == f], scores[fold_of == f]) for f in range(folds)]
        if ci == "fixed":
            r = bootstrap_ci(_mean_fold_auc, y, np.column_stack([scores, fold_of]), g, n_boot=n_boot, seed=seed)
            low, high, valid = r.low, r.high, r.n_valid
        else:
            sampler = PatientSampler(g)
            boots = []
            for _ in range(n_boot):
                idx = sampler.sample(rng)
                fb = _fold_ids(y[idx], g[idx], folds, rng)
                if fb is None:
                    continue
                boots.append(_mean_fold_auc(y[idx], np.column_stack([_cv_scores(X[idx], y[idx], fb, C), fb])))
            boots = np.array([b for b in boots if np.isfinite(b)])
            valid = len(boots)
            if valid > 1:
                half = 1.96 * float(np.std(boots, ddof=1))
                low, high = max(0.0, float(np.mean(fold_aucs)) - half), min(1.0, float(np.mean(fold_aucs)) + half)
            else:
                low = high = float("nan")
    return AUCResult(auc=float(np.mean(fold_aucs)), ci_low=float(low), ci_high=float(high), ci=ci,
                     fold_aucs=[round(a, 4) for a in fold_aucs], auc_pooled_oof=_rank_auc(y, scores),
                     n_real=len(real), n_fake=len(fake), folds=folds, grouped=groups is not None,
                     n_boot=n_boot, n_boot_valid=int(valid), seed=seed)


# -- memorization ----------------------------------------------------------------------------------------------

@dataclass
class Memorization:
    """Nearest-training-image distances: fakes vs held-out real images (the reference a non-copying generator
    should match). `threshold` = the `percentile`-th percentile of real-to-train distances; fakes closer than that
    are `flagged` (with fewer than ~100 held-out images this percentile is close to their minimum)."""

    metric: str
    median_fake_to_train: float
    median_real_to_train: float
    ratio: float  # median fake / median real; << 1 = fakes sit closer to training images than new real ones do
    threshold: float
    percentile: float
    frac_fake_below: float
    flagged: list[int]  # indices into `fake`
    n_exact_copies: int  # fakes at distance ~0 from a training embedding
    real_exact_in_train: int  # held-out reals at distance ~0 (should be 0: holdout overlaps train otherwise)
    fake_to_train: np.ndarray = field(repr=False)
    fake_nearest_train: np.ndarray = field(repr=False)
    real_to_train: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("fake_to_train", "fake_nearest_train", "real_to_train"):
            d.pop(k)
        return d


def nearest_distances(queries: np.ndarray, base: np.ndarray, metric: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
    """Exact nearest neighbour of each query in `base` (faiss flat index): (distances, indices).
    cosine: 1 - cosine similarity; l2: Euclidean distance."""
    import faiss

    if metric not in ("cosine", "l2"):
        raise ValueError(f"metric must be cosine or l2, not {metric!r}")
    q = np.ascontiguousarray(queries, np.float32)
    x = np.ascontiguousarray(base, np.float32)
    if metric == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(x)
        sim, idx = index.search(q, 1)
        return np.clip(1.0 - sim[:, 0].astype(np.float64), 0, None), idx[:, 0]
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    d2, idx = index.search(q, 1)
    return np.sqrt(np.clip(d2[:, 0].astype(np.float64), 0, None)), idx[:, 0]


def memorization(train: Any, fake: Any, real_holdout: Any, *, metric: str = "cosine",
                 percentile: float = 1.0) -> Memorization:
    """Do synthetic images sit closer to the generator's training images than new real images do?

    For each fake: distance to its nearest training embedding; the same for held-out real images (never seen in
    training) as the reference. Reports both medians, their ratio, and the share of fakes closer to the training
    set than the `percentile`-th percentile of real-to-train distances (~percentile/100 expected if fakes behave
    like new real images; exact copies always fall below). Distances: cosine (1 - similarity, as radlens search
    uses) or l2.
    """
    train, fake = _matrix(train, "train", 1), _matrix(fake, "fake", 1)
    hold = _matrix(real_holdout, "real_holdout", 2)
    _same_dim(("train", train), ("fake", fake), ("real_holdout", hold))
    d_fake, nn_fake = nearest_distances(fake, train, metric)
    d_real, _ = nearest_distances(hold, train, metric)
    # float32 search: an exact copy comes back at ~1e-7 (cosine) rather than 0
    tiny = 1e-5 if metric == "cosine" else 1e-4 * float(np.median(np.linalg.norm(train, axis=1)))
    real_copies = int((d_real <= tiny).sum())
    if real_copies:
        log.warning("memorization: %d held-out real embedding(s) also appear in train; the reference is biased",
                    real_copies)
    thr = float(np.percentile(d_real, percentile))
    below = d_fake < thr
    med_f, med_r = float(np.median(d_fake)), float(np.median(d_real))
    return Memorization(metric=metric, median_fake_to_train=med_f, median_real_to_train=med_r,
                        ratio=med_f / med_r if med_r > 0 else float("inf"), threshold=thr, percentile=percentile,
                        frac_fake_below=float(below.mean()), flagged=np.nonzero(below)[0].tolist(),
                        n_exact_copies=int((d_fake <= tiny).sum()), real_exact_in_train=real_copies,
                        fake_to_train=d_fake, fake_nearest_train=nn_fake, real_to_train=d_real)


# -- real-vs-real yardsticks -----------------------------------------------------------------------------------

def split_halves(n: int, *, groups: Any = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random split of range(n) into two halves; with `groups` (e.g. patient ids) no group is on both sides
    (halves are then only about equal)."""
    rng = np.random.default_rng(seed)
    if groups is None:
        perm = rng.permutation(n)
        return np.sort(perm[: n // 2]), np.sort(perm[n // 2:])
    g = np.asarray(groups, dtype=object)
    if g.shape != (n,):
        raise ValueError(f"groups: expected {n} ids, got shape {g.shape}")
    uniq, codes = np.unique(g.astype(str), return_inverse=True)
    order = rng.permutation(len(uniq))
    sizes = np.bincount(codes)[order]
    in_a = np.zeros(len(uniq), bool)
    in_a[order[np.cumsum(sizes) <= n // 2]] = True  # groups in shuffled order until half the rows
    a = in_a[codes]
    return np.nonzero(a)[0], np.nonzero(~a)[0]


def split_baseline(real: Any, fake: Any = None, *, metric: Callable[[np.ndarray, np.ndarray], Any] = frechet_distance,
                   groups: Any = None, fake_groups: Any = None, repeats: int = 5, seed: int = 0) -> dict[str, Any]:
    """The real-vs-real yardstick for a two-set metric, and the real-vs-fake value at the same sample size.

    Each repeat splits `real` into halves A and B (group-closed when `groups` is given) and subsamples A, B and
    `fake` to one size m = min(|A|, |B|, |fake|); it records metric(A, B) and, with `fake`, metric(A, F). `metric`
    returns a float or a dataclass/dict of floats (e.g. `precision_recall`). Returns per-repeat values and means:
    {"n_per_side": m, "repeats": r, "real_vs_real": {...}, "real_vs_fake": {...}}.

    Paired sets (each synthetic image made from a real image's conditioning): pass `fake_groups` (one id per fake,
    in the same id space as `groups`, e.g. the patient id of the real image it was made from); fakes of A's groups
    are then left out, so F is made from B's conditions and metric(A, F) compares like with like against
    metric(A, B). Without it, fakes paired with A's own images make F look closer to A than new real images are.
    """
    real = _matrix(real, "real", 4)
    fake_arr = None if fake is None else _matrix(fake, "fake", 2)
    if repeats < 1:
        raise ValueError(f"repeats: expected a positive int, got {repeats}")
    if fake_groups is not None:
        if groups is None or fake_arr is None:
            raise ValueError("fake_groups needs `fake` and `groups` (the real images' ids they refer to)")
        fake_groups = np.asarray(fake_groups, dtype=object).astype(str)
        if fake_groups.shape != (len(fake_arr),):
            raise ValueError(f"fake_groups: expected one id per fake ({len(fake_arr)}), got {fake_groups.shape}")
    real_groups = None if groups is None else np.asarray(groups, dtype=object).astype(str)
    rr: list[dict[str, float]] = []
    rf: list[dict[str, float]] = []
    m = None
    for r in range(repeats):
        a, b = split_halves(len(real), groups=groups, seed=seed + r)
        rng = np.random.default_rng([seed, r])
        pool = None
        if fake_arr is not None:
            pool = np.arange(len(fake_arr))
            if fake_groups is not None:
                pool = pool[~np.isin(fake_groups, real_groups[a])]
        m = min(len(a), len(b), len(pool) if pool is not None else len(b))
        if m < 2:
            raise ValueError(f"split_baseline: only {m} row(s) per side (real halves {len(a)}/{len(b)}, fakes "
                             f"{'-' if pool is None else len(pool)})")
        a, b = rng.choice(a, m, replace=False), rng.choice(b, m, replace=False)
        rr.append(_as_floats(metric(real[a], real[b])))
        if fake_arr is not None:
            rf.append(_as_floats(metric(real[a], fake_arr[rng.choice(pool, m, replace=False)])))
    out: dict[str, Any] = {"n_per_side": m, "repeats": repeats, "real_vs_real": _summarise(rr)}
    if fake_arr is not None:
        out["real_vs_fake"] = _summarise(rf)
    return out


def _as_floats(v: Any) -> dict[str, float]:
    if hasattr(v, "to_dict"):
        v = v.to_dict()
    if isinstance(v, dict):
        return {k: float(x) for k, x in v.items() if isinstance(x, (int, float, np.number)) and not isinstance(x, bool)}
    return {"value": float(v)}


def _summarise(rows: list[dict[str, float]]) -> dict[str, Any]:
    return {k: {"mean": float(np.mean([r[k] for r in rows])), "std": float(np.std([r[k] for r in rows])),
                "values": [r[k] for r in rows]} for k in rows[0]}
