"""Benchmark of the port proxy: direct vs jupyter-server-proxy vs configurable-http-proxy
vs ours, one run, same load.

A benchmark, not a test: it prints a Markdown table (paste it into
bench/README.md) and a JSON line. Everything runs on 127.0.0.1:

- the backend is tests/support/proxy_backend.py (tornado), pinned with the load
  generators to one core;
- one ``jupyter server`` with both jupyter-server-proxy (``/proxy/<port>/``)
  and jupyter-lims-bridge (``/lims/proxy/<port>/``) enabled, pinned to another
  (the one least busy when the run starts); configurable-http-proxy (``make
  chp``; ``/`` routed to the backend) pinned to that same core, idle while the
  others are measured;
- small GETs: ``wrk -t1 -c32 -d<secs>`` on a 1 KiB response (throughput and
  p99), and the backend's accepted TCP connections per request; ours both with
  ``X-Proxy-Token`` and with the owner's Jupyter token (``Authorization:
  token …``, as jupyter-server-proxy is always called);
- a 512 MiB download (Content-Length) and a 512 MiB chunked stream with curl
  (throughput, first-byte time, the proxy's peak RSS growth sampled every 10 ms);
- a 16 MiB upload from a streaming client (throughput, RSS growth);
- websocket echo with 32 messages in flight, and with one 1 KiB message in
  flight (a widget round trip), for a bounded time (msgs/s, proxy CPU/msg);
- footprint: RSS and start-up time of a bare ``jupyter server``, one with
  jupyter-server-proxy, one with ours (median of 3 starts each).

Every loop is bounded in count and in time. Run: ``.venv/bin/python bench/proxy.py``
(``--quick`` for 2 s runs; ``--seconds N`` for the wrk duration; ``--only``
to pick parts).
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
CHP = ROOT / "build" / "tools" / "node_modules" / ".bin" / "configurable-http-proxy"


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
        self.chp_port = free_port() if CHP.exists() else None
        self.chp_proc: psutil.Process | None = None
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
        if self.chp_port:
            chp = subprocess.Popen(
                [
                    *pin(self.server_core),
                    str(CHP),
                    "--ip=127.0.0.1",
                    f"--port={self.chp_port}",
                    "--api-ip=127.0.0.1",
                    f"--api-port={free_port()}",
                    f"--default-target=http://127.0.0.1:{self.backend_port}",
                    "--log-level=warn",
                ],
                env={**os.environ, "CONFIGPROXY_AUTH_TOKEN": "bench-chp-api-token"},
                stdout=subprocess.DEVNULL,
                stderr=open(self.tmp / "chp.log", "w"),  # noqa: SIM115
            )
            self.procs.append(chp)
            wait_port(self.chp_port)
            self.chp_proc = _exec_target(chp.pid)
        wait_port(self.backend_port)
        wait_port(self.jupyter_port)
        if hasattr(os, "sched_setaffinity"):
            # this process is a load generator too (upload and websocket
            # clients): it shares the backend's core, not the server's
            os.sched_setaffinity(0, {int(self.load_core)})
        self.server_proc = _exec_target(self.jupyter.pid)

    def proc_for(self, name: str) -> psutil.Process | None:
        """The process doing the proxying for target ``name`` (None: direct)."""
        if name == "direct":
            return None
        return self.chp_proc if name == "configurable-http-proxy" else self.server_proc

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()

    # the ways to the same backend
    def targets(self) -> dict[str, tuple[str, dict[str, str]]]:
        j = f"http://127.0.0.1:{self.jupyter_port}"
        chp = {"configurable-http-proxy": (f"http://127.0.0.1:{self.chp_port}", {})}
        return {
            "direct": (f"http://127.0.0.1:{self.backend_port}", {}),
            "jupyter-server-proxy": (
                f"{j}/proxy/{self.backend_port}",
                {"Authorization": f"token {JUPYTER_TOKEN}"},
            ),
            **(chp if self.chp_port else {}),
            "lims-bridge": (
                f"{j}/lims/proxy/{self.backend_port}",
                {"X-Proxy-Token": self.proxy_token},
            ),
        }

    def backend_connections(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.backend_port}/stats", timeout=5) as r:
            return json.loads(r.read())["connections"]


def _exec_target(pid: int) -> psutil.Process:
    proc = psutil.Process(pid)
    for _ in range(50):  # taskset execs the program; wait until it has
        if proc.name() != "taskset":
            break
        time.sleep(0.05)
    return proc


def run_wrk(
    servers: Servers,
    url: str,
    headers: dict[str, str],
    seconds: int,
    proc: psutil.Process | None = None,
) -> dict:
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
    cpu_before = _cpu_seconds(proc)
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=seconds + 30).stdout
    cpu = _cpu_seconds(proc) - cpu_before
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
        # the proxy's CPU per request: steadier than req/s on a shared machine
        "cpu_us_per_req": cpu * 1e6 / total if total and proc else 0.0,
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


def download(
    servers: Servers, url: str, headers: dict[str, str], size: int, proc, path: str = "bytes"
) -> dict:
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
            [*cmd, f"{url}/{path}?n={size}"], capture_output=True, text=True, timeout=150
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
    size: int = 64,
) -> dict:
    """Echo throughput with ``window`` messages in flight (as a busy client
    would), bounded by ``max_messages`` and ``seconds``; and the proxying
    server's CPU time per relayed message (both directions)."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    ws = await websocket_connect(HTTPRequest("ws" + url[4:] + "/ws", headers=headers))
    payload = "m" * size
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


FOOTPRINT_CONFIGS = {
    "bare jupyter server": {},
    "with jupyter-server-proxy": {"jupyter_server_proxy": True},
    "with jupyter-lims-bridge": {"jupyter_lims_bridge": True},
}


def footprint(tmp: Path, core: str, starts: int = 3) -> dict[str, dict]:
    """RSS and start-up time of a ``jupyter server`` with each extension alone
    (both are auto-enabled once installed: each is switched off explicitly).
    Ours is configured as a deployment would be (a public key, an allowed port,
    a webhook URL), never used. Start-up: from ``Popen`` to the first ``200``
    of ``GET /api``; RSS: one second after that, nothing else asked. Median of
    ``starts`` starts."""
    from jupyter_lims_bridge.signing import generate_key_pair

    public_pem = generate_key_pair()[1].decode()
    out: dict[str, dict] = {}
    jupyter = Path(sys.executable).with_name("jupyter-server")
    for label, enabled in FOOTPRINT_CONFIGS.items():
        runs = []
        for i in range(starts):
            base = tmp / f"fp-{len(out)}-{i}"
            (base / "config").mkdir(parents=True)
            port = free_port()
            config = {
                "ServerApp": {
                    "jpserver_extensions": {
                        "jupyter_lims_bridge": False,
                        "jupyter_server_proxy": False,
                        **enabled,
                    },
                    "allow_root": True,
                    "open_browser": False,
                    "port": port,
                    "ip": "127.0.0.1",
                    "root_dir": str(tmp),
                    "log_level": "WARN",
                },
                "IdentityProvider": {"token": JUPYTER_TOKEN},
                "LimsBridge": {
                    "state_dir": str(base / "state"),
                    "public_keys": [public_pem],
                    "allowed_ports": [8050],
                    "event_webhook_url": "http://127.0.0.1:9/hook",
                    "event_webhook_secret": "whsec_" + "A" * 44,
                },
            }
            (base / "config" / "jupyter_server_config.json").write_text(json.dumps(config))
            env = {
                **os.environ,
                "JUPYTER_CONFIG_DIR": str(base / "config"),
                "JUPYTER_DATA_DIR": str(base / "data"),
                "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
            }
            start = time.perf_counter()
            proc = subprocess.Popen(
                [*pin(core), str(jupyter)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=open(base / "server.log", "w"),  # noqa: SIM115
            )
            try:
                seconds = _first_200(f"http://127.0.0.1:{port}/api", start, 60)
                server = _exec_target(proc.pid)
                cpu = _cpu_seconds(server)  # steadier than wall time on a shared machine
                time.sleep(1.0)
                rss = server.memory_info().rss / MIB
            finally:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            runs.append({"startup_s": seconds, "startup_cpu_s": cpu, "rss_mib": rss})
        out[label] = median_of(runs)
        out[label]["runs"] = runs
    return out


def _first_200(url: str, start: float, timeout: float) -> float:
    deadline = start + timeout
    while time.perf_counter() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return time.perf_counter() - start
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="wrk duration per target")
    parser.add_argument("--quick", action="store_true", help="2 s runs, 128 MiB download")
    parser.add_argument("--download-mib", type=int, default=512)
    parser.add_argument("--upload-mib", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument(
        "--only",
        default="small,download,stream,upload,ws,ws1,footprint",
        help="comma-separated parts to run (default: all)",
    )
    args = parser.parse_args()
    rounds = 1 if args.quick else max(1, min(args.rounds, 9))
    seconds = 2 if args.quick else args.seconds
    down = (128 if args.quick else args.download_mib) * MIB
    up = args.upload_mib * MIB
    parts = set(args.only.split(","))
    if parts - {"footprint"} and not (shutil.which("wrk") and shutil.which("curl")):
        print("needs wrk and curl (apt-get install -y wrk curl)", file=sys.stderr)
        return 2
    results: dict[str, dict] = {}
    samples: dict[str, dict[str, list]] = {}
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    footprints: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="lims-bench-") as tmp:
        servers = Servers(Path(tmp))
        if "footprint" in parts:
            # before the others start: nothing else of ours competes for the core
            footprints = footprint(Path(tmp), servers.server_core)
        if parts - {"footprint"}:
            servers.start()
            try:
                targets = servers.targets()
                samples.update({n: {} for n in targets})

                def add(name: str, key: str, value: dict) -> None:
                    samples[name].setdefault(key, []).append(value)

                owner = {"Authorization": f"token {JUPYTER_TOKEN}"}
                warm = [*targets.values(), (targets["lims-bridge"][0], owner)]
                for url, headers in warm:
                    run_wrk(servers, f"{url}/small", headers, 1)  # warm up: pools, imports, caches
                # interleaved rounds, so a burst of load from elsewhere on this
                # shared machine hits all three alike; the median of each is reported
                for _ in range(rounds):
                    for name, (url, headers) in targets.items():
                        proc = servers.proc_for(name)
                        if "small" in parts:
                            small = run_wrk(servers, f"{url}/small", headers, seconds, proc)
                            add(name, "small", small)
                            if name == "lims-bridge":  # the owner's own token, as jsp is called
                                add(
                                    name,
                                    "small_owner",
                                    run_wrk(servers, f"{url}/small", owner, seconds, proc),
                                )
                        if "download" in parts:
                            add(name, "download", download(servers, url, headers, down, proc))
                        if "stream" in parts:
                            chunked = download(servers, url, headers, down, proc, path="chunked")
                            add(name, "stream", chunked)
                        if "upload" in parts:
                            add(name, "upload", upload(url, headers, up, proc))
                        for part, window, size in (("ws", 32, 64), ("ws1", 1, 1024)):
                            if part not in parts:
                                continue
                            try:
                                echo = ws_echo(url, headers, seconds, 200_000, proc, window, size)
                                add(name, part, asyncio.run(echo))
                            except Exception as e:
                                add(name, part, {"msgs_s": 0.0, "error": str(e)})
                for name in targets:
                    results[name] = {
                        key: median_of(values) for key, values in samples[name].items()
                    }
                    print(f"# {name}: {json.dumps(samples[name])}", file=sys.stderr)
            finally:
                servers.stop()
    if results:
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
    if footprints:
        print_footprint(footprints)
    print(json.dumps({"proxy": results, "footprint": footprints}))
    return 0


NAMES = ("direct", "jupyter-server-proxy", "configurable-http-proxy", "lims-bridge")

ROWS = [
    # label, section, key, format, ratio to direct?, goal
    (
        "small GET req/s (ours: X-Proxy-Token; jsp: owner's token)",
        "small",
        "rps",
        "{:.0f}",
        True,
        "≥ 0.8× direct",
    ),
    (
        "small GET req/s, owner's Jupyter token (`Authorization: token`)",
        "small_owner",
        "rps",
        "{:.0f}",
        True,
        "≥ 0.8× direct",
    ),
    ("small GET p99 ms", "small", "p99_ms", "{:.2f}", True, "≤ 3× direct"),
    ("small GET: proxy CPU µs per request", "small", "cpu_us_per_req", "{:.0f}", False, ""),
    (
        "owner's token: proxy CPU µs per request",
        "small_owner",
        "cpu_us_per_req",
        "{:.0f}",
        False,
        "",
    ),
    ("upstream TCP conns / request", "small", "conn_per_req", "{:.4f}", False, "≤ 0.01"),
    ("{down} MiB download MiB/s", "download", "mib_s", "{:.0f}", True, "≥ 0.9× direct"),
    ("download first byte ms", "download", "first_byte_ms", "{:.1f}", False, "< 10 ms"),
    ("download peak RSS growth MiB", "download", "rss_growth_mib", "{:.1f}", False, "< 16 MiB"),
    ("{down} MiB chunked stream MiB/s", "stream", "mib_s", "{:.0f}", True, "≥ 0.8× direct"),
    ("{up} MiB upload MiB/s", "upload", "mib_s", "{:.0f}", True, "≥ 0.65× direct"),
    ("upload RSS growth MiB", "upload", "rss_growth_mib", "{:.1f}", False, "< 8 MiB"),
    ("websocket echo msgs/s, 32 in flight", "ws", "msgs_s", "{:.0f}", True, "≥ 0.9× direct"),
    ("websocket: proxy CPU µs per echoed message", "ws", "cpu_us_per_msg", "{:.1f}", False, ""),
    (
        "websocket echo msgs/s, one 1 KiB message in flight",
        "ws1",
        "msgs_s",
        "{:.0f}",
        True,
        "≥ 0.85× direct",
    ),
]
#: rows measured on ours only; the others show the row they stand for (jsp is
#: always called with the owner's token, CHP checks none, direct is the reference)
FALLBACK = {"small_owner": "small"}


def paired_ratio(
    samples: dict[str, dict[str, list]], name: str, section: str, key: str, base: str
) -> float:
    """Median over rounds of (value / direct's value in the same round): robust
    to load from elsewhere that shifts whole rounds."""
    ratios = []
    for mine, ref in zip(samples[name][section], samples["direct"][base], strict=False):
        if ref.get(key) and mine.get("ok", True):
            ratios.append(mine[key] / ref[key])
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
    names = [n for n in NAMES if n in results]
    print("| metric | " + " | ".join(names) + " | goal |")
    print("|---|" + "---|" * len(names) + "---|")
    for label, section, key, fmt, with_ratio, goal in ROWS:
        base = FALLBACK.get(section, section)
        if base not in results["direct"]:
            continue  # not run (--only)
        cells = []
        for name in names:
            own = section if section in results[name] else base
            r = results[name].get(own)
            if r is None or (name == "direct" and key.startswith("cpu_")):
                cells.append("–")  # not run, or no proxy to measure
                continue
            if "ok" in r and not r["ok"]:
                cells.append(f"failed (HTTP {r['status']})")
                continue
            text = fmt.format(r[key])
            if with_ratio and name != "direct":
                text += f" ({paired_ratio(samples, name, own, key, base):.2f}×)"
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


def print_footprint(footprints: dict[str, dict]) -> None:
    bare = footprints.get("bare jupyter server")
    print(
        "\n| server (median of 3 starts) | RSS MiB | vs bare | start-up s (wall) | "
        "start-up CPU s | vs bare |"
    )
    print("|---|---|---|---|---|---|")
    for label, f in footprints.items():
        rss_delta = f"{f['rss_mib'] - bare['rss_mib']:+.1f} MiB" if bare else ""
        cpu_delta = f"{f['startup_cpu_s'] - bare['startup_cpu_s']:+.2f} s" if bare else ""
        print(
            f"| {label} | {f['rss_mib']:.1f} | {rss_delta} | {f['startup_s']:.2f} | "
            f"{f['startup_cpu_s']:.2f} | {cpu_delta} |"
        )


if __name__ == "__main__":
    sys.exit(main())
