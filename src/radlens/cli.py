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

    t = Table("name", "input", "dim", "license", "weights", "description")
    for e in available():
        t.add_row(e.name, f"{e.input_size}px", str(e.embedding_dim), e.license, e.weights, e.description)
    Console().print(t)


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
) -> None:
    """Embed radiographs into a resumable store; bad files go to <out>/_quarantine.csv."""
    from radlens.encoders import get
    from radlens.store.embed_job import embed_to_store

    single = Path(data[0]) if len(data) == 1 else None
    source = data[0] if single and (single.is_dir() or single.suffix.lower() == ".csv") else data
    enc = get(encoder, weights=weights, **({"threads": threads} if threads else {}))
    with Progress(TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, transient=False) as bar:
        task = bar.add_task("embed", total=None)
        summary = embed_to_store(source, out, enc, batch_size=batch_size, workers=workers, limit=limit, chunk_rows=chunk_rows,
                                 progress=lambda done, total: bar.update(task, completed=done, total=total),
                                 provenance={"command": _command_line()})
    s = summary
    typer.echo(f"encoder {enc.encoder_id} (preprocess {enc.preprocess_hash})")
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


if __name__ == "__main__":
    app()
