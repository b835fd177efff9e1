"""`radlens synth ...`: parse arguments, call radlens.synth, print. No logic here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Controllable synthesis: prompt -> anatomy-consistent pseudo masks -> X-ray -> expert filter -> labels.")


@app.command("masks")
def masks(
    prompt: str = typer.Option(..., "--prompt", "-p", help='Clinical prompt, e.g. "moderate right pleural effusion '
                                                            'with cardiomegaly".'),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (masks, overlays, manifest.json)."),
    n: int = typer.Option(16, "--n", min=1, max=100000),
    seed: int = typer.Option(0, "--seed"),
    sex: Optional[str] = typer.Option(None, "--sex", help="M or F (default: drawn from the real images)."),
    age: Optional[float] = typer.Option(None, "--age", min=0, max=120),
    view: Optional[str] = typer.Option(None, "--view", help="PA or AP (default: drawn from the real images)."),
    prior: Optional[Path] = typer.Option(None, "--prior", help="Mask prior folder (default: the packaged one)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier output in --out."),
) -> None:
    """Sample N mask stacks (lungs, heart, one channel per finding) for a prompt; reproducible from --seed."""
    from radlens.synth.masks_job import write_masks
    from radlens.synth.prompt import PromptError
    from radlens.synth.sampler import SynthError

    try:
        m = write_masks(prompt, n, seed, out, prior=str(prior) if prior else None, sex=sex, age=age, view=view,
                        overwrite=overwrite)
    except (PromptError, SynthError, FileExistsError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    typer.echo(json.dumps({k: m[k] for k in ("prompt", "parsed", "checks", "prior_id")}, indent=1))
    typer.echo(f"wrote {n} samples to {out} (overlay sheet: {out / 'overlay_sheet.png'})")


@app.command("fit-prior")
def fit_prior(
    nih: Path = typer.Option(..., "--nih", help="NIH ChestX-ray14 folder (manifest.csv, bbox.csv, chestxdet.json)."),
    lung_masks: Optional[Path] = typer.Option(None, "--lung-masks", help="Human lung-mask set (manifest.csv)."),
    out: Path = typer.Option(..., "--out", "-o", help="Prior folder to write (replaced atomically)."),
) -> None:
    """Fit the mask prior: shape model of lungs+heart from expert/human masks, lesion priors from boxes/polygons."""
    from radlens.synth.fit import fit_prior as fit

    typer.echo(json.dumps(fit(nih, lung_masks, out), indent=1, default=str))


@app.command("evaluate")
def evaluate(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for synth_{masks,images}_eval.{json,md} and the sheets."),
    nih: Optional[Path] = typer.Option(None, "--nih", help="NIH folder: real eval images/locations to compare with."),
    part: str = typer.Option("all", "--part", help="masks (prompt -> masks), images (generator, filter, embedding "
                                                  "metrics, downstream) or all."),
    lung_masks: Optional[Path] = typer.Option(None, "--lung-masks", help="Human lung-mask set: runs the downstream "
                                                                        "test (segmenter with vs without synthetic)."),
    n: int = typer.Option(200, "--n", min=1, help="Mask samples per finding (masks part)."),
    seed: int = typer.Option(0, "--seed"),
    prior: Optional[Path] = typer.Option(None, "--prior"),
    generator: Optional[Path] = typer.Option(None, "--generator", help="Generator folder (default: packaged)."),
    filter_dir: Optional[Path] = typer.Option(None, "--filter", help="Expert filter folder (default: packaged)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=8, help="First N NIH eval images for the embedding "
                                                                    "metrics (default: all)."),
    downstream_real: Optional[int] = typer.Option(None, "--downstream-real", min=1, help="Real training images per "
                                                  "seed (default: 6 lung masks, 32 annotated NIH images)."),
    downstream_synthetic: int = typer.Option(192, "--downstream-synthetic", min=1, help="Synthetic pairs drawn."),
    downstream_steps: int = typer.Option(600, "--downstream-steps", min=1),
    downstream_seeds: int = typer.Option(3, "--downstream-seeds", min=1),
    downstream_tasks: str = typer.Option("lungs,findings", "--downstream-tasks", help="lungs (needs --lung-masks), "
                                                                                    "findings, or both."),
) -> None:
    """Masks: pass rate of the consistency checks and location distance to real lesions, per finding. Images:
    filter pass rates and the 16-pair contact sheet, Fréchet distance / precision / recall against real-vs-real,
    real-vs-synthetic AUC, memorization, and the downstream segmentation tests (findings on NIH; lungs with
    --lung-masks)."""
    from radlens.synth.downstream import TASKS

    if part not in ("masks", "images", "all"):
        raise typer.BadParameter("masks, images or all", param_hint="--part")
    tasks = tuple(t.strip() for t in downstream_tasks.split(",") if t.strip())
    if not set(tasks) <= set(TASKS):
        raise typer.BadParameter(f"choose from {', '.join(TASKS)}", param_hint="--downstream-tasks")
    if part in ("masks", "all"):
        from radlens.synth.evaluate import evaluate as run

        r = run(out, nih_root=nih, n=n, seed=seed, prior=str(prior) if prior else None)
        typer.echo((out / "synth_masks_eval.md").read_text())
        typer.echo(f"overlay sheet: {out / r['overlay_sheet']}")
    if part in ("images", "all"):
        if nih is None:
            raise typer.BadParameter("the image evaluation needs the NIH folder (real eval images)", param_hint="--nih")
        from radlens.synth.image_eval import evaluate_images

        evaluate_images(out, nih_root=nih, lung_root=lung_masks, generator=str(generator) if generator else None,
                        filter_dir=str(filter_dir) if filter_dir else None, seed=seed, limit=limit,
                        downstream={"n_real": downstream_real, "n_synthetic": downstream_synthetic,
                                    "steps": downstream_steps, "seeds": tuple(range(downstream_seeds))},
                        tasks=tasks)
        typer.echo((out / "synth_images_eval.md").read_text())
        typer.echo(f"contact sheet: {out / 'contact_sheet.png'}")


@app.command("train")
def train(
    nih: Path = typer.Option(..., "--nih", help="NIH ChestX-ray14 folder (images, manifest, boxes, ChestX-Det)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: checkpoint.pt, previews/, final/ (resumes)."),
    size: int = typer.Option(128, "--size", help="Image side in px (a multiple of 2^(levels+1))."),
    widths: str = typer.Option("32,64,128,256", "--widths", help="Generator widths per level, comma-separated."),
    epochs: int = typer.Option(40, "--epochs", min=1),
    batch_size: int = typer.Option(8, "--batch-size", min=2),
    threads: int = typer.Option(2, "--threads", min=1),
    limit: Optional[int] = typer.Option(None, "--limit", min=2, help="First N training images (smoke tests)."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Stop after a checkpoint past this."),
    seed: int = typer.Option(0, "--seed"),
    lesion_l1: float = typer.Option(10.0, "--lesion-l1", min=0, help="Weight of the L1 over finding-mask pixels."),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="Generator folder to start from (a run's "
                                                                       "final/ or a packaged generator)."),
    lr: float = typer.Option(2e-4, "--lr", min=0),
    export_only: bool = typer.Option(False, "--export-only", help="Write OUT/final from OUT's last checkpoint."),
) -> None:
    """Train the mask-conditioned X-ray generator on NIH training pairs (expert anatomy + shaped findings)."""
    import logging

    from radlens.synth.gen_train import GenTrainConfig, export_checkpoint, train as run

    if export_only:
        typer.echo(f"wrote {export_checkpoint(out)}")
        return

    logging.getLogger("radlens").setLevel(logging.INFO)
    logging.basicConfig(level=logging.WARNING)
    state = run(GenTrainConfig(nih_data=str(nih), out=str(out), size=size,
                               widths=tuple(int(w) for w in widths.split(",")), epochs=epochs, batch_size=batch_size,
                               threads=threads, limit=limit, max_minutes=max_minutes, seed=seed,
                               lesion_l1=lesion_l1, lr=lr, init_from=str(init_from) if init_from else None))
    typer.echo(json.dumps({k: state[k] for k in ("epoch", "step", "seconds")} | {"last": (state["history"] or [None])[-1]},
                          indent=1))


@app.command("fit-filter")
def fit_filter(
    nih: Path = typer.Option(..., "--nih", help="NIH ChestX-ray14 folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Filter folder to write (filter.json + finding-expert/)."),
    size: int = typer.Option(128, "--size", help="The generator's image size (anatomy thresholds are per size)."),
    lung_masks: Optional[Path] = typer.Option(None, "--lung-masks", help="Human lung-mask set (lung Dice bars)."),
    store: Optional[Path] = typer.Option(None, "--store", help="An existing radlens-cxr store of the NIH images "
                                                               "(default: embed them now)."),
) -> None:
    """Build the expert filter from real images only: finding expert (radlens-cxr + logreg on NIH train) and
    anatomy Dice thresholds (the expert on real val images at the generator's size)."""
    from radlens.synth.filter_fit import fit_filter as run

    typer.echo(json.dumps(run(nih, out, size=size, lung_root=lung_masks, store=store), indent=1, default=str))


@app.command("generate")
def generate(
    prompt: str = typer.Option(..., "--prompt", "-p", help="Clinical prompt."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder (images, masks, coco.json, manifest.csv)."),
    n: int = typer.Option(16, "--n", min=1),
    seed: int = typer.Option(0, "--seed"),
    generator: Optional[Path] = typer.Option(None, "--generator", help="Generator folder (default: packaged)."),
    filter_dir: Optional[Path] = typer.Option(None, "--filter", help="Expert filter folder (default: packaged)."),
    prior: Optional[Path] = typer.Option(None, "--prior", help="Mask prior folder (default: packaged)."),
    dicom: bool = typer.Option(False, "--dicom", help="Also write DICOM Secondary Capture images."),
    sex: Optional[str] = typer.Option(None, "--sex"),
    age: Optional[float] = typer.Option(None, "--age"),
    view: Optional[str] = typer.Option(None, "--view"),
) -> None:
    """Masks from the prompt → images → expert filter → labelled dataset + contact sheet."""
    from radlens.synth.generate_job import generate as run
    from radlens.synth.prompt import PromptError
    from radlens.synth.sampler import SynthError

    try:
        p = run(prompt, n, seed, out, generator=str(generator) if generator else None,
                filter_dir=str(filter_dir) if filter_dir else None, prior=str(prior) if prior else None, dicom=dicom,
                sex=sex, age=age, view=view)
    except (PromptError, SynthError, FileExistsError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    typer.echo(json.dumps(p, indent=1, default=str))
    typer.echo(f"kept {p['kept']} of {n}; contact sheet: {out / 'contact_sheet.png'}")
