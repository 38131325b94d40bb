"""Evidence dossier benchmark: a deployment dossier over a busy period (issue 23).

A scratch database of its own (created, migrated and dropped; see bench_audit.py) gets a
deployment through the real services, then, bulk-loaded with COPY: 100,000 recorded
outputs, 1,000 drift checks (two detectors each, one in twenty drifting) and 10,000 audit
entries continuing the real chain (one in fifty a freeze or unfreeze of the deployment,
which the dossier cites). Timed: the whole CLI path of ``govern dossier deployment`` —
facts, sealing (signed export of the cited range), rendering and writing — for PDF and
for HTML, and the offline verification of each file. Target: the PDF in < 15 s.

    .venv/bin/python bench/bench_dossier.py [--outputs 100000] [--checks 1000] [--entries 10000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from bench_audit import Scratch, _admin_url
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from governance.audit.canonical import body_from_stored, canonical_json, format_ts
from governance.audit.models import AuditEntry
from governance.auth import service as auth
from governance.db import make_engine, unit_of_work
from governance.deployments import service as deployments
from governance.dossier import service as dossiers
from governance.dossier.verify import verify_dossier
from governance.principal import Principal
from governance.registry import service as registry

POLICY = (Path(__file__).resolve().parents[1] / "policies" / "default.yaml").read_text()
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def setup(url: str) -> tuple[str, int]:
    engine = make_engine(url)
    with unit_of_work(engine) as s:
        user, _ = auth.create_user(s, name="bench-admin", role="admin", actor="system:bench")
        admin = Principal(name="bench-admin", role="admin", user_id=user.id, key_prefix=None)
        registry.register_base_model(s, name="bench-base", weights_digest="a" * 64, tokenizer_digest="b" * 64,
                                     config={"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2})
        dep = deployments.create_deployment(s, name="bench-dep", base_model="bench-base", policy_text=POLICY,
                                            principal=admin)
        dep_id = dep.id
    engine.dispose()
    return "bench-dep", dep_id


def load(url: str, dep: str, dep_id: int, *, n_outputs: int, n_checks: int, n_entries: int) -> None:
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    engine = make_engine(url)
    with unit_of_work(engine) as s:
        head = s.scalars(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1)).one()
        seq0, prev = head.seq, head.hash
        assert s.scalar(select(func.count()).select_from(AuditEntry)) == seq0
    engine.dispose()
    period = timedelta(minutes=n_checks)
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cols = "seq, ts, actor, actor_key_id, action, subject_type, subject_id, payload, prev_hash, hash"
        with cur.copy(f"copy audit_log ({cols}) from stdin") as copy:
            for i in range(1, n_entries + 1):
                seq = seq0 + i
                ts = format_ts(T0 + period * i / (n_entries + 1))
                if i % 50 == 0:
                    action = "deployment.freeze" if i % 100 == 0 else "deployment.unfreeze"
                    payload = canonical_json({"reason": f"incident review {i // 50}", "until": None}
                                             if action == "deployment.freeze" else {"reason": "cleared"})
                    actor = "user:officer"
                else:
                    action, actor = "bench.event", "system:bench"
                    payload = canonical_json({"n": i, "digest": f"{i:064x}"})
                body = body_from_stored(seq=seq, ts=ts, actor=actor, actor_key_id=None, action=action,
                                        subject_type="deployment", subject_id=dep, payload_text=payload)
                h = hashlib.sha256((prev + body).encode("utf-8")).hexdigest()
                copy.write_row((seq, ts, actor, None, action, "deployment", dep, payload, prev, h))
                prev = h
        ocols = ("deployment_id, generation, request_id, messages, output, prompt_tokens, completion_tokens, "
                 "latency_ms, created_at")
        with cur.copy(f"copy outputs ({ocols}) from stdin") as copy:
            for i in range(n_outputs):
                copy.write_row((dep_id, 0, f"r{i}", "[]", f"output {i}", 5, 20, 80.0, T0 + period * i / n_outputs))
        ccols = ("deployment_id, generation, window_key, window_start, window_end, sample_size, verdict, detectors, "
                 "created_at, finished_at")
        with cur.copy(f"copy drift_checks ({ccols}) from stdin") as copy:
            for i in range(n_checks):
                start = T0 + timedelta(minutes=i)
                drift = i % 20 == 19
                dets = {name: {"name": name, "kind": kind, "verdict": "drift" if drift else "ok", "sample_size": 100,
                               "statistic": (12.0 if drift else 1.0 + (i % 7) / 3), "threshold": 9.6,
                               "p_values": {}, "evidence": {}}
                        for name, kind in (("policy_violations", "cusum_bernoulli"),
                                           ("descriptor_means", "cusum_gaussian"))}
                copy.write_row((dep_id, 0, f"w{i}", start, start + timedelta(minutes=1), 100,
                                "drift" if drift else "ok", json.dumps(dets), start + timedelta(seconds=59),
                                start + timedelta(seconds=59)))
        cur.execute("analyze")
        conn.commit()


def timed_dossier(url: str, dep: str, key: Ed25519PrivateKey, out: Path, *, until: datetime) -> tuple[float, int]:
    engine = make_engine(url)
    t0 = time.perf_counter()
    with unit_of_work(engine) as s:
        doc = dossiers.deployment_dossier(s, name=dep, fmt=out.suffix[1:], key=key, actor="system:bench",
                                          since=T0, until=until)
    out.write_bytes(doc.content)
    took = time.perf_counter() - t0
    engine.dispose()
    return took, doc.facts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outputs", type=int, default=100_000)
    ap.add_argument("--checks", type=int, default=1_000)
    ap.add_argument("--entries", type=int, default=10_000)
    args = ap.parse_args()
    key = Ed25519PrivateKey.generate()
    table = Table(title=f"deployment dossier: {args.outputs:,} outputs, {args.checks:,} drift checks, "
                        f"{args.entries:,} audit entries")
    for col in ("measure", "result", "target"):
        table.add_column(col)
    with Scratch(_admin_url()) as db, tempfile.TemporaryDirectory() as tmp:
        dep, dep_id = setup(db.url)
        t0 = time.perf_counter()
        load(db.url, dep, dep_id, n_outputs=args.outputs, n_checks=args.checks, n_entries=args.entries)
        table.add_row("bulk load (COPY)", f"{time.perf_counter() - t0:.1f} s", "setup")
        until = T0 + timedelta(minutes=args.checks + 1)
        for fmt, target in (("pdf", "< 15 s"), ("html", "reported")):
            out = Path(tmp) / f"dossier.{fmt}"
            took, facts = timed_dossier(db.url, dep, key, out, until=until)
            table.add_row(f"write the {fmt.upper()} dossier ({facts} facts, {out.stat().st_size / 1e6:.1f} MB)",
                          f"{took:.1f} s", target + (" — met" if fmt == "pdf" and took < 15 else ""))
            t1 = time.perf_counter()
            res = verify_dossier(out, public_key=key.public_key())
            assert res.ok, res.problems[:3]
            table.add_row(f"verify the {fmt.upper()} dossier offline", f"{time.perf_counter() - t1:.1f} s",
                          "reported")
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
