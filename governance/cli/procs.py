"""Supervise the processes a command starts (API, workers, beat, serving replicas, embedded servers).

One `ProcessGroup` owns everything a command started: each `govern` subprocess (its own log
file under the log folder, its own process group) and any other teardown (`on_stop`, e.g.
the embedded PostgreSQL and Redis). `supervise` tears it all down when the block ends, normally,
with an error, or on SIGINT/SIGTERM: those two signals raise `Interrupted` in the main thread
(so ``finally`` blocks run, as for Ctrl-C), the group stops every process group with SIGTERM
(then SIGKILL), runs the teardowns, and the command exits with 128 + the signal number.
The pids are written to ``<log folder>/processes.json`` so operators and tests can see what runs.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; a BaseException (like KeyboardInterrupt) so ``except Exception`` lets it by."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.stopped: list[str] = []  # what the group stopped, filled in by `supervise`

    @property
    def signame(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


@dataclass
class Managed:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    ready_url: str | None = None


@dataclass
class ProcessGroup:
    """Start, wait for and stop a set of `govern` subprocesses, and the teardowns registered with `on_stop`."""

    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    procs: list[Managed] = field(default_factory=list)
    teardowns: list[tuple[str, Callable[[], object]]] = field(default_factory=list)
    _critical: int = 0
    _pending: int | None = None
    _stopping: bool = False

    def __post_init__(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop_all)

    @property
    def record_path(self) -> Path:
        return self.log_dir / "processes.json"

    def on_stop(self, name: str, fn: Callable[[], object]) -> None:
        """Run ``fn`` when the group stops (after its processes), e.g. to stop servers it started."""
        self.teardowns.append((name, fn))

    def start(self, name: str, args: list[str], *, ready_url: str | None = None, timeout: float = 120.0,
              wait: bool = True) -> Managed:
        """Start ``govern <args>`` as child ``name``; with ``ready_url`` and ``wait``, return once it answers
        200 there (``wait=False``: the caller waits with `wait_ready`, so children can start together)."""
        log = self.log_dir / f"{name}.log"
        env = {**os.environ, **self.env}
        with self.uninterrupted(), log.open("ab") as fh:  # a signal here would lose the child
            proc = subprocess.Popen(
                [sys.executable, "-m", "governance.cli.main", *args],
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
            managed = Managed(name, proc, log, ready_url)
            self.procs.append(managed)
            self._write_record()
        if ready_url and wait:
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
        """SIGTERM to the child's whole process group, SIGKILL after ``timeout``; reaps the child."""
        proc = managed.proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        # the child may be gone while its group (a Celery pool, say) lingers
        _kill_group(proc.pid, timeout=5.0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if managed in self.procs:
            self.procs.remove(managed)
            self._write_record()

    def stop_all(self) -> list[str]:
        """Stop every process (last started first), then run the teardowns; the names of what was stopped."""
        stopped: list[str] = []
        self._stopping = True
        try:
            for managed in reversed(list(self.procs)):
                self.stop(managed)
                stopped.append(managed.name)
            while self.teardowns:
                name, fn = self.teardowns.pop()
                try:
                    fn()
                    stopped.append(name)
                except Exception as exc:  # one failed teardown must not leave the rest running
                    print(f"warning: could not stop {name}: {exc}", file=sys.stderr)
        finally:
            self._stopping = False
        return stopped

    # ------------------------------------------------------------ signals

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping:
            return  # already tearing down: let it finish (it has its own SIGKILL deadlines)
        if self._critical:
            self._pending = signum
            return
        raise Interrupted(signum)

    @contextlib.contextmanager
    def uninterrupted(self) -> Iterator[None]:
        """Hold SIGINT/SIGTERM back for the block (a start that must be recorded); they act after it."""
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
            if not self._critical and self._pending is not None and not self._stopping:
                signum, self._pending = self._pending, None
                raise Interrupted(signum)

    def _write_record(self) -> None:
        record = {m.name: {"pid": m.proc.pid, "ready_url": m.ready_url, "log": str(m.log)} for m in self.procs}
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
        tmp.replace(self.record_path)


@contextlib.contextmanager
def supervise(group: ProcessGroup) -> Iterator[ProcessGroup]:
    """Own ``group`` for the block: SIGINT/SIGTERM raise `Interrupted`; on any exit everything is stopped.

    On a signal the raised `Interrupted` carries what was stopped (``.stopped``), for the one
    line the command prints before it exits with ``exc.exit_code``.
    """
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, group._handle)
    try:
        yield group
    except Interrupted as exc:
        exc.stopped = group.stop_all()
        raise
    finally:
        group.stop_all()
        for s, handler in previous.items():
            signal.signal(s, handler)


def _kill_group(pgid: int, timeout: float) -> None:
    """SIGKILL what is left of process group ``pgid`` (if anything) and wait until it is gone."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + timeout
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
