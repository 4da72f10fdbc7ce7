"""Benchmark of the port proxy: direct vs jupyter-server-proxy vs ours, one run, same load.

A benchmark, not a test: it prints a Markdown table (paste it into
bench/README.md) and a JSON line. Everything runs on 127.0.0.1:

- the backend is tests/support/proxy_backend.py (tornado), pinned with the load
  generators to one core;
- one ``jupyter server`` with both jupyter-server-proxy (``/proxy/<port>/``)
  and jupyter-lims-bridge (``/lims/proxy/<port>/``) enabled, pinned to another
  (the one least busy when the run starts);
- small GETs: ``wrk -t1 -c32 -d<secs>`` on a 1 KiB response (throughput and
  p99), and the backend's accepted TCP connections per request;
- a 512 MiB download with curl (throughput, first-byte time, the server's
  peak RSS growth sampled every 10 ms);
- a 16 MiB upload from a streaming client (throughput, RSS growth);
- websocket echo with 32 messages in flight, for a bounded time (msgs/s).

Every loop is bounded in count and in time. Run: ``.venv/bin/python bench/proxy.py``
(``--quick`` for 2 s runs; ``--seconds N`` for the wrk duration).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
BACKEND = ROOT / "tests" / "support" / "proxy_backend.py"
MIB = 1024 * 1024
JUPYTER_TOKEN = "bench-jupyter-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def pin(cores: str) -> list[str]:
    return ["taskset", "-c", cores] if shutil.which("taskset") else []


class Servers:
    def __init__(self, tmp: Path) -> None:
        ncpu = os.cpu_count() or 1
        # On a shared machine the proxying server gets the core that was least
        # busy just now (measured over 1 s), the backend and load generators another.
        busy = psutil.cpu_percent(interval=1.0, percpu=True) if ncpu > 1 else [0.0]
        order = sorted(range(len(busy)), key=lambda i: busy[i])
        self.server_core = str(order[0])
        self.load_core = str(order[1]) if ncpu > 1 else "0"
        self.busy_before = busy
        self.backend_port = free_port()
        self.jupyter_port = free_port()
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        self.procs.append(
            subprocess.Popen(
                [*pin(self.load_core), sys.executable, str(BACKEND), str(self.backend_port)],
                stdout=subprocess.DEVNULL,
            )
        )
        state = self.tmp / "state"
        from jupyter_lims_bridge.proxy_tokens import ProxyTokenStore

        self.proxy_token = ProxyTokenStore(state / "proxy_tokens.json").create("bench")["token"]
        config = {
            "ServerApp": {
                "jpserver_extensions": {"jupyter_lims_bridge": True, "jupyter_server_proxy": True},
                "allow_root": True,
                "open_browser": False,
                "port": self.jupyter_port,
                "ip": "127.0.0.1",
                "root_dir": str(self.tmp),
                "log_level": "WARN",
            },
            "IdentityProvider": {"token": JUPYTER_TOKEN},
            "LimsBridge": {"allowed_ports": [self.backend_port], "state_dir": str(state)},
        }
        cfg_dir = self.tmp / "config"
        cfg_dir.mkdir()
        (cfg_dir / "jupyter_server_config.json").write_text(json.dumps(config))
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(cfg_dir),
            "JUPYTER_DATA_DIR": str(self.tmp / "data"),
            "JUPYTER_RUNTIME_DIR": str(self.tmp / "runtime"),
        }
        jupyter = Path(sys.executable).with_name("jupyter-server")
        self.jupyter = subprocess.Popen(
            [*pin(self.server_core), str(jupyter)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / "server.log", "w"),  # noqa: SIM115
        )
        self.procs.append(self.jupyter)
        wait_port(self.backend_port)
        wait_port(self.jupyter_port)
        if hasattr(os, "sched_setaffinity"):
            # this process is a load generator too (upload and websocket
            # clients): it shares the backend's core, not the server's
            os.sched_setaffinity(0, {int(self.load_core)})
        self.server_proc = psutil.Process(self.jupyter.pid)
        if self.server_proc.name() == "taskset":  # taskset execs, but be sure
            self.server_proc = self.server_proc.children()[0]

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()

    # the three ways to the same backend
    def targets(self) -> dict[str, tuple[str, dict[str, str]]]:
        j = f"http://127.0.0.1:{self.jupyter_port}"
        return {
            "direct": (f"http://127.0.0.1:{self.backend_port}", {}),
            "jupyter-server-proxy": (
                f"{j}/proxy/{self.backend_port}",
                {"Authorization": f"token {JUPYTER_TOKEN}"},
            ),
            "lims-bridge": (
                f"{j}/lims/proxy/{self.backend_port}",
                {"X-Proxy-Token": self.proxy_token},
            ),
        }

    def backend_connections(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.backend_port}/stats", timeout=5) as r:
            return json.loads(r.read())["connections"]


def run_wrk(servers: Servers, url: str, headers: dict[str, str], seconds: int) -> dict:
    cmd = [
        *pin(servers.load_core),
        "wrk",
        "-t1",
        "-c32",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "5s",
    ]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    before = servers.backend_connections()
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=seconds + 30).stdout
    after = servers.backend_connections() - 1  # minus the /stats request itself
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    p99 = _ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "p99_ms": p99,
        "requests": total,
        "conn_per_req": (after - before) / max(total, 1),
        "bad": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
    }


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)", text)
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


class RssSampler:
    def __init__(self, proc: psutil.Process) -> None:
        self.proc = proc
        self.base = proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return

    def __enter__(self) -> RssSampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(5)

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.base) / MIB


def download(servers: Servers, url: str, headers: dict[str, str], size: int, proc) -> dict:
    cmd = [
        *pin(servers.load_core),
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "--max-time",
        "120",
        "-w",
        "%{http_code} %{size_download} %{time_starttransfer} %{time_total}",
    ]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    with RssSampler(proc) if proc else _Null() as rss:
        out = subprocess.run(
            [*cmd, f"{url}/bytes?n={size}"], capture_output=True, text=True, timeout=150
        ).stdout.split()
    code, got, first, total = int(out[0]), int(out[1]), float(out[2]), float(out[3])
    ok = code == 200 and got == size
    return {
        "ok": ok,
        "status": code,
        "mib_s": (got / MIB) / total if ok and total else 0.0,
        "first_byte_ms": first * 1000,
        "rss_growth_mib": rss.growth_mib if proc else 0.0,
    }


def upload(url: str, headers: dict[str, str], size: int, proc) -> dict:
    block = b"u" * (256 * 1024)
    host, _, rest = url.removeprefix("http://").partition("/")
    hostname, port = host.split(":")

    def body():
        sent = 0
        while sent < size:
            k = min(len(block), size - sent)
            yield block[:k]
            sent += k

    with RssSampler(proc) if proc else _Null() as rss:
        start = time.perf_counter()
        conn = http.client.HTTPConnection(hostname, int(port), timeout=120)
        path = (f"/{rest}" if rest else "") + "/upload"
        conn.request("POST", path, body=body(), headers={**headers, "Content-Length": str(size)})
        resp = conn.getresponse()
        data = resp.read()
        elapsed = time.perf_counter() - start
        conn.close()
    ok = resp.status == 200 and json.loads(data).get("received") == size
    return {
        "ok": ok,
        "status": resp.status,
        "mib_s": (size / MIB) / elapsed if ok else 0.0,
        "rss_growth_mib": rss.growth_mib if proc else 0.0,
    }


def median_of(values: list[dict]) -> dict:
    """Per numeric key, the median over rounds; a failure in any round is kept."""
    out = dict(values[0])
    for key, value in values[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            ordered = sorted(v[key] for v in values)
            out[key] = ordered[len(ordered) // 2]
    if "ok" in out:
        failed = [v for v in values if not v["ok"]]
        if failed:
            out.update(ok=False, status=failed[0]["status"])
    return out


class _Null:
    growth_mib = 0.0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


async def ws_echo(
    url: str,
    headers: dict[str, str],
    seconds: float,
    max_messages: int,
    proc: psutil.Process | None,
    window: int = 32,
) -> dict:
    """Echo throughput with ``window`` messages in flight (as a busy client
    would), bounded by ``max_messages`` and ``seconds``; and the proxying
    server's CPU time per relayed message (both directions)."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    ws = await websocket_connect(HTTPRequest("ws" + url[4:] + "/ws", headers=headers))
    payload = "m" * 64
    for _ in range(window):
        ws.write_message(payload)
    n = 0
    cpu_before = _cpu_seconds(proc)
    start = time.perf_counter()
    deadline = start + seconds
    while n < max_messages and time.perf_counter() < deadline:
        if await ws.read_message() is None:
            break
        n += 1
        ws.write_message(payload)
    elapsed = time.perf_counter() - start
    cpu = _cpu_seconds(proc) - cpu_before
    ws.close()
    return {"msgs_s": n / elapsed, "cpu_us_per_msg": cpu * 1e6 / n if n and proc else 0.0}


def _cpu_seconds(proc: psutil.Process | None) -> float:
    if proc is None:
        return 0.0
    times = proc.cpu_times()
    return times.user + times.system


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="wrk duration per target")
    parser.add_argument("--quick", action="store_true", help="2 s runs, 128 MiB download")
    parser.add_argument("--download-mib", type=int, default=512)
    parser.add_argument("--upload-mib", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument(
        "--only",
        default="small,download,upload,ws",
        help="comma-separated parts to run (default: all)",
    )
    args = parser.parse_args()
    rounds = 1 if args.quick else max(1, min(args.rounds, 9))
    seconds = 2 if args.quick else args.seconds
    down = (128 if args.quick else args.download_mib) * MIB
    up = args.upload_mib * MIB
    parts = set(args.only.split(","))
    if not shutil.which("wrk") or not shutil.which("curl"):
        print("needs wrk and curl (apt-get install -y wrk curl)", file=sys.stderr)
        return 2
    results: dict[str, dict] = {}
    samples: dict[str, dict[str, list]] = {}
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="lims-bench-") as tmp:
        servers = Servers(Path(tmp))
        servers.start()
        try:
            targets = servers.targets()
            samples.update({n: {} for n in targets})

            def add(name: str, key: str, value: dict) -> None:
                samples[name].setdefault(key, []).append(value)

            for url, headers in targets.values():
                run_wrk(servers, f"{url}/small", headers, 1)  # warm up: pools, imports, caches
            # interleaved rounds, so a burst of load from elsewhere on this
            # shared machine hits all three alike; the median of each is reported
            for _ in range(rounds):
                for name, (url, headers) in targets.items():
                    proc = None if name == "direct" else servers.server_proc
                    if "small" in parts:
                        add(name, "small", run_wrk(servers, f"{url}/small", headers, seconds))
                    if "download" in parts:
                        add(name, "download", download(servers, url, headers, down, proc))
                    if "upload" in parts:
                        add(name, "upload", upload(url, headers, up, proc))
                    if "ws" in parts:
                        try:
                            add(
                                name,
                                "ws",
                                asyncio.run(ws_echo(url, headers, seconds, 200_000, proc)),
                            )
                        except Exception as e:
                            add(name, "ws", {"msgs_s": 0.0, "error": str(e)})
            for name in targets:
                results[name] = {key: median_of(values) for key, values in samples[name].items()}
                print(f"# {name}: {json.dumps(samples[name])}", file=sys.stderr)
        finally:
            servers.stop()
    print_table(
        results,
        samples,
        down,
        up,
        seconds,
        rounds,
        f"{load}; server on core {servers.server_core}, backend+load on core "
        f"{servers.load_core}; per-core busy % before: {servers.busy_before}",
    )
    print(json.dumps(results))
    return 0


ROWS = [
    # label, section, key, format, ratio to direct?, goal
    ("small GET req/s", "small", "rps", "{:.0f}", True, "≥ 0.5× direct, ≥ 3× jsp"),
    ("small GET p99 ms", "small", "p99_ms", "{:.2f}", True, "≤ 3× direct"),
    ("upstream TCP conns / request", "small", "conn_per_req", "{:.4f}", False, "≤ 0.01"),
    ("{down} MiB download MiB/s", "download", "mib_s", "{:.0f}", True, "≥ 0.5× direct"),
    ("download first byte ms", "download", "first_byte_ms", "{:.1f}", False, "< 10 ms"),
    ("download peak RSS growth MiB", "download", "rss_growth_mib", "{:.1f}", False, "< 16 MiB"),
    ("{up} MiB upload MiB/s", "upload", "mib_s", "{:.0f}", True, "≥ 0.65× direct"),
    ("upload RSS growth MiB", "upload", "rss_growth_mib", "{:.1f}", False, "< 8 MiB"),
    ("websocket echo msgs/s", "ws", "msgs_s", "{:.0f}", True, "≥ 0.9× direct"),
    ("websocket: server CPU µs per echoed message", "ws", "cpu_us_per_msg", "{:.1f}", False, ""),
]


def paired_ratio(samples: dict[str, dict[str, list]], name: str, section: str, key: str) -> float:
    """Median over rounds of (value / direct's value in the same round): robust
    to load from elsewhere that shifts whole rounds."""
    ratios = []
    for mine, base in zip(samples[name][section], samples["direct"][section], strict=False):
        if base.get(key) and mine.get("ok", True):
            ratios.append(mine[key] / base[key])
    if not ratios:
        return 0.0
    ratios.sort()
    return ratios[len(ratios) // 2]


def print_table(
    results: dict[str, dict],
    samples: dict[str, dict[str, list]],
    down: int,
    up: int,
    seconds: int,
    rounds: int,
    load: str,
) -> None:
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    ncpu = os.cpu_count() or 1
    print(
        f"\nRun {today}, nproc={ncpu}, proxying server pinned to a core of its own; "
        f"wrk -t1 -c32 -d{seconds}s, "
        f"{down // MIB} MiB download, {up // MIB} MiB upload; median of {rounds} interleaved "
        f"rounds (ratios: median of per-round ratios to direct); load average before the "
        f"run: {load}.\n"
    )
    print("| metric | direct | jupyter-server-proxy | lims-bridge | goal |")
    print("|---|---|---|---|---|")
    for label, section, key, fmt, with_ratio, goal in ROWS:
        if section not in results["direct"]:
            continue  # not run (--only)
        cells = []
        for name in ("direct", "jupyter-server-proxy", "lims-bridge"):
            r = results[name][section]
            if "ok" in r and not r["ok"]:
                cells.append(f"failed (HTTP {r['status']})")
                continue
            text = fmt.format(r[key])
            if with_ratio and name != "direct":
                text += f" ({paired_ratio(samples, name, section, key):.2f}×)"
            cells.append(text)
        print(
            f"| {label.format(down=down // MIB, up=up // MIB)} | "
            + " | ".join(cells)
            + f" | {goal} |"
        )
    jsp = [s["rps"] for s in samples["jupyter-server-proxy"].get("small", [])]
    ours = [s["rps"] for s in samples["lims-bridge"].get("small", [])]
    per_round = sorted(o / j for o, j in zip(ours, jsp, strict=False) if j)
    if per_round:
        print(
            f"\nlims-bridge vs jupyter-server-proxy on small GETs (median of per-round "
            f"ratios): {per_round[len(per_round) // 2]:.1f}×"
        )


if __name__ == "__main__":
    sys.exit(main())
