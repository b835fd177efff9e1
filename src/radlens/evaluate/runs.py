"""The three study jobs behind `radlens compare`, `radlens train` and `radlens predict`.

Each reads embedding stores, lines rows up across encoders by image content hash (so every encoder
is compared on exactly the same images), and writes its outputs atomically.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from radlens.adapters.artefact import Adapter, load_adapter, save_adapter
from radlens.adapters.retrieval import estimator_evidence, final_step, supports_evidence
from radlens.adapters.features import METADATA_ENCODER_ID, metadata_features
from radlens.adapters.targets import TaskSpec, build_targets
from radlens.arrays import to_jsonable
from radlens.evaluate.evidence import evidence_table, write_evidence
from radlens.evaluate.study import FeatureSet, ModelResult, StudyConfig, evaluate_adapter, results_json
from radlens.io.splits import split_mask
from radlens.store import load_store

log = logging.getLogger(__name__)
EVIDENCE_IN_CSV = 10


@dataclass
class StudyData:
    frame: pd.DataFrame  # one row per image, metadata columns
    features: list[FeatureSet]
    notes: dict[str, Any]


def _encoder_name(info_meta: dict[str, Any], fallback: str) -> str:
    return (info_meta.get("encoder") or {}).get("name") or fallback


def load_study_data(stores: list[Path], *, split: str | None = None, group_column: str = "patient_id",
                    metadata_baseline: bool = True) -> StudyData:
    if not stores:
        raise ValueError("give at least one embedding store")
    frames, embs, infos = [], [], []
    for s in stores:
        df, emb, info = load_store(s)
        if split:
            m = split_mask(df.path, split).to_numpy()
            df, emb = df[m].reset_index(drop=True), emb[m]
        if df.image_hash.duplicated().any():
            raise ValueError(f"{s}: duplicate image hashes; the store is damaged")
        frames.append(df.set_index("image_hash"))
        embs.append(emb)
        infos.append(info)
    common = frames[0].index
    for f in frames[1:]:
        common = common.intersection(f.index)
    notes = {"stores": [str(s) for s in stores], "split": split or "all rows",
             "rows_per_store": [len(f) for f in frames], "rows_in_all_stores": len(common)}
    if any(len(f) != len(common) for f in frames):
        log.warning("stores cover different images; comparing on the %d present in all (%s)", len(common),
                    notes["rows_per_store"])
    if not len(common):
        raise ValueError(f"no images in common across {len(stores)} stores (split {split!r})")
    frame = frames[0].loc[common].reset_index()
    if group_column not in frame or frame[group_column].isna().any():
        raise ValueError(f"group column {group_column!r} missing or incomplete: every image needs a patient id "
                         "(CV folds and bootstrap CIs are by patient)")
    names_seen: dict[str, int] = {}
    feats = []
    for s, f, emb, info in zip(stores, frames, embs, infos):
        pos = f.index.get_indexer(common)
        name = _encoder_name(info.meta, Path(s).name)
        names_seen[name] = names_seen.get(name, 0) + 1
        if names_seen[name] > 1:
            name = f"{name}#{names_seen[name]}"
        feats.append(FeatureSet(name, info.encoder_id, info.preprocess_hash, emb[pos],
                                {"store": str(s), "store_info": info}))
    if metadata_baseline:
        X, cols, cats = metadata_features(frame)
        feats.append(FeatureSet("metadata-only", METADATA_ENCODER_ID, None, X, {"columns": cols, "categories": cats}))
    return StudyData(frame, feats, notes)


def _prevalence(y: np.ndarray, kind: str, names: list[str]) -> dict[str, float]:
    Y = np.eye(len(names), dtype=int)[y] if kind == "multiclass" else y
    return {n: float(Y[:, j].mean()) for j, n in enumerate(names)}


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(to_jsonable(payload), indent=1))
    os.replace(tmp, path)


def run_compare(stores: list[Path], *, tasks: list[TaskSpec], adapters: list[str], out: Path, split: str | None = None,
                cfg: StudyConfig | None = None, group_column: str = "patient_id", metadata_baseline: bool = True,
                command: str = "", progress: Callable[[str], None] | None = None,
                zeroshot: list[Any] | None = None) -> tuple[dict[str, Any], list[ModelResult]]:
    """`zeroshot`: ZeroShotSource items (radlens.evaluate.zeroshot); each adds a row per task whose scores are the
    encoder's zero-shot scores for the task's classes, evaluated like the adapters (nothing trained)."""
    from radlens.report.html import write_report

    cfg = cfg or StudyConfig()
    t0 = time.perf_counter()
    data = load_study_data(stores, split=split, group_column=group_column, metadata_baseline=metadata_baseline)
    results: list[ModelResult] = []
    prevalence, task_notes = {}, {}
    zs_sources, zs_notes, zs_encoders = [], {}, {}
    if zeroshot:
        from radlens.evaluate.zeroshot import ZERO_SHOT_ADAPTER, prepare_sources, prompts_for

        zs_sources = prepare_sources(zeroshot, data.frame, data.features)
    for task in tasks:
        tg = build_targets(data.frame, task)
        frame = data.frame[tg.rows].reset_index(drop=True)
        groups = frame[group_column].astype(str).to_numpy()
        prevalence[task.name] = _prevalence(tg.y, task.kind, tg.class_names)
        task_notes[task.name] = {"rows": int(tg.rows.sum()), "patients": int(pd.Series(groups).nunique()),
                                 "classes": tg.class_names, "rows_left_out": tg.dropped, "spec": task.to_dict()}
        for fs in data.features:
            sub = FeatureSet(fs.name, fs.encoder_id, fs.preprocess_hash, fs.X[tg.rows], fs.info)
            for ad in (["logreg"] if fs.encoder_id == METADATA_ENCODER_ID else adapters):
                if progress:
                    progress(f"{task.name}: {fs.name} + {ad}")
                res, _ = evaluate_adapter(sub, frame, tg, task, ad, groups, cfg)
                results.append(res)
                _save_evidence(out, frame, tg.class_names, res)
        for src, clf, emb, origin in zs_sources:  # zero-shot rows: the same evaluation, nothing trained
            prompts = prompts_for(tg.class_names, src.prompts)
            name = f"{clf.encoder.name} zero-shot"
            zs = FeatureSet(name, clf.encoder.encoder_id, clf.encoder.preprocess_hash, clf.scores(emb[tg.rows], prompts),
                            {"zero_shot": clf.describe(), "embeddings": origin})
            if progress:
                progress(f"{task.name}: {name}")
            res, _ = evaluate_adapter(zs, frame, tg, task, ZERO_SHOT_ADAPTER, groups, cfg)
            results.append(res)
            zs_encoders[name] = {"encoder_id": clf.encoder.encoder_id, "preprocess_hash": clf.encoder.preprocess_hash}
            zs_notes.setdefault(name, {**clf.describe(), "embeddings": origin, "prompts": {}})["prompts"][task.name] = {
                p.name: clf.prompt(p) for p in prompts}
    meta = {"command": command, "created": time.strftime("%Y-%m-%d %H:%M:%S"), **data.notes,
            "encoders": {**{f.name: {"encoder_id": f.encoder_id, "preprocess_hash": f.preprocess_hash}
                            for f in data.features}, **zs_encoders},
            "tasks": task_notes, "config": asdict(cfg), "seconds": round(time.perf_counter() - t0, 1)}
    if zs_notes:
        meta["zero_shot"] = zs_notes
    payload = results_json(results, {"meta": meta})
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "results.json", payload)
    report_meta = {"command": command, "created": meta["created"], "split": data.notes["split"],
                   "images (all stores)": data.notes["rows_in_all_stores"],
                   **{f"encoder {k}": f"{v['encoder_id']} (preprocess {v['preprocess_hash']})" for k, v in meta["encoders"].items()},
                   **{f"task {k}": f"{v['rows']} images, {v['patients']} patients, left out: {v['rows_left_out'] or 'none'}"
                      for k, v in task_notes.items()},
                   "run time": f"{meta['seconds']} s"}
    write_report(out / "report.html", results, title="radlens adapter study", meta=report_meta, prevalence=prevalence)
    return payload, results


def _save_evidence(out: Path, frame: pd.DataFrame, class_names: list[str], res: ModelResult) -> Path | None:
    if res.evidence is None:
        return None
    ev = res.evidence
    table = evidence_table(frame, ev["Y"], ev["P"], class_names, ev)
    return write_evidence(out / "evidence" / f"{res.task.name}__{res.encoder}__{res.adapter}.parquet", table)


def run_train(store: Path, *, task: TaskSpec, adapter: str, out: Path, split: str | None = None,
              cfg: StudyConfig | None = None, group_column: str = "patient_id", command: str = "") -> Adapter:
    """Evaluate the adapter by nested CV (for its report and operating points), then fit it on all rows and save."""
    from radlens.report.html import write_report

    cfg = cfg or StudyConfig()
    data = load_study_data([store], split=split, group_column=group_column, metadata_baseline=False)
    fs = data.features[0]
    tg = build_targets(data.frame, task)
    frame = data.frame[tg.rows].reset_index(drop=True)
    groups = frame[group_column].astype(str).to_numpy()
    sub = FeatureSet(fs.name, fs.encoder_id, fs.preprocess_hash, fs.X[tg.rows], fs.info)
    res, (est, params, cal, final_fit_s) = evaluate_adapter(sub, frame, tg, task, adapter, groups, cfg, keep_model=True)
    info = fs.info["store_info"]
    if supports_evidence(est):  # evidence names past cases by image hash, as the store and the index do
        final_step(est).sample_ids_ = frame.image_hash.to_numpy().astype(str)
    meta = {"adapter": adapter, "params": params, "task": task.to_dict(), "class_names": tg.class_names,
            "encoder": info.meta.get("encoder", {}), "encoder_id": info.encoder_id,
            "preprocess_hash": info.preprocess_hash, "embedding_dim": info.embedding_dim,
            "calibration": cal.to_dict(), "decision_operating_point": cfg.decision,
            "operating_points": [o.to_dict() for o in res.operating_points], "cv_metrics": res.row(),
            "trained_on": {"store": str(store), "split": split or "all rows", "rows": int(tg.rows.sum()),
                           "patients": int(pd.Series(groups).nunique()), "rows_left_out": tg.dropped},
            "final_fit_seconds": final_fit_s, "study_config": asdict(cfg), "seed": cfg.seed, "command": command}
    save_adapter(out, est, meta)
    _save_evidence(out, frame, tg.class_names, res)  # out/evidence/...: the cross-validated predictions' neighbours
    payload = results_json([res], {"meta": {"command": command, "adapter_folder": str(out)}})
    _write_json(out / "results.json", payload)
    write_report(out / "report.html", [res], title=f"radlens adapter: {fs.name} + {adapter} on {task.name}",
                 meta={"command": command, "encoder": info.encoder_id, "rows": int(tg.rows.sum())},
                 prevalence={task.name: _prevalence(tg.y, task.kind, tg.class_names)})
    return load_adapter(out, encoder_id=info.encoder_id, preprocess_hash=info.preprocess_hash)


def _embed_inputs(adapter: Adapter, inputs: list[str], weights: Path | None, batch_size: int
                  ) -> tuple[pd.DataFrame, np.ndarray, list[tuple[str, str]]]:
    """Decode and embed images with the adapter's own encoder; bad files are returned, not raised."""
    from radlens.encoders import get
    from radlens.io import DecodeError, discover, load_image

    enc_meta = adapter.meta.get("encoder") or {}
    if not enc_meta.get("name"):
        raise ValueError(f"{adapter.folder}: adapter does not record its encoder's name; predict from a store instead")
    encoder = get(enc_meta["name"], weights=weights)
    adapter.check_features(encoder.encoder_id, encoder.preprocess_hash, source=f"encoder {enc_meta['name']}")
    records = discover(inputs[0] if len(inputs) == 1 and Path(inputs[0]).is_dir() else inputs)
    rows, arrays, bad = [], [], []
    for rec in records:
        try:
            img = load_image(rec.path)
        except DecodeError as e:
            bad.append((str(rec.path), e.reason))
            continue
        rows.append({"path": str(rec.path), "image_hash": img.content_hash, **rec.meta})
        arrays.append(encoder.preprocess(img.pixels))
    emb = np.concatenate([encoder.embed(np.stack(arrays[i:i + batch_size])) for i in range(0, len(arrays), batch_size)]) \
        if arrays else np.zeros((0, encoder.embedding_dim), np.float32)
    return pd.DataFrame(rows), emb, bad


def _embed_inputs_ray(adapter: Adapter, inputs: list[str], weights: Path | None, options: Any
                      ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """`_embed_inputs` on Ray Data: decode tasks, then encoder actors that also apply the adapter.

    Each actor builds the adapter's encoder once and loads the adapter once (`AdapterScorer`, the safe
    loader); rows come back in input order, so the CSV matches the local engine's row for row.
    """
    from radlens.adapters.artefact import AdapterScorer
    from radlens.encoders import get
    from radlens.io import discover
    from radlens.store.ray_engine import EncoderSpec, embed_images_ray

    enc_meta = adapter.meta.get("encoder") or {}
    if not enc_meta.get("name"):
        raise ValueError(f"{adapter.folder}: adapter does not record its encoder's name; predict from a store instead")
    spec = EncoderSpec(enc_meta["name"], weights=str(weights) if weights else None)
    encoder = spec.build()
    adapter.check_features(encoder.encoder_id, encoder.preprocess_hash, source=f"encoder {enc_meta['name']}")
    records = discover(inputs[0] if len(inputs) == 1 and Path(inputs[0]).is_dir() else inputs)
    head = AdapterScorer(adapter.folder, encoder.encoder_id, encoder.preprocess_hash)
    res = embed_images_ray(records, spec, preprocess=encoder.preprocessor(), embedding_dim=encoder.embedding_dim,
                           options=options, head=head, head_outputs=len(adapter.class_names))
    rows = [{"path": str(records[i].path), "image_hash": h, **records[i].meta} for i, h in zip(res.ok, res.hashes)]
    bad = [(str(records[i].path), reason) for i, reason in res.failed]
    return pd.DataFrame(rows), res.embeddings, res.scores, bad


def run_predict(adapter_dir: Path, inputs: list[str], out_csv: Path, *, kind: str | None = None,
                weights: Path | None = None, batch_size: int = 32, split: str | None = None,
                engine: str = "local", ray_options: Any = None) -> dict[str, Any]:
    """Probabilities and decisions at the adapter's stored operating point, for a store or for image files.

    When the inputs carry the adapter's label column, the decisions are also scored against it
    (an external check of the stored operating point) in the summary and the HTML report.

    engine="ray" (`ray_options`: a `radlens.store.ray_engine.RayOptions`) embeds and scores image inputs on Ray
    Data. A store input is read whole and scored in memory either way: an adapter's predict_proba on stored
    vectors is one matrix product (or a FAISS search) per few thousand rows, far cheaper than shipping the
    vectors to a cluster.
    """
    from radlens.report.html import write_prediction_report

    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be local or ray, not {engine!r}")
    adapter = load_adapter(adapter_dir)
    single = Path(inputs[0]) if len(inputs) == 1 else None
    bad: list[tuple[str, str]] = []
    P = None
    if single is not None and (single / "_radlens.json").is_file():
        df, emb, info = load_store(single)
        adapter.check_features(info.encoder_id, info.preprocess_hash, source=f"store {single}")
        if split:
            m = split_mask(df.path, split).to_numpy()
            df, emb = df[m].reset_index(drop=True), emb[m]
    elif engine == "ray":
        from radlens.store.ray_engine import RayOptions

        df, emb, P, bad = _embed_inputs_ray(adapter, inputs, weights, ray_options or RayOptions(batch_size=batch_size))
    else:
        df, emb, bad = _embed_inputs(adapter, inputs, weights, batch_size)
    names = adapter.class_names
    if P is None:
        P = adapter.predict_proba(emb) if len(emb) else np.zeros((0, len(names)))
    kind = kind or adapter.meta["decision_operating_point"]
    D = adapter.decide(P, kind) if len(emb) else np.zeros((0, len(names)), int)
    out = pd.DataFrame({"path": df.path.to_numpy() if len(df) else []})
    for j, c in enumerate(names):
        out[f"p_{c}"] = P[:, j]
    for j, c in enumerate(names):
        out[f"decision_{c}"] = D[:, j]
    if adapter.task_kind == "multiclass" and len(P):
        out["predicted_class"] = [names[i] for i in P.argmax(1)]
    if supports_evidence(adapter.estimator) and len(emb):  # the past cases that voted, most similar first
        ev = estimator_evidence(adapter.estimator, emb, k=EVIDENCE_IN_CSV)
        out["evidence_ids"] = ["|".join(r) for r in ev["ids"]]
        out["evidence_similarity"] = ["|".join(f"{v:.4f}" for v in r) for r in ev["similarity"]]
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_csv.with_name(f".{out_csv.name}.tmp")
    out.to_csv(tmp, index=False)
    os.replace(tmp, out_csv)
    if bad:
        pd.DataFrame(bad, columns=["path", "reason"]).assign(stage="decode")[["path", "stage", "reason"]].to_csv(
            out_csv.with_suffix(".quarantine.csv"), index=False)
    summary: dict[str, Any] = {"images": len(out), "quarantined": len(bad), "operating_point": kind,
                               "thresholds": dict(zip(names, adapter.thresholds(kind).tolist())),
                               "positives": {c: int(D[:, j].sum()) for j, c in enumerate(names)}}
    task = TaskSpec.from_dict(adapter.meta["task"])
    if len(df) and task.column in df:
        tg = build_targets(df, task if task.classes else TaskSpec(**{**task.to_dict(), "classes": tuple(names),
                                                                        "exclude": tuple(task.exclude)}))
        if tg.class_names == names and tg.rows.any():
            from radlens.evaluate.metrics import macro_auc, one_vs_rest, per_class_auc
            from radlens.evaluate.operating_points import rates_at

            Y = one_vs_rest(tg.y, task.kind, len(names))
            Pr, Dr = P[tg.rows], D[tg.rows]
            summary["evaluation"] = {
                "rows": int(tg.rows.sum()), "macro_auc": macro_auc(tg.y, Pr, task.kind),
                "per_class": {c: {"auc": float(a), **{k: v for k, v in rates_at(Y[:, j], Dr[:, j].astype(float), 0.5).items()
                                                       if k in ("sensitivity", "specificity", "ppv", "npv")}}
                              for j, (c, a) in enumerate(zip(names, per_class_auc(tg.y, Pr, task.kind)))}}
    summary = to_jsonable(summary)
    _write_json(out_csv.with_suffix(".summary.json"), summary)
    write_prediction_report(out_csv.with_suffix(".html"), P, names, adapter.thresholds(kind), summary,
                            title=f"radlens predict: {Path(adapter_dir).name}")
    return summary
