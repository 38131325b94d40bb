"""The engine: batched decoding equals transformers' generate, per-row sampling, stops, overload, swaps."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from serving.engine import (
    DecodeEngine,
    Delta,
    Failed,
    Finished,
    GenerationRequest,
    Overloaded,
    SamplingParams,
    Started,
)
from serving.tokens import ServedToken
from tests.serving.helpers import Collector, attached_copy, make_token


def _request(engine: DecodeEngine, text: str, **params: Any) -> tuple[GenerationRequest, Collector]:
    c = Collector()
    stream = params.pop("stream", False)
    req = GenerationRequest(
        prompt_ids=engine.encode([{"role": "user", "content": text}]),
        params=SamplingParams(**params),
        emit=c,
        stream=stream,
    )
    return req, c


@pytest.fixture()
def engine(tiny: tuple[Any, Any, Any]) -> Any:
    model, tokenizer, digests = attached_copy(tiny)
    eng = DecodeEngine(model, tokenizer, max_batch=4, queue_size=8, batch_wait_s=0.05)
    eng.digests = digests  # type: ignore[attr-defined]
    yield eng
    eng.stop()


PROMPTS = ["hi", "tell me a long story about a cat and a dog", "what is 2+2?", "a"]


def test_batched_greedy_equals_generate_with_a_token(engine: DecodeEngine) -> None:
    """Left padding, the attention mask and positions are right: a batch decodes like HF generate."""
    from aligner.generation import encode_chat, generate_ids

    token = make_token(engine.digests, seed=1)  # type: ignore[attr-defined]
    engine.propose(ServedToken(7, token.sha256, 1, token))
    engine.start()
    pairs = [_request(engine, p, max_tokens=12, temperature=0) for p in PROMPTS]
    for req, _ in pairs:
        engine.submit(req)
    got = [c.finished for _, c in pairs]
    assert all(f.token.generation == 1 and f.token.version_id == 7 for f in got)
    assert engine.stats.batches < len(PROMPTS), "requests submitted together share a batch"

    enc = encode_chat(engine.tokenizer, PROMPTS)
    assert engine.adapter is not None
    with engine.adapter.using(token):
        ids = generate_ids(
            engine.model,
            enc["input_ids"],
            enc["attention_mask"],
            max_new_tokens=12,
            pad_token_id=engine.tokenizer.pad_token_id,
        )
    for row, f in zip(ids.tolist(), got, strict=True):
        kept = [t for t in row if t not in engine.eos]
        if len(kept) < len(row):  # generate stopped at eos, then padded
            kept = row[: row.index(next(t for t in row if t in engine.eos))]
        assert f.text == engine.tokenizer.decode(kept, skip_special_tokens=True)
        assert f.completion_tokens == len(kept)


def test_token_changes_output_and_none_is_base(engine: DecodeEngine) -> None:
    token = make_token(engine.digests, seed=2)  # type: ignore[attr-defined]
    engine.start()
    engine.propose(ServedToken(None, None, 1, None))
    req, c = _request(engine, "hello there", max_tokens=10, temperature=0)
    engine.submit(req)
    base = c.finished.text
    engine.propose(ServedToken(3, token.sha256, 2, token))
    req, c = _request(engine, "hello there", max_tokens=10, temperature=0)
    engine.submit(req)
    aligned = c.finished
    assert aligned.token.generation == 2
    assert aligned.text != base


def test_lower_generation_is_ignored(engine: DecodeEngine) -> None:
    engine.start()
    assert engine.propose(ServedToken(None, None, 5, None))
    assert not engine.propose(ServedToken(1, "x" * 64, 4, None))
    assert not engine.propose(ServedToken(1, "x" * 64, 5, None))
    req, c = _request(engine, "x", max_tokens=2, temperature=0)
    engine.submit(req)
    assert c.finished.token.generation == 5


def test_seeded_sampling_is_reproducible_and_rows_keep_their_params(engine: DecodeEngine) -> None:
    engine.propose(ServedToken(None, None, 1, None))
    engine.start()
    pairs = [
        _request(engine, "pick words", max_tokens=15, temperature=1.0, top_p=0.9, seed=42),
        _request(engine, "pick words", max_tokens=15, temperature=1.0, top_p=0.9, seed=42),
        _request(engine, "pick words", max_tokens=15, temperature=1.0, seed=43),
        _request(engine, "pick words", max_tokens=3, temperature=0),
    ]
    for req, _ in pairs:
        engine.submit(req)
    out = [c.finished for _, c in pairs]
    assert out[0].text == out[1].text
    assert out[3].completion_tokens <= 3


def test_stop_strings_and_streaming_deltas(engine: DecodeEngine) -> None:
    engine.propose(ServedToken(None, None, 1, None))
    engine.start()
    req, c = _request(engine, "go on", max_tokens=20, temperature=1.0, seed=5)
    engine.submit(req)
    full = c.finished.text
    assert len(full) > 6
    stop = full[3:5]
    req, c = _request(engine, "go on", max_tokens=20, temperature=1.0, seed=5, stop=(stop,), stream=True)
    engine.submit(req)
    done = c.finished
    assert done.finish_reason == "stop"
    assert done.text == full[: full.find(stop)]
    assert isinstance(c.events[0], Started)
    streamed = "".join(e.text for e in c.events if isinstance(e, Delta))
    assert streamed == done.text, "deltas add up to the final text and never leak the stop string"


def test_full_queue_raises_overloaded_instead_of_blocking(engine: DecodeEngine) -> None:
    engine.propose(ServedToken(None, None, 1, None))
    # not started: nothing drains the queue
    for _ in range(engine.queue_size):
        engine.submit(_request(engine, "q", max_tokens=1)[0])
    with pytest.raises(Overloaded) as info:
        engine.submit(_request(engine, "q", max_tokens=1)[0])
    assert info.value.retry_after > 0


def test_swap_mid_batch_applies_to_new_requests_only(engine: DecodeEngine) -> None:
    """A token proposed mid-batch applies to requests that start after it; the running one keeps its token."""
    token = make_token(engine.digests, seed=3)  # type: ignore[attr-defined]
    engine.propose(ServedToken(None, None, 1, None))
    engine.start()
    req, c = _request(engine, "long", max_tokens=200, temperature=0)
    engine.submit(req)
    while not c.events:
        threading.Event().wait(0.005)
    engine.propose(ServedToken(9, token.sha256, 2, token))
    first = c.finished
    req2, c2 = _request(engine, "long", max_tokens=3, temperature=0)
    engine.submit(req2)
    assert first.token.generation == 1
    assert c2.finished.token.generation == 2


def test_joining_a_running_batch_changes_no_output(engine: DecodeEngine) -> None:
    """A request admitted between decode steps, with a newer token, decodes exactly as it would alone,
    and the row in flight goes on with its own token: the joint cache's padding and per-row tokens are right."""
    token = make_token(engine.digests, seed=4)  # type: ignore[attr-defined]
    engine.propose(ServedToken(None, None, 1, None))
    engine.start()

    def alone(text: str, n: int) -> Finished:
        req, c = _request(engine, text, max_tokens=n, temperature=0)
        engine.submit(req)
        return c.finished

    long_base = alone("tell me a long story about a cat and a dog", 40)
    long_req, c1 = _request(engine, "tell me a long story about a cat and a dog", max_tokens=40, temperature=0)
    engine.submit(long_req)
    while not any(isinstance(e, Delta | Started) for e in c1.events):
        threading.Event().wait(0.001)
    threading.Event().wait(0.02)  # a few steps in
    engine.propose(ServedToken(5, token.sha256, 2, token))
    short_req, c2 = _request(engine, "hi", max_tokens=6, temperature=0)
    engine.submit(short_req)
    joined, kept = c2.finished, c1.finished
    short_token = alone("hi", 6)

    assert kept.completion_tokens == 40 and engine.stats.batches == 3, "the short request joined the long one"
    assert kept.token.generation == 1 and kept.text == long_base.text
    assert joined.token.generation == 2 and short_token.token.generation == 2
    assert joined.text == short_token.text
    assert not any(isinstance(e, Failed) for e in c1.events + c2.events)
