"""Load and faults for the port proxy (issue #11 item 4): a benchmark, not a test.

Everything runs on 127.0.0.1 against one ``jupyter server`` with the extension
(no other extension), pinned to one core; backends and clients share the
other. Every part is bounded in count and time:

1. **mixed load**: 150 HTTP keep-alive clients (small GETs, ``X-Proxy-Token``)
   and 50 websocket clients (1 KiB echo, one message in flight each) for
   ``--seconds`` (default 60): errors, p50/p99 per kind, the server's RSS
   before, at its peak, and 10 s after;
2. **idle connections**: 1,000 client keep-alive connections, each used once,
   held open ``--idle-seconds`` (default 10); then a fresh client's requests
   (do they still pass, how fast), the server's open file descriptors and RSS;
3. **backend killed mid-response**: a 512 MiB download whose backend is
   SIGKILLed after 8 MiB: the client must see the body cut short (fewer bytes
   than announced, connection closed) within 10 s, never a hang; the backend is
   restarted on the same port and 50 requests through the proxy must pass (the
   pool dropped the dead connections);
4. **slow reader**: a 1 GiB download read at 1 MiB/s for ``--slow-seconds``
   (default 30; the whole GiB would take 17 min): the server's RSS sampled
   every 0.1 s must stay flat (backpressure, nothing buffered).

Run: ``.venv/bin/python bench/proxy_load.py [--seconds 60] [--only load,idle,kill,slow]``.
Prints a Markdown table and a JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

# the helpers of the main benchmark (bench/proxy.py)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from proxy import (
    BACKEND,
    JUPYTER_TOKEN,
    MIB,
    _exec_target,
    free_port,
    pin,
    wait_port,
)


class Setup:
    def __init__(self, tmp: Path) -> None:
        ncpu = os.cpu_count() or 1
        busy = psutil.cpu_percent(interval=1.0, percpu=True) if ncpu > 1 else [0.0]
        order = sorted(range(len(busy)), key=lambda i: busy[i])
        self.server_core = str(order[0])
        self.load_core = str(order[1]) if ncpu > 1 else "0"
        self.tmp = tmp
        self.backend_port = free_port()
        self.fault_port = free_port()  # the backend that gets killed
        self.jupyter_port = free_port()
        self.backends: dict[int, subprocess.Popen] = {}

    def start_backend(self, port: int) -> None:
        self.backends[port] = subprocess.Popen(
            [*pin(self.load_core), sys.executable, str(BACKEND), str(port)],
            stdout=subprocess.DEVNULL,
        )
        wait_port(port)

    def start(self) -> None:
        from jupyter_lims_bridge.proxy_tokens import ProxyTokenStore

        self.start_backend(self.backend_port)
        self.start_backend(self.fault_port)
        state = self.tmp / "state"
        self.token = ProxyTokenStore(state / "proxy_tokens.json").create("load")["token"]
        config = {
            "ServerApp": {
                "jpserver_extensions": {"jupyter_lims_bridge": True, "jupyter_server_proxy": False},
                "allow_root": True,
                "open_browser": False,
                "port": self.jupyter_port,
                "ip": "127.0.0.1",
                "root_dir": str(self.tmp),
                "log_level": "WARN",
            },
            "IdentityProvider": {"token": JUPYTER_TOKEN},
            "LimsBridge": {
                "allowed_ports": [self.backend_port, self.fault_port],
                "state_dir": str(state),
            },
        }
        (self.tmp / "config").mkdir()
        (self.tmp / "config" / "jupyter_server_config.json").write_text(json.dumps(config))
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(self.tmp / "config"),
            "JUPYTER_DATA_DIR": str(self.tmp / "data"),
            "JUPYTER_RUNTIME_DIR": str(self.tmp / "runtime"),
        }
        self.jupyter = subprocess.Popen(
            [*pin(self.server_core), str(Path(sys.executable).with_name("jupyter-server"))],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / "server.log", "w"),  # noqa: SIM115
        )
        wait_port(self.jupyter_port)
        self.server = _exec_target(self.jupyter.pid)
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {int(self.load_core)})

    def stop(self) -> None:
        for p in [self.jupyter, *self.backends.values()]:
            p.terminate()
        for p in [self.jupyter, *self.backends.values()]:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()

    def path(self, port: int, rest: str) -> str:
        return f"/lims/proxy/{port}/{rest}"

    def rss_mib(self) -> float:
        return self.server.memory_info().rss / MIB


# -- a minimal keep-alive HTTP/1.1 client (one per simulated user) ----------------------


class Client:
    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def get(self, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        if self.writer is None or self.writer.is_closing():
            await self.connect()
        assert self.reader is not None and self.writer is not None
        self.writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"X-Proxy-Token: {self.token}\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await asyncio.wait_for(self.reader.readexactly(length), timeout)
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- 1. mixed load -------------------------------------------------------------------


async def mixed_load(s: Setup, seconds: float, n_http: int = 150, n_ws: int = 50) -> dict:
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    deadline = time.monotonic() + seconds
    http_lat: list[float] = []
    ws_lat: list[float] = []
    errors: list[str] = []
    rss = {"before": s.rss_mib(), "peak": s.rss_mib()}

    async def http_user() -> None:
        c = Client(s.jupyter_port, s.token)
        try:
            while time.monotonic() < deadline:
                t = time.perf_counter()
                status, body = await c.get(s.path(s.backend_port, "small"))
                if status != 200 or len(body) != 1024:
                    errors.append(f"http {status}")
                else:
                    http_lat.append(time.perf_counter() - t)
        except Exception as e:
            errors.append(f"http {type(e).__name__}")
        finally:
            c.close()

    async def ws_user() -> None:
        url = f"ws://127.0.0.1:{s.jupyter_port}{s.path(s.backend_port, 'ws')}"
        payload = "w" * 1024
        try:
            ws = await websocket_connect(HTTPRequest(url, headers={"X-Proxy-Token": s.token}))
            while time.monotonic() < deadline:
                t = time.perf_counter()
                await ws.write_message(payload)
                got = await asyncio.wait_for(ws.read_message(), 10)
                if got != payload:
                    errors.append("ws echo mismatch")
                    break
                ws_lat.append(time.perf_counter() - t)
            ws.close()
        except Exception as e:
            errors.append(f"ws {type(e).__name__}")

    async def sample() -> None:
        while time.monotonic() < deadline:
            rss["peak"] = max(rss["peak"], s.rss_mib())
            await asyncio.sleep(0.2)

    await asyncio.gather(
        *(http_user() for _ in range(n_http)), *(ws_user() for _ in range(n_ws)), sample()
    )
    await asyncio.sleep(10)
    rss["after_10s"] = s.rss_mib()
    return {
        "clients": f"{n_http} HTTP + {n_ws} websockets",
        "seconds": seconds,
        "http_requests": len(http_lat),
        "http_p50_ms": pct(http_lat, 0.5) * 1000,
        "http_p99_ms": pct(http_lat, 0.99) * 1000,
        "ws_messages": len(ws_lat),
        "ws_p50_ms": pct(ws_lat, 0.5) * 1000,
        "ws_p99_ms": pct(ws_lat, 0.99) * 1000,
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:5],
        "rss_before_mib": rss["before"],
        "rss_peak_growth_mib": rss["peak"] - rss["before"],
        "rss_after_10s_growth_mib": rss["after_10s"] - rss["before"],
    }


# -- 2. idle keep-alive connections ----------------------------------------------------


async def idle_connections(s: Setup, n: int = 1000, hold: float = 10.0) -> dict:
    rss_before = s.rss_mib()
    fds_before = s.server.num_fds()
    clients = [Client(s.jupyter_port, s.token) for _ in range(n)]
    errors = 0
    for i in range(0, n, 100):  # connect and use them 100 at a time
        batch = clients[i : i + 100]
        results = await asyncio.gather(
            *(c.get(s.path(s.backend_port, "small")) for c in batch), return_exceptions=True
        )
        errors += sum(1 for r in results if isinstance(r, BaseException) or r[0] != 200)
    await asyncio.sleep(hold)
    fds_held = s.server.num_fds()
    # a fresh client while the 1,000 are held
    fresh = Client(s.jupyter_port, s.token)
    lat = []
    for _ in range(50):
        t = time.perf_counter()
        status, _ = await fresh.get(s.path(s.backend_port, "small"))
        errors += status != 200
        lat.append(time.perf_counter() - t)
    fresh.close()
    rss_held = s.rss_mib()
    for c in clients:
        c.close()
    await asyncio.sleep(2)
    return {
        "connections": n,
        "held_s": hold,
        "errors": errors,
        "server_fds_before": fds_before,
        "server_fds_held": fds_held,
        "server_fds_after": s.server.num_fds(),
        "fresh_p50_ms": pct(lat, 0.5) * 1000,
        "fresh_p99_ms": pct(lat, 0.99) * 1000,
        "rss_growth_held_mib": rss_held - rss_before,
    }


# -- 3. the backend killed mid-response -------------------------------------------------


def killed_backend(s: Setup) -> dict:
    size = 512 * MIB
    sock = socket.create_connection(("127.0.0.1", s.jupyter_port), 10)
    sock.settimeout(10)
    sock.sendall(
        f"GET {s.path(s.fault_port, f'bytes?n={size}')} HTTP/1.1\r\nHost: 127.0.0.1:{s.jupyter_port}\r\n"
        f"X-Proxy-Token: {s.token}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(65536)
    head, _, got_bytes = head.partition(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        sock.close()
        return {"outcome": "refused: " + head.split(b"\r\n", 1)[0].decode()}
    got = len(got_bytes)
    killed_at = None
    outcome = "complete"
    started = time.monotonic()
    try:
        while True:
            chunk = sock.recv(1024 * 1024)
            if not chunk:
                outcome = "closed"
                break
            got += len(chunk)
            if killed_at is None and got >= 8 * MIB:
                s.backends[s.fault_port].send_signal(signal.SIGKILL)
                killed_at = time.monotonic()
            if got >= size:
                break
    except TimeoutError:
        outcome = "hung (10 s without a byte)"
    except OSError as e:
        outcome = f"reset ({type(e).__name__})"
    ended = time.monotonic()
    sock.close()
    s.backends[s.fault_port].wait(10)
    # the backend comes back on the same port; the proxy's pool must not hand out its dead links
    s.start_backend(s.fault_port)

    async def after() -> int:
        c = Client(s.jupyter_port, s.token)
        ok = 0
        for _ in range(50):
            try:
                status, body = await c.get(s.path(s.fault_port, "small"))
                ok += status == 200 and len(body) == 1024
            except Exception:
                c.close()
                c = Client(s.jupyter_port, s.token)
        c.close()
        return ok

    c_ok = asyncio.run(after())
    return {
        "announced_mib": size / MIB,
        "received_mib": round(got / MIB, 1),
        "outcome": outcome,
        "cut_within_s": round(ended - (killed_at or started), 2),
        "ok_after_restart": f"{c_ok}/50",
    }


# -- 4. a slow reader -----------------------------------------------------------------------


def slow_reader(s: Setup, seconds: float, rate: int = MIB) -> dict:
    size = 1024 * MIB
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
    sock.connect(("127.0.0.1", s.jupyter_port))
    sock.settimeout(10)
    sock.sendall(
        f"GET {s.path(s.backend_port, f'bytes?n={size}')} HTTP/1.1\r\nHost: 127.0.0.1:{s.jupyter_port}\r\n"
        f"X-Proxy-Token: {s.token}\r\n\r\n".encode()
    )
    base = s.rss_mib()
    samples = []
    got = 0
    start = time.monotonic()
    step = 1 / 16
    while time.monotonic() - start < seconds:
        want = rate * step
        taken = 0
        while taken < want:
            chunk = sock.recv(min(65536, int(want - taken)))
            if not chunk:
                break
            taken += len(chunk)
        got += taken
        samples.append(s.rss_mib())
        time.sleep(step)
    sock.close()
    return {
        "read_mib": round(got / MIB, 1),
        "seconds": seconds,
        "rate_mib_s": round(got / MIB / (time.monotonic() - start), 2),
        "rss_base_mib": round(base, 1),
        "rss_max_growth_mib": round(max(samples) - base, 1),
        "rss_last_growth_mib": round(samples[-1] - base, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60, help="mixed load duration")
    parser.add_argument("--idle-seconds", type=float, default=10)
    parser.add_argument("--slow-seconds", type=float, default=30)
    parser.add_argument("--only", default="load,idle,kill,slow")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    seconds = min(args.seconds, 600)
    results: dict[str, dict] = {}
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="lims-load-") as tmp:
        s = Setup(Path(tmp))
        s.start()
        try:
            if "load" in parts:
                results["load"] = asyncio.run(mixed_load(s, seconds))
            if "idle" in parts:
                results["idle"] = asyncio.run(idle_connections(s, hold=args.idle_seconds))
            if "kill" in parts:
                results["kill"] = killed_backend(s)
            if "slow" in parts:
                results["slow"] = slow_reader(s, min(args.slow_seconds, 1100))
        finally:
            s.stop()
    today = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(
        f"\nRun {today}, nproc={os.cpu_count()}, server on core {s.server_core}, backends "
        f"and clients on core {s.load_core}; load average before: {load}.\n"
    )
    print("| part | result |\n|---|---|")
    for part, r in results.items():
        print(f"| {part} | " + ", ".join(f"{k}={_fmt(v)}" for k, v in r.items()) + " |")
    print(json.dumps(results))
    return 0


def _fmt(v: object) -> str:
    return f"{v:.1f}" if isinstance(v, float) else str(v)


if __name__ == "__main__":
    sys.exit(main())
