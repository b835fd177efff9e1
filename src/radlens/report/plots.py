"""Figures for the study report, rendered to PNG bytes (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

import io
import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def auc_forest(rows: list[dict[str, Any]], title: str, baseline: float | None) -> bytes:
    """Macro AUC with 95% CI per (encoder, adapter), best first; the metadata-only row as a line."""
    rows = sorted(rows, key=lambda r: r["macro_auc"])
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
    y = np.arange(len(rows))
    pts = np.array([r["macro_auc"] for r in rows])
    lo = pts - np.array([r["ci_low"] for r in rows])
    hi = np.array([r["ci_high"] for r in rows]) - pts
    colors = ["#999999" if r["encoder"] == "metadata-only" else "#1f77b4" for r in rows]
    for yi, p, l, h, c in zip(y, pts, lo, hi, colors):
        ax.errorbar([p], [yi], xerr=[[l], [h]], fmt="none", ecolor=c, capsize=3)
    ax.scatter(pts, y, c=colors, zorder=3)
    ax.set_yticks(y, [f"{r['encoder']} + {r['adapter']}" for r in rows], fontsize=8)
    ax.axvline(0.5, color="#cccccc", ls=":", lw=1)
    if baseline is not None:
        ax.axvline(baseline, color="#d62728", ls="--", lw=1, label=f"metadata only ({baseline:.3f})")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("macro AUC (95% CI, patient bootstrap)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def _grid(n: int) -> tuple[int, int]:
    cols = min(5, n)
    return math.ceil(n / cols), cols


def roc_grid(curves: dict[str, dict[str, Any]], title: str) -> bytes:
    rows, cols = _grid(len(curves))
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.4 * rows), squeeze=False)
    for ax, (name, c) in zip(axes.flat, curves.items()):
        ax.plot(c["fpr"], c["tpr"], lw=1.5)
        ax.plot([0, 1], [0, 1], color="#bbbbbb", lw=0.8, ls=":")
        ax.set_title(f"{name}\nAUC {c['auc']:.3f}", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_aspect("equal")
    for ax in list(axes.flat)[len(curves):]:
        ax.axis("off")
    fig.suptitle(title + " — ROC (false positive rate → true positive rate)", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def pr_grid(curves: dict[str, dict[str, Any]], prevalence: dict[str, float], title: str) -> bytes:
    rows, cols = _grid(len(curves))
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.4 * rows), squeeze=False)
    for ax, (name, c) in zip(axes.flat, curves.items()):
        ax.plot(c["recall"], c["precision"], lw=1.5, color="#2ca02c")
        ax.axhline(prevalence.get(name, 0), color="#bbbbbb", lw=0.8, ls=":")
        ax.set_title(f"{name}\nAP {c['ap']:.3f} (prev {prevalence.get(name, 0):.2f})", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(curves):]:
        ax.axis("off")
    fig.suptitle(title + " — precision vs recall", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def reliability(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]], title: str, method: str) -> bytes:
    """Pooled over classes: observed positive fraction vs mean predicted probability per bin."""
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for bins, label, color in ((before, "uncalibrated", "#ff7f0e"), (after, f"calibrated ({method})", "#1f77b4")):
        mp = np.concatenate([b["mean_predicted"] for b in bins.values()])
        fp = np.concatenate([b["fraction_positive"] for b in bins.values()])
        n = np.concatenate([b["count"] for b in bins.values()])
        edges = next(iter(bins.values()))["bin_edges"]
        idx = np.clip(np.digitize(mp, edges[1:-1]), 0, len(edges) - 2)
        ok = n > 0
        xs, ys = [], []
        for k in range(len(edges) - 1):
            m = ok & (idx == k)
            if n[m].sum() > 0:
                xs.append(np.average(mp[m], weights=n[m]))
                ys.append(np.average(fp[m], weights=n[m]))
        ax.plot(xs, ys, marker="o", ms=3, label=label, color=color)
    ax.plot([0, 1], [0, 1], color="#888888", ls=":", lw=1)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed fraction positive")
    ax.set_title(title + " — reliability", fontsize=10)
    ax.legend(fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    return _png(fig)


def fairness(rows: list[dict[str, Any]], title: str) -> bytes:
    attrs = list(dict.fromkeys(r["attribute"] for r in rows))
    fig, axes = plt.subplots(1, len(attrs), figsize=(3.3 * len(attrs), 3.2), squeeze=False)
    for ax, a in zip(axes.flat, attrs):
        rs = [r for r in rows if r["attribute"] == a]
        x = np.arange(len(rs))
        pts = np.array([np.nan if r["macro_auc"] is None else r["macro_auc"] for r in rs], dtype=float)
        lo = np.array([np.nan if r["macro_auc_ci_low"] is None else r["macro_auc_ci_low"] for r in rs], dtype=float)
        hi = np.array([np.nan if r["macro_auc_ci_high"] is None else r["macro_auc_ci_high"] for r in rs], dtype=float)
        colors = ["#bbbbbb" if r["small"] else "#1f77b4" for r in rs]
        for xi, p, l, h, c in zip(x, pts, np.nan_to_num(pts - lo), np.nan_to_num(hi - pts), colors):
            ax.errorbar([xi], [p], yerr=[[l], [h]], fmt="none", ecolor=c, capsize=3)
        ax.scatter(x, pts, c=colors, zorder=3)
        ax.set_xticks(x, [f"{r['group']}\n(n={r['n_images']})" for r in rs], fontsize=7)
        ax.set_title(a, fontsize=9)
        ax.axhline(0.5, color="#cccccc", ls=":", lw=1)
        ax.set_ylim(0.3, 1.0)
        ax.grid(axis="y", alpha=0.3)
    axes.flat[0].set_ylabel("macro AUC (95% CI)")
    fig.suptitle(title + " — subgroups (grey = small group)", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def probability_histograms(P: np.ndarray, class_names: list[str], thresholds: np.ndarray) -> bytes:
    rows, cols = _grid(len(class_names))
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.0 * rows), squeeze=False)
    for j, (ax, name) in enumerate(zip(axes.flat, class_names)):
        ax.hist(P[:, j], bins=30, range=(0, 1), color="#1f77b4", alpha=0.8)
        ax.axvline(thresholds[j], color="#d62728", lw=1)
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(class_names):]:
        ax.axis("off")
    fig.suptitle("predicted probability (red: stored threshold)", fontsize=10)
    fig.tight_layout()
    return _png(fig)
