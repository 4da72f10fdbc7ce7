"""Benchmark: server time of ``POST lims/api/open`` (new and reused notebook) and of
token verification alone, with 1,000 notebooks already in the workspace.

A real ``jupyter server`` runs as a subprocess on 127.0.0.1; "server time" is
what its access log records for each request (tornado's ``request_time``), the
client round trip is reported beside it. Every loop is bounded in count and
time. Goals (issue 2): reuse p50 < 10 ms, create p50 < 30 ms.

    python bench/open.py [--requests 200] [--existing 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import requests

from jupyter_lims_bridge import signing
from jupyter_lims_bridge.claims import KeySet, OpenTokenVerifier

TIME_LIMIT = 240  # seconds for the whole run
LOG_LINE = re.compile(r"(\d{3}) POST \S*/lims/api/open\S* \(.*?\) ([\d.]+)ms")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def seed_workspace(root: Path, count: int) -> None:
    """``count`` existing entries, as earlier opens would have left them."""
    template = json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    for i in range(count):
        folder = root / "lims" / f"sample-OLD-{i}"
        folder.mkdir(parents=True)
        (folder / f"OLD-{i}.ipynb").write_text(template)


def start_server(root: Path, public_pem: str, port: int, log_path: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "LIMS_BRIDGE_PUBLIC_KEYS": json.dumps([public_pem]),
        "LIMS_BRIDGE_OWNER": "bench",
        "LIMS_BRIDGE_STATE_DIR": str(root.parent / "state"),
        "JUPYTER_CONFIG_DIR": str(root.parent / "config"),
        "JUPYTER_DATA_DIR": str(root.parent / "data"),
        "JUPYTER_RUNTIME_DIR": str(root.parent / "runtime"),
    }
    command = [
        sys.executable,
        "-m",
        "jupyter_server",
        "--no-browser",
        f"--port={port}",
        "--ip=127.0.0.1",
        "--ServerApp.token=bench-token",
        "--ServerApp.allow_root=True",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.log_level=DEBUG",
        # the extension's handlers log their requests through the extension's logger
        "--LimsBridge.log_level=DEBUG",
        "--ServerApp.jpserver_extensions={'jupyter_lims_bridge': True}",
    ]
    log = log_path.open("w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            requests.get(
                f"http://127.0.0.1:{port}/api/status",
                headers={"Authorization": "token bench-token"},
                timeout=1,
            )
            return server
        except requests.ConnectionError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("jupyter server did not start")


def server_times(log_path: Path, status: str) -> list[float]:
    return [float(ms) for code, ms in LOG_LINE.findall(log_path.read_text()) if code == status]


def run_opens(url: str, tokens: list[str], deadline: float) -> list[float]:
    session = requests.Session()
    round_trips = []
    for token in tokens:
        if time.monotonic() > deadline:
            break
        start = time.perf_counter()
        response = session.post(url, headers={"X-Lims-Token": token}, timeout=10)
        round_trips.append((time.perf_counter() - start) * 1000)
        response.raise_for_status()
    return round_trips


def verification_cost(private_key, public_pem: str, count: int) -> list[float]:
    verifier = OpenTokenVerifier(
        keys=KeySet([public_pem]), owner="bench", audience="jupyter-lims-bridge"
    )
    tokens = [
        signing.make_token(private_key, sub="bench", entity={"type": "s", "id": str(i)})
        for i in range(count)
    ]

    async def measure() -> list[float]:
        times = []
        for token in tokens:
            start = time.perf_counter()
            await verifier.verify(token)
            times.append((time.perf_counter() - start) * 1000)
        return times

    return asyncio.run(measure())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--existing", type=int, default=1000)
    args = parser.parse_args()
    deadline = time.monotonic() + TIME_LIMIT

    private_pem, public_pem = signing.generate_key_pair()
    key = signing.load_private_key(private_pem)
    with tempfile.TemporaryDirectory(prefix="bench-open-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        seed_workspace(root, args.existing)
        port = free_port()
        log_path = Path(tmp) / "server.log"
        server = start_server(root, public_pem.decode(), port, log_path)
        try:
            url = f"http://127.0.0.1:{port}/lims/api/open"
            sign = lambda entity_id: signing.make_token(  # noqa: E731
                key, sub="bench", entity={"type": "sample", "id": entity_id, "title": "Bench"}
            )
            # warm up (template load, imports, first directory creation)
            run_opens(url, [sign("WARM") for _ in range(5)], deadline)
            create_rtt = run_opens(url, [sign(f"NEW-{i}") for i in range(args.requests)], deadline)
            reuse_rtt = run_opens(url, [sign("NEW-0") for _ in range(args.requests)], deadline)
            time.sleep(0.5)  # let the access log flush
        finally:
            server.terminate()
            server.wait(10)
        created = server_times(log_path, "201")[1:]  # the first 201 is the warm-up entity
        reused = server_times(log_path, "200")[-len(reuse_rtt) :]
        notebooks = sum(
            1 for p in (root / "lims").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts
        )
    verify_ms = verification_cost(key, public_pem.decode(), min(2000, args.requests * 10))

    rows = [
        ("open, new notebook (server)", created, 30.0),
        ("open, new notebook (round trip)", create_rtt, None),
        ("open, reused notebook (server)", reused, 10.0),
        ("open, reused notebook (round trip)", reuse_rtt, None),
        ("token verification alone (EdDSA)", verify_ms, None),
    ]
    print(
        f"# bench/open.py — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} cores, {notebooks} notebooks in the workspace at the end\n"
    )
    print("| what | n | p50 ms | p99 ms | goal p50 |")
    print("|---|---:|---:|---:|---|")
    ok = True
    for name, values, goal in rows:
        if not values:
            print(f"| {name} | 0 | - | - | |")
            ok = False
            continue
        p50, p99 = statistics.median(values), percentile(values, 99)
        verdict = "" if goal is None else (f"< {goal:g} ms: " + ("met" if p50 < goal else "MISSED"))
        ok &= goal is None or p50 < goal
        print(f"| {name} | {len(values)} | {p50:.2f} | {p99:.2f} | {verdict} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
