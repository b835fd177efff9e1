"""radlens command line. Each command parses arguments, calls the library, and prints; no logic here."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Radiograph AI that runs offline on a CPU.")
console = Console(stderr=True)


def _command_line() -> str:
    return "radlens " + " ".join(shlex.quote(a) for a in sys.argv[1:])


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def encoders() -> None:
    """List the registered encoder families."""
    from radlens.encoders import available

    from rich.markup import escape

    t = Table("name", "input", "dim", "license", "weights", "description")
    for e in available():  # escape: texts such as "radlens[cxr-foundation]" are not rich markup
        t.add_row(escape(e.name), f"{e.input_size}px" if e.input_size else "model's own",
                  str(e.embedding_dim) if e.embedding_dim else "varies", *(escape(x) for x in (e.license, e.weights, e.description)))
    Console().print(t)


_ENGINE_OPT = typer.Option("local", "--engine", help="local (threads + one process) or ray (Ray Data: decode tasks, "
                                                      "encoder actor pool; see README 'Scaling out with Ray').")
_ADDRESS_OPT = typer.Option(None, "--address", help="--engine ray: an existing cluster ('auto' on a cluster node, "
                                                    "HOST:6379, ray://HOST:10001); default: start a local instance.")
_NUM_CPUS_OPT = typer.Option(None, "--num-cpus", min=1, help="--engine ray without --address: CPUs of the local "
                                                             "instance (default: all).")
_ACTORS_OPT = typer.Option(1, "--actors", min=1, help="--engine ray: encoder actors (each loads the model once).")
_DECODE_BATCH_OPT = typer.Option(16, "--decode-batch", min=1, help="--engine ray: files per decode task (larger "
                                                                   "tasks amortise Ray's per-task cost on big runs).")
_GPUS_OPT = typer.Option(0.0, "--gpus-per-actor", min=0.0, help="--engine ray: GPUs per encoder actor (> 0 runs the "
                                                                 "encoder on CUDA; fractions share a GPU).")


def _check_engine(engine: str) -> None:
    if engine not in ("local", "ray"):
        raise typer.BadParameter(f"expected local or ray, not {engine!r}", param_hint="--engine")


def _ray_options(address: Optional[str], num_cpus: Optional[int], actors: int, gpus_per_actor: float, batch_size: int,
                 decode_batch: int):
    from radlens.store.ray_engine import RayOptions

    return RayOptions(address=address, num_cpus=num_cpus, actors=actors, gpus_per_actor=gpus_per_actor,
                      batch_size=batch_size, decode_batch=decode_batch)


@app.command()
def embed(
    data: list[str] = typer.Argument(..., help="A folder (recursive; read through its manifest.csv if present), "
                                          "a CSV manifest with a `path` column, or image files."),
    out: Path = typer.Option(..., "--out", "-o", help="Store folder (created or resumed)."),
    encoder: str = typer.Option("radlens-cxr", "--encoder", "-e", help="Registered encoder name (`radlens encoders`)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Local weights folder/file for the encoder."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    workers: int = typer.Option(2, "--workers", min=1, help="Decode threads."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Torch compute threads (default: torch's)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Embed at most N images."),
    chunk_rows: int = typer.Option(256, "--chunk-rows", min=1, help="Rows per Parquet chunk (work lost on a crash)."),
    allow_download: bool = typer.Option(False, "--allow-download",
                                        help="Let the encoder's upstream library download its weights when --weights "
                                             "is not given (families that have one); off by default."),
    engine: str = _ENGINE_OPT, address: Optional[str] = _ADDRESS_OPT, num_cpus: Optional[int] = _NUM_CPUS_OPT,
    actors: int = _ACTORS_OPT, gpus_per_actor: float = _GPUS_OPT, decode_batch: int = _DECODE_BATCH_OPT,
) -> None:
    """Embed radiographs into a resumable store; bad files go to <out>/_quarantine.csv."""
    from radlens.encoders import get
    from radlens.store import read_info
    from radlens.store.embed_job import embed_to_store

    single = Path(data[0]) if len(data) == 1 else None
    source = data[0] if single and (single.is_dir() or single.suffix.lower() == ".csv") else data
    kwargs = {**({"threads": threads} if threads else {}), **({"allow_download": True} if allow_download else {})}
    _check_engine(engine)
    try:
        enc = get(encoder, weights=weights, **kwargs) if engine == "local" else None
    except TypeError as e:
        if allow_download and "allow_download" in str(e):
            raise typer.BadParameter(f"encoder {encoder!r} has no upstream download; pass --weights",
                                     param_hint="--allow-download") from None
        raise
    with Progress(TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, transient=False) as bar:
        task = bar.add_task("embed", total=None)
        progress = lambda done, total: bar.update(task, completed=done, total=total)  # noqa: E731
        provenance = {"command": _command_line()}
        if enc is not None:
            summary = embed_to_store(source, out, enc, batch_size=batch_size, workers=workers, limit=limit,
                                     chunk_rows=chunk_rows, progress=progress, provenance=provenance)
        else:
            from radlens.store.ray_engine import EncoderSpec, embed_to_store_ray

            spec = EncoderSpec(encoder, weights=str(weights) if weights else None, kwargs=kwargs)
            summary = embed_to_store_ray(source, out, spec, limit=limit, chunk_rows=chunk_rows, progress=progress,
                                         provenance=provenance,
                                         options=_ray_options(address, num_cpus, actors, gpus_per_actor, batch_size, decode_batch))
    s = summary
    info = read_info(out)
    typer.echo(f"encoder {info.encoder_id} (preprocess {info.preprocess_hash}); engine {engine}")
    typer.echo(f"discovered {s.discovered}: embedded {s.embedded}, skipped as cached {s.cached}, "
               f"quarantined {s.quarantined}, duplicate content {s.duplicates}")
    typer.echo(f"{s.seconds:.1f} s, {s.images_per_s:.1f} images/s embedded; store {s.store}; quarantine {s.quarantine_csv}")


@app.command()
def info(store: Path = typer.Argument(..., help="An embedding store folder.")) -> None:
    """Summarise an embedding store: rows, encoder, preprocessing, metadata, quarantine."""
    from radlens.store.summary import summarize

    s = summarize(store)
    t = Table("field", "value", title=f"store {store}")
    for k, v in s.items():
        t.add_row(k, json.dumps(v) if isinstance(v, (dict, list)) else str(v))
    Console().print(t)


def _tasks(task: list[str], label_column: Optional[str], task_kind: str, single_label: bool, min_class_size: int,
           exclude_label: list[str]):
    from radlens.adapters import TaskSpec, task_from_name

    if label_column:
        return [TaskSpec(label_column, task_kind, column=label_column, single_label_only=single_label,
                         min_class_size=min_class_size, exclude=tuple(exclude_label))]
    return [task_from_name(t) for t in (task or ["nih-findings"])]


def _study_config(target_sensitivity: float, target_specificity: float, decision: str, n_boot: int, threads: int,
                  age_bins: str, min_group_size: int, seed: int, jobs: int = 1, inner: int = 3):
    import os

    from radlens.evaluate.study import StudyConfig

    os.environ.setdefault("RADLENS_JOBS", str(threads))
    return StudyConfig(target_sensitivity=target_sensitivity, target_specificity=target_specificity, decision=decision,
                       n_boot=n_boot, threads=threads, age_bins=tuple(float(b) for b in age_bins.split(",")),
                       min_group_size=min_group_size, seed=seed, jobs=jobs, n_inner=inner)


_TASK_OPT = typer.Option([], "--task", "-t", help="Preset task(s): nih-findings (14-finding multi-label), nih-single "
                                                  "(single-label multi-class). Repeatable.")
_LABEL_OPT = typer.Option(None, "--label-column", help="Custom task: the label column (instead of --task).")
_KIND_OPT = typer.Option("multilabel", "--task-kind", help="Custom task: multilabel or multiclass.")
_SINGLE_OPT = typer.Option(False, "--single-label", help="Custom multiclass task: keep rows with exactly one label.")
_MINC_OPT = typer.Option(1, "--min-class-size", help="Custom multiclass task: drop classes with fewer rows.")
_EXCL_OPT = typer.Option([], "--exclude-label", help="Custom task: a label that is not a class (e.g. 'No Finding').")
_SPLIT_OPT = typer.Option(None, "--split", help="Use only rows of a split: nih-cxr14:eval, or FILE.csv:VALUE.")
_SENS_OPT = typer.Option(0.9, "--target-sensitivity", min=0.0, max=1.0)
_SPEC_OPT = typer.Option(0.9, "--target-specificity", min=0.0, max=1.0)
_DEC_OPT = typer.Option("youden", "--decision", help="Operating point predict applies: youden, sensitivity, specificity.")
_BOOT_OPT = typer.Option(1000, "--n-boot", min=10, help="Patient bootstrap resamples for CIs.")
_THR_OPT = typer.Option(1, "--threads", min=1, help="Threads for adapters (1 is fastest on a busy 2-core machine).")
_AGE_OPT = typer.Option("40,60,80", "--age-bins", help="Age-group boundaries for fairness.")
_MING_OPT = typer.Option(30, "--min-group-size", help="Subgroups smaller than this are flagged 'small'.")
_GROUP_OPT = typer.Option("patient_id", "--group-column", help="Patient column: CV folds and CIs resample it.")
_JOBS_OPT = typer.Option(1, "--jobs", min=1, help="Outer CV folds run in this many processes.")
_INNER_OPT = typer.Option(3, "--inner", min=1, help="Inner search folds (1 = one grouped 80/20 holdout).")


def _print_rows(rows: list[dict]) -> None:
    t = Table("task", "encoder", "adapter", "macro AUC", "95% CI", "bal. acc", "ECE→cal", "fit s", "pred s/1k")
    for r in sorted(rows, key=lambda r: (r["task"], -(r["macro_auc"] or 0))):
        t.add_row(r["task"], r["encoder"], r["adapter"], f"{r['macro_auc']:.3f}", f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]",
                  f"{r['balanced_accuracy']:.3f}", f"{r['ece_uncalibrated']:.3f}→{r['ece_calibrated']:.3f} {r['calibration']}",
                  f"{r['fit_seconds']:.2f}", f"{r['predict_seconds_per_1000']:.2f}")
    Console(width=160).print(t)


def _print_gaps(gaps: list[dict]) -> None:
    def f(v: Optional[float]) -> str:
        return "—" if v is None else f"{v:.3f}"

    t = Table("task", "encoder", "adapter", "attribute", "groups", "AUC gap", "AUC std", "sens gap", "spec gap",
              title="fairness: max − min over groups that are not small")
    for g in gaps:
        t.add_row(g["task"], g["encoder"], g["adapter"], g["attribute"], f"{g['n_groups_not_small']}/{g['n_groups']}",
                  f(g["auc_gap"]), f(g["auc_std"]), f(g["sensitivity_gap"]), f(g["specificity_gap"]))
    Console(width=160).print(t)


@app.command()
def compare(
    stores: list[Path] = typer.Argument(..., help="Embedding stores (one per encoder), compared on the images they share."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for report.html and results.json."),
    adapters: str = typer.Option("knn,logreg,svm,rf,mlp,lightgbm", "--adapters", "-a", help="Comma-separated adapters."),
    task: list[str] = _TASK_OPT, label_column: Optional[str] = _LABEL_OPT, task_kind: str = _KIND_OPT,
    single_label: bool = _SINGLE_OPT, min_class_size: int = _MINC_OPT, exclude_label: list[str] = _EXCL_OPT,
    split: Optional[str] = _SPLIT_OPT, target_sensitivity: float = _SENS_OPT, target_specificity: float = _SPEC_OPT,
    decision: str = _DEC_OPT, n_boot: int = _BOOT_OPT, threads: int = _THR_OPT, age_bins: str = _AGE_OPT,
    min_group_size: int = _MING_OPT, group_column: str = _GROUP_OPT, jobs: int = _JOBS_OPT, inner: int = _INNER_OPT,
    metadata_baseline: bool = typer.Option(True, "--metadata-baseline/--no-metadata-baseline",
                                           help="Add the age+sex+view → logistic regression row."),
    seed: int = typer.Option(0, "--seed"),
    zeroshot: list[str] = typer.Option([], "--zeroshot", help="NAME=WEIGHTS of a CLIP-type encoder (e.g. "
                                       "biomedclip=/models/BiomedCLIP): add its zero-shot row (no training). Repeatable."),
    zeroshot_prompts: Optional[str] = typer.Option(None, "--zeroshot-prompts", help="Prompt text per class, "
                                                   "e.g. 'Effusion=pleural effusion,Pleural_Thickening=pleural thickening' "
                                                   "(default: the class name, lower case, '_' → space)."),
    zeroshot_template: Optional[str] = typer.Option(None, "--zeroshot-template", help="Prompt template with {} "
                                                    "(default: the encoder's own)."),
) -> None:
    """Every store × every adapter (+ a metadata-only row) → comparison table, report.html, results.json."""
    from radlens.evaluate.runs import run_compare

    cfg = _study_config(target_sensitivity, target_specificity, decision, n_boot, threads, age_bins, min_group_size, seed,
                        jobs, inner)
    tasks = _tasks(task, label_column, task_kind, single_label, min_class_size, exclude_label)
    names = [a.strip() for a in adapters.split(",") if a.strip()]
    zs_sources = None
    if zeroshot:
        from radlens.evaluate.zeroshot import ZeroShotSource, parse_labels

        prompts = parse_labels(zeroshot_prompts) if zeroshot_prompts else []
        zs_sources = [ZeroShotSource.parse(z, prompts, zeroshot_template) for z in zeroshot]
    with console.status("comparing") as status:
        payload, _ = run_compare(stores, tasks=tasks, adapters=names, out=out, split=split, cfg=cfg,
                                 group_column=group_column, metadata_baseline=metadata_baseline, command=_command_line(),
                                 progress=lambda msg: status.update(f"comparing: {msg}"), zeroshot=zs_sources)
    _print_rows(payload["rows"])
    _print_gaps(payload["fairness_gaps"])
    typer.echo(f"report {out / 'report.html'}; results {out / 'results.json'}")


@app.command()
def train(
    store: Path = typer.Argument(..., help="An embedding store."),
    out: Path = typer.Option(..., "--out", "-o", help="Adapter folder to write."),
    adapter: str = typer.Option("logreg", "--adapter", "-a"),
    task: list[str] = _TASK_OPT, label_column: Optional[str] = _LABEL_OPT, task_kind: str = _KIND_OPT,
    single_label: bool = _SINGLE_OPT, min_class_size: int = _MINC_OPT, exclude_label: list[str] = _EXCL_OPT,
    split: Optional[str] = _SPLIT_OPT, target_sensitivity: float = _SENS_OPT, target_specificity: float = _SPEC_OPT,
    decision: str = _DEC_OPT, n_boot: int = _BOOT_OPT, threads: int = _THR_OPT, age_bins: str = _AGE_OPT,
    min_group_size: int = _MING_OPT, group_column: str = _GROUP_OPT, jobs: int = _JOBS_OPT, inner: int = _INNER_OPT,
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train one adapter on a store: nested-CV evaluation, calibration, operating points, then the final fit."""
    from radlens.evaluate.runs import run_train

    cfg = _study_config(target_sensitivity, target_specificity, decision, n_boot, threads, age_bins, min_group_size, seed,
                        jobs, inner)
    (t,) = _tasks(task[:1], label_column, task_kind, single_label, min_class_size, exclude_label)
    with console.status(f"training {adapter} on {t.name}"):
        ad = run_train(store, task=t, adapter=adapter, out=out, split=split, cfg=cfg, group_column=group_column,
                       command=_command_line())
    m = ad.meta["cv_metrics"]
    typer.echo(f"adapter {out}: {adapter} on {t.name}, {len(ad.class_names)} classes, CV macro AUC {m['macro_auc']:.3f} "
               f"[{m['ci_low']:.3f}, {m['ci_high']:.3f}], calibration {ad.meta['calibration']['method']}, "
               f"decision at {ad.meta['decision_operating_point']}; report {out / 'report.html'}")


@app.command()
def predict(
    adapter: Path = typer.Argument(..., help="An adapter folder from `radlens train`."),
    inputs: list[str] = typer.Argument(..., help="An embedding store, or image files/folders/manifest."),
    out: Path = typer.Option(..., "--out", "-o", help="CSV of probabilities and decisions."),
    operating_point: Optional[str] = typer.Option(None, "--operating-point", help="youden, sensitivity or specificity "
                                                  "(default: the one chosen at training)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Encoder weights, when embedding images."),
    split: Optional[str] = _SPLIT_OPT,
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per encoder forward pass."),
    engine: str = _ENGINE_OPT, address: Optional[str] = _ADDRESS_OPT, num_cpus: Optional[int] = _NUM_CPUS_OPT,
    actors: int = _ACTORS_OPT, gpus_per_actor: float = _GPUS_OPT, decode_batch: int = _DECODE_BATCH_OPT,
) -> None:
    """Probabilities and decisions at the adapter's stored operating point (CSV + summary JSON + HTML).

    --engine ray applies to image inputs (decoded, embedded and scored on Ray); a store is scored in memory.
    """
    from radlens.evaluate.runs import run_predict

    _check_engine(engine)
    s = run_predict(adapter, inputs, out, kind=operating_point, weights=weights, split=split, batch_size=batch_size,
                    engine=engine, ray_options=_ray_options(address, num_cpus, actors, gpus_per_actor, batch_size, decode_batch)
                    if engine == "ray" else None)
    typer.echo(f"{s['images']} images predicted ({s['quarantined']} quarantined) at the {s['operating_point']} operating "
               f"point; {out}")
    if "evaluation" in s:
        typer.echo(f"against the inputs' labels: macro AUC {s['evaluation']['macro_auc']:.3f} on {s['evaluation']['rows']} rows")


@app.command("zeroshot")
def zeroshot_cmd(
    data: list[str] = typer.Argument(..., help="An embedding store made with this encoder, a folder (recursive; its "
                                          "manifest.csv if present), a CSV manifest, or image files."),
    labels: str = typer.Option(..., "--labels", "-l", help="Comma-separated labels; NAME=text maps a label of the data "
                                                           "to its prompt text, e.g. 'Effusion=pleural effusion,"
                                                           "Cardiomegaly=cardiomegaly'."),
    out: Path = typer.Option(..., "--out", "-o", help="CSV of per-label scores (+ .summary.json beside it)."),
    encoder: str = typer.Option(..., "--encoder", "-e", help="A CLIP-type encoder: biomedclip, medsiglip, medimageinsight."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Local weights folder for the encoder."),
    template: Optional[str] = typer.Option(None, "--template", help="Prompt template with {} for the label text "
                                                                    "(default: the encoder's own, e.g. 'this is a photo of {}')."),
    label_column: str = typer.Option("finding_labels", "--label-column", help="Column with the data's labels, for AUCs."),
    separator: str = typer.Option("|", "--separator", help="Separator between labels in --label-column."),
    split: Optional[str] = _SPLIT_OPT,
    store: Optional[Path] = typer.Option(None, "--store", help="Embed images into this store (resumable, reusable) "
                                                               "instead of in memory."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Torch compute threads."),
) -> None:
    """Zero-shot classification: cosine similarity of images with label prompts → scores (+ AUC per label)."""
    from radlens.encoders import get
    from radlens.evaluate.zeroshot import parse_labels, run_zeroshot

    enc = get(encoder, weights=weights, **({"threads": threads} if threads else {}))
    s = run_zeroshot(data, out, encoder=enc, labels=parse_labels(labels), template=template, split=split,
                     label_column=label_column, separator=separator, store=store, batch_size=batch_size,
                     command=_command_line())
    typer.echo(f"{s['images']} images scored ({s['quarantined']} quarantined) with {s['encoder_id']}, "
               f"{s['activation']} over {len(s['labels'])} prompts ('{s['template']}'); {out}")
    ev = s.get("evaluation")
    if ev:
        t = Table("label", "prompt", "positives", "AUC", title=f"zero-shot AUC against {ev['column']}")
        for lab, p in zip(s["labels"], ev["per_label"].values()):
            t.add_row(lab["name"], lab["prompt"], f"{p['n_pos']}/{p['n']}",
                      "—" if p["auc"] is None else f"{p['auc']:.3f}")
        Console().print(t)
        if ev["macro_auc"] is not None:
            typer.echo(f"macro AUC {ev['macro_auc']:.3f} over {ev['labels_scored']} labels")


@app.command("train-encoder")
def train_encoder(
    data: Path = typer.Argument(..., help="NIH ChestX-ray14 folder with manifest.csv (e.g. ../shared/data/nih-cxr14)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: checkpoints, history, final weights."),
    epochs: int = typer.Option(70, "--epochs", min=1),
    threads: int = typer.Option(2, "--threads", min=1),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Train on the first N images only (smoke tests)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train the radlens-cxr default encoder on the committed training split (resumes from <out>)."""
    from radlens.encoders.train_radlens_cxr import TrainConfig, train

    logging.getLogger("radlens").setLevel(logging.INFO)
    cfg = train(TrainConfig(data=str(data), out=str(out), epochs=epochs, threads=threads, limit=limit, seed=seed))
    typer.echo(json.dumps({k: cfg[k] for k in ("best_epoch", "val_macro_auc_by_size", "preprocess_hash")}, indent=1))


from radlens import cli_search as _search_cli  # noqa: E402  (commands live beside their library)

app.command("index")(_search_cli.index)
app.command("search")(_search_cli.search)
app.command("serve")(_search_cli.serve)

from radlens import cli_anatomy as _anatomy_cli  # noqa: E402

app.command("segment")(_anatomy_cli.segment)
app.command("train-anatomy")(_anatomy_cli.train_anatomy)

from radlens import cli_synth as _synth_cli  # noqa: E402

app.add_typer(_synth_cli.app, name="synth")

if __name__ == "__main__":
    app()
