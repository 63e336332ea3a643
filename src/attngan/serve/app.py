"""The web page and JSON API: a thin shell over AttnGANPipeline.

`create_app(pipeline)` or `create_app({name: Served(pipeline, captioner), ...})` returns a FastAPI
app offering one model or several (the first is the default; a request picks one by "model"):
  GET  /                   the single page (static/index.html, app.js, style.css; works offline)
  POST /api/v1/generate    caption -> PNGs per stage (labelled by resolution) + per-word overlays
  GET  /api/v1/health      liveness and queue state
  GET  /api/v1/models      every model's summary (as below), and which is the default
  GET  /api/v1/model       one model's (?model=NAME; default: the default model): config summary,
                           vocabulary size, stage resolutions, example prompts, its captioner
  GET  /openapi.json       the schema (the CDN-based /docs pages are off: the app stays offline)

Every model stays loaded for the server's life (each is a few megabytes and loads in well under a
second, so loading on first use would save little and move the wait onto a user's request).
Inference runs in one worker thread (batching.MicroBatcher) that runs every model, a batch never
mixing two; PNG encoding runs in a pool of one thread per core, so the event loop only parses,
validates and answers. Error bodies are `{"error": str}` and never carry a traceback or a file path.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import io
import json
import logging
import os
import secrets
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from attngan.data.synth_birds import MOTIVATING_PROMPTS
from attngan.errors import AttnGANError
from attngan.serve.batching import (MAX_WAIT_MS, Job, JobResult, MicroBatcher, QueueFull, ShuttingDown,
                                    WorkerDied)
from attngan.pipeline import AttnGANPipeline, CaptionError
from attngan.viz import attention_overlays, to_pil, word_confidence

log = logging.getLogger(__name__)

MAX_CAPTION_CHARS = 300
MAX_SAMPLES = 8
MAX_BODY_BYTES = 16 * 1024
MAX_SEED = 2**63 - 1
# The page's example prompts, by the data set a model was trained on. SynthScenes': the paper's
# COCO sentences in the scene grammar's words (a red double-decker bus floating on top of a lake, a
# stop sign flying in blue skies, a herd grazing on a grass field), then sentences of the grammar.
SCENE_EXAMPLES = (
    "a red bus is floating on a lake",
    "a stop sign flying in the sky",
    "a herd of cows grazing on the grass",
    "two yellow kites flying over the beach",
    "a white boat sailing on the lake",
    "three black cars parked in the snow",
)
EXAMPLES: dict[str, tuple[str, ...]] = {"birds": MOTIVATING_PROMPTS, "coco": SCENE_EXAMPLES}
# What the page calls a model's pictures, by its data set.
SUBJECTS = {"birds": "bird", "coco": "scene"}
# The bundled captioner that reads each data set's images ("I think it's ..."), when installed.
CAPTIONERS = {"birds": "synthbirds-captioner", "coco": "synthscenes-captioner"}
MAX_MODEL_NAME = 200
# Overlays are drawn at least this large: the first stages are too small to read word maps on.
MIN_OVERLAY_PX = 128
MAX_OVERLAY_PX = 256
# The page's files, served from this fixed table: no part of a URL ever becomes a file path.
STATIC_FILES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8",
                "favicon.svg": "image/svg+xml"}
# The page loads nothing from elsewhere; the browser enforces it.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; object-src 'none'; "
                               "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


# Request and response schemas (also the OpenAPI documentation).

class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    caption: StrictStr = Field(max_length=MAX_CAPTION_CHARS, description="an English sentence")
    seed: StrictInt | None = Field(default=None, ge=0, le=MAX_SEED,
                                   description="noise seed; omitted: drawn at random and returned")
    n: StrictInt = Field(default=1, ge=1, le=MAX_SAMPLES, description="number of samples")
    attention: StrictBool = Field(default=True, description="include per-word attention overlays")
    model: StrictStr | None = Field(default=None, max_length=MAX_MODEL_NAME,
                                    description="the model to draw with (a name from /api/v1/models); "
                                                "omitted: the server's default model")


class StageImage(BaseModel):
    stage: int
    width: int
    height: int
    label: str = Field(description="the resolution, e.g. '256x256'")
    png: str = Field(description="base64-encoded PNG")


class WordOverlay(BaseModel):
    index: int = Field(description="position of the word in `tokens`")
    word: str
    score: float = Field(description="attention mass above twice the uniform level (ranking)")
    png: str = Field(description="base64-encoded PNG: the stage image with this word's map")


class AttentionStage(BaseModel):
    stage: int = Field(description="the image stage this attention drew")
    map_resolution: int = Field(description="side of the attention map (pre-upsampling)")
    overlay_resolution: int
    words: list[WordOverlay]


class Sample(BaseModel):
    index: int
    stages: list[StageImage]
    attention: list[AttentionStage]
    caption: str | None = Field(default=None, description="what the captioner reads in the final image "
                                                         "(\"I think it's ...\"); null without a captioner")


class Timing(BaseModel):
    total_ms: float
    queue_ms: float
    inference_ms: float = Field(description="the generator call of the whole batch")
    render_ms: float
    batch_images: int = Field(description="images generated together with this request's")


class GenerateResponse(BaseModel):
    model: str = Field(description="the model that drew the images")
    caption: str
    seed: int
    n: int
    tokens: list[str] = Field(description="the words the images were generated from")
    dropped: list[str] = Field(description="out-of-vocabulary words, ignored")
    truncated: list[str] = Field(description="known words beyond the model's caption length")
    samples: list[Sample]
    timing: Timing


class ErrorResponse(BaseModel):
    error: str


# Helpers.

def error_response(status: int, message: str, headers: dict[str, str] | None = None,
                   **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _b64_png(im: Image.Image) -> str:
    # zlib level 1: PNG encoding is most of a request's CPU time (a word overlay takes ~4x longer
    # at the default level 6) for files only ~20% larger.
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _validation_message(errors: list[dict]) -> tuple[int, str]:
    """FastAPI's error list -> one status and one readable sentence (no input echoed back)."""
    for e in errors:
        if e.get("type") == "json_invalid":
            reason = (e.get("ctx") or {}).get("error", "")
            return 400, f"request body is not valid JSON{f' ({reason})' if reason else ''}"
    parts = []
    for e in errors[:5]:
        loc = [str(x) for x in e.get("loc", ()) if x != "body"]
        field = ".".join(loc)
        kind = e.get("type", "")
        if not field:
            parts.append("the request body must be a JSON object with a 'caption' string")
        elif kind == "extra_forbidden":
            parts.append(f"unknown field '{field}' (allowed: caption, seed, n, attention, model)")
        elif kind == "missing":
            parts.append(f"'{field}' is required")
        else:
            parts.append(f"'{field}': {e.get('msg', 'invalid value')}")
    return 422, "; ".join(dict.fromkeys(parts)) or "invalid request"


class BodyLimit:
    """ASGI middleware: refuse request bodies over `limit` bytes with 413 before anyone parses them.

    Bodies are read up to limit + 1 bytes whether or not Content-Length is sent (chunked uploads),
    then replayed to the app, so an oversized body never reaches JSON parsing.
    """

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._refuse(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return await self._refuse(scope, receive, send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send):
        response = error_response(413, f"request body is larger than {self.limit} bytes",
                                  headers={"Connection": "close"})
        await response(scope, receive, send)


# The app.

@dataclass
class Served:
    """One model a server offers: its pipeline, and the captioner that reads its final images
    ("I think it's ..."; attngan.captioner.Captioner), or None with `note` saying why (shown on the
    page in place of the caption)."""
    pipeline: AttnGANPipeline
    captioner: Any = None
    note: str | None = None


@dataclass
class _Offer:
    """A served model as the app uses it: what it is, and what one probe sample told of it."""
    name: str
    pipeline: AttnGANPipeline
    captioner: Any
    att_stage: list[int]   # the image stage each attention map drew
    info: dict[str, Any]   # its summary (/api/v1/model)


def _offer(name: str, served: Served, limits: dict[str, int]) -> _Offer:
    pipeline, cfg = served.pipeline, served.pipeline.config
    if len(pipeline.vocab) < 2:
        raise AttnGANError(f"the vocabulary of model '{name}' has no words")
    # One sample at start-up: warms the model and tells which resolutions it really produces
    # (an AttnDCGAN has one image head; the config alone does not say so).
    z, eps = pipeline.sample_noise(1, 0)
    probe = pipeline.generate_from_ids(torch.tensor([[1]]), torch.tensor([1]), z, eps)
    stage_sizes = [(int(x.shape[-1]), int(x.shape[-2])) for x in probe.images]
    n_stages, n_att = len(probe.images), len(probe.attention)
    # attention[k] drives the stage after it; with a single head (DCGAN) all land on the last image.
    att_stage = [max(0, min(n_stages - 1, n_stages - n_att + k)) for k in range(n_att)]
    att_map_sizes = [int(a.shape[-1]) for a in probe.attention]
    dataset = cfg.data.dataset
    info = {
        "name": name,
        "device": str(pipeline.device),
        "vocabulary_size": len(pipeline.vocab),
        "max_words": pipeline.words_num,
        "stages": [{"stage": s, "width": w, "height": h, "label": f"{w}x{h}"}
                   for s, (w, h) in enumerate(stage_sizes)],
        "attention_stages": [{"stage": att_stage[k], "map_resolution": att_map_sizes[k]}
                             for k in range(n_att)],
        "config": {
            "dataset": dataset, "base_size": cfg.data.base_size, "branch_num": cfg.data.branch_num,
            "embedding_dim": cfg.text.embedding_dim, "z_dim": cfg.gan.z_dim,
            "condition_dim": cfg.gan.condition_dim, "gf_dim": cfg.gan.gf_dim,
            "r_num": cfg.gan.r_num, "dcgan": cfg.gan.dcgan,
        },
        "limits": limits,
        "subject": SUBJECTS.get(dataset, "image"),
        "examples": list(EXAMPLES.get(dataset, ())),
        "captioner": None if served.captioner is None else served.captioner.config.name,
        "captioner_note": None if served.captioner is not None else served.note,
    }
    return _Offer(name, pipeline, served.captioner, att_stage, info)


def create_app(models: AttnGANPipeline | dict[str, Served], max_batch: int = 8, queue_size: int = 64,
               batch_wait_ms: float = 5.0, max_body_bytes: int = MAX_BODY_BYTES, captioner=None) -> FastAPI:
    """The web app over loaded models; starts its inference worker thread. `models`: one pipeline
    (called by its config's name; with a `captioner`, every sample also carries what it reads in
    the final image), or {name: Served} whose first entry is the default model."""
    if max_batch < 1:
        raise AttnGANError(f"max_batch must be at least 1, got {max_batch}")
    if queue_size < 1:
        raise AttnGANError(f"queue size must be at least 1, got {queue_size}")
    if not 0 <= batch_wait_ms <= MAX_WAIT_MS:  # NaN fails too
        raise AttnGANError(f"batch wait must be from 0 to {MAX_WAIT_MS:g} ms, got {batch_wait_ms}")
    if isinstance(models, dict):
        if captioner is not None:
            raise ValueError("with several models, each one's captioner goes in its Served")
        served = dict(models)
    else:
        served = {models.config.name: Served(models, captioner)}
    if not served:
        raise AttnGANError("no model to serve")
    limits = {"caption_chars": MAX_CAPTION_CHARS, "n": MAX_SAMPLES, "body_bytes": max_body_bytes,
              "max_batch": max_batch, "queue": queue_size}
    offers = {name: _offer(name, s, limits) for name, s in served.items()}
    default = next(iter(offers.values()))

    batcher = MicroBatcher(default.pipeline, max_batch=max_batch, queue_size=queue_size,
                           wait_ms=batch_wait_ms).start()
    # PNG encoding gets one thread per core: a whole batch finishing at once must not start
    # dozens of encoders fighting over the cores (and over the generator's threads).
    render_pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1)),
                                                        thread_name_prefix="attngan-render")
    static_dir = resources.files("attngan.serve") / "static"
    index_html = (static_dir / "index.html").read_text(encoding="utf-8")
    static = {name: (static_dir / name).read_bytes() for name in STATIC_FILES}
    served_names = ", ".join(offers)

    def shutdown() -> None:
        """Stop the inference worker and the encoders (the lifespan does it; in-process tests too)."""
        batcher.stop()
        render_pool.shutdown(wait=False, cancel_futures=True)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        await run_in_threadpool(shutdown)

    app = FastAPI(title="AttnGAN", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Text-to-image generation with attention (Xu et al., CVPR 2018).")
    app.state.batcher = batcher
    app.state.pipeline = default.pipeline
    app.state.models = {name: o.pipeline for name, o in offers.items()}
    app.state.shutdown = shutdown
    app.add_middleware(BodyLimit, limit=max_body_bytes)

    # Errors: one JSON shape, no internals.

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        content_type = request.headers.get("content-type", "")
        body_as_a_whole = any(tuple(e.get("loc", ())) == ("body",) for e in errors)
        if body_as_a_whole and "json" not in content_type.lower():
            # FastAPI reads JSON only when told so (curl -d sends a form type by default).
            return error_response(415, "send the body as JSON with the header "
                                       "'Content-Type: application/json'")
        status, message = _validation_message(errors)
        return error_response(status, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 400 and "parsing the body" in message:
            message = "request body is not valid JSON (or not UTF-8)"
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(_request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error while serving a request", exc_info=exc)
        return error_response(500, "internal server error; the details are in the server log")

    # The page.

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(index_html, headers=PAGE_HEADERS)

    @app.get("/static/{name}", include_in_schema=False)
    async def static_file(name: str) -> Response:
        if name not in static:
            return error_response(404, "no such file")
        return Response(static[name], media_type=STATIC_FILES[name], headers=PAGE_HEADERS)

    # The API.

    def unknown_model() -> str:
        # The name asked for is not repeated back: the answer lists the ones there are.
        return f"'model': no such model on this server; it serves {served_names}"

    @app.get("/api/v1/health", responses={503: {"model": ErrorResponse,
                                                "description": "the inference worker has stopped"}})
    async def health() -> Any:
        # A supervisor restarts on a non-200 answer: a server whose worker died must not say ok.
        if not batcher.alive:
            return JSONResponse({"error": batcher.death_message(), "status": "failed", "model": default.name},
                                status_code=503)
        return {"status": "ok", "model": default.name, "models": list(offers),
                "device": str(default.pipeline.device), "queue": batcher.stats()}

    @app.get("/api/v1/models")
    async def models_summary() -> dict:
        return {"default": default.name, "models": [o.info for o in offers.values()]}

    @app.get("/api/v1/model", responses={404: {"model": ErrorResponse, "description": "no such model"}})
    async def model(name: str | None = Query(default=None, alias="model", max_length=MAX_MODEL_NAME,
                                             description="a model's name; omitted: the default")) -> Any:
        offer = default if name is None else offers.get(name)
        if offer is None:
            return error_response(404, unknown_model())
        return offer.info

    @app.post("/api/v1/generate", response_model=GenerateResponse,
              responses={400: {"model": ErrorResponse, "description": "body is not valid JSON"},
                         413: {"model": ErrorResponse, "description": "body too large"},
                         415: {"model": ErrorResponse, "description": "body not sent as JSON"},
                         422: {"model": ErrorResponse,
                               "description": "bad field, unknown model, empty or all out-of-vocabulary "
                                              "caption"},
                         503: {"model": ErrorResponse,
                               "description": "queue full (see Retry-After), or the inference worker "
                                              "has stopped"}})
    async def generate(req: GenerateRequest) -> Response:
        t0 = time.perf_counter()
        offer = default if req.model is None else offers.get(req.model)
        if offer is None:
            return error_response(422, unknown_model())
        pipeline = offer.pipeline
        caption = req.caption.strip()
        try:
            enc = pipeline.encode_caption(caption)  # the same words generate and the report use
        except CaptionError as e:
            field = f"'caption' for {offer.name}" if len(offers) > 1 else "'caption'"
            return error_response(422, f"{field}: {e}", **({"dropped": e.dropped} if e.dropped else {}))
        kept = enc.ids
        seed = req.seed if req.seed is not None else secrets.randbelow(2**31)
        noise, ca_noise = pipeline.sample_noise(req.n, seed)
        try:
            future = batcher.submit(Job(kept, noise, ca_noise, pipeline))
        except QueueFull as e:
            return error_response(503, str(e), headers={"Retry-After": str(e.retry_after_s)})
        except ShuttingDown as e:
            return error_response(503, str(e), headers={"Retry-After": "5"})
        except WorkerDied as e:
            return error_response(503, str(e))
        try:
            result = await asyncio.wrap_future(future)
        except ShuttingDown as e:
            return error_response(503, str(e), headers={"Retry-After": "5"})
        except WorkerDied as e:
            return error_response(503, str(e))
        except AttnGANError as e:
            return error_response(422, str(e))
        tokens = enc.tokens
        t_render = time.perf_counter()
        # One task per sample (and one for the captions): a request for several samples uses every
        # encoder thread instead of one.
        loop = asyncio.get_running_loop()
        captions = loop.run_in_executor(render_pool, _caption_final_images, result, offer.captioner)
        samples = await asyncio.gather(*(
            loop.run_in_executor(render_pool, _render_sample, result, k, tokens, req.attention, offer.att_stage)
            for k in range(result.images[0].shape[0])))
        for sample, text in zip(samples, await captions):
            sample["caption"] = text
        done = time.perf_counter()
        body = {
            "model": offer.name,
            "caption": caption,
            "seed": seed,
            "n": req.n,
            "tokens": tokens,
            "dropped": enc.dropped,
            "truncated": enc.truncated,
            "samples": samples,
            "timing": {"total_ms": round(1000 * (done - t0), 2),
                       "queue_ms": round(1000 * result.queue_s, 2),
                       "inference_ms": round(1000 * result.inference_s, 2),
                       "render_ms": round(1000 * (done - t_render), 2),
                       "batch_images": result.batch_images},
        }
        # Returned as a Response: the schema above documents it without re-validating megabytes.
        return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")

    return app


def _overlay_base(image: torch.Tensor) -> Image.Image:
    im = to_pil(image)
    size = min(max(im.width, MIN_OVERLAY_PX), MAX_OVERLAY_PX)
    return im if im.width == size else im.resize((size, size), Image.BICUBIC)


def _caption_final_images(result: JobResult, captioner=None) -> list[str | None]:
    """The captioner's reading of each final image (one batch), or None per sample without one."""
    if captioner is None:
        return [None] * result.images[-1].shape[0]
    # Captioned as an image file would be: rounded to 8 bits first.
    return captioner(((result.images[-1].float().clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1)


def _render_sample(result: JobResult, k: int, tokens: list[str], with_attention: bool,
                   att_stage: list[int]) -> dict:
    """PNG-encode sample k's images and per-word overlays (runs in the thread pool); its
    "caption" is filled in by the caller."""
    T = len(tokens)
    stages = []
    for s, img in enumerate(result.images):
        h, w = int(img.shape[-2]), int(img.shape[-1])
        stages.append({"stage": s, "width": w, "height": h, "label": f"{w}x{h}",
                       "png": _b64_png(to_pil(img[k]))})
    attention = []
    if with_attention:
        for a, att in enumerate(result.attention):
            s = att_stage[a]
            base = _overlay_base(result.images[s][k])
            maps = att[k, :T]
            scores = word_confidence(maps, T)
            overlays = attention_overlays(base, maps)  # one scale for the caption's words
            attention.append({
                "stage": s,
                "map_resolution": int(maps.shape[-1]),
                "overlay_resolution": base.width,
                "words": [{"index": i, "word": tokens[i], "score": float(f"{float(scores[i]):.4g}"),
                           "png": _b64_png(overlays[i])} for i in range(T)],
            })
    return {"index": k, "stages": stages, "attention": attention, "caption": None}
