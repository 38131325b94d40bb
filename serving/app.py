"""The serving app factory: OpenAI-compatible routes over the engine, the watcher and the recorder.

`create_app(config)` loads the base model once (or takes a preloaded one), attaches an
Aligner adapter, and wires: the `DecodeEngine` (batching model thread), the `TokenWatcher`
(active token from the governance API, hot swaps) and the `OutputRecorder` (every
response to PostgreSQL, spooled when it is down). Routes:

- POST /v1/chat/completions (plain and `stream: true` server-sent events) and GET /v1/models
- GET /healthz (the process answers), GET /readyz (model loaded and a verified token in place)
- GET /metrics (Prometheus), GET /v1/serving/status (what this replica serves now)

Every response names the version and generation it was produced with: headers
`X-Govern-Version` / `X-Govern-Generation` and `system_fingerprint` = `govern-v<version>-g<generation>`
(during a canary, the candidate's for a caller in the canary).

During a rollout (`serving.engine`, `serving.watcher`) both halves of a pair are recorded:
the served answer as always plus its `rollout_id`, and the twin's unreturned answer as a
row of its own, `request_id` = `<served id>~twin`, `twin_of` = the served id, with its own
token's version, output, token counts and latency.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import ValidationError

from governance.client import GovernClient
from serving.engine import (
    DecodeEngine,
    Delta,
    Event,
    Failed,
    Finished,
    GenerationRequest,
    Overloaded,
    SamplingParams,
    Started,
    load_engine_model,
)
from serving.metrics import ServingMetrics
from serving.recorder import DatabaseSink, OutputRecorder, OutputSink
from serving.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    ErrorBody,
    ModelList,
    Readiness,
    error_body,
    validation_error_body,
)
from serving.tokens import ServedToken
from serving.watcher import TokenWatcher

log = logging.getLogger(__name__)


@dataclass
class ServingConfig:
    deployment: str
    model: str = "smollm2-135m-instruct"  # an aligner provider name or a local transformers directory
    dtype: str = "float32"
    max_batch: int = 8  # requests decoded together in one forward pass per step
    queue_size: int = 64  # requests waiting beyond that answer 429
    batch_wait_ms: float = 2.0  # how long a partial batch waits for company
    default_max_tokens: int = 256
    api_url: str = "http://127.0.0.1:8400"
    api_key: str | None = None
    api_timeout: float = 2.0  # a replica must notice an unreachable API quickly and keep serving what it has
    redis_url: str | None = None  # None: no push, reconcile only
    # the push secrets accepted on the channel, current first (`governance.embedded.push_secrets`);
    # empty: every pushed message is dropped and the reconcile alone keeps the replica current
    push_secrets: tuple[str, ...] = field(default=(), repr=False)
    database_url: str | None = None  # None: outputs are not recorded (tests of the engine alone)
    state_dir: Path = Path("state")
    reconcile_interval: float = 5.0
    fence: bool = True  # check the API's generation before each batch (read-your-commits)
    fence_timeout: float = 0.5  # a slower API answer skips the fence (fails open) for a few seconds
    record_batch: int = 500
    record_interval: float = 0.25
    record_queue: int = 10_000
    record_retry: float = 2.0
    max_twins: int | None = None  # rollout twins decoding at once beside max_batch (None: max_batch)
    replica_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def serving_dir(self) -> Path:
        return Path(self.state_dir).resolve() / "serving" / self.deployment


@dataclass
class ServingState:
    config: ServingConfig
    engine: DecodeEngine
    watcher: TokenWatcher
    recorder: OutputRecorder | None
    metrics: ServingMetrics
    digests: Any
    started: float = field(default_factory=time.time)


def _retry_headers(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, round(seconds)))}


def _error(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(message, type_=type_, param=param, code=code), status_code=status, headers=headers)


# -- what the OpenAPI document declares: every status a route really answers, with its body and headers --
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
_TOKEN_HEADERS = {
    "X-Govern-Version": {
        "description": "the version id the answer was produced with (`base` = no token)",
        "required": True,
        "schema": {"type": "string"},
    },
    "X-Govern-Generation": {
        "description": "the deployment generation of that token",
        "required": True,
        "schema": {"type": "integer"},
    },
    "X-Govern-Sha256": {
        "description": "the token artifact's sha256 (empty for the base model)",
        "required": True,
        "schema": {"type": "string"},
    },
    "X-Request-Id": {
        "description": "the completion id, also in the body",
        "required": True,
        "schema": {"type": "string"},
    },
}
_CHAT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ChatCompletion,
        "description": "the completion (`stream: true`: server-sent events of `chat.completion.chunk`, then "
        "`data: [DONE]`)",
        "headers": _TOKEN_HEADERS,
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    400: {
        "model": ErrorBody,
        "description": "the body is not JSON, a parameter is invalid, or the context is too long",
    },
    404: {"model": ErrorBody, "description": "the `model` is not the one this replica serves"},
    429: {"model": ErrorBody, "description": "the request queue is full", "headers": _RETRY_AFTER},
    500: {"model": ErrorBody, "description": "generation failed (not expected; the replica keeps serving)"},
    503: {
        "model": ErrorBody,
        "description": "no verified token yet, or the replica is shutting down",
        "headers": _RETRY_AFTER,
    },
}


def _document_request_body(app: FastAPI) -> None:
    """Publish ChatCompletionRequest in the OpenAPI components.

    The route validates the body itself (so that every failure is an OpenAI-style 400, not
    FastAPI's 422), which means FastAPI does not know the model; we add it here.
    """

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            body = ChatCompletionRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(body.pop("$defs", {}))
            components["ChatCompletionRequest"] = body
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _token_headers(token: ServedToken, request_id: str) -> dict[str, str]:
    return {
        "X-Govern-Version": token.version_label,
        "X-Govern-Generation": str(token.generation),
        "X-Govern-Sha256": token.sha256 or "",
        "X-Request-Id": request_id,
    }


def _output_row(deployment: str, req: GenerationRequest, done: Finished) -> dict[str, Any]:
    """One `outputs` row (`governance.outputs.schemas.OutputIn`): a served answer or a rollout twin.

    A twin's request id is its served request's plus `~twin` (the engine names it so) and
    `twin_of` names the served one; `rollout_id` marks both halves of a pair and a canary
    answer of the candidate."""
    return {
        "request_id": req.request_id,
        "version_id": done.token.version_id,
        "sha256": done.token.sha256,
        "generation": done.token.generation,
        "rollout_id": done.rollout_id,
        "twin_of": done.twin_of,
        "messages": req.messages,
        "output": done.text,
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "latency_ms": round(done.latency_ms, 3),
        "created_at": datetime.fromtimestamp(req.created_wall, UTC).isoformat(),
    }


def create_app(
    config: ServingConfig,
    *,
    loaded: tuple[Any, Any, Any] | None = None,
    sink: OutputSink | None = None,
) -> FastAPI:
    """Build the app. `loaded` = (model with adapter attached, tokenizer, digests) to skip loading;
    `sink` replaces the database sink (benchmarks)."""
    if loaded is None:
        loaded = load_engine_model(config.model, state_dir=str(config.state_dir), dtype=config.dtype)
    model, tokenizer, digests = loaded
    metrics = ServingMetrics()

    recorder: OutputRecorder | None = None
    if sink is None and config.database_url:
        sink = DatabaseSink(config.database_url, config.deployment)
    if sink is not None:
        recorder = OutputRecorder(
            sink,
            spool_path=config.serving_dir / f"spool-{config.replica_id}.jsonl",
            max_queue=config.record_queue,
            batch_size=config.record_batch,
            flush_interval=config.record_interval,
            retry_interval=config.record_retry,
            on_spool=metrics.outputs_spooled.inc,
        )

    def on_finish(req: GenerationRequest, done: Finished) -> None:
        if done.role == "twin":
            assert done.rollout is not None
            metrics.rollout_pairs_recorded.labels(mode=done.rollout.mode).inc()
        else:
            metrics.observe_finished(done)
        if recorder is not None:
            recorder.record(_output_row(config.deployment, req, done))

    engine = DecodeEngine(
        model,
        tokenizer,
        max_batch=config.max_batch,
        queue_size=config.queue_size,
        batch_wait_s=config.batch_wait_ms / 1000.0,
        on_finish=on_finish,
        max_twins=config.max_twins,
    )
    engine.add_swap_listener(lambda t: metrics.on_swap(t))
    watcher = TokenWatcher(
        control=GovernClient(config.api_url, config.api_key, timeout=config.api_timeout),
        deployment=config.deployment,
        engine=engine,
        base_digest=digests.weights,
        shape=digests.shape,
        redis_url=config.redis_url,
        reconcile_interval=config.reconcile_interval,
        fence=config.fence,
        fence_timeout=config.fence_timeout,
        artifact_dir=Path(config.state_dir).resolve() / "serving" / "artifacts",
        on_reject=lambda sha, why: metrics.token_rejections.inc(),
        push_secrets=config.push_secrets,
        on_push_rejected=lambda reason: metrics.push_rejected.labels(reason=reason).inc(),
    )
    state = ServingState(config, engine, watcher, recorder, metrics, digests)
    metrics.bind(state)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        if recorder is not None:
            recorder.start()
        watcher.start()
        try:
            yield
        finally:
            watcher.stop()
            engine.stop()
            if recorder is not None:
                recorder.stop()

    app = FastAPI(title=f"govern serving: {config.deployment}", lifespan=lifespan)
    app.state.serving = state
    _routes(app, state)
    _document_request_body(app)
    return app


def _routes(app: FastAPI, state: ServingState) -> None:
    _probe_routes(app, state)
    _status_routes(app, state)
    _chat_route(app, state)


def _probe_routes(app: FastAPI, state: ServingState) -> None:
    """/healthz, /readyz and /metrics."""
    engine, metrics = state.engine, state.metrics

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        response_model=None,
        responses={
            200: {"model": Readiness, "description": "the model is loaded and a verified token is in place"},
            503: {"model": Readiness, "description": "not ready yet: no verified token (or the model thread stopped)"},
        },
    )
    async def readyz() -> JSONResponse:
        token = engine.current
        body = {
            "ready": engine.ready,
            "model_loaded": True,
            "token_verified": token is not None,
            "version_id": token.version_id if token else None,
            "generation": token.generation if token else None,
        }
        return JSONResponse(body, status_code=200 if engine.ready else 503)

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={
            200: {
                "description": "Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    )
    async def prom() -> Response:
        data, content_type = metrics.render()
        return Response(data, media_type=content_type)


def _status_routes(app: FastAPI, state: ServingState) -> None:
    """/v1/serving/status (what this replica serves now) and /v1/models."""
    config, engine = state.config, state.engine

    @app.get("/v1/serving/status")
    async def status() -> dict[str, Any]:
        token = engine.current
        rec = state.recorder
        return {
            "deployment": config.deployment,
            "replica_id": config.replica_id,
            "model": state.digests.name,
            "base_model_digest": state.digests.weights,
            "version_id": token.version_id if token else None,
            "sha256": token.sha256 if token else None,
            "generation": token.generation if token else None,
            "ready": engine.ready,
            "queue_depth": engine.queue_depth,
            "swaps": engine.stats.swaps,
            "swapped_at": engine.swapped_at,
            "last_sync": state.watcher.last_sync.as_dict() if state.watcher.last_sync else None,
            "cached_tokens": state.watcher.cached_tokens,
            "rejected": dict(state.watcher.rejected),
            "pubsub_connected": state.watcher.pubsub_connected,
            "unconfirmed_ignored": state.watcher.unconfirmed_ignored,  # pushed states the API did not confirm
            "push_rejected": dict(state.watcher.push_rejected),  # messages without a valid MAC, by reason
            "rollout": _rollout_status(state),
            "spool_pending": rec.spool_pending if rec else 0,
            "recorded": rec.stats.__dict__ if rec else None,
        }

    @app.get("/v1/models", response_model=ModelList)
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": config.deployment, "object": "model", "created": int(state.started), "owned_by": "govern"}],
        }


def _rollout_status(state: ServingState) -> dict[str, Any] | None:
    """The rollout this replica applies (or was asked to and could not), and its twins so far."""
    applied, desired = state.engine.rollout, state.watcher.desired_rollout
    if applied is None and desired is None:
        return None
    stats = state.engine.stats
    return {
        "applied": applied.as_dict() if applied is not None else None,
        "desired": desired.as_json() if desired is not None else None,
        "problem": state.watcher.rollout_problem,  # why the desired one is not applied
        "pairs_started": dict(stats.pairs_started),
        "twins_skipped": dict(stats.twins_skipped),
        "twin_failures": stats.twin_failures,
        "candidate_rejections": state.watcher.candidate_rejections,
    }


def _chat_route(app: FastAPI, state: ServingState) -> None:
    """POST /v1/chat/completions, timed into the request metrics."""

    @app.post(
        "/v1/chat/completions",
        response_model=None,
        responses=_CHAT_RESPONSES,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}},
            }
        },
    )
    async def chat(request: Request) -> Response:
        started = time.perf_counter()
        response = await _chat(request, state)
        state.metrics.observe_request(
            response.status_code, time.perf_counter() - started, stream=isinstance(response, StreamingResponse)
        )
        return response


async def _chat(request: Request, state: ServingState) -> Response:
    """Validate, queue, then answer with the whole completion or a stream of chunks."""
    req = await _chat_request(request, state)
    if isinstance(req, Response):
        return req
    gen = _generation(req, state)
    if isinstance(gen, Response):
        return gen
    request_id, events = gen
    first = await events.get()
    if isinstance(first, Failed):
        return _error(503, first.message, type_="server_error", code="unavailable", headers=_retry_headers(1))
    assert isinstance(first, Started)
    token, deployment = first.token, state.config.deployment
    headers = _token_headers(token, request_id)
    created = int(time.time())
    if not req.stream:
        while True:
            event = await events.get()
            if isinstance(event, Finished):
                return JSONResponse(_completion(request_id, created, deployment, event), headers=headers)
            if isinstance(event, Failed):
                return _error(500, event.message, type_="server_error", code="generation_failed")
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    return StreamingResponse(
        _sse(events, request_id, created, deployment, token, include_usage),
        media_type="text/event-stream",
        headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _chat_request(request: Request, state: ServingState) -> ChatCompletionRequest | Response:
    """The validated body, or the error answer: bad JSON or fields (400), unknown model (404), not ready (503)."""
    config = state.config
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(400, "the request body is not valid JSON", code="invalid_json")
    if not isinstance(body, dict):
        return _error(400, "the request body must be a JSON object", code="invalid_json")
    try:
        req = ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        return JSONResponse(validation_error_body(exc), status_code=400)
    if req.model not in {config.deployment, config.model, state.digests.name}:
        return _error(
            404,
            f"the model {req.model!r} does not exist; this server serves {config.deployment!r}",
            param="model",
            code="model_not_found",
        )
    if not state.engine.ready:
        return _error(
            503,
            "the replica is not ready: no verified token yet",
            type_="server_error",
            code="not_ready",
            headers=_retry_headers(1),
        )
    return req


def _generation(req: ChatCompletionRequest, state: ServingState) -> tuple[str, asyncio.Queue[Event]] | Response:
    """Queue the request on the engine: (its id, the queue its events arrive on), or the error answer."""
    engine = state.engine
    messages = req.chat()
    try:
        prompt_ids = engine.encode(messages)
    except Exception as exc:  # a chat template can refuse a message order
        return _error(400, f"cannot build a prompt from these messages: {exc}", param="messages")
    max_tokens = req.max_completion_tokens or req.max_tokens or state.config.default_max_tokens
    if len(prompt_ids) + max_tokens > engine.max_context:
        return _error(
            400,
            f"this model's maximum context length is {engine.max_context} tokens; the messages take "
            f"{len(prompt_ids)} and max_tokens asks for {max_tokens}; shorten the messages or lower max_tokens",
            param="messages",
            code="context_length_exceeded",
        )
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[Event] = asyncio.Queue()

    def emit(event: Event) -> None:
        loop.call_soon_threadsafe(events.put_nowait, event)

    gen = GenerationRequest(
        prompt_ids=prompt_ids,
        params=SamplingParams(
            max_tokens=max_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            seed=req.seed,
            stop=req.stop_list(),
        ),
        emit=emit,
        stream=req.stream,
        request_id=f"chatcmpl-{uuid.uuid4().hex}",
        messages=messages,
        user=req.user,
    )
    try:
        engine.submit(gen)
    except Overloaded as exc:
        state.metrics.rejected_overload.inc()
        return _error(
            429,
            str(exc),
            type_="rate_limit_error",
            code="server_overloaded",
            headers=_retry_headers(exc.retry_after),
        )
    return gen.request_id, events


def _completion(request_id: str, created: int, model: str, done: Finished) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": done.token.fingerprint,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": done.text},
                "logprobs": None,
                "finish_reason": done.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": done.prompt_tokens,
            "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens,
        },
    }


async def _sse(
    events: asyncio.Queue[Event], request_id: str, created: int, model: str, token: ServedToken, include_usage: bool
) -> AsyncIterator[bytes]:
    def chunk(
        delta: dict[str, Any], finish: str | None, usage: dict[str, int] | None = None, choices: bool = True
    ) -> bytes:
        body: dict[str, Any] = {
            "id": request_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": token.fingerprint,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}] if choices else [],
        }
        if usage is not None:
            body["usage"] = usage
        return f"data: {json.dumps(body, separators=(',', ':'))}\n\n".encode()

    yield chunk({"role": "assistant", "content": ""}, None)
    while True:
        event = await events.get()
        if isinstance(event, Delta):
            yield chunk({"content": event.text}, None)
        elif isinstance(event, Finished):
            yield chunk({}, event.finish_reason)
            if include_usage:
                usage = {
                    "prompt_tokens": event.prompt_tokens,
                    "completion_tokens": event.completion_tokens,
                    "total_tokens": event.prompt_tokens + event.completion_tokens,
                }
                yield chunk({}, None, usage, choices=False)
            break
        elif isinstance(event, Failed):
            err = error_body(event.message, type_="server_error", code="generation_failed")
            yield f"data: {json.dumps(err)}\n\n".encode()
            break
    yield b"data: [DONE]\n\n"
