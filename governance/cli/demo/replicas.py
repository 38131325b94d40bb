"""How the demo sees a promotion or a rollback arrive: every serving replica reports the new generation."""

from __future__ import annotations

import time

import httpx

from governance.cli.demo.processes import ensure_replicas
from governance.cli.demo.state import DemoState, say, wait_for


def replica_generation(url: str) -> int:
    """The generation a replica serves (its /readyz), or -1 when it cannot say."""
    try:
        r = httpx.get(f"{url}/readyz", timeout=2.0)
        body = r.json()
        return int(body.get("generation") or body.get("active", {}).get("generation") or -1)
    except (httpx.HTTPError, ValueError, TypeError, AttributeError):
        return -1


def wait_replicas(st: DemoState, generation: int) -> float:
    """Wait until every replica serves ``generation``; the milliseconds it took (from the call,
    once the replicas have finished loading)."""
    ensure_replicas(st)
    t0 = time.monotonic()
    wait_for(f"every replica to serve generation {generation}",
             lambda: all(replica_generation(u) >= generation for u in st.replica_urls), timeout=60, interval=0.05)
    ms = (time.monotonic() - t0) * 1000
    say(st, f"every replica serves generation {generation} ({ms:.0f} ms after the call returned)")
    return ms
