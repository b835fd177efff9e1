"""Known-answer tests for radlens.evaluate (metrics, patient bootstrap, calibration,
operating points, fairness). Small, seeded, and fast: the whole file runs in seconds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import expit, logit
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    balanced_accuracy_score,
    f1_score,
    multilabel_confusion_matrix,
    roc_auc_score,
)

from radlens.evaluate import (
    BootstrapResult,
    Calibrator,
    OperatingPoint,
    PatientSampler,
    age_group,
    balanced_accuracy,
    bootstrap_ci,
    bootstrap_cis,
    choose_calibrator,
    confusion_matrix,
    expected_calibration_error,
    fit_operating_points,
    macro_auc,
    macro_f1,
    one_vs_rest,
    patient_resample_indices,
    per_class_auc,
    pr_curves,
    rates_at,
    reliability_bins,
    roc_curves,
    subgroup_table,
    summarize,
    threshold_for_sensitivity,
    threshold_for_specificity,
    to_jsonable,
    youden_threshold,
)


def strict_json(obj) -> str:
    """json.dumps that refuses NaN/inf, i.e. what a standards-compliant reader accepts."""
    return json.dumps(obj, allow_nan=False)


def multiclass_data(rng, n, K, signal):
    y = rng.integers(0, K, n)
    logits = rng.normal(size=(n, K)) + signal * np.eye(K)[y]
    P = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, P


# --------------------------------------------------------------------------- metrics
def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    Y = (rng.random((300, 4)) < 0.3).astype(int)
    P = np.round(np.clip(0.3 * Y + rng.random((300, 4)), 0, 1), 1)  # many ties
    ours = per_class_auc(Y, P, "multilabel")
    ref = [roc_auc_score(Y[:, k], P[:, k]) for k in range(4)]
    np.testing.assert_allclose(ours, ref, atol=1e-12)

    y, P = multiclass_data(rng, 400, 3, 1.0)
    ours = per_class_auc(y, P, "multiclass")
    ref = [roc_auc_score(y == k, P[:, k]) for k in range(3)]
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    assert macro_auc(y, P, "multiclass") == pytest.approx(np.mean(ref))


def test_separable_gives_exactly_one():
    y = np.repeat(np.arange(3), 20)
    P = np.full((60, 3), 0.1)
    P[np.arange(60), y] = 0.8
    assert macro_auc(y, P, "multiclass") == 1.0
    assert np.all(per_class_auc(y, P, "multiclass") == 1.0)

    rng = np.random.default_rng(0)
    Y = (rng.random((100, 5)) < 0.4).astype(int)
    Y[0] = 1
    Y[1] = 0
    P = np.where(Y == 1, 0.6 + 0.4 * rng.random(Y.shape), 0.5 * rng.random(Y.shape))
    assert macro_auc(Y, P, "multilabel") == 1.0


def test_random_scores_auc_half_and_ci_covers_half():
    rng = np.random.default_rng(7)
    n, K = 2000, 3
    Y = (rng.random((n, K)) < 0.3).astype(int)
    P = rng.random((n, K))
    groups = rng.integers(0, 800, n)
    auc = macro_auc(Y, P, "multilabel")
    assert abs(auc - 0.5) < 0.03
    res = bootstrap_ci(lambda y, p: macro_auc(y, p, "multilabel"), Y, P, groups, n_boot=200, seed=0)
    assert res.point == auc
    assert res.low < 0.5 < res.high
    assert res.n_valid == res.n_boot == 200
    assert res.high - res.low < 0.06  # not trivially wide either


def test_degenerate_class_is_nan_and_ignored():
    rng = np.random.default_rng(3)
    Y = (rng.random((200, 3)) < 0.3).astype(int)
    Y[:, 1] = 0  # no positives
    P = rng.random((200, 3))
    aucs = per_class_auc(Y, P, "multilabel")
    assert np.isnan(aucs[1]) and np.isfinite(aucs[[0, 2]]).all()
    assert macro_auc(Y, P, "multilabel") == pytest.approx(np.mean(aucs[[0, 2]]))
    assert set(roc_curves(Y, P, "multilabel", ["a", "b", "c"])) == {"a", "c"}
    assert set(pr_curves(Y, P, "multilabel", ["a", "b", "c"])) == {"a", "c"}

    # multiclass: class 2 never occurs
    y = rng.integers(0, 2, 100)
    Pm = rng.dirichlet(np.ones(3), 100)
    assert np.isnan(per_class_auc(y, Pm, "multiclass")[2])

    # all undefined: NaN, no crash, no warning
    Y0 = np.zeros((50, 2), dtype=int)
    with np.errstate(all="raise"):
        assert np.isnan(macro_auc(Y0, rng.random((50, 2)), "multilabel"))
    res = bootstrap_ci(lambda y, p: macro_auc(y, p, "multilabel"), Y0, rng.random((50, 2)), np.arange(50), n_boot=20)
    assert res.n_valid == 0 and np.isnan(res.point) and np.isnan(res.low) and np.isnan(res.high)
    assert strict_json(res.to_dict())
    s = summarize(Y, P, "multilabel", ["a", "b", "c"])
    assert s["per_class_auc"]["b"] is None
    strict_json(s)


def test_threshold_metrics_match_sklearn_and_hand_counts():
    rng = np.random.default_rng(5)
    y, P = multiclass_data(rng, 300, 4, 1.0)
    pred = P.argmax(1)
    assert balanced_accuracy(y, P, "multiclass") == pytest.approx(balanced_accuracy_score(y, pred))
    assert macro_f1(y, P, "multiclass") == pytest.approx(f1_score(y, pred, average="macro"))
    cm = confusion_matrix(y, P, "multiclass")
    assert cm.shape == (4, 4) and cm.sum() == 300 and np.trace(cm) == np.sum(pred == y)
    with pytest.raises(ValueError, match="argmax"):
        balanced_accuracy(y, P, "multiclass", thresholds=np.full(4, 0.5))

    Y = (rng.random((300, 3)) < 0.3).astype(int)
    Pl = rng.random((300, 3))
    t = np.array([0.2, 0.5, 0.8])
    ours = confusion_matrix(Y, Pl, "multilabel", t)
    np.testing.assert_array_equal(ours, multilabel_confusion_matrix(Y, (Pl >= t).astype(int)))

    # hand-computed: class 0 sens 1/2 spec 2/2; class 1 sens 2/2 spec 1/2 → BA = (0.75 + 0.75) / 2
    Yh = np.array([[1, 1], [1, 1], [0, 0], [0, 0]])
    Ph = np.array([[0.9, 0.6], [0.1, 0.5], [0.2, 0.5], [0.3, 0.1]])
    assert balanced_accuracy(Yh, Ph, "multilabel") == pytest.approx(0.75)  # 0.5 >= 0.5 counts positive
    # F1: class 0 tp1 fp0 fn1 → 2/3; class 1 tp2 fp1 fn0 → 4/5
    assert macro_f1(Yh, Ph, "multilabel") == pytest.approx((2 / 3 + 4 / 5) / 2)
    np.testing.assert_array_equal(one_vs_rest(np.array([2, 0]), "multiclass", 3), [[0, 0, 1], [1, 0, 0]])


def test_input_errors_are_explicit():
    with pytest.raises(ValueError, match="0..2"):
        macro_auc(np.array([0, 3]), np.full((2, 3), 1 / 3), "multiclass")
    with pytest.raises(ValueError, match="0/1"):
        macro_auc(np.array([[0, 2]]), np.array([[0.1, 0.2]]), "multilabel")
    with pytest.raises(ValueError, match="task"):
        macro_auc(np.array([0]), np.array([[1.0]]), "binary")
    with pytest.raises(ValueError, match="missing"):
        patient_resample_indices(np.array(["a", None, "b"], dtype=object), np.random.default_rng(0))


# --------------------------------------------------------------------------- bootstrap
def test_resamples_are_patient_closed():
    rng = np.random.default_rng(11)
    # patient "big" owns 50 images, 60 others own 1-4 each; mixed-type hashable ids
    ids = ["big"] * 50 + [i for i in range(60) for _ in range(1 + i % 4)]
    groups = np.array(ids, dtype=object)
    rng.shuffle(groups)  # interleave images of different patients
    patients = list(dict.fromkeys(groups.tolist()))
    big = np.flatnonzero(groups == "big")
    saw_big, saw_no_big = False, False
    sampler = PatientSampler(groups)
    for b in range(300):
        idx = patient_resample_indices(groups, rng) if b % 2 else sampler.sample(rng)
        mult = np.bincount(idx, minlength=len(groups))
        # every image of a patient appears the same number of times (all or none, by multiplicity)
        drawn_total = 0
        for p in patients:
            m = mult[groups == p]
            assert (m == m[0]).all(), f"patient {p!r} split across a resample"
            drawn_total += m[0]
        assert drawn_total == len(patients)  # n_patients patients drawn with replacement
        saw_big |= mult[big[0]] > 0
        saw_no_big |= mult[big[0]] == 0
        assert mult[big].sum() % 50 == 0
    assert saw_big and saw_no_big


def test_patient_bootstrap_wider_than_image_bootstrap():
    rng = np.random.default_rng(2)
    n_pat, per = 40, 25
    groups = np.repeat(np.arange(n_pat), per)
    # patient-level label and a strong patient effect on the score: images of one patient are near-copies
    y_pat = rng.integers(0, 2, n_pat)
    eff = rng.normal(size=n_pat) + 0.8 * y_pat
    y = y_pat[groups]
    P = np.column_stack([1 - expit(eff[groups] + 0.05 * rng.normal(size=len(groups))), np.zeros(len(groups))])
    P[:, 1] = 1 - P[:, 0]
    metric = lambda yy, pp: macro_auc(yy, pp, "multiclass")  # noqa: E731
    pat = bootstrap_ci(metric, y, P, groups, n_boot=200, seed=0)
    # naive image-level bootstrap, inline
    r = np.random.default_rng(0)
    vals = [metric(y[i], P[i]) for i in (r.integers(0, len(y), len(y)) for _ in range(200))]
    lo, hi = np.quantile(vals, [0.025, 0.975])
    assert (pat.high - pat.low) > 2.5 * (hi - lo)


def test_bootstrap_is_seeded_and_multi_metric_consistent():
    rng = np.random.default_rng(4)
    Y = (rng.random((300, 2)) < 0.4).astype(int)
    P = np.clip(0.2 * Y + rng.random((300, 2)), 0, 1)
    g = rng.integers(0, 100, 300)
    f = lambda y, p: macro_auc(y, p, "multilabel")  # noqa: E731
    a = bootstrap_ci(f, Y, P, g, n_boot=50, seed=3)
    b = bootstrap_ci(f, Y, P, g, n_boot=50, seed=3)
    c = bootstrap_ci(f, Y, P, g, n_boot=50, seed=4)
    assert a == b and a != c
    many = bootstrap_cis(lambda y, p: {"auc": f(y, p), "ece": expected_calibration_error(y, p, "multilabel")},
                         Y, P, g, n_boot=50, seed=3)
    assert many["auc"] == a
    assert BootstrapResult.from_dict(json.loads(strict_json(a.to_dict()))) == a


# --------------------------------------------------------------------------- calibration
def _overconfident(rng, n, K):
    q = expit(rng.normal(0, 1.2, size=(n, K)) - 0.5)
    Y = (rng.random((n, K)) < q).astype(int)
    return q, Y, expit(3 * logit(q))


def test_ece_known_answers():
    y = np.array([1] * 7 + [0] * 3)
    P1 = np.column_stack([np.full(10, 0.7)])
    assert expected_calibration_error(y[:, None], P1, "multilabel") == pytest.approx(0.0, abs=1e-12)
    y2 = np.array([1] * 5 + [0] * 5)[:, None]
    assert expected_calibration_error(y2, np.full((10, 1), 0.9), "multilabel") == pytest.approx(0.4)
    # two bins weighted by count: 8 at p=0.1 (all negative, gap 0.1), 2 at p=0.9 (all negative, gap 0.9)
    p3 = np.array([0.1] * 8 + [0.9] * 2)[:, None]
    assert expected_calibration_error(np.zeros((10, 1), int), p3, "multilabel") == pytest.approx(0.8 * 0.1 + 0.2 * 0.9)
    # multiclass = classwise: mean over the one-vs-rest columns
    Pm = np.array([[0.9, 0.1]] * 4)
    ym = np.array([0, 0, 1, 1])
    assert expected_calibration_error(ym, Pm, "multiclass") == pytest.approx((0.4 + 0.4) / 2)
    rb = reliability_bins(y2, np.full((10, 1), 0.9), "multilabel", n_bins=10, class_names=["x"])["x"]
    assert rb["count"][9] == 10 and rb["count"].sum() == 10
    assert rb["fraction_positive"][9] == pytest.approx(0.5) and np.isnan(rb["fraction_positive"][0])


def test_calibration_fixes_overconfident_scores():
    rng = np.random.default_rng(0)
    n = 3000
    q, Y, P = _overconfident(rng, n, 3)
    groups = rng.integers(0, n // 2, n)
    ece0 = expected_calibration_error(Y, P, "multilabel")
    assert ece0 > 0.08
    for m in ("platt", "isotonic"):
        assert expected_calibration_error(Y, Calibrator(m).fit_transform(P, Y, "multilabel"), "multilabel") < 0.4 * ece0
    cal, scores = choose_calibrator(P, Y, "multilabel", groups, n_splits=3)
    assert cal.method != "none" and scores["chosen"] == cal.method
    assert scores["platt"]["ece"] < 0.5 * scores["none"]["ece"]
    assert scores["isotonic"]["ece"] < 0.5 * scores["none"]["ece"]
    assert scores[cal.method]["brier"] == min(scores[m]["brier"] for m in ("none", "platt", "isotonic"))
    strict_json(scores)
    # ranking preserved by Platt (monotone map): AUC unchanged
    assert macro_auc(Y, Calibrator("platt").fit_transform(P, Y, "multilabel"), "multilabel") == pytest.approx(
        macro_auc(Y, P, "multilabel"))


def test_calibration_leaves_calibrated_scores_alone():
    rng = np.random.default_rng(1)
    n = 3000
    q, Y, _ = _overconfident(rng, n, 3)
    groups = rng.integers(0, n // 2, n)
    cal, scores = choose_calibrator(q, Y, "multilabel", groups, n_splits=3)
    assert cal.method == "none" or scores[cal.method]["ece"] <= scores["none"]["ece"] + 0.01


def test_multiclass_calibration_and_exact_round_trip():
    rng = np.random.default_rng(2)
    y, P = multiclass_data(rng, 900, 3, 1.5)
    P_sharp = np.exp(3 * np.log(P))
    P_sharp /= P_sharp.sum(1, keepdims=True)
    P_new = rng.dirichlet(np.ones(3), 200)
    for m in ("none", "platt", "isotonic"):
        cal = Calibrator(m).fit(P_sharp, y, "multiclass")
        out = cal.transform(P_new)
        np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-12)
        cal2 = Calibrator.from_dict(json.loads(strict_json(cal.to_dict())))
        assert np.array_equal(cal2.transform(P_new), out)
        assert cal2.method == m
    assert expected_calibration_error(y, Calibrator("isotonic").fit_transform(P_sharp, y, "multiclass"),
                                      "multiclass") < expected_calibration_error(y, P_sharp, "multiclass")


def test_calibrator_reimplementation_matches_sklearn():
    rng = np.random.default_rng(6)
    _, Y, P = _overconfident(rng, 500, 2)
    P_new = rng.random((100, 2))
    iso = Calibrator("isotonic").fit(P, Y, "multilabel").transform(P_new)
    platt = Calibrator("platt").fit(P, Y, "multilabel").transform(P_new)
    for k in range(2):
        ref = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(P[:, k], Y[:, k]).predict(P_new[:, k])
        np.testing.assert_allclose(iso[:, k], ref, atol=1e-12)
        x = logit(np.clip(P[:, k], 1e-6, 1 - 1e-6))[:, None]
        lr = LogisticRegression(C=1.0, max_iter=1000).fit(x, Y[:, k])
        ref = lr.predict_proba(logit(np.clip(P_new[:, k], 1e-6, 1 - 1e-6))[:, None])[:, 1]
        np.testing.assert_allclose(platt[:, k], ref, atol=1e-12)
    with pytest.raises(ValueError, match="format"):
        Calibrator.from_dict({"format": "pickle"})


# --------------------------------------------------------------------------- operating points
def test_threshold_search_properties():
    for seed in range(40):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(5, 120))
        y = (rng.random(n) < rng.uniform(0.1, 0.9)).astype(int)
        y[0], y[1] = 1, 0
        p = rng.random(n) + 0.5 * y
        if seed % 2:
            p = np.round(p, 1)  # ties
        u = np.unique(p)
        for target in (0.5, 0.8, 0.9, 0.95, 1.0, float(rng.uniform(0.05, 1))):
            t = threshold_for_sensitivity(y, p, target)
            assert rates_at(y, p, t)["sensitivity"] >= target
            higher = u[u > t]
            nxt = higher[0] if higher.size else np.nextafter(t, np.inf)
            assert rates_at(y, p, nxt)["sensitivity"] < target, (seed, target)

            t = threshold_for_specificity(y, p, target)
            assert rates_at(y, p, t)["specificity"] >= target
            lower = u[u < t]
            assert lower.size  # spec at the minimum score is 0 < target
            assert rates_at(y, p, lower[-1])["specificity"] < target, (seed, target)
        ty = youden_threshold(y, p)
        r = rates_at(y, p, ty)
        best = max(rates_at(y, p, c)["sensitivity"] + rates_at(y, p, c)["specificity"] for c in u)
        assert r["sensitivity"] + r["specificity"] == pytest.approx(best)


def test_rates_at_hand_counts_and_ge_contract():
    y = np.array([1, 1, 0, 0, 0])
    p = np.array([0.8, 0.5, 0.5, 0.2, 0.1])
    r = rates_at(y, p, 0.5)  # 0.5 >= 0.5 → both 0.5s are called positive
    assert (r["tp"], r["fp"], r["tn"], r["fn"]) == (2, 1, 2, 0)
    assert r["ppv"] == pytest.approx(2 / 3) and r["npv"] == 1.0
    r = rates_at(y, p, 0.9)
    assert np.isnan(r["ppv"]) and r["sensitivity"] == 0.0
    with pytest.raises(ValueError, match="no positives"):
        threshold_for_sensitivity(np.zeros(3), np.ones(3), 0.9)


def test_fit_operating_points_records():
    rng = np.random.default_rng(9)
    n = 400
    Y = (rng.random((n, 3)) < 0.3).astype(int)
    Y[:, 2] = 0  # degenerate: skipped
    P = np.clip(0.35 * Y + rng.random((n, 3)), 0, 1)
    groups = rng.integers(0, 150, n)
    ops = fit_operating_points(Y, P, "multilabel", ["a", "b", "c"], groups, n_boot=100,
                               target_sensitivity=0.9, target_specificity=0.8)
    assert [(o.class_name, o.kind) for o in ops] == [
        ("a", "youden"), ("a", "sensitivity"), ("a", "specificity"),
        ("b", "youden"), ("b", "sensitivity"), ("b", "specificity")]
    for o in ops:
        k = "abc".index(o.class_name)
        r = rates_at(Y[:, k], P[:, k], o.threshold)
        assert (o.sensitivity, o.specificity) == (r["sensitivity"], r["specificity"])
        assert o.n_pos == Y[:, k].sum() and o.n_pos + o.n_neg == n
        assert o.sensitivity_ci_low <= o.sensitivity <= o.sensitivity_ci_high
        assert o.specificity_ci_low < o.specificity_ci_high
        if o.kind == "sensitivity":
            assert o.sensitivity >= 0.9 and o.target == 0.9
        back = OperatingPoint.from_dict(json.loads(strict_json(o.to_dict())))
        assert back == o
    # multiclass: one-vs-rest per class
    y, Pm = multiclass_data(rng, 300, 3, 1.0)
    ops = fit_operating_points(y, Pm, "multiclass", ["x", "y", "z"], rng.integers(0, 100, 300), n_boot=50,
                               target_specificity=None)
    assert len(ops) == 6 and {o.kind for o in ops} == {"youden", "sensitivity"}
    o = ops[1]
    assert o.sensitivity == rates_at((y == 0).astype(int), Pm[:, 0], o.threshold)["sensitivity"] >= 0.9


# --------------------------------------------------------------------------- fairness
def test_age_group_boundaries():
    out = age_group([39, 40, 59, 59.5, 60, 79, 80, 95, np.nan, None, 0])
    assert out.tolist() == ["<40", "40-59", "40-59", "40-59", "60-79", "60-79", "80+", "80+",
                            "unknown", "unknown", "<40"]
    assert age_group([17, 18, 65], bins=(18, 65)).tolist() == ["<18", "18-64", "65+"]


def test_subgroup_table_gap_and_small_groups():
    rng = np.random.default_rng(12)
    nA, nB, nC = 600, 600, 12
    n = nA + nB + nC
    Y = (rng.random((n, 2)) < 0.4).astype(int)
    P = rng.random((n, 2))
    P[:nA] = np.where(Y[:nA] == 1, 0.6 + 0.4 * rng.random((nA, 2)), 0.4 * rng.random((nA, 2)))  # A: perfect
    sex = np.array(["A"] * nA + ["B"] * nB + ["C"] * nC, dtype=object)
    groups = np.concatenate([np.arange(nA) // 2, 1000 + np.arange(nB) // 3, 5000 + np.arange(nC)])
    age = rng.integers(20, 95, n).astype(float)
    age[:5] = np.nan
    rows, gaps = subgroup_table(Y, P, "multilabel", groups, {"sex": sex, "age": age_group(age)},
                                thresholds=np.array([0.5, 0.5]), n_boot=40)
    by = {(r.attribute, r.group): r for r in rows}
    a, b, c = by["sex", "A"], by["sex", "B"], by["sex", "C"]
    assert a.macro_auc == 1.0 and abs(b.macro_auc - 0.5) < 0.06
    assert a.sensitivity == 1.0 and a.specificity == 1.0
    assert (a.n_images, a.n_patients, b.n_patients, c.n_patients) == (600, 300, 200, 12)
    assert c.small and not a.small and not b.small
    assert b.macro_auc_ci_low < 0.5 < b.macro_auc_ci_high and a.macro_auc_ci_low == 1.0
    g = {x.attribute: x for x in gaps}["sex"]
    assert abs(g.auc_gap - 0.5) < 0.06 and g.auc_gap == pytest.approx(a.macro_auc - b.macro_auc)
    assert (g.auc_min_group, g.auc_max_group) == ("B", "A")
    assert g.auc_gap_all >= g.auc_gap and g.n_groups == 3 and g.n_groups_not_small == 2
    assert g.auc_std == pytest.approx(np.std([a.macro_auc, b.macro_auc]))
    age_rows = [r.group for r in rows if r.attribute == "age"]
    assert age_rows == ["<40", "40-59", "60-79", "80+", "unknown"]
    assert {x.attribute: x for x in gaps}["age"].excluded_groups == ["unknown"]
    strict_json([r.to_dict() for r in rows] + [x.to_dict() for x in gaps])


def test_to_jsonable_is_strict():
    d = to_jsonable({"a": np.float32(np.nan), "b": np.int64(3), "c": np.array([1.5, np.inf]), 1: np.bool_(True)})
    assert d == {"a": None, "b": 3, "c": [1.5, None], "1": True}
    assert type(d["b"]) is int
