"""`radlens segment` and `radlens train-anatomy`: parse arguments, call radlens.anatomy, print. No logic here."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import typer


def train_anatomy(
    lung_data: Path = typer.Option(..., "--lung-data", help="Lung-mask set with manifest.csv (../shared/data/lung-masks)."),
    nih_data: Path = typer.Option(..., "--nih-data", help="NIH ChestX-ray14 folder with bbox.csv, chestxdet.json "
                                                           "(../shared/data/nih-cxr14)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: checkpoints, history, pseudo-labels, final weights."),
    round1_epochs: int = typer.Option(30, "--round1-epochs", min=0),
    round2_epochs: int = typer.Option(6, "--round2-epochs", min=0),
    round3_epochs: int = typer.Option(4, "--round3-epochs", min=0),
    batch_size: int = typer.Option(16, "--batch-size", min=2),
    threads: int = typer.Option(2, "--threads", min=1, help="Torch compute threads (augmentation adds one thread)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="First N images per source (smoke tests)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train the anatomy model (lungs + weakly supervised heart) on the committed training splits; resumes from <out>."""
    from radlens.anatomy.train import TrainConfig, train

    logging.getLogger("radlens").setLevel(logging.INFO)
    cfg = train(TrainConfig(lung_data=str(lung_data), nih_data=str(nih_data), out=str(out), round1_epochs=round1_epochs,
                            round2_epochs=round2_epochs, round3_epochs=round3_epochs, batch_size=batch_size,
                            threads=threads, limit=limit, seed=seed))
    typer.echo(json.dumps({k: cfg[k] for k in ("parameters", "gflops_per_image", "preprocess_hash", "epoch_seconds",
                                               "pseudo_labels")}, indent=1))


def segment(
    data: list[str] = typer.Argument(..., help="A folder (recursive; read through its manifest.csv if present), "
                                          "a CSV manifest with a `path` column, or image files (PNG/JPEG/TIFF/DICOM)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: masks/, overlays/, seg/, measures.csv, "
                                                      "quarantine.csv (created or resumed)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Anatomy model folder (default: the shipped one)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    workers: int = typer.Option(2, "--workers", min=1, help="Decode/write threads."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Torch compute threads (default: torch's)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Segment at most N images."),
    overlays: bool = typer.Option(True, "--overlays/--no-overlays", help="Write overlays/<id>.png."),
    dicom_seg: bool = typer.Option(True, "--dicom-seg/--no-dicom-seg", help="Write a DICOM SEG for DICOM inputs."),
) -> None:
    """Lung (right/left) and heart masks, overlays, measures (areas, R/L ratio, CTR) and DICOM SEG per image."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from radlens.anatomy import AnatomyModel
    from radlens.anatomy.segment_job import segment_to_folder
    from radlens.cli import _command_line, console

    single = Path(data[0]) if len(data) == 1 else None
    source = data[0] if single and (single.is_dir() or single.suffix.lower() == ".csv") else data
    model = AnatomyModel(weights, threads=threads)
    with Progress(TextColumn("segmenting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("segment", total=None)
        s = segment_to_folder(source, out, model, batch_size=batch_size, workers=workers, limit=limit,
                              overlays=overlays, dicom_seg=dicom_seg, command=_command_line(),
                              progress=lambda done, total: bar.update(task, completed=done, total=total))
    typer.echo(f"model {model.model_id} (preprocess {model.spec.hash})")
    typer.echo(f"discovered {s.discovered}: segmented {s.segmented}, skipped as done {s.cached}, quarantined "
               f"{s.quarantined}; {s.flagged} with flags (see the flags column)")
    typer.echo(f"{s.seconds:.1f} s, {s.images_per_s:.1f} images/s; measures {s.measures_csv}; quarantine {s.quarantine_csv}")
