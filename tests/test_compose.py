"""docker-compose.yml: its wiring, and its web and worker services' own commands and health
checks run here against PostgreSQL and Redis (``TEST_DATABASE_URL``, ``TEST_REDIS_URL``) with
the environment the file gives them. Building the image and running the containers needs a
Docker daemon and registry access, which the test machines lack."""
from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_wait_for_healthy_databases_and_share_the_data_volume(compose):
    services = compose["services"]
    assert set(services) == {"web", "worker", "postgres", "redis"}
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
    postgres_env = services["postgres"]["environment"]
    for name in ("web", "worker"):
        service = services[name]
        assert service["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                         "redis": {"condition": "service_healthy"}}
        env = service["environment"]
        url = sa.engine.make_url(env["SONOLABEL_DATABASE_URL"])
        assert (url.host, url.username, url.password, url.database) == (
            "postgres", postgres_env["POSTGRES_USER"], postgres_env["POSTGRES_PASSWORD"],
            postgres_env["POSTGRES_DB"])
        assert env["SONOLABEL_REDIS_URL"].startswith("redis://redis:")
        assert f"data:{env['SONOLABEL_DATA_DIR']}" in service["volumes"]
    assert {"data", "pgdata"} <= set(compose["volumes"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _expand(value: str) -> str:
    """Compose's ``${NAME:-default}`` and ``${NAME:?message}`` against this environment."""
    def one(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if os.environ.get(name):
            return os.environ[name]
        if op == ":-":
            return arg
        raise AssertionError(f"{name} must be set: {arg}")
    return re.sub(r"\$\{(\w+)(:[-?])([^}]*)\}", one, str(value))


def _health(service: dict, port: int) -> subprocess.CompletedProcess:
    kind, *argv = service["healthcheck"]["test"]
    assert kind == "CMD" and argv[0] == "python"
    argv = [sys.executable, *(a.replace("127.0.0.1:5000", f"127.0.0.1:{port}") for a in argv[1:])]
    return subprocess.run(argv, capture_output=True, timeout=30)


@pytest.fixture
def stack_env(tmp_path, monkeypatch, compose):
    base, redis_url = os.environ.get("TEST_DATABASE_URL"), os.environ.get("TEST_REDIS_URL")
    if not (base and redis_url):
        pytest.skip("the compose stack runs on PostgreSQL and Redis: set TEST_DATABASE_URL and "
                    "TEST_REDIS_URL")
    schema = f"compose_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    monkeypatch.setenv("SONOLABEL_SECRET_KEY", uuid.uuid4().hex)
    env = {k: _expand(v) for k, v in compose["x-app"]["environment"].items()}
    sep = "&" if "?" in base else "?"
    # The service names resolve inside the compose network only; here the same servers run locally.
    env |= {"SONOLABEL_DATABASE_URL": f"{base}{sep}options=-csearch_path%3D{schema}",
            "SONOLABEL_REDIS_URL": redis_url,
            "SONOLABEL_QUEUE_NAME": schema,
            "SONOLABEL_DATA_DIR": str(tmp_path / "data"),
            "SONOLABEL_INSTANCE_DIR": str(tmp_path / "instance")}
    yield {**os.environ, **env, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}, \
        env["SONOLABEL_DATABASE_URL"]
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


def _start(command: str | list[str], env: dict, log: Path) -> subprocess.Popen:
    argv = shlex.split(command) if isinstance(command, str) else command
    return subprocess.Popen(argv, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


@pytest.mark.slow
def test_web_and_worker_commands_start_migrate_and_pass_their_health_checks(
        compose, stack_env, tmp_path):
    env, database_url = stack_env
    services = compose["services"]
    port = _free_port()
    web_command = services["web"]["command"].replace("0.0.0.0:5000", f"127.0.0.1:{port}")
    assert web_command != services["web"]["command"], "the web service no longer binds port 5000"
    web = _start(web_command, env, tmp_path / "web.log")
    worker = _start(services["worker"]["command"], env, tmp_path / "worker.log")
    try:
        deadline, health = time.time() + 120, None
        while time.time() < deadline and web.poll() is None:
            health = _health(services["web"], port)
            if health.returncode == 0:
                break
            time.sleep(1)
        assert health is not None and health.returncode == 0, (tmp_path / "web.log").read_text()[-3000:]

        # The web command migrated the database to the newest revision.
        engine = sa.create_engine(database_url)
        with engine.connect() as conn:
            revision = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        engine.dispose()
        heads = subprocess.run([str(BIN / "sonolabel"), "db", "heads"], env=env,
                               capture_output=True, text=True, timeout=120)
        assert revision and revision in heads.stdout

        # As the file's header says: create the first admin, who can then log in.
        created = subprocess.run([str(BIN / "sonolabel"), "users", "create", "admin", "--role",
                                  "admin"], env=env, input="compose-secret\n",
                                 capture_output=True, text=True, timeout=120)
        assert created.returncode == 0, created.stderr
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=10).read().decode()
        assert "csrf_token" in page

        # The worker, started with the web before the migration, waited for it, then consumes.
        log = tmp_path / "worker.log"
        deadline = time.time() + 60
        while "worker consuming" not in log.read_text() and time.time() < deadline:
            assert worker.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        assert "worker consuming RedisStorage" in log.read_text(), log.read_text()[-3000:]
        assert worker.poll() is None and _health(services["worker"], port).returncode == 0
    finally:
        _stop(web)
        _stop(worker)
    # The worker's check looks for its process: with the worker gone it fails.
    others = [p for p in os.listdir("/proc") if p.isdigit() and _is_worker(p)]
    if not others:
        assert _health(services["worker"], port).returncode == 1


def _is_worker(pid: str) -> bool:
    try:
        return b"sonolabel\0worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
