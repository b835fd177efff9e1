"""`radlens index`, `radlens search`, `radlens serve`: the evidence-search commands (registered in cli.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)


def index(
    store: Path = typer.Argument(..., help="An embedding store (from `radlens embed`)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Index folder (default: STORE/_index)."),
    kind: str = typer.Option("auto", "--kind", help="auto (exact flat up to 200k images, ANN above), flat, hnsw or ivf."),
    metric: str = typer.Option("cosine", "--metric", help="cosine or l2."),
    split: Optional[str] = typer.Option(None, "--split", help="Index only rows of a split: nih-cxr14:eval, FILE.csv:VALUE."),
    prune: bool = typer.Option(False, "--prune", help="Also remove indexed images the store no longer holds."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild from scratch instead of updating."),
    evaluate: bool = typer.Option(False, "--evaluate", help="Report precision@k of same-finding neighbours vs base rate."),
    k: int = typer.Option(10, "--k", min=1, help="k for --evaluate."),
) -> None:
    """Build (or bring up to date) the FAISS index of a store; optionally measure its evidence quality."""
    from radlens.search.build import index_store
    from radlens.search.evaluate import precision_at_k
    from radlens.search.index import EmbeddingIndex

    with console.status("indexing"):
        s = index_store(store, out, kind=kind, metric=metric, split=split, prune=prune, rebuild=rebuild)
    verb = "built" if s.created else "updated"
    typer.echo(f"{verb} {s.folder}: {s.index_type} ({s.metric}), {s.total} images; added {s.added}, removed {s.removed}; "
               f"{s.seconds:.1f} s")
    if evaluate:
        with console.status("evaluating neighbours"):
            res = precision_at_k(EmbeddingIndex.load(s.folder), k=k)
        _print_precision(res)
        tmp = s.folder / ".retrieval_eval.json.tmp"
        tmp.write_text(json.dumps(res, indent=1))
        tmp.replace(s.folder / "retrieval_eval.json")
        typer.echo(f"written {s.folder / 'retrieval_eval.json'}")


def _print_precision(res: dict) -> None:
    main = res.get("other_patients") or res.get("all")
    t = Table("label", "queries", f"precision@{res['k']}", "base rate", "lift",
              title=f"{res['queries']} queries; neighbours from other patients")
    for name, v in sorted(main["per_label"].items(), key=lambda kv: -kv[1]["queries"]):
        t.add_row(name, str(v["queries"]), f"{v['precision']:.3f}", f"{v['base_rate']:.3f}",
                  "—" if v["lift"] is None else f"{v['lift']:.2f}")
    t.add_row("macro", "", f"{main['macro_precision']:.3f}", f"{main['macro_base_rate']:.3f}",
              f"{main['macro_precision'] / main['macro_base_rate']:.2f}")
    Console(width=140).print(t)
    typer.echo(f"any shared label: {main['any_shared_label']:.3f} vs {main['any_shared_label_chance']:.3f} by chance")
    if "same_patient_allowed" in res:
        sp = res["same_patient_allowed"]
        typer.echo(f"with the query's own patient allowed: macro precision {sp['macro_precision']:.3f} "
                   f"(any shared label {sp['any_shared_label']:.3f}) — the leak other-patient figures avoid")


def search(
    image: Path = typer.Argument(..., help="A PNG/JPEG/TIFF/DICOM radiograph."),
    index_dir: Path = typer.Option(..., "--index", "-i", help="An index folder (from `radlens index`)."),
    k: int = typer.Option(10, "--k", min=1, max=1000),
    filter_: list[str] = typer.Option([], "--filter", "-f", help="sex=F, age=40-60, view=AP,PA, label=Effusion. Repeatable."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Evidence gallery HTML (default: search-<image>.html)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Encoder weights, if not the packaged ones."),
    include_identical: bool = typer.Option(False, "--include-identical", help="Keep indexed copies of the query itself."),
) -> None:
    """The k most similar indexed cases to an image, printed and written as an HTML evidence gallery."""
    from radlens.io import load_image
    from radlens.report.gallery import write_gallery
    from radlens.report.thumbnails import thumbnail_jpeg
    from radlens.search.index import EmbeddingIndex
    from radlens.search.query import parse_filters, query_encoder, search_image

    filters = parse_filters(filter_)
    idx = EmbeddingIndex.load(index_dir)
    enc = query_encoder(idx, weights)
    img = load_image(image)
    hits, excluded, _ = search_image(idx, enc, img, k=k, filters=filters, include_identical=include_identical)
    lc = idx.meta.get("label_column", "finding_labels")
    t = Table("#", "similarity" if idx.meta["metric"] == "cosine" else "-L2²", "image", "labels", "sex", "age", "view",
              title=f"{len(hits)} nearest of {len(idx)} indexed ({', '.join(f'{a}={b}' for a, b in filters.items()) or 'no filter'})")
    for r, h in enumerate(hits, 1):
        t.add_row(str(r), f"{h.score:.4f}", Path(str(h.row.get("path", h.id))).name, str(h.row.get(lc) or "—"),
                  *(str(h.row.get(c, "—")) for c in ("sex", "age", "view")))
    Console(width=160).print(t)
    if excluded:
        typer.echo(f"left out {excluded} indexed cop{'y' if excluded == 1 else 'ies'} of the query itself "
                   "(--include-identical keeps them)")
    out = out or Path(f"search-{image.stem}.html")
    write_gallery(out, query_jpeg=thumbnail_jpeg(img.pixels), query_name=image.name, hits=hits,
                  index_meta={**idx.meta, "folder": str(index_dir)}, filters=filters, excluded=excluded)
    typer.echo(f"gallery {out}")


def serve(
    adapter: Path = typer.Option(..., "--adapter", "-a", help="Adapter folder (from `radlens train`)."),
    index_dir: Path = typer.Option(..., "--index", "-i", help="Index folder (from `radlens index`), same encoder."),
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address; 127.0.0.1 keeps the service on this machine."),
    port: int = typer.Option(8000, "--port", min=0, max=65535),
    max_upload_mb: float = typer.Option(32.0, "--max-upload-mb", min=0.01, help="Larger uploads get 413."),
    k: int = typer.Option(10, "--k", min=1, max=50, help="Evidence cases per prediction by default."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Encoder weights, if not the packaged ones."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Torch threads (default: torch's)."),
) -> None:
    """Serve the prediction + evidence API and its page (open http://HOST:PORT/)."""
    from radlens.service.app import serve as run

    if threads:
        import torch

        torch.set_num_threads(threads)
    typer.echo(f"radlens service on http://{host}:{port}/ (API docs: /openapi.json)")
    run(adapter, index_dir, host=host, port=port, max_upload_bytes=int(max_upload_mb * 2**20), weights=weights, k=k)
