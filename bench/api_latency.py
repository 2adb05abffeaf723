"""Box-save latency under concurrent annotators: PATCH /api/boxes/<id> on loopback.

The app runs under gunicorn (``--workers`` processes x ``--threads`` threads) on 127.0.0.1, once
over SQLite (WAL, in bench/out) and once over PostgreSQL (a schema of its own, dropped after).
``--clients`` client threads each log in, then save their own box ``--saves`` times through the
same request the workspace sends (JSON, CSRF header, optimistic row_version), waiting
``--think-ms`` between saves (an annotator's drag takes far longer; 0 = back to back). Each save
writes the box and a label_event in one transaction. Prints p50/p95/p99 per database and, last,
``p95 N ms`` for the slower one. Goal: p95 <= 30 ms.

    python bench/api_latency.py [--clients 20] [--saves 40] [--think-ms 100] [--pg URL | --no-pg]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"
PASSWORD = "bench password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(url: str, data_dir: Path, clients: int) -> list[int]:
    """Tables, one annotator and one box per client, each on its own frame."""
    from helpers import seed_scene

    from annotator import create_app
    from annotator.db import db
    from annotator.models import DEFAULT_CLASSES, Box, LabelClass, Role, User
    from werkzeug.security import generate_password_hash

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SONOLABEL_DATA_DIR": str(data_dir), "SECRET_KEY": "bench"})
    with app.app_context():
        db.create_all()
        db.session.add_all(LabelClass(**spec) for spec in DEFAULT_CLASSES)
        db.session.add(User(username="annotator", role=Role.annotator,
                            password_hash=generate_password_hash(PASSWORD)))
        db.session.commit()
    seeded = seed_scene(app, frames=clients, width=64, height=48)
    with app.app_context():
        boxes = [Box(frame_id=f, class_id=1, x=4, y=4, w=20, h=20) for f in seeded.frame_ids]
        db.session.add_all(boxes)
        db.session.commit()
        ids = [b.id for b in boxes]
        db.session.remove()
        db.engine.dispose()
    return ids


class Client:
    """One logged-in browser: a keep-alive connection, the session cookie and the CSRF token."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.cookie = ""
        page = self.request("GET", "/login")[1].decode()
        self.csrf = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
        body = f"username=annotator&password={PASSWORD.replace(' ', '+')}&csrf_token={self.csrf}"
        status, _ = self.request("POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 302, status

    def request(self, method: str, path: str, body: str | None = None, headers: dict | None = None):
        headers = dict(headers or {})
        if self.cookie:
            headers["Cookie"] = self.cookie
        self.conn.request(method, path, body=body, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        for key, value in resp.getheaders():
            if key.lower() == "set-cookie" and value.startswith("session="):
                self.cookie = value.split(";", 1)[0]
        return resp.status, data

    def save(self, box_id: int, version: int, x: float) -> tuple[int, int]:
        body = json.dumps({"row_version": version, "x": x})
        status, data = self.request("PATCH", f"/api/boxes/{box_id}", body, {
            "Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": self.csrf})
        return status, (json.loads(data)["box"]["row_version"] if status == 200 else version)


def run_clients(port: int, box_ids: list[int], saves: int, think_s: float) -> list[float]:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start_gate = threading.Barrier(len(box_ids))

    def worker(box_id: int) -> None:
        try:
            client = Client(port)
            version = 1
            for i in range(3):  # warm-up: connections, caches, the first query plans
                _, version = client.save(box_id, version, 4 + i % 2)
            start_gate.wait()
            mine = []
            for i in range(saves):
                t0 = time.perf_counter()
                status, version = client.save(box_id, version, 4 + i % 3)
                mine.append((time.perf_counter() - t0) * 1000)
                if status != 200:
                    raise RuntimeError(f"save answered {status}")
                if think_s:
                    time.sleep(think_s)
            with lock:
                latencies.extend(mine)
        except Exception as err:  # reported below; one failed client fails the run
            with lock:
                errors.append(f"box {box_id}: {err}")

    threads = [threading.Thread(target=worker, args=(b,)) for b in box_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError("; ".join(errors[:3]))
    return latencies


def serve(url: str, data_dir: Path, instance: Path, workers: int, threads: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "SONOLABEL_DATABASE_URL": url, "SONOLABEL_DATA_DIR": str(data_dir),
           "SONOLABEL_INSTANCE_DIR": str(instance), "SONOLABEL_SECRET_KEY": "bench"}
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    proc = subprocess.Popen([gunicorn, "-w", str(workers), "--threads", str(threads), "-b", f"127.0.0.1:{port}",
                             "--log-level", "warning", "annotator:create_app()"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("gunicorn exited: " + proc.stderr.read().decode()[-500:])
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("gunicorn did not start within 60 s")


def bench_one(name: str, url: str, args: argparse.Namespace, work: Path) -> list[float]:
    data_dir, instance = work / f"{name}-data", work / f"{name}-instance"
    box_ids = prepare(url, data_dir, args.clients)
    proc, port = serve(url, data_dir, instance, args.workers, args.threads)
    try:
        return run_clients(port, box_ids, args.saves, args.think_ms / 1000)
    finally:
        proc.terminate()
        proc.wait(10)


def pg_schema(base: str) -> tuple[str, Callable[[], None]]:
    import sqlalchemy as sa

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()

    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}", drop


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--saves", type=int, default=40, help="saves per client")
    parser.add_argument("--think-ms", type=float, default=100.0, help="pause between a client's saves")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--pg", default=os.environ.get("TEST_DATABASE_URL", PG_DEFAULT))
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.saves < 1 or args.think_ms < 0:
        print("error: --clients and --saves must be >= 1 and --think-ms >= 0", file=sys.stderr)
        return 2
    out = ROOT / "bench" / "out"  # on the repository's disk: some hosts slow /tmp writes a lot
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out, prefix="api-latency-"))
    print(f"{args.clients} clients x {args.saves} saves, {args.think_ms:g} ms think time, "
          f"gunicorn {args.workers} workers x {args.threads} threads")
    results: dict[str, list[float]] = {}
    try:
        results["sqlite"] = bench_one("sqlite", f"sqlite:///{work / 'bench.sqlite'}", args, work)
        if not args.no_pg:
            try:
                url, drop = pg_schema(args.pg)
            except Exception as err:
                print(f"error: PostgreSQL at {args.pg} is not reachable ({type(err).__name__}); "
                      "use --no-pg to measure SQLite only", file=sys.stderr)
                return 2
            try:
                results["postgresql"] = bench_one("postgresql", url, args, work)
            finally:
                drop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name, lat in results.items():
        print(f"{name:10s} n={len(lat)}  p50 {pct(lat, 50):.1f} ms  p95 {pct(lat, 95):.1f} ms  "
              f"p99 {pct(lat, 99):.1f} ms  max {max(lat):.1f} ms")
    slowest = max(results, key=lambda k: pct(results[k], 95))
    print(f"slower database: {slowest}; goal p95 <= 30 ms")
    print(f"p95 {pct(results[slowest], 95):.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
