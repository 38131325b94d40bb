"""Supervise the service processes (API, worker, beat, serving replicas) for the demo and e2e tests.

Each process gets its own log file under ``<state>/logs``, starts in its own process
group, and is stopped with SIGTERM (then SIGKILL) so nothing is left behind, also when
the supervisor itself is interrupted.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Managed:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    ready_url: str | None = None


@dataclass
class ProcessGroup:
    """Start, wait for and stop a set of `govern` subprocesses."""

    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    procs: list[Managed] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop_all)

    def start(self, name: str, args: list[str], *, ready_url: str | None = None, timeout: float = 120.0) -> Managed:
        log = self.log_dir / f"{name}.log"
        env = {**os.environ, **self.env}
        fh = log.open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "governance.cli.main", *args],
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        fh.close()
        managed = Managed(name, proc, log, ready_url)
        self.procs.append(managed)
        if ready_url:
            self.wait_ready(managed, timeout)
        return managed

    def wait_ready(self, managed: Managed, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if managed.proc.poll() is not None:
                raise RuntimeError(
                    f"{managed.name} exited with code {managed.proc.returncode} at start; last log lines:\n"
                    + tail(managed.log)
                )
            try:
                if managed.ready_url and httpx.get(managed.ready_url, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{managed.name} not ready after {timeout:.0f} s; last log lines:\n" + tail(managed.log))

    def stop(self, managed: Managed, timeout: float = 15.0) -> None:
        proc = managed.proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if managed in self.procs:
            self.procs.remove(managed)

    def stop_all(self) -> None:
        for managed in reversed(list(self.procs)):
            self.stop(managed)


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
