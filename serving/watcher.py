"""Keeps a replica on the deployment's active token: Redis push, periodic reconcile, per-batch fence.

Three paths lead to the same `sync(desired)`: a message on the Redis channel
`govern:deployment:<name>` (milliseconds after the commit), a reconcile loop that asks
the API every `reconcile_interval` seconds (so a lost message or a Redis restart only
delays a swap), and an optional fence the model thread runs before each batch (one GET
of the active state, so a request never runs on a generation older than the one
committed before it arrived). `sync` ignores generations at or below the one the engine
already has, fetches the artifact (cached by sha256), verifies it (`serving.tokens`) and
proposes it to the engine. A token that fails verification is never served: the replica
keeps its previous token, remembers the rejected sha256 and raises one alert through the API.

The push path needs no API call when the token is known: the message carries version,
sha256 and generation, and verified tokens stay in a bounded in-memory cache by sha256
(a token is immutable, so it is verified once). The reconcile loop prefetches and
verifies the tokens that could become active next (approved versions, and superseded
ones that a rollback may bring back), so a promotion or rollback swaps from the cache
without a round trip on its critical path; an unknown sha256 is still fetched from the
API and verified before it is proposed. `last_sync` records when each proposed
generation was received and ready (the propagation benchmark reads it through
`/v1/serving/status`).

The channel is authenticated: a message counts only with a valid HMAC-SHA256 for this
deployment's channel under one of the replica's push secrets (`governance.outbox.pushauth`;
the current and, during a rotation, the previous one). Anything else (no MAC, a wrong one,
not JSON) is dropped before it is read, counted by reason (`push_rejected`, the
`serving_push_rejected_total` metric) and logged; the replica only serves what the API
confirmed as active or what came with a valid MAC. A signed message is still a hint
about the order of things (it may be a replay, or overtaken by a later flip): the next
generation (known + 1) is adopted from it alone; a jump, or another token under the
generation the replica has, is first confirmed with `GET /active`. The API's answer is
authoritative: when a reconcile or the fence gets a state other than the one the replica
adopted before asking, the replica moves to it even if its generation is lower. So even
a huge generation signed with a leaked secret never locks a replica out of the real
flips that follow it.

Rollouts: the state of a generation may carry a running rollout (`ActiveState.rollout`).
Its candidate is fetched and verified exactly like the active token (same cache, same
`verify_artifact`), and the engine gets the active token and the rollout together in one
`propose`, so a plan obeys the generation rules above (it is part of what a generation
is). A candidate that fails verification is never decoded: the replica serves the active
token alone (no twins, no canary), remembers the sha256, counts it
(`candidate_rejections`) and raises one alert. A candidate that could not be fetched (API
down) is retried by every later sync of the same state until it joins its generation;
the fence never fetches one (it runs on the model thread), it wakes the reconcile instead.
A state without a rollout ends the twins.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from aligner.model import ModelShape
from governance.client import ActiveState, ApiError, GovernClient, RolloutPlan
from governance.outbox import pushauth
from serving.engine import DecodeEngine
from serving.tokens import ServedRollout, ServedToken, TokenVerificationError, sha256_hex, verify_artifact

log = logging.getLogger(__name__)


def channel_name(deployment: str) -> str:
    return f"govern:deployment:{deployment}"


StateKey = tuple[int | None, str | None, int, RolloutPlan | None]


def state_key(state: ActiveState) -> StateKey:
    """What identifies a desired state: the active token, its generation and the rollout plan."""
    return (state.version_id, state.sha256, state.generation, state.rollout)


@dataclass(frozen=True)
class SyncTiming:
    """How one generation reached the engine (wall-clock seconds, this replica's clock)."""

    generation: int
    source: str  # push | reconcile | fence
    received_at: float  # the message arrived, or the API answered
    ready_at: float  # the verified token was in hand and proposed to the engine
    cached: bool  # the token came from the verified cache (no fetch, no verification)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class TokenWatcher:
    def __init__(
        self,
        *,
        control: GovernClient,
        deployment: str,
        engine: DecodeEngine,
        base_digest: str,
        shape: ModelShape,
        redis_url: str | None,
        reconcile_interval: float = 5.0,
        fence: bool = True,
        fence_backoff: float = 5.0,
        fence_timeout: float = 0.25,
        artifact_dir: Path | None = None,
        on_reject: Callable[[str, str], None] | None = None,
        prefetch: int = 200,
        cache_size: int = 1000,
        push_secrets: Sequence[str] = (),
        on_push_rejected: Callable[[str], None] | None = None,
    ) -> None:
        self.control = control
        self.deployment = deployment
        self.engine = engine
        self.base_digest = base_digest
        self.shape = shape
        self.redis_url = redis_url
        self.reconcile_interval = reconcile_interval
        self.fence_enabled = fence
        self.fence_backoff = fence_backoff
        # The fence runs on the model thread: a slow API must cost a batch at most this long.
        self._fence_control = control.with_timeout(fence_timeout)
        self.artifact_dir = artifact_dir
        self.on_reject = on_reject
        self.prefetch_limit = prefetch
        self.rejected: dict[str, str] = {}  # sha256 -> why it was refused
        self._alerted: set[str] = set()
        # sha256 -> verified token, least recently used first; a token of SmolLM2 is a few kB.
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self.cache_size = max(cache_size, prefetch + 2)
        self.last_sync: SyncTiming | None = None
        # The state last proposed to the engine (`state_key`) and when it was received.
        self._known: StateKey | None = None
        self._known_at = 0.0
        # That state's rollout whose candidate is not in the engine yet (fetch failed, or refused)
        self._candidate_missing = False
        self._refused_candidates: set[str] = set()  # sha256 of rollout candidates that failed verification
        self.rollout_problem: str | None = None  # why the desired rollout is not applied, if it is not
        self._wake = threading.Event()  # the fence asks the reconcile to fetch a candidate now
        self.unconfirmed_ignored = 0  # pushed states the API did not confirm
        # accepted on the channel, current first; none: every message is dropped (reconcile only)
        self.push_secrets = tuple(push_secrets)
        self.on_push_rejected = on_push_rejected
        self.push_rejected: dict[str, int] = {}  # reason -> messages dropped unread
        self._sync_lock = threading.Lock()  # one sync at a time: generations are proposed in order
        self._cache_lock = threading.Lock()  # the LRU is shared by sync and the prefetcher
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._fence_open_until = 0.0
        self.last_reconcile: float | None = None
        self.pubsub_connected = False
        self.messages_seen = 0
        if fence:
            engine.fence = self.fence

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        targets: list[tuple[str, Callable[[], None]]] = [("serving-reconcile", self._reconcile_loop)]
        if self.redis_url:
            targets.append(("serving-pubsub", self._pubsub_loop))
            if not self.push_secrets:
                log.warning(
                    "no push secret: every message on %s is dropped, the reconcile keeps this replica current",
                    channel_name(self.deployment),
                )
        for name, target in targets:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(5.0)
        self._threads.clear()

    # -- the one sync path -----------------------------------------------------------------
    def sync(
        self,
        desired: ActiveState,
        *,
        source: str = "reconcile",
        received_at: float | None = None,
        asked_at: float | None = None,
    ) -> bool:
        """Bring the engine to `desired` if it is newer; True if a token was proposed.

        `asked_at` marks `desired` as the API's answer to a request sent at that time: it is
        authoritative. If the replica holds something else (a lower generation is not the
        only way: a forged message may have claimed a higher one or another token under the
        same one) and adopted it before the request was sent, `desired` replaces it. A state
        adopted after the request was sent may be newer than the answer (a push that overtook
        it) and stays; the next reconcile settles it.
        """
        received = time.time() if received_at is None else received_at
        key = state_key(desired)
        with self._sync_lock:
            replace = False
            retry = False  # the same state again, to bring in a candidate that is still missing
            if desired.generation <= self.engine.known_generation:
                if asked_at is not None and self._contradicts(desired, asked_at):
                    replace = True
                    log.warning(
                        "the API says generation %s (version %s) but this replica adopted generation %s "
                        "(version %s) from an unconfirmed message; serving the API's answer",
                        desired.generation,
                        desired.version_id,
                        self._known[2] if self._known else None,
                        self._known[0] if self._known else None,
                    )
                elif self._candidate_missing and self._known == key:
                    replace = retry = True
                else:
                    return False
            token: Any = None
            cached = True
            if desired.sha256 is not None:
                if desired.sha256 in self.rejected:
                    self._alert(desired, self.rejected[desired.sha256])
                    return False
                with self._cache_lock:
                    token = self._cached(desired.sha256)
                if token is None:
                    cached = False
                    token = self._load(desired)
                    if token is None:
                        return False
            rollout = self._candidate(desired, fetch=source != "fence")
            if retry and rollout is None:
                return False  # still missing; the engine already serves the active token alone
            self.last_sync = SyncTiming(desired.generation, source, received, time.time(), cached)
            served = ServedToken(desired.version_id, desired.sha256, desired.generation, token)
            if not self.engine.propose(served, rollout=rollout, replace=replace):
                return False
            self._known = key
            self._known_at = received
            self._candidate_missing = desired.rollout is not None and rollout is None
            if not self._candidate_missing:
                self.rollout_problem = None
            return True

    def _candidate(self, desired: ActiveState, *, fetch: bool) -> ServedRollout | None:
        """The desired state's rollout with its verified candidate, or None (none runs, or the
        candidate is refused or not fetched yet: the replica serves the active token alone)."""
        plan = desired.rollout
        if plan is None:
            return None
        as_state = ActiveState(plan.version_id, plan.sha256, desired.generation)
        if plan.sha256 in self.rejected:  # refused now or before (a prefetch): never verified twice
            self._refuse_candidate(as_state, plan)
            return None
        with self._cache_lock:
            token = self._cached(plan.sha256)
        if token is None:
            if not fetch:
                self.rollout_problem = "candidate not fetched yet"
                self._wake.set()  # the reconcile thread fetches it, not the model thread
                return None
            try:
                token = self._load(as_state, alert=False, rollout=plan)
            except ApiError as exc:
                log.warning("fetching the candidate of rollout %s failed (%s); serving the active token "
                            "alone until a later sync gets it", plan.rollout_id, exc)
                self.rollout_problem = f"candidate not fetched: {exc}"
                return None
            if token is None:
                self._refuse_candidate(as_state, plan)
                return None
        candidate = ServedToken(plan.version_id, plan.sha256, desired.generation, token)
        return ServedRollout(plan.rollout_id, plan.mode, candidate, sample=plan.sample, weight=plan.weight,
                             step=plan.step)

    def _refuse_candidate(self, state: ActiveState, plan: RolloutPlan) -> None:
        """A candidate that failed verification: counted once, alerted on (again while the alert fails)."""
        reason = self.rejected[plan.sha256]
        self._refused_candidates.add(plan.sha256)
        self._alert(state, reason, rollout=plan)
        self.rollout_problem = f"candidate refused: {reason}"

    @property
    def candidate_rejections(self) -> int:
        """How many rollout candidates failed verification (each counted once)."""
        return len(self._refused_candidates)

    @property
    def desired_rollout(self) -> RolloutPlan | None:
        """The rollout of the state last proposed to the engine (applied or not: see `rollout_problem`)."""
        return self._known[3] if self._known is not None else None

    def _contradicts(self, desired: ActiveState, asked_at: float) -> bool:
        """True if the API's answer (asked at `asked_at`) is not what this replica adopted before then."""
        if self._known is None or self._known_at >= asked_at:
            return False
        return self._known != state_key(desired)

    @property
    def cached_tokens(self) -> int:
        """How many verified tokens are in memory (prefetched or served)."""
        return len(self._cache)

    def _cached(self, sha: str) -> Any | None:
        token = self._cache.get(sha)
        if token is not None:
            self._cache.move_to_end(sha)
        return token

    def _remember(self, sha: str, token: Any) -> None:
        self._cache[sha] = token
        self._cache.move_to_end(sha)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _load(self, desired: ActiveState, *, alert: bool = True, rollout: RolloutPlan | None = None) -> Any | None:
        """Fetch (or read from disk) and verify a token; None if it fails verification.

        `rollout`: the token is that rollout's candidate (counted and alerted on as such)."""
        assert desired.sha256 is not None
        data = self._read_disk(desired.sha256)
        if data is None:
            data = self.control.artifact_by_sha(desired.sha256)  # ApiError: retried by the next sync
        try:
            token = verify_artifact(
                data, expected_sha256=desired.sha256, base_digest=self.base_digest, shape=self.shape
            )
        except TokenVerificationError as exc:
            reason = str(exc)
            what = f"candidate of rollout {rollout.rollout_id}" if rollout is not None else "token"
            log.error("refusing %s %s (version %s): %s", what, desired.sha256[:12], desired.version_id, reason)
            self.rejected[desired.sha256] = reason
            if self.on_reject is not None:
                self.on_reject(desired.sha256, reason)
            if alert:  # a prefetched token is only alerted on when it is about to be served
                self._alert(desired, reason, rollout=rollout)
            return None
        with self._cache_lock:
            self._remember(desired.sha256, token)
        self._write_disk(desired.sha256, data)
        return token

    def _alert(self, desired: ActiveState, reason: str, *, rollout: RolloutPlan | None = None) -> None:
        assert desired.sha256 is not None
        if desired.sha256 in self._alerted:
            return
        if rollout is None:
            message = (
                f"replica refused version {desired.version_id} (generation {desired.generation}) "
                f"of deployment {self.deployment}: {reason}; it keeps serving its previous token"
            )
        else:
            message = (
                f"replica refused version {desired.version_id}, the candidate of {rollout.mode} rollout "
                f"{rollout.rollout_id} (generation {desired.generation}) of deployment {self.deployment}: "
                f"{reason}; it serves the active token alone, without twins"
            )
        details: dict[str, Any] = {
            "version_id": desired.version_id,
            "sha256": desired.sha256,
            "generation": desired.generation,
            "reason": reason,
        }
        if rollout is not None:
            details.update(rollout_id=rollout.rollout_id, mode=rollout.mode)
        try:
            self.control.raise_alert(
                deployment=self.deployment,
                kind="token_verification_failed",
                severity="critical",
                message=message,
                incident_key=f"serving:{self.deployment}:verify:{desired.sha256}",
                details=details,
            )
            self._alerted.add(desired.sha256)
        except ApiError as exc:  # retried on the next sync of the same state
            log.warning("could not raise the verification alert: %s", exc)

    # -- disk cache (optional): verified bytes by sha256, re-verified on every read ---------
    def _read_disk(self, sha: str) -> bytes | None:
        if self.artifact_dir is None:
            return None
        path = self.artifact_dir / f"{sha}.bin"
        try:
            data = path.read_bytes()
        except OSError:
            return None
        return data if sha256_hex(data) == sha else None

    def _write_disk(self, sha: str, data: bytes) -> None:
        if self.artifact_dir is None:
            return
        try:
            self.artifact_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.artifact_dir / f".{sha}.{threading.get_ident()}.tmp"  # the prefetcher may race a sync
            tmp.write_bytes(data)
            tmp.replace(self.artifact_dir / f"{sha}.bin")
        except OSError as exc:  # the cache is an optimisation; serving goes on without it
            log.warning("could not cache artifact %s: %s", sha[:12], exc)

    # -- the three paths -------------------------------------------------------------------
    def reconcile_once(self) -> bool:
        asked = time.time()
        desired = self.control.active(self.deployment)
        self.last_reconcile = time.time()
        return self.sync(desired, source="reconcile", asked_at=asked)

    def fence(self) -> None:
        """Run on the model thread before a batch: catch up with the API if a newer generation exists."""
        now = time.monotonic()
        if now < self._fence_open_until:
            return
        try:
            asked = time.time()
            self.sync(self._fence_control.active(self.deployment), source="fence", asked_at=asked)
        except ApiError as exc:
            # Fail open for a while: serve what we have rather than stall every batch on a dead API.
            self._fence_open_until = now + self.fence_backoff
            log.warning("fence skipped for %.1f s: %s", self.fence_backoff, exc)

    def prefetch(self) -> int:
        """Fetch and verify promotable tokens not cached yet; returns how many were added."""
        added = 0
        for state in ("approved", "superseded"):
            for v in self.control.versions(deployment=self.deployment, state=state, limit=self.prefetch_limit):
                sha = v.get("sha256")
                if not sha or sha in self._cache or sha in self.rejected:
                    continue
                # Not under the sync lock: a push that arrives meanwhile must not wait for this fetch.
                if self._load(ActiveState(int(v["id"]), str(sha), -1), alert=False) is not None:
                    added += 1
        return added

    def _reconcile_loop(self) -> None:
        delay = 0.2  # the first sync happens at once; retry fast until the replica is ready
        while not self._stop.is_set():
            try:
                self.reconcile_once()
                if self.prefetch_limit > 0:
                    self.prefetch()
                delay = self.reconcile_interval
                plan = self.desired_rollout
                if self._candidate_missing and plan is not None and plan.sha256 not in self.rejected:
                    delay = min(self.reconcile_interval, 1.0)  # an unfetched candidate is retried sooner
            except ApiError as exc:
                log.warning("reconcile failed: %s", exc)
                delay = min(self.reconcile_interval, 1.0) if self.engine.current is None else self.reconcile_interval
            except Exception:
                log.exception("reconcile crashed; retrying")
            self._wake.wait(delay)
            self._wake.clear()

    def _pubsub_loop(self) -> None:
        assert self.redis_url is not None
        backoff = 0.1
        while not self._stop.is_set():
            client = None
            try:
                client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=1.0, health_check_interval=5)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(channel_name(self.deployment))
                self.pubsub_connected = True
                backoff = 0.1
                # Anything published while we were away is caught by asking once now.
                self._safe_reconcile()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None and message.get("type") == "message":
                        self.messages_seen += 1
                        self._on_message(message.get("data"), time.time())
            except (redis.RedisError, OSError) as exc:
                if self.pubsub_connected:
                    log.warning("redis pub/sub lost (%s); reconnecting, reconcile covers the gap", exc)
                self.pubsub_connected = False
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.close()

    def _safe_reconcile(self) -> None:
        try:
            self.reconcile_once()
        except ApiError as exc:
            log.warning("reconcile after subscribe failed: %s", exc)

    def _on_message(self, raw: Any, received_at: float | None = None) -> None:
        channel = channel_name(self.deployment)
        try:
            data = json.loads(raw)
        except (ValueError, TypeError) as exc:
            self._reject(pushauth.MALFORMED, f"not JSON ({exc})")
            return
        why = pushauth.verify(data, channel, self.push_secrets)
        if why is not None:
            claim = (data.get("version_id"), data.get("generation")) if isinstance(data, dict) else data
            self._reject(why, f"it claims (version, generation) {repr(claim)[:200]}")
            return
        try:
            if data.get("deployment") not in (None, self.deployment):
                return
            desired = ActiveState.from_json(data)
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("ignoring a malformed message on %s: %s", channel, exc)
            return
        try:
            if self._plausible(desired):
                self.sync(desired, source="push", received_at=received_at)
            else:
                self._confirm(desired, received_at)
        except ApiError as exc:
            log.warning("fetching the pushed token failed (%s); reconcile will retry", exc)

    def _reject(self, reason: str, detail: str) -> None:
        """Drop a message without a valid MAC: counted by reason and logged, never read further."""
        self.push_rejected[reason] = self.push_rejected.get(reason, 0) + 1
        if self.on_push_rejected is not None:
            self.on_push_rejected(reason)
        log.warning("dropping a message on %s (%s): %s", channel_name(self.deployment), reason, detail)

    def _plausible(self, pushed: ActiveState) -> bool:
        """Whether a pushed state (its MAC verified) may be adopted without asking the API first.

        A valid MAC says the control plane sent it, not that it is current: it may be a
        replay, and a leaked secret would let anyone claim any generation. Generations go
        up by one per promotion or rollback, so the push path trusts only the next one (the
        steady state, no round trip) and anything it would ignore anyway. A jump (a lost
        message, or a huge generation that would make the replica ignore every real flip
        after it) and a different token under the generation the replica already has are
        confirmed with the API first.
        """
        known = self.engine.known_generation
        if pushed.generation == known + 1 or pushed.generation < known:
            return True
        if pushed.generation == known:
            return self._known is None or self._known == state_key(pushed)
        return False

    def _confirm(self, pushed: ActiveState, received_at: float | None) -> None:
        asked = time.time()
        answer = self.control.active(self.deployment)
        if state_key(answer) != state_key(pushed):
            self.unconfirmed_ignored += 1
            log.warning(
                "ignoring a pushed generation %s (version %s) that the API does not confirm "
                "(it says generation %s, version %s)",
                pushed.generation,
                pushed.version_id,
                answer.generation,
                answer.version_id,
            )
        self.sync(answer, source="confirm", received_at=received_at, asked_at=asked)
