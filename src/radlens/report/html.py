"""One self-contained HTML file for a study: tables, and figures embedded as base64 PNG.

Self-contained because reports get e-mailed and archived next to a model; nothing is fetched.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from radlens.evaluate.study import ModelResult
from radlens.report import plots

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#222;line-height:1.4}
h1{font-size:22px} h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:36px} h3{font-size:15px;margin-top:24px}
table{border-collapse:collapse;font-size:12px;margin:8px 0} th,td{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f4f4f4} td.l,th.l{text-align:left} tr.base td{background:#fff4f4} tr.best td{background:#f2f8ff;font-weight:600}
.small{color:#999} .note{font-size:12px;color:#555;max-width:900px} img{max-width:100%;margin:6px 0} code{font-size:12px}
"""


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _f(x: Any, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "—"
    return f"{x:.{nd}f}" if isinstance(x, (float, np.floating)) else html.escape(str(x))


def _ci(p: Any, lo: Any, hi: Any) -> str:
    return f"{_f(p)} <span class=small>[{_f(lo)}, {_f(hi)}]</span>"


def _table(header: list[str], rows: Iterable[list[str]], left: int = 1, classes: list[str] | None = None) -> str:
    th = "".join(f'<th class="{"l" if i < left else ""}">{html.escape(h)}</th>' for i, h in enumerate(header))
    body = []
    for k, r in enumerate(rows):
        cls = f' class="{classes[k]}"' if classes and classes[k] else ""
        body.append(f"<tr{cls}>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(r)) + "</tr>")
    return f"<div style=\"overflow-x:auto\"><table><tr>{th}</tr>{''.join(body)}</table></div>"


def _write_document(path: Path, title: str, body: list[str]) -> Path:
    """The page shell, written atomically (temp file + rename)."""
    doc = (f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title><style>{CSS}</style>"
           f"</head><body>{''.join(body)}</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(doc, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _task_section(task: str, results: list[ModelResult], prevalence: dict[str, float]) -> str:
    rows = sorted((r.row() for r in results), key=lambda r: -(r["macro_auc"] or 0))
    base = next((r["macro_auc"] for r in rows if r["encoder"] == "metadata-only"), None)
    best_row = next((r for r in rows if r["encoder"] != "metadata-only"), rows[0])
    best = next(r for r in results if r.encoder == best_row["encoder"] and r.adapter == best_row["adapter"])
    kind = results[0].task.kind
    out = [f"<h2>Task: {html.escape(task)} ({kind}, {len(best.class_names)} classes, {best.n_images} images, "
           f"{best.n_patients} patients)</h2>"]
    table_rows, classes = [], []
    for r in rows:
        delta = "—" if base is None or r["encoder"] == "metadata-only" else f"{r['macro_auc'] - base:+.3f}"
        table_rows.append([html.escape(r["encoder"]), html.escape(r["adapter"]), _ci(r["macro_auc"], r["ci_low"], r["ci_high"]),
                           delta, _f(r["balanced_accuracy"]), _f(r["macro_f1"]),
                           f"{_f(r['ece_uncalibrated'])} → {_f(r['ece_calibrated'])} ({r['calibration']})",
                           _f(r["fit_seconds"], 2), _f(r["predict_seconds_per_1000"], 2)])
        classes.append("base" if r["encoder"] == "metadata-only" else "best" if r is best_row else "")
    decision = "argmax class" if kind == "multiclass" else "held-out operating point"
    out.append(_table(["encoder", "adapter", "macro AUC [95% CI]", "Δ vs metadata", f"balanced acc ({decision})",
                       "macro F1", "ECE (CV) before → after", "fit s", "predict s/1000"], table_rows, left=2, classes=classes))
    out.append(_img(plots.auc_forest(rows, f"{task}: macro AUC by encoder + adapter", base), "AUC comparison"))
    out.append(f"<h3>Best: {html.escape(best.encoder)} + {html.escape(best.adapter)}</h3>")
    out.append(_img(plots.roc_grid(best.curves["roc"], f"{best.encoder} + {best.adapter}"), "ROC curves"))
    out.append(_img(plots.pr_grid(best.curves["pr"], prevalence, f"{best.encoder} + {best.adapter}"), "PR curves"))
    out.append(_img(plots.reliability(best.curves["reliability_before"], best.curves["reliability_after"],
                                      f"{best.encoder} + {best.adapter}", best.calibration["chosen"]), "reliability"))
    out.append("<h3>Operating points (thresholds fitted on all out-of-fold predictions; rates cross-fitted on held-out folds)</h3>")
    ops = best.operating_points
    out.append(_table(["class", "kind", "target", "threshold", "sensitivity [CI]", "specificity [CI]", "PPV [CI]", "NPV [CI]",
                       "pos/neg"],
                      ([html.escape(o.class_name), o.kind, _f(o.target, 2), _f(o.threshold, 4),
                        _ci(o.sensitivity, o.sensitivity_ci_low, o.sensitivity_ci_high),
                        _ci(o.specificity, o.specificity_ci_low, o.specificity_ci_high),
                        _ci(o.ppv, o.ppv_ci_low, o.ppv_ci_high), _ci(o.npv, o.npv_ci_low, o.npv_ci_high),
                        f"{o.n_pos}/{o.n_neg}"] for o in ops), left=2))
    out.append("<h3>Per-class AUC (out-of-fold)</h3>")
    per = [[html.escape(r.encoder), html.escape(r.adapter)] + [_f(r.per_class_auc.get(c)) for c in best.class_names]
           for r in sorted(results, key=lambda r: -(r.macro_auc["point"] or 0))]
    out.append(_table(["encoder", "adapter"] + best.class_names, per, left=2))
    out.append(f"<h3>Fairness of the best model at its {html.escape(results[0].task.name)} operating point</h3>")
    out.append(_img(plots.fairness(best.fairness_rows, f"{best.encoder} + {best.adapter}"), "fairness"))
    out.append(_table(["attribute", "group", "images", "patients", "macro AUC [CI]", "sensitivity [CI]", "specificity [CI]", "flag"],
                      ([html.escape(r["attribute"]), html.escape(str(r["group"])), str(r["n_images"]), str(r["n_patients"]),
                        _ci(r["macro_auc"], r["macro_auc_ci_low"], r["macro_auc_ci_high"]),
                        _ci(r["sensitivity"], r["sensitivity_ci_low"], r["sensitivity_ci_high"]),
                        _ci(r["specificity"], r["specificity_ci_low"], r["specificity_ci_high"]),
                        "small group" if r["small"] else ""] for r in best.fairness_rows), left=2))
    out.append("<h3>Fairness gaps, every model (max − min over groups that are not small; std of group AUCs)</h3>")
    gap_rows = []
    for r in sorted(results, key=lambda r: -(r.macro_auc["point"] or 0)):
        for g in r.fairness_gaps:
            gap_rows.append([html.escape(r.encoder), html.escape(r.adapter), html.escape(g["attribute"]),
                             f"{g['n_groups_not_small']}/{g['n_groups']}", _f(g["auc_gap"]), _f(g["auc_std"]),
                             _f(g["sensitivity_gap"]), _f(g["specificity_gap"]), _f(g["auc_gap_all"])])
    out.append(_table(["encoder", "adapter", "attribute", "groups (not small/all)", "AUC gap", "AUC std", "sens gap",
                       "spec gap", "AUC gap incl. small"], gap_rows, left=3))
    return "\n".join(out)


def write_report(path: str | Path, results: list[ModelResult], *, title: str, meta: dict[str, Any],
                 prevalence: dict[str, dict[str, float]]) -> Path:
    """Write the report atomically; `prevalence[task][class]` gives PR-curve baselines."""
    path = Path(path)
    by_task: dict[str, list[ModelResult]] = {}
    for r in results:
        by_task.setdefault(r.task.name, []).append(r)
    info = "".join(f"<tr><th class=l>{html.escape(k)}</th><td class=l>{html.escape(str(v))}</td></tr>" for k, v in meta.items())
    body = [f"<h1>{html.escape(title)}</h1>", f"<table>{info}</table>",
            "<p class=note>Protocol: every AUC is computed on out-of-fold predictions of patient-grouped 5-fold CV "
            "with the hyperparameter search nested inside each fold; 95% CIs resample patients. Probabilities are "
            "calibrated by the method (none / Platt / isotonic) with the best patient-grouped CV Brier score; ECE is that "
            "CV estimate. Operating-point thresholds are fitted on all out-of-fold predictions, and the rates shown are "
            "what each outer fold achieved with thresholds fitted on the other folds. The metadata-only row (age, sex, "
            "view → logistic regression) is the bar an encoder must clear.</p>"]
    for task, rs in by_task.items():
        body.append(_task_section(task, rs, prevalence.get(task, {})))
    return _write_document(path, title, body)


def write_prediction_report(path: str | Path, P: np.ndarray, class_names: list[str], thresholds: np.ndarray,
                            summary: dict[str, Any], *, title: str) -> Path:
    """Predicted-probability distributions with the stored thresholds, and label agreement where known."""
    path = Path(path)
    ev = summary.get("evaluation", {}).get("per_class", {})
    rows = [[html.escape(c), _f(float(thresholds[j]), 4), str(summary["positives"][c]),
             _f(float(P[:, j].mean()) if len(P) else None), _f(ev.get(c, {}).get("auc")),
             _f(ev.get(c, {}).get("sensitivity")), _f(ev.get(c, {}).get("specificity"))]
            for j, c in enumerate(class_names)]
    info = {k: v for k, v in summary.items() if k in ("images", "quarantined", "operating_point")}
    if "evaluation" in summary:
        info["macro AUC against the inputs' labels"] = _f(summary["evaluation"]["macro_auc"])
    body = [f"<h1>{html.escape(title)}</h1>",
            "<table>" + "".join(f"<tr><th class=l>{html.escape(k)}</th><td class=l>{html.escape(str(v))}</td></tr>"
                                for k, v in info.items()) + "</table>",
            _table(["class", "threshold", "predicted positive", "mean p", "AUC vs labels", "sensitivity", "specificity"],
                   rows, left=1)]
    if len(P):
        body.append(_img(plots.probability_histograms(P, class_names, thresholds), "probability histograms"))
    return _write_document(path, title, body)
