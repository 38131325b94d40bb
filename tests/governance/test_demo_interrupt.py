"""`govern demo` interrupted (SIGTERM as `timeout`/CI/a container runtime send, SIGINT as Ctrl-C)
or ending normally stops everything it started: the API, the workers (and their Celery pools),
beat, both replicas, and the embedded PostgreSQL and Redis it brought up.

The demo runs as a real subprocess on its own embedded servers (a fresh state folder, no
GOVERN_ URLs), up to step 1 (`--until 1`: the services, no training), with `--keep-running`
so it waits for the signal. Every pid in the process group of every child is collected
while they run; afterwards none may be alive and no port may still accept a connection.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from governance import embedded
from governance.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MODEL_CACHE = Path(os.environ.get("GOVERN_TEST_STATE_DIR", ROOT / "state")) / "models"  # de-quantized once
CHILDREN = {"api", "worker-gates", "worker-monitoring", "beat", "replica-1", "replica-2"}
UP_MARK = "services stay up"

pytestmark = pytest.mark.slow  # about 40 s a case: two replicas load SmolLM2


def _group(pgid: int) -> set[int]:
    """Every live process in process group ``pgid``."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    pids.add(int(entry.name))
    return pids


def _children_of(pid: int) -> set[int]:
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.add(int(entry.name))
    return out


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture()
def demo_env() -> Iterator[tuple[dict[str, str], Path]]:
    state = Path(tempfile.mkdtemp(prefix="gdemo-"))  # short: PostgreSQL's socket path has a length limit
    MODEL_CACHE.mkdir(parents=True, exist_ok=True)
    (state / "models").symlink_to(MODEL_CACHE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOVERN_")}
    env.update({"GOVERN_STATE_DIR": str(state), "HF_HUB_OFFLINE": "1", "COLUMNS": "250",
                "PYTHONPATH": str(ROOT)})
    try:
        yield env, state
    finally:
        # never leave anything behind, whatever the test saw
        record = state / "demo" / "logs" / "processes.json"
        if record.exists():
            for info in json.loads(record.read_text()).values():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(int(info["pid"]), signal.SIGKILL)
        embedded.down(Settings(state_dir=state))
        shutil.rmtree(state, ignore_errors=True)


def _start(env: dict[str, str], state: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    out = state / "demo-output.txt"
    with out.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "governance.cli.main", "demo", "--fast", "--until", "1",
             "--db-name", f"govern_demo_{uuid.uuid4().hex[:8]}", *extra],
            cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # the test's own cleanup can reach the demo's group
        )
    return proc, out


def _snapshot(state: Path, *, all_ready: bool = True) -> tuple[dict[str, set[int]], set[int]]:
    """The pids of every child's process group and of the embedded servers; the ports they hold."""
    children = json.loads((state / "demo" / "logs" / "processes.json").read_text())
    assert set(children) == CHILDREN, children
    pids = {name: _group(int(info["pid"])) for name, info in children.items()}
    ports = {urlparse(info["ready_url"]).port for info in children.values() if info["ready_url"]}
    services = json.loads((state / "services" / "services.json").read_text())
    pg = int(services["postgresql"]["pid"])
    pids["postgresql"] = {pg} | _children_of(pg)
    pids["redis"] = {int(services["redis"]["pid"])}
    ports.add(urlparse(services["redis"]["url"]).port)
    assert all(pids.values()), pids
    ports = {p for p in ports if p and (all_ready or _port_open(p))}
    assert all(_port_open(p) for p in ports), ports
    return pids, ports


def _wait_up(proc: subprocess.Popen[bytes], out: Path, timeout: float = 400.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if UP_MARK in out.read_text(errors="replace"):
            return
        assert proc.poll() is None, out.read_text(errors="replace")[-4000:]
        time.sleep(0.5)
    raise AssertionError("the demo's services did not come up:\n" + out.read_text(errors="replace")[-4000:])


def _assert_all_gone(pids: dict[str, set[int]], ports: set[int]) -> None:
    deadline = time.monotonic() + 5.0  # reparented zombies are reaped by init a moment later
    alive = {}
    while time.monotonic() < deadline:
        alive = {name: {p for p in group if embedded.pid_alive(p)} for name, group in pids.items()}
        alive = {k: v for k, v in alive.items() if v}
        if not alive:
            break
        time.sleep(0.1)
    assert not alive, f"still running after the demo ended: {alive}"
    assert not [p for p in ports if _port_open(p)], "ports still open"


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)],
                         ids=["SIGTERM", "SIGINT"])
def test_an_interrupted_demo_stops_everything_it_started(
    demo_env: tuple[dict[str, str], Path], sig: signal.Signals, code: int
) -> None:
    env, state = demo_env
    proc, out = _start(env, state, "--keep-running")
    try:
        _wait_up(proc, out)
        pids, ports = _snapshot(state)
        t0 = time.monotonic()
        proc.send_signal(sig)
        rc = proc.wait(90)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    text = " ".join(out.read_text(errors="replace").split())
    assert rc == code, text[-3000:]
    assert f"interrupted by {sig.name}; stopped " in text, text[-3000:]
    line = text.split(f"interrupted by {sig.name}; stopped ", 1)[1]
    for name in (*CHILDREN, "embedded PostgreSQL and Redis"):
        assert name in line, line
    _assert_all_gone(pids, ports)
    assert took < 60, took


def test_a_demo_that_ends_stops_everything_it_started(demo_env: tuple[dict[str, str], Path]) -> None:
    env, state = demo_env
    proc, out = _start(env, state)
    seen: tuple[dict[str, set[int]], set[int]] | None = None
    record = state / "demo" / "logs" / "processes.json"
    deadline = time.monotonic() + 400
    try:
        # without --keep-running it ends by itself right after step 1: catch everything while it is up
        while proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError, KeyError, AssertionError, TypeError):
                if record.exists() and set(json.loads(record.read_text())) == CHILDREN and seen is None:
                    seen = _snapshot(state, all_ready=False)
            time.sleep(0.2)
        rc = proc.wait(90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert rc == 0, out.read_text(errors="replace")[-3000:]
    assert seen is not None, "never saw all six processes up"
    _assert_all_gone(*seen)
