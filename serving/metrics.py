"""Prometheus metrics of one replica, in a registry of its own (several apps can share a process).

Requests by status, latency histograms (whole request; per output from queueing to the
last token), tokens produced and tokens/s of the last batch, queue depth, the active
generation, swaps, rejected tokens, dropped push messages (no valid MAC, by reason),
overload refusals, and recorded/spooled outputs.

Rollouts: what this replica applies (`serving_rollout_id`, `serving_rollout_info{rollout_id,
mode,version_id,step}`, `serving_rollout_weight`, `serving_rollout_sample`), the pairs
started and recorded by mode, twins skipped by reason (`bound`: over `max_twins`; `cut`:
left unfinished so as not to hold up waiting requests), twin failures
(`serving_shadow_failures_total`), twin tokens, and candidates that failed verification.
The engine's and the watcher's counts are read when scraped (`_RolloutCollector`), so
neither imports Prometheus and an ended rollout leaves no stale label behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from serving.engine import Finished
    from serving.tokens import ServedToken

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ServingMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("serving_requests", "chat completion requests by HTTP status", ["status"], registry=r)
        self.request_latency = Histogram(
            "serving_request_latency_seconds",
            "time to answer (stream: to the first byte)",
            ["stream"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.generation_latency = Histogram(
            "serving_generation_latency_seconds",
            "queueing plus decoding, per output",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.completion_tokens = Counter("serving_completion_tokens", "tokens generated", registry=r)
        self.prompt_tokens = Counter("serving_prompt_tokens", "prompt tokens processed", registry=r)
        self.tokens_per_second = Gauge("serving_tokens_per_second", "generated tokens/s of the last batch", registry=r)
        self.queue_depth = Gauge("serving_queue_depth", "requests waiting for the model", registry=r)
        self.active_generation = Gauge("serving_active_generation", "generation of the token served", registry=r)
        self.active_version = Gauge("serving_active_version", "version id served (0 = base model)", registry=r)
        self.swaps = Counter("serving_token_swaps", "tokens swapped in", registry=r)
        self.token_rejections = Counter("serving_token_rejections", "tokens that failed verification", registry=r)
        self.push_rejected = Counter(
            "serving_push_rejected", "messages on the deployment channel dropped unread, by reason", ["reason"],
            registry=r,
        )
        self.rejected_overload = Counter("serving_overload_rejections", "requests refused with 429", registry=r)
        self.outputs_spooled = Counter("serving_outputs_spooled", "outputs written to the disk spool", registry=r)
        self.outputs_recorded = Gauge("serving_outputs_written", "outputs written to PostgreSQL", registry=r)
        self.spool_pending = Gauge("serving_spool_pending", "outputs waiting in the spool", registry=r)
        self.record_queue = Gauge("serving_record_queue_depth", "outputs waiting in memory", registry=r)
        self.rollout_pairs_recorded = Counter(
            "serving_rollout_pairs_recorded", "rollout pairs whose twin finished and was recorded, by mode", ["mode"],
            registry=r,
        )
        self.active_generation.set(-1)

    def bind(self, state: Any) -> None:
        engine, recorder = state.engine, state.recorder
        self.registry.register(_RolloutCollector(engine, state.watcher))
        self.queue_depth.set_function(lambda: engine.queue_depth)
        self.tokens_per_second.set_function(lambda: engine.stats.last_batch_tokens_per_s)
        if recorder is not None:
            self.outputs_recorded.set_function(lambda: recorder.stats.written + recorder.stats.replayed)
            self.spool_pending.set_function(lambda: recorder.spool_pending)
            self.record_queue.set_function(lambda: recorder.queue_depth)

    def on_swap(self, token: ServedToken) -> None:
        self.swaps.inc()
        self.active_generation.set(token.generation)
        self.active_version.set(token.version_id or 0)

    def observe_finished(self, done: Finished) -> None:
        self.completion_tokens.inc(done.completion_tokens)
        self.prompt_tokens.inc(done.prompt_tokens)
        self.generation_latency.observe(done.latency_ms / 1000.0)

    def observe_request(self, status: int, seconds: float, *, stream: bool) -> None:
        self.requests.labels(status=str(status)).inc()
        self.request_latency.labels(stream=str(stream).lower()).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _RolloutCollector(Collector):
    """The rollout this replica applies and the engine's and watcher's twin counts, read at scrape time."""

    def __init__(self, engine: Any, watcher: Any) -> None:
        self.engine = engine
        self.watcher = watcher

    def collect(self) -> Iterator[Metric]:
        rollout = self.engine.rollout
        stats = self.engine.stats
        yield GaugeMetricFamily("serving_rollout_id", "rollout applied (0 = none)",
                                value=rollout.rollout_id if rollout else 0)
        info = GaugeMetricFamily("serving_rollout_info", "the rollout applied (1 while it is)",
                                 labels=["rollout_id", "mode", "version_id", "step"])
        if rollout is not None:
            info.add_metric([str(rollout.rollout_id), rollout.mode, str(rollout.candidate.version_id),
                             str(rollout.step)], 1.0)
        yield info
        yield GaugeMetricFamily("serving_rollout_weight", "canary: share of callers served by the candidate",
                                value=rollout.weight if rollout and rollout.mode == "canary" else 0.0)
        yield GaugeMetricFamily("serving_rollout_sample", "shadow: share of requests decoded twice",
                                value=rollout.sample if rollout and rollout.mode == "shadow" else 0.0)
        started = CounterMetricFamily("serving_rollout_pairs_started", "twins admitted beside their served row, "
                                      "by mode", labels=["mode"])
        for mode, n in sorted(stats.pairs_started.items()):
            started.add_metric([mode], float(n))
        yield started
        skipped = CounterMetricFamily("serving_rollout_twins_skipped", "twins not decoded or not finished, by reason "
                                      "(bound: over max_twins; cut: dropped so as not to delay requests)",
                                      labels=["reason"])
        for reason, n in sorted(stats.twins_skipped.items()):
            skipped.add_metric([reason], float(n))
        yield skipped
        yield CounterMetricFamily("serving_shadow_failures", "twins lost to an error (the served rows went on)",
                                  value=float(stats.twin_failures))
        yield CounterMetricFamily("serving_rollout_twin_tokens", "tokens decoded by twins",
                                  value=float(stats.twin_tokens))
        yield CounterMetricFamily("serving_rollout_candidate_rejections", "rollout candidates that failed verification",
                                  value=float(self.watcher.candidate_rejections))
