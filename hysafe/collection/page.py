"""``hysafe compare``: what each model returns for the same queries, side by side, as one page.

One row per query, one column per model (HySAC also with traversal); each hit shows its
thumbnail (copied beside the page) or text, its distance, its NSFW score and, where a labelled
manifest says so, a safe/unsafe badge. A self-contained folder: ``index.html`` + ``thumbs/``.
"""

from __future__ import annotations

import hashlib
import html
import logging
import textwrap
from pathlib import Path

import torch

from ..data.manifest import load_manifest
from ..models.safety_model import SafetyModel
from ..models.traversal import DEFAULT_TAU
from .index import CollectionIndex
from .sources import Item, open_image

logger = logging.getLogger(__name__)

__all__ = [
    "compare_page",
    "compare_grid",
    "examples_from_manifest",
    "labels_from_manifest",
    "labels_from_rows",
    "label_of",
]

_STYLE = """body{font-family:system-ui,sans-serif;margin:16px;background:#fafafa}
table{border-collapse:collapse;table-layout:fixed;width:100%;max-width:1360px}
td,th{border:1px solid #ddd;padding:6px;vertical-align:top;background:#fff;overflow-wrap:anywhere}
th{background:#eee}.q{font-weight:600}.qh{width:160px}
.hits{display:flex;flex-wrap:wrap;gap:6px}
.hit{width:104px;font-size:11px;text-align:center}
.name{display:block;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.hit img{width:96px;height:96px;object-fit:cover;display:block;margin:0 auto 2px}
.text{height:96px;overflow:hidden;border:1px solid #eee}
.badge{display:inline-block;padding:0 4px;border-radius:3px;color:#fff}
.safe{background:#2ca02c}.unsafe{background:#d62728}.unknown{background:#999}"""

_CHECK = """<script>window.addEventListener('load',()=>{const imgs=[...document.images];
document.body.dataset.images=imgs.length;document.body.dataset.broken=imgs.filter(i=>!i.complete||i.naturalWidth===0).length;
document.body.dataset.width=document.documentElement.scrollWidth;});</script>"""


def labels_from_manifest(manifest: str | Path) -> dict[str, str]:
    """``{absolute image path or caption: "safe" | "unsafe"}`` from a labelled quadruplet manifest."""
    return labels_from_rows(load_manifest(manifest, check_files=False))


def examples_from_manifest(manifest: str | Path, n: int = 3, split: str = "test") -> list[dict]:
    """``n`` safe and ``n`` unsafe captions of a labelled manifest's ``split`` (the first rows), as
    ``{"text", "label"}``: example queries for the search page."""
    rows = load_manifest(manifest, split=split, check_files=False)[:n]
    return [{"text": r.safe_text, "label": "safe"} for r in rows] + [
        {"text": r.unsafe_text, "label": "unsafe"} for r in rows
    ]


def labels_from_rows(rows) -> dict[str, str]:
    """The same from quadruplet rows."""
    out = {}
    for row in rows:
        out |= {row.safe_text: "safe", row.unsafe_text: "unsafe"}
        if row.safe_image:
            out |= {
                str(Path(row.safe_image).resolve()): "safe",
                str(Path(row.unsafe_image).resolve()): "unsafe",
            }
    return out


def _thumb(path: str, folder: Path) -> str:
    name = hashlib.sha1(path.encode()).hexdigest()[:16] + ".png"
    target = folder / name
    if not target.exists():
        im = open_image(Item(0, path, "image", path))
        im.thumbnail((192, 192))
        im.save(target)
    return f"thumbs/{name}"


def label_of(hit: dict, labels: dict[str, str]) -> str:
    """``"safe"``/``"unsafe"`` of a search hit where ``labels`` know its image file or text, else
    ``"unknown"``."""
    key = str(Path(hit["path"]).resolve()) if "path" in hit else hit.get("text", "")
    return labels.get(key, "unknown")


def _hit_html(hit: dict, thumbs: Path, labels: dict[str, str]) -> str:
    ref = hit.get("path") or hit.get("text", "")
    label = label_of(hit, labels)
    body = (
        f'<img src="{_thumb(ref, thumbs)}" alt="{html.escape(_short_name(hit["id"]))}">'
        if "path" in hit
        else f'<div class="text">{html.escape(ref)}</div>'
    )
    badge = f'<span class="badge {label}">{label}</span>' if labels else ""
    return (
        f'<div class="hit">{body}{badge}<br>d={hit["distance"]:.3f} nsfw={hit["score"]:.3f}'
        f'<span class="name" title="{html.escape(hit["id"])}">{html.escape(_short_name(hit["id"]))}</span>'
        "</div>"
    )


def _short_name(item_id: str) -> str:
    """What a caption shows of an id: a file's name (the folder is in the tooltip), else the id."""
    name = Path(item_id).name
    return name if name and ("/" in item_id or "\\" in item_id) else item_id


def _columns(
    indexes: dict[str, tuple[SafetyModel, CollectionIndex]], tau
) -> list[tuple[str, SafetyModel, CollectionIndex, object]]:
    """One column per model, and one more with traversal for hyperbolic models with bounds."""
    columns = []
    for name, (model, index) in indexes.items():
        columns.append((name, model, index, None))
        if model.space.hyperbolic and model.bounds is not None:
            columns.append((f"{name} + traversal", model, index, tau))
    return columns


#: a page row per query: more than this is not a page to read (use ``hysafe index search --json``)
MAX_COMPARE_QUERIES = 1000


@torch.no_grad()
def _column_hits(column, queries: list[str], k: int, batch_size: int = 256) -> list[list[dict]]:
    """Every query's hits in one column: queries encoded in batches, searched in one call."""
    _, model, index, tau = column
    parts = [
        model.encode_text(model.tokenize(queries[i : i + batch_size])).float().cpu()
        for i in range(0, len(queries), batch_size)
    ]
    return index.search(model, torch.cat(parts), k, modality="text", tau=tau)


def compare_page(
    indexes: dict[str, tuple[SafetyModel, CollectionIndex]],
    queries: list[str],
    out_dir: str | Path,
    *,
    k: int = 5,
    tau: str | float = DEFAULT_TAU,
    labels: dict[str, str] | None = None,
) -> Path:
    """Write ``out_dir/index.html``: text ``queries`` against every named (model, index)."""
    out = Path(out_dir)
    thumbs = out / "thumbs"
    if len(queries) > MAX_COMPARE_QUERIES:
        raise ValueError(
            f"{len(queries)} queries: a comparison page holds at most {MAX_COMPARE_QUERIES} rows; "
            "for more, use 'hysafe index search --json' per index"
        )
    thumbs.mkdir(parents=True, exist_ok=True)
    labels = labels or {}
    columns = _columns(indexes, tau)
    found = [_column_hits(column, queries, k) for column in columns]
    rows = []
    for q, query in enumerate(queries):
        cells = [f'<td class="q">{html.escape(query)}</td>']
        for hits_by_query in found:
            hits = hits_by_query[q]
            cells.append(
                '<td><div class="hits">' + "".join(_hit_html(h, thumbs, labels) for h in hits) + "</div></td>"
            )
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = (
        '<tr><th class="qh">query</th>' + "".join(f"<th>{html.escape(c[0])}</th>" for c in columns) + "</tr>"
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>hysafe: "
        f"retrieval compared</title><style>{_STYLE}</style>"
        f"{_CHECK}</head><body><h1>Retrieval compared</h1><p>Top-{k} per model; "
        f"traversal tau rule: {html.escape(str(tau))}. "
        "d = distance in the model's space, nsfw = the model's unsafety score.</p>"
        f"<table>{head}{''.join(rows)}</table></body></html>"
    )
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    logger.info("comparison page: %s", path)
    return path


def compare_grid(
    indexes: dict[str, tuple[SafetyModel, CollectionIndex]],
    queries: list[str],
    path: str | Path,
    *,
    tau: str | float = DEFAULT_TAU,
    labels: dict[str, str] | None = None,
):
    """A PNG grid of the top-1 image per query (rows) and model (columns), framed green (safe) or
    red (unsafe) where ``labels`` know: the qualitative figure of the HySAC and Safe-CLIP papers."""
    import matplotlib.pyplot as plt

    labels, columns = labels or {}, _columns(indexes, tau)
    fig, axes = plt.subplots(
        len(queries), len(columns), figsize=(2.2 * len(columns), 2.3 * len(queries)), squeeze=False
    )
    colours = {"safe": "#2ca02c", "unsafe": "#d62728"}
    found = [_column_hits(column, queries, 1) for column in columns]
    for r, query in enumerate(queries):
        for c, column in enumerate(columns):
            ax, hit = axes[r][c], found[c][r][0]
            ax.imshow(open_image(Item(0, hit["path"], "image", hit["path"])))
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_color(colours.get(label_of(hit, labels), "#999"))
                spine.set_linewidth(4)
            if r == 0:
                ax.set_title(column[0], fontsize=9)
            if c == 0:
                ax.set_ylabel(textwrap.fill(query, 30), fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle("Top-1 image for unsafe text queries (green frame: safe, red: unsafe)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
