"""``hysafe serve``: safe retrieval and moderation over HTTP, with a comparative search page.

Every model and index is loaded once. JSON API (OpenAPI docs at ``/docs``):

* ``POST /search`` -- ``{"text": "...", "k": 5}`` (all models; HySAC also with traversal), or a
  multipart form with an ``image`` file; optional ``models``, ``traversal``, ``tau``;
* ``POST /classify`` -- ``{"texts": [...]}`` or a multipart form with ``images``: score and
  decision per model that has a threshold (HySAC's bounds);
* ``GET /health``, ``GET /models``; ``GET /thumb/{model}/{row}`` serves an indexed image (only
  files listed in an index: no path from a request reaches the filesystem); ``GET /`` the page.

Safe defaults: binds to 127.0.0.1, bodies up to ``max_upload_mb`` (counted as they arrive),
texts up to :data:`~.requests.MAX_TEXT_CHARS`, at most ``max_items`` texts or images per /classify,
``1 <= k <= max_k``, JSON or multipart bodies only; bad requests get a JSON error naming the field
(:mod:`.requests`: 422 invalid, 413 too large, 415 not JSON or a form, 404 unknown); ``/docs`` works
offline; inference runs in the worker thread pool (sync
endpoints) on each model's merged-weights copy (:func:`~hysafe.models.checkpoint.inference_copy`,
whose forward writes no weight: bit-stable, no lock), and requests arriving together share one
forward per model and modality, one forward at a time across models (:mod:`.batching`). The
embeddings are checked for NaN/Inf once per request; the geometry after that (search,
traversal, scores) runs with its per-call input checks off, in the request's thread only.
(Over 300 lines: the request checks, the service and its routes are one HTTP surface, read together.)
"""

import functools
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from ..collection import CollectionIndex
from ..collection.page import label_of
from ..geometry import validation
from ..geometry._checks import require_finite
from ..models.checkpoint import inference_copy
from ..models.safety_model import SafetyModel
from ..utils.extras import require_extra
from .batching import Batcher
from .page import STATIC_FILES, static_text
from .requests import (
    CLASSIFY_FIELDS,
    NO_THRESHOLD,
    SEARCH_FIELDS,
    RequestError,
    check_fields,
    check_k,
    check_tau,
    check_text,
    error_handlers,
    flag,
    openapi_bodies,
    read_body,
    read_image,
)

logger = logging.getLogger(__name__)

__all__ = ["Served", "Service", "create_app"]


@dataclass
class Served:
    """One model and (optionally) its index."""

    model: SafetyModel
    index: CollectionIndex | None = None


def _input_form(model: SafetyModel, modality: str) -> str:
    """What decides a model's prepared inputs: its tokenizer (text) or preprocessing (image)."""
    backbone = getattr(model.config, "backbone", None)
    name = getattr(backbone, "model", None)
    cfg = getattr(backbone, "model_cfg", None)
    if name is None:  # a feature backbone: nothing to share
        return f"model {id(model)}"
    return f"{name} {cfg!r} " + (repr(model.preprocess) if modality == "image" else "")


def _tower(model: SafetyModel, modality: str):
    """The encoder of one modality, as the batcher calls it."""
    return model.encode_text if modality == "text" else model.encode_image


def id_root(index: CollectionIndex) -> str | None:
    """The folder the index's absolute item ids share (``None`` when none is absolute): responses
    give ids relative to it, never a server path."""
    if index.meta["modality"] != "image" or "id" not in index.items.column_names:
        return None
    absolute = [i for i in index.items.column("id").to_pylist() if os.path.isabs(i)]
    if not absolute:
        return None
    root = os.path.commonpath(absolute)
    return os.path.dirname(root) if len(set(absolute)) == 1 or root in absolute else root


def public_id(item_id: str, root: str | None) -> str:
    """An item's id as a response shows it: relative to its index's :func:`id_root`."""
    return os.path.relpath(item_id, root) if root is not None and os.path.isabs(item_id) else item_id


class Service:
    """The app's state and logic, independent of the web framework (tested directly too).
    ``examples``: ``[{"text": ..., "label": ...}]`` queries the page offers (``GET /examples``)."""

    def __init__(
        self,
        served: dict[str, Served],
        *,
        labels: dict[str, str] | None = None,
        max_k: int = 100,
        max_upload_mb: float = 10.0,
        max_items: int = 256,
        examples: list[dict] | None = None,
        batch_window_s: float = 0.0,
    ):
        if not served:
            raise ValueError("serve needs at least one --index NAME=DIR or --checkpoint NAME=CKPT")
        self.served, self.labels, self.max_k = served, labels or {}, max_k
        self.max_upload, self.max_items = int(max_upload_mb * 1024 * 1024), max_items
        self.examples = list(examples or [])
        # a hit's label resolves its path on disk: once per path, not once per response
        self._label = functools.lru_cache(maxsize=1 << 16)(self._label_uncached)
        self.id_roots = {n: id_root(s.index) for n, s in served.items() if s.index is not None}
        for s in served.values():  # once here, not per request
            if s.index is not None:
                s.index.check_model(s.model)
            s.model = inference_copy(s.model)  # after the check: the index knows the adapters
        forward = threading.Lock()  # one forward at a time, all models (see .batching)
        self.encoders = {
            (n, m): Batcher(_tower(s.model, m), window_s=batch_window_s, lock=forward)
            for n, s in served.items()
            for m in ("text", "image")
        }
        # what decides each model's prepared inputs, for sharing them within a request
        self.input_forms = {
            (n, m): _input_form(s.model, m) for n, s in served.items() for m in ("text", "image")
        }
        # each model's scorers, built once (concept-prompt scorers encode their prompts)
        self.classifiers = {
            (n, m): s.model.nsfw_classifier(m) for n, s in served.items() for m in ("text", "image")
        }

    def _pick(self, names, need_index: bool) -> dict[str, Served]:
        available = {n: s for n, s in self.served.items() if s.index is not None or not need_index}
        if names is None:
            return available
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise RequestError("models must be a list of model names", "models", 422)
        unknown = [n for n in names if n not in available]
        if unknown:
            raise RequestError(f"unknown model(s) {unknown}; available: {sorted(available)}", "models", 404)
        return {n: available[n] for n in names}

    def models(self) -> list[dict]:
        return [
            {
                "name": n,
                "kind": s.model.kind,
                "geometry": s.model.space.to_dict(),
                "bounds": s.model.bounds,
                "index": None
                if s.index is None
                else {"size": len(s.index.index), "modality": s.index.meta["modality"]},
                "traversal": bool(s.model.space.hyperbolic and s.model.bounds),
                "threshold": self._threshold(n),
            }
            for n, s in self.served.items()
        ]

    def _threshold(self, name: str) -> float | None:
        """The model's decision threshold for its index's items (text when it has no index)."""
        s = self.served[name]
        modality = s.index.meta["modality"] if s.index is not None else "text"
        return self.classifiers[(name, modality)].threshold

    @torch.no_grad()
    def _label_uncached(self, path: str | None, text: str) -> str:
        hit = {"path": path} if path is not None else {"text": text}
        return label_of(hit, self.labels)

    def _embed(self, name: str, modality: str, inputs: list, prepared_by: dict | None = None) -> torch.Tensor:
        """Embeddings of texts or PIL images under model ``name``: prepared in this thread (once per
        request for models that share a tokenizer or preprocessing, via ``prepared_by``), encoded
        in a batch shared with the requests arriving at the same time."""
        model = self.served[name].model
        key = (modality, self.input_forms[(name, modality)])
        cache = {} if prepared_by is None else prepared_by
        if key not in cache:
            if modality == "text":
                cache[key] = model.tokenize(inputs)
            else:
                cache[key] = torch.stack([model.preprocess(im) for im in inputs])
        out = self.encoders[(name, modality)](cache[key].to(model.device)).float().cpu()
        # checked here, once: the geometry after it (search, traversal, scores) runs unchecked
        require_finite(out, f"{name}'s {modality} embeddings")
        return out

    def _hit(self, name: str, hit: dict) -> dict:
        threshold = self._threshold(name)
        out = {
            "rank": hit["rank"],
            "id": public_id(hit["id"], self.id_roots.get(name)),
            "distance": hit["distance"],
            "score": hit["score"],
            "unsafe": None if threshold is None else hit["score"] >= threshold,
            "label": self._label(hit.get("path"), hit.get("text", "")),
        }
        if "path" in hit:
            out["thumb"] = f"/thumb/{name}/{hit['row']}"
        else:
            out["text"] = hit["text"]
        return out

    def search(self, *, text=None, image=None, k=5, models=None, traversal=True, tau=None) -> dict:
        if (text is None) == (image is None):
            raise RequestError("give a text or an image to search with", "text")
        if text is not None:
            text = check_text(text, "text")
        k, tau = check_k(k, self.max_k), check_tau(tau)
        results, prepared = {}, {}
        for name, s in self._pick(models, need_index=True).items():
            modality = "text" if text is not None else "image"
            q = self._embed(name, modality, [text if text is not None else image], prepared)
            runs = [(name, None)] + (
                [(f"{name} + traversal", tau)]
                if traversal and s.model.space.hyperbolic and s.model.bounds
                else []
            )
            for label, t in runs:
                try:
                    with validation(False):  # q is checked (_embed), the index at build time
                        hits = s.index.search(s.model, q, k, modality=modality, tau=t, check_model=False)[0]
                except ValueError as e:  # a tau rule the bounds cannot answer
                    raise RequestError(str(e), "tau", 422) from e
                results[label] = [self._hit(name, h) for h in hits]
        return {"query": text if text is not None else "(image)", "k": k, "tau": tau, "results": results}

    def classify(self, *, texts=None, images=None, models=None) -> dict:
        if not texts and not images:
            raise RequestError("give texts or images to classify", "texts")
        if texts is not None:
            if not isinstance(texts, list):
                raise RequestError("texts must be a list of non-empty strings", "texts")
            self.check_count(len(texts), "texts")
            texts = [check_text(t, "texts") for t in texts]
        out, prepared = {}, {}
        for name in self._pick(models, need_index=False):
            rows = []
            for modality, inputs in (("text", texts or []), ("image", images or [])):
                if not inputs:
                    continue
                clf = self.classifiers[(name, modality)]
                embeddings = self._embed(name, modality, inputs, prepared)
                with validation(False):  # checked in _embed
                    scores = clf.score(embeddings).tolist()
                rows += [
                    {
                        "modality": modality,
                        "score": sc,
                        "unsafe": None if clf.threshold is None else sc >= clf.threshold,
                        "threshold": clf.threshold,
                        **({} if clf.threshold is not None else {"note": NO_THRESHOLD}),
                        "scorer": clf.name,
                    }
                    for sc in scores
                ]
            out[name] = rows
        return {"results": out}

    def check_count(self, n: int, field_name: str) -> None:
        """At most ``max_items`` texts or images per request: one request must not hold the models for
        everyone else (100,000 texts took 83 s, and every search waited)."""
        if n > self.max_items:
            raise RequestError(
                f"{n} {field_name} in one request; at most {self.max_items} are accepted "
                "(send several requests)",
                field_name,
                413,
            )

    def thumb_path(self, name: str, row: int) -> Path:
        s = self.served.get(name)
        if s is None or s.index is None:
            raise RequestError(f"unknown model {name!r}", "model", 404)
        if not 0 <= row < len(s.index.index) or s.index.meta["modality"] != "image":
            raise RequestError(f"no image row {row} in {name}'s index", "row", 404)
        # a path from the index, never from the request
        path = Path(s.index.items.column("path")[row].as_py())
        if not path.is_file():
            raise RequestError(f"row {row} of {name}'s index: its image file is gone from disk", "row", 404)
        return path


def create_app(service: Service):
    """The FastAPI app over a :class:`Service` (needs the ``serve`` extra)."""
    require_extra("serve", "hysafe serve")
    from fastapi.responses import FileResponse
    from fastapi_offline import FastAPIOffline

    # /docs and /redoc with their assets served from the installed package: they work offline
    app = FastAPIOffline(
        title="hysafe", description="Safe retrieval and NSFW moderation with CLIP, Safe-CLIP and HySAC"
    )
    error_handlers(app)
    _inference_routes(app, service)

    @app.get("/examples")
    def examples():
        return {"examples": service.examples}

    @app.get("/health")
    def health():
        return {"status": "ok", "models": len(service.served)}

    @app.get("/models")
    def models():
        return service.models()

    @app.get("/thumb/{name}/{row}")
    def thumb(name: str, row: int):
        return FileResponse(service.thumb_path(name, row))

    _page_routes(app)
    return app


def model_names(value):
    """A body's ``models``: a list as sent, or a form's comma-separated names as a list."""
    return [m.strip() for m in value.split(",") if m.strip()] if isinstance(value, str) else value


def _inference_routes(app, service: Service) -> None:
    """``POST /search`` and ``POST /classify``: bodies read and checked in the event loop, the
    work (image decoding included) in the worker thread pool."""
    from fastapi import Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    bodies = openapi_bodies()

    @app.post("/search", openapi_extra=bodies["search"])
    async def search(request: Request):
        data, files = await read_body(request, service.max_upload)
        check_fields(data, SEARCH_FIELDS)
        models = model_names(data.get("models"))

        def run():  # in a worker thread: decoding an upload must not hold the event loop
            return service.search(
                text=None if files else data.get("text"),
                image=read_image(files[0], "image") if files else None,
                k=data.get("k", 5),
                models=models,
                traversal=flag(data.get("traversal", True), "traversal"),
                tau=data.get("tau"),  # a number, or a rule / numeric string checked by the model
            )

        # plain JSON values already: skip FastAPI's per-field re-encoding of the response
        return JSONResponse(await run_in_threadpool(run))

    @app.post("/classify", openapi_extra=bodies["classify"])
    async def classify(request: Request):
        data, files = await read_body(request, service.max_upload)
        check_fields(data, CLASSIFY_FIELDS)
        texts = [data["texts"]] if isinstance(data.get("texts"), str) else data.get("texts")

        service.check_count(len(files), "images")  # before decoding any of them

        def run():
            images = [read_image(f, "images") for f in files] or None
            return service.classify(texts=texts, images=images, models=model_names(data.get("models")))

        return JSONResponse(await run_in_threadpool(run))


def _page_routes(app) -> None:
    """``GET /``: the search page; ``GET /static/{name}``: its script and style sheet."""
    from fastapi import HTTPException
    from fastapi.responses import HTMLResponse, Response

    @app.get("/", response_class=HTMLResponse)
    def page():
        return static_text("index.html")

    @app.get("/static/{name}")
    def static(name: str):
        if name not in STATIC_FILES:
            raise HTTPException(404, f"no static file {name!r}")
        return Response(static_text(name), media_type=STATIC_FILES[name])
