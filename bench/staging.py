"""Benchmark: a 1 GiB download through a staging job versus ``curl -o``, the Jupyter
server's RSS growth meanwhile, and linking 1,000 items from a mounted store.

Everything runs on 127.0.0.1: the test file server (``tests/support/fileserver.py``) in
its own process serves one file of ``--size`` bytes; ``curl -o`` and a staging
job (``POST lims/api/open`` with one ``url`` data item carrying its sha256 and
size, then polling ``GET lims/api/staging/<id>``) fetch it alternately,
``--rounds`` times each, into the same temporary folder. The staging time runs
from the POST to the job's ``done``, so it includes sha256 verification, the
fsync and the atomic move into place; curl does none of these. RSS is sampled
from ``/proc/<pid>/status`` of the ``jupyter server`` subprocess every 50 ms.
Linking: one open naming 1,000 mount items (server round trip of the whole
open, notebook included), and ``DataStager.plan + apply`` alone in-process.

Goals (issue 4): staging ≥ 0.8× curl; RSS growth < 32 MiB; 1,000 links < 1 s.
Every loop is bounded; temp data is deleted at the end.

    python bench/staging.py [--size-mib 1024] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import requests

from jupyter_lims_bridge import signing
from jupyter_lims_bridge.claims import DataItem
from jupyter_lims_bridge.staging import DataStager

REPO = Path(__file__).resolve().parent.parent
TIME_LIMIT = 480  # seconds for the whole run
MiB = 1024 * 1024
TOKEN = "bench-token"
LINKS_PER_TOKEN = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class RssSampler:
    """Peak RSS of a process, sampled every 50 ms in a thread while active."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_bytes(self.pid))

    def __enter__(self) -> RssSampler:
        self.peak = rss_bytes(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def make_file(path: Path, size: int) -> str:
    """``size`` bytes of incompressible data; returns its sha256."""
    block = os.urandom(16 * MiB)
    hasher = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            chunk = block[: min(left, len(block))]
            # vary each block so no layer can deduplicate it
            chunk = left.to_bytes(8, "little") + chunk[8:] if len(chunk) > 8 else chunk
            f.write(chunk)
            hasher.update(chunk)
            left -= len(chunk)
    return hasher.hexdigest()


def start_file_server(directory: Path) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.support.fileserver", str(directory), "--chunk", str(MiB)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    prefix = server.stdout.readline().strip()
    if not prefix.startswith("http://127.0.0.1:"):
        server.kill()
        raise RuntimeError("file server did not start")
    return server, prefix


def start_jupyter(
    tmp: Path, public_pem: str, prefix: str, mount: Path, port: int
) -> subprocess.Popen:
    root = tmp / "root"
    root.mkdir()
    env = {
        **os.environ,
        "LIMS_BRIDGE_PUBLIC_KEYS": json.dumps([public_pem]),
        "LIMS_BRIDGE_OWNER": "bench",
        "LIMS_BRIDGE_STATE_DIR": str(tmp / "state"),
        "LIMS_BRIDGE_DATA_URL_PREFIXES": json.dumps([prefix]),
        "LIMS_BRIDGE_DATA_MOUNTS": json.dumps({"store": str(mount)}),
        "LIMS_BRIDGE_MAX_DOWNLOAD_BYTES": str(64 * 1024**3),
        "JUPYTER_CONFIG_DIR": str(tmp / "config"),
        "JUPYTER_DATA_DIR": str(tmp / "data"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
    }
    command = [
        sys.executable,
        "-m",
        "jupyter_server",
        "--no-browser",
        f"--port={port}",
        "--ip=127.0.0.1",
        f"--ServerApp.token={TOKEN}",
        "--ServerApp.allow_root=True",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.jpserver_extensions={'jupyter_lims_bridge': True}",
    ]
    log = (tmp / "server.log").open("w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            requests.get(
                f"http://127.0.0.1:{port}/api/status",
                headers={"Authorization": f"token {TOKEN}"},
                timeout=1,
            )
            return server
        except requests.ConnectionError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("jupyter server did not start")


class Bridge:
    def __init__(self, port: int, key) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.key = key
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {TOKEN}"
        self.count = 0

    def open(self, data: list[dict], entity_id: str | None = None) -> dict:
        self.count += 1
        token = signing.make_token(
            self.key,
            sub="bench",
            entity={"type": "bench", "id": entity_id or f"B-{self.count}"},
            data=data,
        )
        response = requests.post(f"{self.base}/lims/api/open", json={"token": token}, timeout=60)
        response.raise_for_status()
        return response.json()

    def wait(self, job_id: str, deadline: float) -> dict:
        while time.monotonic() < deadline:
            job = self.session.get(f"{self.base}/lims/api/staging/{job_id}", timeout=10).json()
            if job["state"] in ("done", "failed"):
                return job
            time.sleep(0.02)
        raise TimeoutError(f"job {job_id} did not finish in time")


def curl(url: str, dest: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["curl", "-sS", "--fail", "-o", str(dest), url], check=True)
    return time.perf_counter() - start


def curl_verified(url: str, dest: Path) -> float:
    """curl doing what a staging job does besides the transfer: sha256 and fsync."""
    start = time.perf_counter()
    subprocess.run(["curl", "-sS", "--fail", "-o", str(dest), url], check=True)
    subprocess.run(["sha256sum", str(dest)], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["sync", str(dest)], check=True)
    return time.perf_counter() - start


def durable_write(source: Path, dest: Path) -> float:
    """The disk writing the file and then making it durable in one fsync at the end
    (a staging job starts writeback every 16 MiB, so it can overlap the two)."""
    start = time.perf_counter()
    subprocess.run(
        ["dd", f"if={source}", f"of={dest}", "bs=1M", "conv=fsync", "status=none"], check=True
    )
    elapsed = time.perf_counter() - start
    dest.unlink()
    return elapsed


def link_in_process(mount: Path, work: Path, count: int) -> float:
    stager = DataStager(mounts={"store": str(mount)}, url_prefixes=[], max_download_bytes=1)
    items = tuple(
        DataItem(f"item-{i}.dat", mount="store", path=f"item-{i}.dat") for i in range(count)
    )
    (work / "entry").mkdir(parents=True)
    start = time.perf_counter()
    planned = stager.plan(items, work / "entry" / "data", "ws/entry/data", work.resolve())
    results = asyncio.run(stager.apply(planned))
    elapsed = time.perf_counter() - start
    assert all(r["status"] == "linked" for r in results)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--links", type=int, default=1000)
    args = parser.parse_args()
    if shutil.which("curl") is None:
        print("curl is needed", file=sys.stderr)
        return 2
    deadline = time.monotonic() + TIME_LIMIT
    size = args.size_mib * MiB
    private_pem, public_pem = signing.generate_key_pair()
    key = signing.load_private_key(private_pem)

    with tempfile.TemporaryDirectory(prefix="bench-staging-") as tmp_name:
        tmp = Path(tmp_name)
        served = tmp / "served"
        served.mkdir()
        sha = make_file(served / "big.bin", size)
        (served / "warm.bin").write_bytes(os.urandom(MiB))
        warm_sha = hashlib.sha256((served / "warm.bin").read_bytes()).hexdigest()
        mount = tmp / "store"
        mount.mkdir()
        for i in range(args.links):
            (mount / f"item-{i}.dat").write_bytes(b"x")

        file_server, prefix = start_file_server(served)
        port = free_port()
        jupyter = start_jupyter(tmp, public_pem.decode(), prefix, mount, port)
        curl_s: list[float] = []
        curl_cpu: list[float] = []
        stage_cpu: list[float] = []
        stage_nosha_s: list[float] = []
        curl_verified_s: list[float] = []
        stage_s: list[float] = []
        growth: list[int] = []
        try:
            bridge = Bridge(port, key)
            rss_fresh = rss_bytes(jupyter.pid)
            # warm-up: imports, the worker pool, the first notebook
            [warm] = bridge.open(
                [{"name": "warm.bin", "url": prefix + "warm.bin", "sha256": warm_sha}]
            )["data"]
            bridge.wait(warm["job"], deadline)
            curl(prefix + "warm.bin", tmp / "warm-curl.bin")
            rss_before = rss_bytes(jupyter.pid)
            for _ in range(args.rounds):
                if time.monotonic() > deadline:
                    break
                dest = tmp / "curl.bin"
                cpu = children_cpu()
                curl_s.append(curl(prefix + "big.bin", dest))
                curl_cpu.append(children_cpu() - cpu)
                dest.unlink()
                curl_verified_s.append(curl_verified(prefix + "big.bin", dest))
                dest.unlink()
                cpu = cpu_seconds(jupyter.pid)
                with RssSampler(jupyter.pid) as rss:
                    start = time.perf_counter()
                    [item] = bridge.open(
                        [
                            {
                                "name": "big.bin",
                                "url": prefix + "big.bin?sig=bench",
                                "sha256": sha,
                                "size": size,
                            }
                        ]
                    )["data"]
                    job = bridge.wait(item["job"], deadline)
                    stage_s.append(time.perf_counter() - start)
                stage_cpu.append(cpu_seconds(jupyter.pid) - cpu)
                growth.append(rss.peak - rss_before)
                if job["state"] != "done":
                    raise RuntimeError(f"staging job failed: {job}")
                placed = tmp / "root" / "lims" / f"bench-B-{bridge.count}" / "data" / "big.bin"
                assert placed.stat().st_size == size
                placed.unlink()  # keep the disk use bounded
                # the same transfer checked by size only: what the sha256 costs
                start = time.perf_counter()
                [item] = bridge.open(
                    [{"name": "big.bin", "url": prefix + "big.bin", "size": size}]
                )["data"]
                if bridge.wait(item["job"], deadline)["state"] != "done":
                    raise RuntimeError("staging job (size only) failed")
                stage_nosha_s.append(time.perf_counter() - start)
                (tmp / "root" / "lims" / f"bench-B-{bridge.count}" / "data" / "big.bin").unlink()
            disk_s = durable_write(served / "big.bin", tmp / "dd.bin")
            # linking 1,000 items end to end: an open token holds at most 16 KiB
            # (claims.MAX_TOKEN_BYTES), about 100 items, so several opens of one entry
            items = [
                {"name": f"item-{i}.dat", "mount": "store", "path": f"item-{i}.dat"}
                for i in range(args.links)
            ]
            linked = 0
            start = time.perf_counter()
            for first in range(0, len(items), LINKS_PER_TOKEN):
                result = bridge.open(items[first : first + LINKS_PER_TOKEN], entity_id="LINKS")
                linked += sum(d["status"] == "linked" for d in result["data"])
            open_links_s = time.perf_counter() - start
            assert linked == args.links
            rss_end = rss_bytes(jupyter.pid)
        finally:
            jupyter.terminate()
            file_server.terminate()
            jupyter.wait(15)
            file_server.wait(15)
        # … and the stager alone
        plan_apply_s = link_in_process(mount, tmp / "inproc", args.links)

    curl_rate = size / statistics.median(curl_s) / MiB
    stage_rate = size / statistics.median(stage_s) / MiB
    ratio = stage_rate / curl_rate
    peak_growth = max(growth) / MiB
    print(
        f"# bench/staging.py — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
        f"{args.size_mib} MiB file, {len(stage_s)} rounds\n"
    )
    print("| what | result | goal |")
    print("|---|---:|---|")
    print(f"| curl -o (median of {len(curl_s)}) | {curl_rate:.0f} MiB/s | |")
    print(
        f"| curl -o, then sha256sum and sync (median of {len(curl_verified_s)}) | "
        f"{size / statistics.median(curl_verified_s) / MiB:.0f} MiB/s | |"
    )
    print(
        f"| disk: dd conv=fsync of the file (write all, then one fsync) | "
        f"{size / disk_s / MiB:.0f} MiB/s | |"
    )
    print(f"| staging job, POST to done (median of {len(stage_s)}) | {stage_rate:.0f} MiB/s | |")
    print(
        f"| staging job, size only, no sha256 (median of {len(stage_nosha_s)}) | "
        f"{size / statistics.median(stage_nosha_s) / MiB:.0f} MiB/s | |"
    )
    print(
        f"| CPU seconds per GiB: curl / Jupyter server (staging, sha256 included) | "
        f"{statistics.median(curl_cpu) * 1024 / args.size_mib:.2f} / "
        f"{statistics.median(stage_cpu) * 1024 / args.size_mib:.2f} | |"
    )
    print(f"| staging / curl | {ratio:.2f}× | ≥ 0.8×: {'met' if ratio >= 0.8 else 'MISSED'} |")
    print(
        f"| server RSS growth during a download (peak) | {peak_growth:.1f} MiB | < 32 MiB: "
        f"{'met' if peak_growth < 32 else 'MISSED'} |"
    )
    print(
        f"| server RSS: fresh → after warm-up → end | {rss_fresh / MiB:.0f} → {rss_before / MiB:.0f} → "
        f"{rss_end / MiB:.0f} MiB | |"
    )
    print(
        f"| {args.links} mount items in opens of {LINKS_PER_TOKEN} (round trips) | {open_links_s * 1000:.0f} ms | < 1 s: "
        f"{'met' if open_links_s < 1 else 'MISSED'} |"
    )
    print(
        f"| plan + link {args.links} items (in process) | {plan_apply_s * 1000:.0f} ms | < 1 s: "
        f"{'met' if plan_apply_s < 1 else 'MISSED'} |"
    )
    print(
        "\nseconds, curl:",
        " ".join(f"{s:.2f}" for s in curl_s),
        "| curl+sha256sum+sync:",
        " ".join(f"{s:.2f}" for s in curl_verified_s),
        "| staging:",
        " ".join(f"{s:.2f}" for s in stage_s),
        "| staging, size only:",
        " ".join(f"{s:.2f}" for s in stage_nosha_s),
    )
    ok = ratio >= 0.8 and peak_growth < 32 and open_links_s < 1 and plan_apply_s < 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
