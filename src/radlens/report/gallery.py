"""The evidence gallery: a query radiograph beside its most similar past cases, one self-contained page."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from radlens.report.html import _write_document
from radlens.report.thumbnails import data_uri, thumbnail_of

GALLERY_CSS = """
.grid{display:flex;flex-wrap:wrap;gap:12px} .card{width:220px;border:1px solid #ddd;border-radius:6px;padding:6px;font-size:12px}
.card img{width:208px;height:208px;object-fit:contain;background:#000;margin:0} .card.query{border:2px solid #2a6fdb}
.sim{font-weight:600} .lab{color:#a33} .meta{color:#666} .missing{width:208px;height:208px;background:#eee;
display:flex;align-items:center;justify-content:center;color:#999}
"""


def _card(img_uri: str | None, title: str, lines: list[str], cls: str = "card") -> str:
    pic = (f'<img src="{img_uri}" alt="{html.escape(title)}">' if img_uri
           else '<div class=missing>image unavailable</div>')
    return f'<div class="{cls}">{pic}<div><b>{html.escape(title)}</b></div>{"".join(lines)}</div>'


def hit_lines(hit_row: dict[str, Any], score: float, metric: str, label_column: str) -> list[str]:
    sim = f"cosine {score:.3f}" if metric == "cosine" else f"L2² {-score:.3f}"
    meta = " · ".join(str(hit_row[c]) for c in ("sex", "age", "view") if hit_row.get(c) is not None)
    return [f"<div class=sim>{html.escape(sim)}</div>",
            f"<div class=lab>{html.escape(str(hit_row.get(label_column) or '—'))}</div>",
            f"<div class=meta>{html.escape(meta)}</div>"]


def write_gallery(path: str | Path, *, query_jpeg: bytes, query_name: str, hits: list[Any], index_meta: dict[str, Any],
                  filters: dict[str, Any], excluded: int = 0, title: str = "radlens evidence search") -> Path:
    metric, lc = index_meta["metric"], index_meta.get("label_column", "finding_labels")
    cards = [_card(data_uri(query_jpeg), f"query: {Path(query_name).name}", ["<div class=meta>the image searched for</div>"],
                   "card query")]
    for rank, h in enumerate(hits, 1):
        thumb = thumbnail_of(h.row["path"]) if h.row.get("path") else None
        cards.append(_card(data_uri(thumb) if thumb else None, f"#{rank} {Path(str(h.row.get('path', h.id))).name}",
                           hit_lines(h.row, h.score, metric, lc)))
    info = {"index": index_meta.get("folder", ""), "encoder": index_meta["encoder_id"],
            "preprocess": index_meta["preprocess_hash"], "index type": f"{index_meta['index_type']} ({metric})",
            "filters": ", ".join(f"{k}={v}" for k, v in filters.items()) or "none",
            "identical images left out": excluded}
    table = "<table>" + "".join(f"<tr><th class=l>{html.escape(k)}</th><td class=l>{html.escape(str(v))}</td></tr>"
                                for k, v in info.items()) + "</table>"
    body = [f"<style>{GALLERY_CSS}</style>", f"<h1>{html.escape(title)}</h1>", table,
            f"<p class=note>The {len(hits)} most similar indexed cases, most similar first, with their recorded findings. "
            "Similar images are evidence to weigh, not a diagnosis.</p>", f"<div class=grid>{''.join(cards)}</div>"]
    return _write_document(Path(path), title, body)
