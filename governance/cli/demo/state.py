"""What every step of the demo shares: its names, its state, and how a step speaks, waits and fails."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from governance.cli.procs import Managed, ProcessGroup
from governance.client import GovernClient

ROOT = Path(__file__).resolve().parents[3]
DEPLOYMENT = "support-bot"
ADAPTER = "support-house-style"
DEMO_DB = "govern_demo"
DEMO_REDIS_DB = 13


class DemoFailed(RuntimeError):
    """A step's outcome was not what the story needs; the message names the step."""


@dataclass
class Users:
    engineer: str = ""
    officer: str = ""
    auditor: str = ""
    admin: str = ""
    service: str = ""


@dataclass
class DemoState:
    fast: bool
    db_name: str
    state_dir: Path
    work: Path
    console: Console
    env: dict[str, str] = field(default_factory=dict)
    api_url: str = ""
    replica_urls: list[str] = field(default_factory=list)
    # replicas started but not yet seen ready (they load the model while the tokens train)
    loading_replicas: list[tuple[Managed, str]] = field(default_factory=list)
    users: Users = field(default_factory=Users)
    versions: dict[str, int] = field(default_factory=dict)
    gate: dict[str, dict[str, Any]] = field(default_factory=dict)
    numbers: dict[str, Any] = field(default_factory=dict)
    started_services: bool = False
    procs: ProcessGroup | None = None

    def client(self, key: str) -> GovernClient:
        return GovernClient(self.api_url, key, timeout=120.0)


def say(st: DemoState, text: str) -> None:
    st.console.print(f"  {text}", highlight=False)


def said(st: DemoState, text: str) -> None:
    """A line with data in it (brackets included), printed as is: no rich markup."""
    st.console.print(f"  {text}", highlight=False, markup=False)


@contextlib.contextmanager
def step(st: DemoState, number: int, title: str) -> Iterator[None]:
    st.console.rule(f"[bold]{number}. {title}")
    t0 = time.monotonic()
    try:
        yield
    except DemoFailed:
        raise
    except Exception as exc:  # every failure names its step
        raise DemoFailed(f"step {number} ({title}) failed: {type(exc).__name__}: {exc}") from exc
    st.console.print(f"  [dim]({time.monotonic() - t0:.0f} s)[/]")


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise DemoFailed(f"timed out after {timeout:.0f} s waiting for {what}")
