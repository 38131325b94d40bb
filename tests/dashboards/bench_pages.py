"""Page timings of the dashboard with a large history: 100,000 outputs and 10,000 audit entries.

Not a test (no timed assertions in the suite): it prints a table. It makes a throwaway
database on the machine's PostgreSQL (``GOVERN_TEST_DATABASE_URL`` or 127.0.0.1:5432),
fills it through the real services, times each page through the app (median of 5
requests) and drops the database.

    .venv/bin/python -m tests.dashboards.bench_pages
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from datetime import timedelta

import psycopg
from fastapi.testclient import TestClient

ADMIN = os.environ.get("GOVERN_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
N_OUTPUTS, N_AUDIT, N_VERSIONS, N_CHECKS, N_ALERTS = 100_000, 10_000, 60, 500, 300


def main() -> None:
    from governance import migrate
    from governance.db import make_engine

    name = f"govern_bench_{uuid.uuid4().hex[:10]}"
    admin = ADMIN.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    url = ADMIN.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        os.environ.update(GOVERN_DATABASE_URL=url, GOVERN_ENVIRONMENT="test",
                          GOVERN_STATE_DIR=tempfile.mkdtemp(prefix="govern-bench-"))
        os.environ.setdefault("GOVERN_REDIS_URL", "redis://127.0.0.1:6379/14")
        run(engine)
    finally:
        engine.dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


def run(engine: object) -> None:
    import dashboards.app
    from governance.alerts import service as alerts
    from governance.api.app import create_app
    from governance.audit import service as audit
    from governance.audit.signing import default_private_key_path, generate_keypair
    from governance.db import unit_of_work, utcnow
    from governance.deployments import service as deployments
    from governance.monitoring.models import DriftCheck
    from governance.outputs.service import ingest_outputs
    from governance.settings import get_settings, reset_settings_cache
    from tests.dashboards.conftest import drift_detectors, make_world, sign_in

    reset_settings_cache()
    t0 = time.perf_counter()
    world = make_world(engine)  # type: ignore[arg-type]
    first = world.gated_release()
    world.approve(first)
    world.promote(first)
    for _ in range(N_VERSIONS):
        world.gated_release(failing_cases=30)
    with unit_of_work(engine) as s:  # type: ignore[arg-type]
        for b in range(N_OUTPUTS // 1000):
            ingest_outputs(s, deployment=world.deployment, rows=[
                {"request_id": f"r{b}-{i}", "version_id": first, "generation": 1, "output": "x" * 200,
                 "messages": [{"role": "user", "content": "hello"}], "latency_ms": 12.0} for i in range(1000)])
        dep = deployments.get_deployment_or_raise(s, name=world.deployment)
        now = utcnow()
        for i in range(N_CHECKS):
            s.add(DriftCheck(deployment_id=dep.id, version_id=first, window_key=f"w{i}",
                             window_start=now - timedelta(minutes=N_CHECKS - i + 1),
                             window_end=now - timedelta(minutes=N_CHECKS - i), sample_size=80, verdict="ok",
                             detectors=drift_detectors(i % 10)))
        for i in range(N_ALERTS):
            alerts.raise_alert(s, kind="drift", severity="warning", incident_key=f"bench-{i}", message="bench",
                               deployment_id=dep.id, actor="system:bench")
    with unit_of_work(engine) as s:  # type: ignore[arg-type]
        have = audit.head(s)[0]
        for i in range(max(N_AUDIT - have, 0)):
            audit.append(s, actor="system:bench", action="bench.entry", subject_type="bench", subject_id=i,
                         payload={"i": i})
    generate_keypair(default_private_key_path())
    print(f"setup: {time.perf_counter() - t0:.1f} s")

    app = create_app(get_settings())
    dashboards.app.install(app)
    vid = world.versions[-1]
    pages = [
        ("releases", "/ui/releases"),
        ("releases (all, page 2)", "/ui/releases?tab=all&page=2"),
        ("version (30 failing cases)", f"/ui/versions/{vid}"),
        ("deployments", "/ui/deployments"),
        ("deployment timeline", f"/ui/deployments/{world.deployment}"),
        (f"drift ({N_CHECKS} checks)", f"/ui/deployments/{world.deployment}/drift"),
        (f"alerts ({N_ALERTS} open)", "/ui/alerts"),
        (f"audit ({N_AUDIT} entries)", "/ui/audit"),
        ("audit filtered by actor", "/ui/audit?actor=system:bench"),
        ("audit page 100 (keyset)", "/ui/audit?before=5000"),
        (f"audit verify ({N_AUDIT} entries)", "/ui/audit/verify"),
    ]
    with TestClient(app, follow_redirects=False) as client:
        sign_in(client, world.people["auditor"].key)
        print(f"{'page':<34} {'median ms':>10} {'max ms':>8}")
        for label, path in pages:
            times = []
            for _ in range(5):
                t = time.perf_counter()
                r = client.get(path)
                times.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200, (path, r.status_code)
            print(f"{label:<34} {statistics.median(times):>10.1f} {max(times):>8.1f}")


if __name__ == "__main__":
    main()
