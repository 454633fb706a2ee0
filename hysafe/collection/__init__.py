"""Your own collections: score, index, search and compare unlabelled images and texts.

* :mod:`.sources` -- image folders, lists of paths or prompts, WebDataset shards, read in chunks;
* :mod:`.score` -- :func:`score_collection`: NSFW scores and decisions to Parquet (resumable);
* :mod:`.index` -- :func:`build_index`, :func:`add_to_index`, :class:`CollectionIndex` (faiss);
* :mod:`.page` -- :func:`compare_page`: models side by side as a self-contained HTML page.
"""

from .build import add_to_index, build_index
from .embed import model_fingerprint
from .index import CollectionIndex
from .page import compare_grid, compare_page, labels_from_manifest, labels_from_rows
from .score import ScoreResult, score_collection
from .sources import ImageFolder, ImageList, Item, Shards, Source, TextFile, expand_braces, open_source

__all__ = [
    "Source",
    "Item",
    "ImageFolder",
    "ImageList",
    "TextFile",
    "Shards",
    "open_source",
    "expand_braces",
    "score_collection",
    "ScoreResult",
    "build_index",
    "add_to_index",
    "CollectionIndex",
    "compare_page",
    "compare_grid",
    "labels_from_manifest",
    "labels_from_rows",
    "model_fingerprint",
]
