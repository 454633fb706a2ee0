"""What ``hysafe serve`` accepts: one parser per field, the request bodies (JSON or a multipart
form, counted as they arrive), their schemas for the OpenAPI docs, and the errors.

Status codes, one per kind of bad input: 422 for a missing or invalid field (as FastAPI answers
for its own validation), 413 for a body over the size limit, 415 for a body that is neither JSON nor
a multipart form (by its ``Content-Type``: a ``text/plain`` POST, which any web page may send to a
local service without asking, is refused), 404 for an unknown model, row or route; every error is
``{"error": message, "field": name}``.
"""

from __future__ import annotations

import io
import json
import logging
import math

from ..models.traversal import DEFAULT_TAU

logger = logging.getLogger(__name__)


class RequestError(ValueError):
    """A bad request: ``status`` (422 unless said) and the ``field`` it concerns."""

    def __init__(self, message: str, field: str, status: int = 422):
        super().__init__(message)
        self.field, self.status = field, status


#: why a model answers ``unsafe: null``
NO_THRESHOLD = (
    "no decision threshold: this model scores by similarity to NSFW concept prompts, which has no "
    "calibrated cut-off (HySAC's distance from the root takes one from its safety bounds); the score "
    "alone ranks items"
)

#: the longest text a request may carry: the towers read at most their context (77 tokens for
#: OpenAI's CLIP, a few hundred characters), so longer texts are refused before tokenising
MAX_TEXT_CHARS = 4096

#: the deepest nesting of arrays and objects a JSON body may have (the bodies' own fields need 2);
#: deeper bodies are refused before any check formats them (a 2 KB body nested 1,000 deep once
#: reached the server's recursion limit: a 500)
MAX_JSON_DEPTH = 8

#: the body fields each endpoint reads (its schema's fields: :func:`openapi_bodies`)
SEARCH_FIELDS = ("text", "k", "models", "traversal", "tau")
CLASSIFY_FIELDS = ("texts", "models")

_TRUE, _FALSE = ("true", "1", "on", "yes"), ("false", "0", "off", "no")


def check_k(k, max_k: int) -> int:
    k = integer(k, "k")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= max_k:
        raise RequestError(f"k must be an integer between 1 and {max_k}, got {k!r}", "k")
    return k


def check_tau(tau):
    if tau is None:
        return DEFAULT_TAU
    if isinstance(tau, bool) or not isinstance(tau, (int, float, str)):
        raise RequestError(f"tau must be a number or a rule, got {tau!r}", "tau")
    if isinstance(tau, (int, float)) and not (math.isfinite(tau) and tau >= 0):
        raise RequestError(f"tau must be a finite number >= 0 or a rule, got {tau!r}", "tau")
    return tau


def check_text(text, field_name: str, max_chars: int = MAX_TEXT_CHARS) -> str:
    """A non-empty, valid Unicode string of at most ``max_chars`` characters."""
    if not isinstance(text, str) or not text.strip():
        raise RequestError(f"{field_name} must be a non-empty string", field_name)
    if len(text) > max_chars:
        raise RequestError(
            f"{field_name} has {len(text)} characters; at most {max_chars} are accepted "
            "(the model reads only its first tokens)",
            field_name,
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(f"{field_name} is not valid Unicode (a lone surrogate)", field_name) from None
    return text


def flag(value, field_name: str) -> bool:
    """A boolean field: JSON true/false, or a form's true/false, 1/0, on/off, yes/no."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise RequestError(f"{field_name} must be true or false, got {value!r}", field_name)


def integer(value, name: str):
    """A form's numeric string as an int (other values unchanged: the checks judge them)."""
    if not isinstance(value, str):
        return value
    try:
        return int(value)
    except ValueError:
        raise RequestError(f"{name} has a bad value {value!r}", name) from None


def read_image(data: bytes, field_name: str):
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.convert("RGB")
    except Exception as e:  # corrupt, not an image, decompression bomb
        raise RequestError(
            f"unreadable image upload ({type(e).__name__}: not an image file PIL can decode, "
            "or one too large to decode)",
            field_name,
        ) from e


def check_fields(data: dict, allowed: tuple[str, ...]) -> dict:
    """Refuse a body with fields the endpoint does not read (a typo such as ``model`` for
    ``models`` would otherwise be ignored silently)."""
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise RequestError(f"unknown field(s) {unknown}; this endpoint reads {list(allowed)}", unknown[0])
    return data


def error_handlers(app) -> None:
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    @app.exception_handler(RequestError)
    async def _request_error(request, exc: RequestError):
        return JSONResponse({"error": str(exc), "field": exc.field}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", []) if p not in ("body", "query", "path"))
        return JSONResponse(
            {"error": first.get("msg", "invalid request"), "field": where or "body"}, status_code=422
        )

    @app.exception_handler(HTTPException)
    async def _http_error(request, exc: HTTPException):  # unknown routes and methods
        return JSONResponse({"error": str(exc.detail), "field": "path"}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        logger.exception("unexpected error on %s", request.url.path)
        return JSONResponse(
            {"error": f"internal error ({type(exc).__name__})", "field": None}, status_code=500
        )


async def read_bytes(request, max_bytes: int) -> bytes:
    """The whole body, counted as it arrives: a body over ``max_bytes`` is cut off with 413 whether
    it announced its length or came chunked without one."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise RequestError(f"request of {length} bytes exceeds the {max_bytes}-byte limit", "body", 413)
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:
            raise RequestError(f"request body exceeds the {max_bytes}-byte limit", "body", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def nested_deeper(value, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels deep in a parsed JSON value (walked
    with a stack of its own, no recursion, stopping at the first level past ``limit``)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def _content_type(request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_body(request, max_bytes: int) -> tuple[dict, list[bytes]]:
    """JSON object, or a multipart form (fields + uploaded files), at most ``max_bytes``."""
    kind = _content_type(request)
    if kind not in ("application/json", "multipart/form-data"):
        sent = f"not {kind}" if kind else "with a Content-Type header"
        raise RequestError(
            f"send the body as application/json or multipart/form-data ({sent})",
            "body",
            415,
        )
    raw = await read_bytes(request, max_bytes)
    if kind == "multipart/form-data":
        return await _parse_form(request.headers, raw)
    too_deep = RequestError(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels", "body")
    try:
        data = json.loads(raw)
    except RecursionError:  # deeper than the interpreter's limit: the parser gave up
        raise too_deep from None
    except (ValueError, UnicodeDecodeError):
        raise RequestError("the body must be JSON (or a multipart form with an image)", "body") from None
    if nested_deeper(data, MAX_JSON_DEPTH):
        raise too_deep
    if not isinstance(data, dict):
        raise RequestError("the JSON body must be an object", "body")
    return data, []


async def _parse_form(headers, raw: bytes) -> tuple[dict, list[bytes]]:
    """A multipart form's fields and uploaded files, parsed from the body already read (and counted)."""
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def body():
        yield raw

    try:
        form = await MultiPartParser(headers, body()).parse()
    except MultiPartException as e:
        raise RequestError(f"malformed multipart form ({e.message})", "body") from None
    try:
        files = [
            await f.read() for key in ("image", "images") for f in form.getlist(key) if hasattr(f, "read")
        ]
        return {k: v for k, v in form.items() if not hasattr(v, "read")}, files
    finally:
        await form.close()


def openapi_bodies() -> dict[str, dict]:
    """The request bodies of ``/search`` and ``/classify`` for the OpenAPI schema (``/docs``),
    from pydantic models of their fields: ``route -> openapi_extra``. The routes parse bodies
    themselves (JSON or a multipart form, size counted as it arrives)."""
    from pydantic import BaseModel, Field

    class SearchRequest(BaseModel):
        text: str | None = Field(
            None, max_length=MAX_TEXT_CHARS, description="a text query (or send a form with an image)"
        )
        k: int = Field(5, ge=1, description="hits per model (1 to the service's max_k)")
        models: list[str] | None = Field(None, description="served model names (default: all with an index)")
        traversal: bool = Field(True, description="also run HySAC with the query moved toward safety")
        tau: float | str | None = Field(
            None, description="traversal distance: a number >= 0 or a rule (avg, up_95, paper, authors)"
        )

    class ClassifyRequest(BaseModel):
        texts: list[str] | None = Field(None, description="texts to score (or send a form with images)")
        models: list[str] | None = Field(None, description="served model names (default: all)")

    def form(files: str, fields: dict) -> dict:
        binary = {"type": "string", "format": "binary"}
        return {"type": "object", "properties": {files: binary, **fields}, "required": [files]}

    search_form = form("image", {n: {"type": "string"} for n in SEARCH_FIELDS if n != "text"})
    classify_form = form("images", {"models": {"type": "string"}})
    return {
        "search": _body_spec(SearchRequest.model_json_schema(), search_form),
        "classify": _body_spec(ClassifyRequest.model_json_schema(), classify_form),
    }


def _body_spec(json_schema: dict, form_schema: dict) -> dict:
    content = {"application/json": {"schema": json_schema}, "multipart/form-data": {"schema": form_schema}}
    return {"requestBody": {"required": True, "content": content}}
