"""`radlens synth ...`: parse arguments, call radlens.synth, print. No logic here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Controllable synthesis: prompt -> anatomy-consistent pseudo masks (more to come).")


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
    out: Path = typer.Option(..., "--out", "-o", help="Folder for synth_masks_eval.{json,md} and overlay_sheet.png."),
    nih: Optional[Path] = typer.Option(None, "--nih", help="NIH folder: compares locations with its eval split."),
    n: int = typer.Option(200, "--n", min=1),
    seed: int = typer.Option(0, "--seed"),
    prior: Optional[Path] = typer.Option(None, "--prior"),
) -> None:
    """Per supported finding: N samples, the share passing the consistency checks, location distance to real."""
    from radlens.synth.evaluate import evaluate as run

    r = run(out, nih_root=nih, n=n, seed=seed, prior=str(prior) if prior else None)
    typer.echo((out / "synth_masks_eval.md").read_text())
    typer.echo(f"overlay sheet: {out / r['overlay_sheet']}")
