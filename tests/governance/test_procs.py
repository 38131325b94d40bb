"""The supervisor the demo uses (`ProcessGroup` + `supervise`), in a second or so: a driver
process owns two children that each lead a process group with grandchildren; SIGTERM or
SIGINT to the driver stops all six, runs the teardown, and exits 143 / 130."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from governance.embedded import pid_alive

ROOT = Path(__file__).resolve().parents[2]
DRIVER = r"""
import json, subprocess, sys, time
from pathlib import Path
from governance.cli.procs import Interrupted, Managed, ProcessGroup, supervise

out = Path(sys.argv[1])
group = ProcessGroup(out / "logs")
group.on_stop("the teardown", lambda: (out / "teardown-ran").write_text("yes"))
try:
    with supervise(group):
        for name in ("one", "two"):
            # a child leading its own group, with a grandchild in that group
            proc = subprocess.Popen(["sh", "-c", "sleep 300 & sleep 300; wait"], start_new_session=True)
            group.procs.append(Managed(name, proc, out / f"{name}.log"))
        time.sleep(0.5)
        (out / "ready").write_text(json.dumps([m.proc.pid for m in group.procs]))
        time.sleep(120)
except Interrupted as exc:
    print("stopped " + ", ".join(exc.stopped), flush=True)
    sys.exit(exc.exit_code)
"""


def _group(pgid: int) -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.add(int(entry.name))
    return pids


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_every_process_group_and_runs_the_teardown(
    tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
    pids: set[int] = set()
    leaders: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "ready").exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        leaders = json.loads((tmp_path / "ready").read_text())
        pids = set().union(*(_group(pgid) for pgid in leaders))
        assert len(pids) == 6, pids  # per group: the shell and its two sleeps
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
    finally:
        for pgid in leaders:  # never leave a sleep behind, whatever happened
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, out
    assert out.strip() == "stopped two, one, the teardown"
    assert (tmp_path / "teardown-ran").read_text() == "yes"
    deadline = time.monotonic() + 5
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if pid_alive(p)]
    assert not (tmp_path / "logs" / "processes.json").exists() or json.loads(
        (tmp_path / "logs" / "processes.json").read_text()) == {}


def test_a_child_started_without_waiting_is_waited_for_later(tmp_path: Path) -> None:
    """`start(wait=False)` returns without waiting for readiness (the demo starts its replicas
    together); `wait_ready` then waits, and names a child that exited before it ever answered.
    The same start with the default ``wait=True`` waits, and so raises at once."""
    from governance.cli.procs import ProcessGroup

    group = ProcessGroup(tmp_path / "logs")
    never_ready = "http://127.0.0.1:9/readyz"
    managed = group.start("help", ["--help"], ready_url=never_ready, wait=False)
    assert managed in group.procs
    with pytest.raises(RuntimeError, match="help exited with code 0 at start"):
        group.wait_ready(managed, 60)
    with pytest.raises(RuntimeError, match="waited exited with code 0 at start"):
        group.start("waited", ["--help"], ready_url=never_ready, timeout=60)
    group.stop_all()
