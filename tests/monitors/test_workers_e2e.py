"""Real Celery worker and beat processes against the run's PostgreSQL and Redis.

- A worker SIGKILLed in the middle of a rollback (paused by the test hook inside the
  task's transaction) and restarted: exactly one rollback, one audit entry, and the
  last approved version active. Redis hands the unacknowledged task to the restarted
  worker once the (test-shortened) visibility timeout has passed.
- The same rollback task delivered three times to a real worker: one effect.
- Two beat processes dispatching at once: one check per deployment and window.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from governance.audit.models import AuditEntry
from governance.db import unit_of_work
from governance.deployments.models import Promotion
from governance.monitoring.models import DriftCheck
from tests.monitors.conftest import World, make_world

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


class Procs:
    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp, self.env, self.procs = tmp, env, []  # type: ignore[var-annotated]

    def start(self, name: str, args: list[str], extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name}.log").open("ab")
        proc = subprocess.Popen([sys.executable, "-m", "governance.cli.main", *args], cwd=ROOT,
                                env={**os.environ, **self.env, **(extra or {})}, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                self.kill(p, signal.SIGTERM)

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture()
def procs(tmp_path: Path, settings_env: None, redis_url: str) -> Iterator[Procs]:
    env = {k: os.environ[k] for k in ("GOVERN_DATABASE_URL", "GOVERN_REDIS_URL", "GOVERN_STATE_DIR",
                                      "GOVERN_ENVIRONMENT")}
    env["GOVERN_CELERY_VISIBILITY_TIMEOUT"] = "3"
    env["GOVERN_MONITOR_REFERENCE_SIZE"] = "200"
    env["HF_HUB_OFFLINE"] = "1"
    p = Procs(tmp_path, env)
    yield p
    p.stop_all()


@pytest.fixture()
def celery_client(redis_url: str):  # type: ignore[no-untyped-def]
    from monitors.celery_app import app, configure

    return configure(app, redis_url)


def _wait(pred, timeout: float, what: str, procs: Procs | None = None, log: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}\n{procs.log(log)[-4000:] if procs else ''}")


def _auto_rollbacks(world: World) -> tuple[int, int]:
    with unit_of_work(world.engine) as s:
        promos = s.scalar(select(func.count()).select_from(Promotion).where(
            Promotion.deployment_id == world.deployment_id, Promotion.kind == "auto_rollback"))
        audits = s.scalar(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.action == "deployment.auto_rollback", AuditEntry.subject_id == world.deployment))
    return int(promos or 0), int(audits or 0)


def test_sigkill_mid_rollback_then_restart_rolls_back_exactly_once(
    world: World, procs: Procs, celery_client, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    v1 = world.release()
    v2 = world.release()
    marker = tmp_path / "paused"
    worker_args = ["worker", "--queues", "rollback", "--pool", "solo", "--loglevel", "INFO"]
    first = procs.start("worker-1", worker_args, {
        "GOVERN_MONITOR_PAUSE_AT": "rollback.before_commit", "GOVERN_MONITOR_PAUSE_SECONDS": "300",
        "GOVERN_MONITOR_PAUSE_MARKER": str(marker)})
    kwargs = {"deployment_id": world.deployment_id, "expected_version_id": v2, "check_id": 0,
              "detector": "policy_violations"}
    celery_client.send_task("monitors.auto_rollback", kwargs=kwargs, queue="rollback")
    _wait(marker.exists, 180, "the worker to pause inside the rollback", procs, "worker-1")
    # inside the task's transaction: nothing is visible yet
    assert world.active() == v2 and _auto_rollbacks(world) == (0, 0)
    procs.kill(first, signal.SIGKILL)
    assert first.returncode == -signal.SIGKILL
    assert world.active() == v2  # the killed transaction rolled back

    procs.start("worker-2", worker_args)
    _wait(lambda: world.active() == v1, 180, "the redelivered rollback", procs, "worker-2")
    time.sleep(4)  # past the visibility timeout: a second delivery would have happened by now
    assert _auto_rollbacks(world) == (1, 1)
    assert world.active() == v1

    # the same task delivered three more times: no further effect
    results = [celery_client.send_task("monitors.auto_rollback", kwargs=kwargs, queue="rollback")
               for _ in range(3)]
    statuses = [r.get(timeout=120)["status"] for r in results]
    assert statuses == ["already_done"] * 3
    assert _auto_rollbacks(world) == (1, 1)
    assert world.active() == v1


def test_two_beats_one_check_per_window(engine, procs: Procs) -> None:  # type: ignore[no-untyped-def]
    world = make_world(engine, interval=2)
    v1 = world.release()
    world.record(v1, 10)
    fast = {"GOVERN_DISPATCH_SECONDS": "0.5", "GOVERN_OUTBOX_SWEEP_SECONDS": "5"}
    procs.start("worker", ["worker", "--queues", "monitoring", "--concurrency", "2"], fast)
    procs.start("beat-1", ["beat"], fast)
    procs.start("beat-2", ["beat"], fast)

    def checks() -> list[str]:
        with unit_of_work(engine) as s:
            return list(s.scalars(select(DriftCheck.window_key).where(DriftCheck.deployment_id == world.deployment_id)))

    _wait(lambda: len(checks()) >= 4, 240, "four checked windows", procs, "worker")
    keys = checks()
    assert len(keys) == len(set(keys))
    starts = sorted(int(k.rsplit(":", 1)[1]) for k in keys)
    assert all(b - a >= 2 for a, b in itertools.pairwise(starts))
    log = procs.log("worker")
    assert "Traceback" not in log, log[-4000:]
