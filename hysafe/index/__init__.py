"""The retrieval-index engine: :class:`~.retrieval.RetrievalIndex` (exact flat, IVF with exact
re-ranking, compressed IVF-PQ with a memory-mapped refine), IVF training and list scanning
(:mod:`.ivf_train`, :mod:`.ivf_scan`), the compressed kind's stages (:mod:`.compressed`), its vector
file (:mod:`.vector_file`), shards built in parallel (:mod:`.shards`) and faiss loading with its BLAS
kernel choice (:mod:`._faiss`). Works on any :class:`~hysafe.geometry.Space`; may import geometry and
the traversal of :mod:`hysafe.models`, never training, evaluation or the apps.
"""

from .retrieval import RetrievalIndex

__all__ = ["RetrievalIndex"]
