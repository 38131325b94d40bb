"""The model thread: dynamic batching, per-row sampling and the in-place token swap.

One thread owns the model. Requests wait in a bounded queue; the thread takes up to
`max_batch` of them, left-pads their prompts and decodes them together with a KV cache,
one forward pass per step for the whole batch. Each row keeps its own sampling
parameters (temperature, top_p, seed, stop, max_tokens), so requests need not agree to
share a batch. A full queue raises `Overloaded` at once instead of letting callers hang.

Swaps and admissions happen between decode steps, on this thread. A row finishes (and is
answered) as soon as it is done; between two steps the thread applies a proposed token
and admits waiting requests into the free rows: they are prefilled with the token
current at that moment and their keys and values join the running cache (left-padded,
masked), while the rows in flight finish on the token they started with (the adapter's
per-row tokens). So every response is produced with one token, the newest one applied
before it started, no request fails because of a swap, and a swap reaches new requests
within one decode step rather than after the longest request in flight. Before a batch,
and before admitting requests into a running one, the optional `fence` hook runs (see
`serving.watcher`): it may propose a newer token that is applied first. Events go back to
callers through `GenerationRequest.emit`, which is thread-safe towards asyncio
(`call_soon_threadsafe`).

Rollouts: a proposed token may come with a `ServedRollout` (the verified candidate and its
plan); the two are one state, applied together. Whether a request takes part is decided
on this thread when it is admitted, with the plan current at that moment, and its twin
row (same prompt ids and sampling parameters, its own RNG seeded alike) is prefilled
with it and decodes in the same batch, on per-row tokens. Shadow: the twin decodes with
the candidate and the user gets the active answer. Canary: a caller in the canary is
served by the candidate and the twin decodes with the active token. A twin is never
emitted or streamed, only handed to `on_finish` (`Finished.role == "twin"`); twins do not
count against `max_batch` (at most `max_twins` at once, more are skipped and counted),
and a twin's failure never fails or delays its served row. Per-row tokens are exact (the
adapter projects each distinct token alone, as for a shared one), so a twin does not
change its served row's tokens; the one effect left is the base model's own, a batch of
another size rounds its matmuls differently (about 1e-7 in the logits), as for any
request joining a running batch.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from aligner import attach
from aligner.batching import decode_step, eos_ids, keep_rows, prefill
from aligner.batching import joinable as _joinable
from aligner.batching import merge_cache as _merge
from aligner.model import get_adapter
from aligner.providers import load_base_model
from serving.tokens import ServedRollout, ServedToken

log = logging.getLogger(__name__)
_ids = itertools.count(1)


class Overloaded(RuntimeError):
    """The request queue is full; the caller should retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Started:
    token: ServedToken


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Finished:
    text: str
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int
    token: ServedToken
    latency_ms: float
    role: str = "served"  # "served": the caller's answer; "twin": the unreturned half of a rollout pair
    # the rollout the row takes part in: a twin, a served row with a twin, or a canary answer of the candidate
    rollout: ServedRollout | None = None
    twin_of: str | None = None  # a twin's served request id

    @property
    def rollout_id(self) -> int | None:
        return self.rollout.rollout_id if self.rollout is not None else None


@dataclass(frozen=True)
class Failed:
    message: str


Event = Started | Delta | Finished | Failed


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    params: SamplingParams
    emit: Callable[[Event], None]  # called on the model thread; must not block
    stream: bool = False
    request_id: str = field(default_factory=lambda: f"req-{next(_ids)}")
    messages: list[dict[str, Any]] = field(default_factory=list)
    created: float = field(default_factory=time.monotonic)
    created_wall: float = field(default_factory=time.time)
    user: str | None = None  # the caller's stable key (OpenAI `user`): a canary routes by it


@dataclass
class EngineStats:
    batches: int = 0
    rows: int = 0
    completion_tokens: int = 0
    swaps: int = 0
    last_batch_tokens_per_s: float = 0.0
    pairs_started: dict[str, int] = field(default_factory=dict)  # mode -> twins admitted
    twins_skipped: dict[str, int] = field(default_factory=dict)  # "bound": over max_twins; "cut": left unfinished
    twin_failures: int = 0  # twins lost to an error (their own, a failed batch, a candidate the adapter refused)
    twin_tokens: int = 0  # tokens decoded by twins (the cost of a rollout)


def _discard(event: Event) -> None:
    """A twin's emit: its answer is recorded, never sent."""


class _Row:
    """Decoding state of one request inside a batch."""

    def __init__(
        self,
        req: GenerationRequest,
        tokenizer: Any,
        eos: set[int],
        token: ServedToken,
        *,
        role: str = "served",
        rollout: ServedRollout | None = None,
        twin_of: str | None = None,
    ) -> None:
        self.req = req
        self.token = token  # the whole response is produced with this token
        self.role = role  # "served" | "twin"
        self.rollout = rollout  # set on both halves of a pair and on a canary answer
        self.twin_of = twin_of
        self.failed = False  # a twin that raised: dropped, never finished
        self.tokenizer = tokenizer
        self.eos = eos
        self.ids: list[int] = []
        self.text = ""
        self.sent = 0  # characters already streamed
        self.done = False
        self.finish_reason = "length"
        self.generator: torch.Generator | None = None
        if req.params.seed is not None:
            self.generator = torch.Generator().manual_seed(int(req.params.seed))
        self.hold = max((len(s) for s in req.params.stop), default=1) - 1

    def push(self, token_id: int) -> None:
        params = self.req.params
        if token_id in self.eos:
            self.done, self.finish_reason = True, "stop"
        else:
            self.ids.append(token_id)
            self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
            for stop in params.stop:
                at = self.text.find(stop)
                if at != -1:
                    self.text = self.text[:at]
                    self.done, self.finish_reason = True, "stop"
                    break
        if not self.done and len(self.ids) >= params.max_tokens:
            self.done, self.finish_reason = True, "length"
        if self.req.stream:
            self._stream()

    def _stream(self) -> None:
        if self.done:
            safe = len(self.text)
        else:
            # Hold back what could still become a stop string, and half-decoded UTF-8.
            safe = len(self.text) - self.hold
            while safe > self.sent and self.text[safe - 1] == "\ufffd":
                safe -= 1
        if safe > self.sent:
            self.req.emit(Delta(self.text[self.sent : safe]))
            self.sent = safe


class DecodeEngine:
    """Owns the model on one thread; `submit` enqueues, `propose` offers a newer token."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_batch: int = 8,
        queue_size: int = 64,
        batch_wait_s: float = 0.002,
        max_context: int | None = None,
        on_finish: Callable[[GenerationRequest, Finished], None] | None = None,
        fence: Callable[[], None] | None = None,
        admit_while_running: bool = True,
        max_twins: int | None = None,
    ) -> None:
        if max_batch < 1 or queue_size < 1:
            raise ValueError("max_batch and queue_size must be at least 1")
        self.max_twins = max_batch if max_twins is None else max(0, max_twins)  # rollout rows beside max_batch
        self.model = model
        self.tokenizer = tokenizer
        self.adapter = get_adapter(model)
        self.max_batch = max_batch
        self.queue_size = queue_size
        self.batch_wait_s = batch_wait_s
        self.max_context = max_context or int(getattr(model.config, "max_position_embeddings", 2048))
        self.on_finish = on_finish
        self.fence = fence
        self.admit_while_running = admit_while_running  # False: a batch runs to its end before swaps and new rows
        self.stats = EngineStats()
        self._row_tokens: list[ServedToken] | None = None  # what the adapter holds, row by row
        self._queue: deque[GenerationRequest] = deque()
        self._cond = threading.Condition()
        self._pending: ServedToken | None = None
        self._pending_rollout: ServedRollout | None = None  # proposed with `_pending`: one state
        self._replace = False  # the pending token replaces the current one whatever their generations
        self._current: ServedToken | None = None
        self._rollout: ServedRollout | None = None  # applied with `_current`
        self._live_twins = 0  # twin rows in the running batch
        self._stop = False
        self._busy = False
        self._thread: threading.Thread | None = None
        self._swap_listeners: list[Callable[[ServedToken], None]] = []
        self.swapped_at: float | None = None  # wall time of the last swap (propagation measurements)
        self.eos = eos_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(self.eos), 0)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="serving-model", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- tokens ----------------------------------------------------------------------------
    @property
    def current(self) -> ServedToken | None:
        """The token the engine serves now (None until the first verified token is applied)."""
        return self._current

    @property
    def rollout(self) -> ServedRollout | None:
        """The rollout applied with the current token (None: no twins, no canary)."""
        return self._rollout

    @property
    def known_generation(self) -> int:
        """The highest generation applied or waiting to be applied; -1 before the first.

        While an authoritative replacement waits, it is the replacement's generation: the
        current token is about to go, whatever generation it claimed.
        """
        pending = self._pending
        if pending is not None and self._replace:
            return pending.generation
        best = -1
        for t in (self._current, pending):
            if t is not None and t.generation > best:
                best = t.generation
        return best

    def propose(self, token: ServedToken, *, rollout: ServedRollout | None = None, replace: bool = False) -> bool:
        """Offer a verified token (and the rollout of its generation, if one runs); applied before
        the next batch if its generation is newer. Token and rollout are one state: they are
        applied together, and a proposal without a rollout ends the one applied.

        `replace=True` is for the control plane's own answer (the watcher's reconcile): the
        state is applied even if its generation is not above the current one, as long as it
        differs from what the engine has or awaits. That is how a replica leaves a generation
        it should never have adopted (a forged Redis message claiming a huge one), and how a
        candidate that could not be fetched at first joins its generation later.
        """
        with self._cond:
            if replace:
                have: ServedToken | None = self._pending
                have_rollout = self._pending_rollout
                if have is None:
                    have, have_rollout = self._current, self._rollout
                if have is not None and _same(have, token) and _same_rollout(have_rollout, rollout):
                    return False
                self._pending, self._pending_rollout, self._replace = token, rollout, True
            else:
                if token.generation <= self.known_generation:
                    return False
                # A newer token proposed on top of a waiting replacement replaces the current too.
                self._replace = self._replace and self._pending is not None
                self._pending, self._pending_rollout = token, rollout
            self._cond.notify_all()
        # Applied right away when idle: the model thread wakes on the notify.
        return True

    def add_swap_listener(self, fn: Callable[[ServedToken], None]) -> None:
        self._swap_listeners.append(fn)

    def _apply_pending(self) -> None:
        with self._cond:
            pending, self._pending = self._pending, None
            rollout, self._pending_rollout = self._pending_rollout, None
            replace, self._replace = self._replace, False
        if pending is None:
            return
        if self._current is not None and not replace and pending.generation <= self._current.generation:
            return
        rollout = self._usable(pending, rollout)
        if self.adapter is not None:
            self.adapter.set_token(pending.token)
            self._row_tokens = None  # rows in flight get their own tokens back before the next step
        elif pending.token is not None:
            raise RuntimeError("a token was proposed but no Aligner adapter is attached")
        # The time first: a reader that sees the new token (status, benchmarks) sees its swap time too.
        self.swapped_at = time.time()
        self._rollout = rollout
        self._current = pending
        self.stats.swaps += 1
        for fn in self._swap_listeners:
            try:
                fn(pending)
            except Exception:  # a listener (metrics) must never stop the model thread
                log.exception("swap listener failed")

    def _usable(self, active: ServedToken, rollout: ServedRollout | None) -> ServedRollout | None:
        """The rollout if the adapter takes its candidate beside the active token, else None.

        Tried once here, when the state is applied, so that a candidate the adapter refuses
        (shapes) never reaches a batch: the replica serves the active token alone.
        """
        if rollout is None:
            return None
        try:
            if self.adapter is None:
                if rollout.candidate.token is not None or active.token is not None:
                    raise RuntimeError("a candidate token was proposed but no Aligner adapter is attached")
            else:
                with torch.inference_mode(False):  # as _set_row_tokens builds them
                    self.adapter.set_row_tokens([active.token, rollout.candidate.token])
        except Exception:
            log.exception(
                "the candidate of rollout %s (version %s) cannot be decoded beside the active token; "
                "serving the active token alone", rollout.rollout_id, rollout.candidate.version_id,
            )
            self.stats.twin_failures += 1
            return None
        finally:
            self._row_tokens = None
        return rollout

    # -- requests --------------------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def ready(self) -> bool:
        return self._current is not None and self._thread is not None and self._thread.is_alive()

    def encode(self, messages: list[dict[str, Any]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def submit(self, req: GenerationRequest) -> None:
        """Enqueue or raise Overloaded (never blocks)."""
        with self._cond:
            if self._stop:
                raise Overloaded("the server is shutting down", retry_after=5.0)
            if len(self._queue) >= self.queue_size:
                raise Overloaded(f"the request queue is full ({self.queue_size} waiting); retry shortly")
            self._queue.append(req)
            self._cond.notify_all()

    def _take_batch(self) -> list[GenerationRequest] | None:
        with self._cond:
            while not self._stop and not self._queue and self._pending is None:
                self._cond.wait()
            if self._stop:
                return None
            if not self._queue:
                return []
            if len(self._queue) < self.max_batch and self.batch_wait_s > 0:
                # A short wait lets requests that arrive together share one batch.
                self._cond.wait(self.batch_wait_s)
            batch: list[GenerationRequest] = []
            while self._queue and len(batch) < self.max_batch:
                batch.append(self._queue.popleft())
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                break
            try:
                if batch and self.fence is not None:
                    try:
                        self.fence()
                    except Exception:  # the fence is best effort; the push path still runs
                        log.exception("token fence failed")
                self._apply_pending()
            except Exception as exc:
                log.exception("token swap failed")
                for req in batch:
                    req.emit(Failed(f"token swap failed: {exc}"))
                continue
            if not batch:
                continue
            if self._current is None:
                for req in batch:
                    req.emit(Failed("no verified token yet: the replica is not ready"))
                continue
            self._run_batch(batch)  # answers every request it took, Failed on an error
        with self._cond:
            left = list(self._queue)
            self._queue.clear()
        for req in left:
            req.emit(Failed("the server is shutting down"))

    # -- decoding --------------------------------------------------------------------------
    @torch.inference_mode()
    def _run_batch(self, batch: list[GenerationRequest]) -> None:
        """Decode `batch` and every request admitted while it runs, until no row is left.

        Between two decode steps the thread applies a proposed token and admits waiting
        requests (up to `max_batch` rows): they are prefilled with the token current at that
        moment and join the running cache, while the rows in flight finish on the token they
        started with (per-row tokens, `AlignerAdapter.set_row_tokens`). A swap therefore
        reaches new requests within one decode step, not after the longest request in flight.
        The twins of rollout pairs ride along (`_rows_for`); if the batch fails, its served
        requests are answered `Failed` and its twins are dropped.
        """
        taken = list(batch)  # every request this run owes an answer to (twins owe nothing)
        answered: set[int] = set()
        self._live_twins = 0
        try:
            self._decode(batch, taken, answered)
        except Exception as exc:
            log.exception("batch failed")
            self.stats.twin_failures += self._live_twins
            for req in taken:
                if id(req) not in answered:
                    req.emit(Failed(f"generation failed: {type(exc).__name__}"))
        finally:
            self._live_twins = 0

    def _decode(self, batch: list[GenerationRequest], taken: list[GenerationRequest], answered: set[int]) -> None:
        started = time.perf_counter()
        device = next(self.model.parameters()).device
        live: list[_Row] = []
        cache: Any = None
        mask = positions = logits = torch.empty(0)
        produced = admitted = 0
        pending_batch: list[GenerationRequest] = batch
        while True:
            if pending_batch:
                rows = self._rows_for(pending_batch)  # the served rows, then their twins
                admitted += len(pending_batch)
                for row in rows:
                    if row.role == "served":
                        row.req.emit(Started(row.token))
                new_cache, new_mask, new_pos, new_logits = self._prefill(rows, device)
                if cache is None:
                    cache, mask, positions, logits = new_cache, new_mask, new_pos, new_logits
                else:
                    mask = _merge(cache, new_cache, mask, new_mask)
                    positions = torch.cat([positions, new_pos], dim=0)
                    logits = torch.cat([logits, new_logits], dim=0)
                live += rows
                pending_batch = []
            next_ids = self._sample(logits, live).tolist()  # (B,)
            for row, tid in zip(live, next_ids, strict=True):
                if row.role == "twin":
                    self._push_twin(row, int(tid))
                else:
                    row.push(int(tid))
                    produced += 1
            if any(r.done for r in live):
                keep = [i for i, r in enumerate(live) if not r.done]
                for row in live:
                    if row.done:
                        self._retire(row, answered)
                if not keep:
                    break
                mask, positions = keep_rows(cache, mask, positions, keep,
                                            trim=self.admit_while_running and _joinable(cache))
                live = [live[i] for i in keep]
                next_ids = [next_ids[i] for i in keep]
            served = sum(1 for r in live if r.role == "served")
            if not served and self._twins_would_delay(cache):
                self._cut(live)
                break
            self._set_row_tokens(live)
            mask, positions, logits = decode_step(self.model, next_ids, mask, positions, cache)
            pending_batch = self._admit(served, cache)
            taken += pending_batch
        elapsed = time.perf_counter() - started
        self.stats.batches += 1
        self.stats.rows += admitted
        self.stats.completion_tokens += produced
        self.stats.last_batch_tokens_per_s = produced / elapsed if elapsed > 0 else 0.0

    def _admit(self, n_live: int, cache: Any) -> list[GenerationRequest]:
        """Between two steps: apply a proposed token and take waiting requests that fit (twins aside)."""
        if self._pending is None and not self._queue:
            return []
        if self._stop or not self.admit_while_running or not _joinable(cache):
            return []
        room = self.max_batch - n_live
        if room <= 0 and self._pending is None:
            return []
        if self._queue and room > 0 and self.fence is not None:
            try:  # the same read-your-commits check a new batch gets
                self.fence()
            except Exception:
                log.exception("token fence failed")
        try:
            self._apply_pending()
        except Exception:  # a token that passed verification but not the adapter: keep serving the old one
            log.exception("token swap failed; the previous token stays")
        taken: list[GenerationRequest] = []
        with self._cond:
            while self._queue and len(taken) < room:
                taken.append(self._queue.popleft())
        return taken

    # -- rollout twins ---------------------------------------------------------------------
    def _rows_for(self, reqs: list[GenerationRequest]) -> list[_Row]:
        """The rows of requests admitted now, with the token and rollout plan current now.

        Each request gets its served row; a request that takes part in the rollout also gets
        a twin row (after all the served rows), prefilled with them and decoded beside them.
        The served rows' tokens, order and RNGs are what they would be without a rollout,
        except that a canary caller's row holds the candidate.
        """
        token = self._current
        assert token is not None
        rollout = self._rollout
        if rollout is None:
            return [_Row(req, self.tokenizer, self.eos, token) for req in reqs]
        served: list[_Row] = []
        twins: list[_Row] = []
        for req in reqs:
            try:
                served_token, twin_token = _route(req, token, rollout)
            except Exception:  # a routing bug must not cost the request: serve the active token
                log.exception("rollout routing failed for %s; serving the active token", req.request_id)
                self.stats.twin_failures += 1
                served_token, twin_token = token, None
            row = _Row(req, self.tokenizer, self.eos, served_token,
                       rollout=rollout if served_token is not token else None)
            served.append(row)
            if twin_token is None:
                continue
            if self._live_twins + len(twins) >= self.max_twins:
                self.stats.twins_skipped["bound"] = self.stats.twins_skipped.get("bound", 0) + 1
                continue
            try:
                twins.append(self._twin(row, twin_token, rollout))
            except Exception:
                log.exception("could not build the twin of %s; it is served alone", req.request_id)
                self.stats.twin_failures += 1
                continue
            row.rollout = rollout  # half of a pair
        self._live_twins += len(twins)
        if twins:
            self.stats.pairs_started[rollout.mode] = self.stats.pairs_started.get(rollout.mode, 0) + len(twins)
        return served + twins

    def _twin(self, row: _Row, token: ServedToken, rollout: ServedRollout) -> _Row:
        """A row decoding the same prompt with the same sampling parameters under the other token."""
        req = row.req
        twin_req = GenerationRequest(
            prompt_ids=req.prompt_ids,
            params=req.params,
            emit=_discard,
            request_id=f"{req.request_id}~twin",
            messages=req.messages,
            created=req.created,
            created_wall=req.created_wall,
            user=req.user,
        )
        twin = _Row(twin_req, self.tokenizer, self.eos, token, role="twin", rollout=rollout,
                    twin_of=req.request_id)  # seeded like the served row: its own generator
        if twin.generator is None and req.params.temperature > 0:
            # Unseeded, it still needs an RNG of its own: the global one belongs to the served rows.
            twin.generator = torch.Generator().manual_seed(secrets.randbits(63))
        return twin

    def _push_twin(self, row: _Row, token_id: int) -> None:
        if row.failed:
            return
        try:
            row.push(token_id)
            self.stats.twin_tokens += 1
        except Exception:
            log.exception("twin %s failed; its served row goes on", row.req.request_id)
            self._fail_twin(row)

    def _fail_twin(self, row: _Row) -> None:
        row.done = row.failed = True
        self.stats.twin_failures += 1

    def _retire(self, row: _Row, answered: set[int]) -> None:
        """A finished row leaves: a served one is answered, a twin is only recorded."""
        if row.role == "twin":
            self._live_twins -= 1
            if not row.failed:
                self._finish(row)  # on_finish only: its emit discards
            return
        answered.add(id(row.req))
        self._finish(row)

    def _twins_would_delay(self, cache: Any) -> bool:
        """With only twins left, whether decoding on would hold up a waiting request or swap."""
        if self._stop:
            return True
        if self.admit_while_running and _joinable(cache):
            return False  # waiting requests and proposed tokens join between two steps
        return bool(self._queue) or self._pending is not None

    def _cut(self, twins: list[_Row]) -> None:
        n = len(twins)
        self._live_twins -= n
        self.stats.twins_skipped["cut"] = self.stats.twins_skipped.get("cut", 0) + n
        log.info("dropping %d unfinished twin(s): requests are waiting and cannot join them", n)

    # -- the model -------------------------------------------------------------------------
    def _prefill(self, rows: list[_Row], device: Any) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Left-pad the rows' prompts and run them through the model, each row with its token."""
        self._set_row_tokens(rows)
        return prefill(self.model, [r.req.prompt_ids for r in rows], self.pad_id, device)

    def _set_row_tokens(self, rows: list[_Row]) -> None:
        """Point the adapter at the rows' tokens: one shared token, or one per row when they differ."""
        if self.adapter is None:
            if any(r.token.token is not None for r in rows):
                raise RuntimeError("a token was proposed but no Aligner adapter is attached")
            return
        tokens = [r.token for r in rows]
        held = self._row_tokens
        if held is not None and len(held) == len(tokens) and all(a is b for a, b in zip(held, tokens, strict=True)):
            return
        if all(t is tokens[0] for t in tokens):
            self.adapter.set_token(tokens[0].token)
        else:
            # Built outside inference mode: the adapter's projection cache reads the tensors' version counters.
            with torch.inference_mode(False):
                self.adapter.set_row_tokens([t.token for t in tokens])
        self._row_tokens = tokens

    def _finish(self, row: _Row) -> None:
        done = Finished(
            text=row.text,
            finish_reason=row.finish_reason,
            prompt_tokens=len(row.req.prompt_ids),
            completion_tokens=len(row.ids),
            token=row.token,
            latency_ms=(time.monotonic() - row.req.created) * 1000.0,
            role=row.role,
            rollout=row.rollout,
            twin_of=row.twin_of,
        )
        if self.on_finish is not None:
            try:
                self.on_finish(row.req, done)
            except Exception:  # recording must never fail a response
                log.exception("on_finish hook failed")
        row.req.emit(done)

    def _sample(self, logits: torch.Tensor, rows: list[_Row]) -> torch.Tensor:
        """Next token per row: greedy for temperature 0, else nucleus sampling with the row's RNG."""
        chosen = logits.argmax(dim=-1)  # (B,)
        for i, row in enumerate(rows):
            p = row.req.params
            if row.done or p.temperature <= 0:
                continue
            probs = torch.softmax(logits[i].cpu() / p.temperature, dim=-1)  # (V,)
            if p.top_p < 1.0:
                sorted_p, order = probs.sort(descending=True)
                keep = sorted_p.cumsum(0) - sorted_p < p.top_p  # always keeps the top token
                sorted_p = sorted_p * keep
                probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
            try:
                chosen[i] = torch.multinomial(probs, 1, generator=row.generator)[0].to(chosen.device)
            except Exception:
                if row.role != "twin":
                    raise
                log.exception("sampling twin %s failed; its served row goes on", row.req.request_id)
                self._fail_twin(row)
        return chosen.cpu()


def _same(a: ServedToken, b: ServedToken) -> bool:
    return (a.generation, a.version_id, a.sha256) == (b.generation, b.version_id, b.sha256)


def _same_rollout(a: ServedRollout | None, b: ServedRollout | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.key == b.key


def _route(
    req: GenerationRequest, active: ServedToken, rollout: ServedRollout
) -> tuple[ServedToken, ServedToken | None]:
    """(the served row's token, the twin's token or None) of a request under a rollout."""
    if rollout.mode == "shadow":
        return (active, rollout.candidate) if rollout.shadows(req.request_id) else (active, None)
    if rollout.mode == "canary" and rollout.routes_to_candidate(req.user or req.request_id):
        return rollout.candidate, active
    return active, None


def load_engine_model(name: str, *, state_dir: str, dtype: str = "float32") -> tuple[Any, Any, Any]:
    """Load the base model once and attach an Aligner adapter (bare base model until a token is set)."""
    model, tokenizer, digests = load_base_model(name, state_dir=state_dir, dtype=dtype)
    adapter = attach(model, base_digest=digests.weights)
    adapter.set_token(None)
    return model, tokenizer, digests
