"""Save to ELN of a 50 MiB notebook: streamed, not held twice, the server stays responsive.

A real server process (its memory is measured apart from the test's) saves a
notebook of 50 MiB of outputs to the LIMS stand-in, which only hashes what it
receives. The peak resident memory of the server during the save (``VmHWM``,
reset before through ``/proc/<pid>/clear_refs``) is printed as a bench line and
bounded; while the HTML export runs, the server keeps answering other requests.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from pathlib import Path

import pytest
import requests

from jupyter_lims_bridge import signing
from tests.support.lims_standin import LimsStandIn
from tests.support.serverproc import (  # noqa: F401 - the fixtures switch pytest-jupyter off
    jp_asyncio_loop,
    jp_server_cleanup,
    jupyter_process,
)

MIB = 1024 * 1024
OWNER = "alice"
ENTITY = {"type": "sample", "id": "S-42", "title": "Big screen"}
NOTEBOOK = "lims/sample-S-42/S-42.ipynb"


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS


def big_notebook(size: int) -> dict:
    """A notebook with ``size`` bytes of PNG-like outputs (random, incompressible)."""
    per_cell = 2 * MIB
    cells = []
    for i in range(max(1, size // per_cell)):
        payload = base64.b64encode(os.urandom(per_cell * 3 // 4)).decode()
        cells.append(
            {
                "cell_type": "code",
                "execution_count": i + 1,
                "id": f"c{i}",
                "metadata": {},
                "source": f"plot({i})",
                "outputs": [
                    {
                        "output_type": "display_data",
                        "data": {"image/png": payload, "text/plain": "<Figure>"},
                        "metadata": {},
                    }
                ],
            }
        )
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


@pytest.mark.timeout(300)
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_a_50_mib_notebook_is_streamed_and_the_server_stays_responsive(tmp_path):
    private_pem, public_pem = signing.generate_key_pair()
    key = signing.load_private_key(private_pem)
    lims = LimsStandIn(keep_bodies=False).start()
    try:
        env = {
            "LIMS_BRIDGE_RETURN_URL_PREFIXES": lims.prefix,
            "LIMS_BRIDGE_RETURN_TIMEOUT": "120",
        }
        with jupyter_process(
            tmp_path, owner=OWNER, public_key=public_pem.decode(), data_url_prefixes=[], env=env
        ) as server:
            pid = server.process.pid
            token = signing.make_token(
                key, sub=OWNER, entity=ENTITY, extra={"return": lims.return_claim()}
            )
            opened = requests.post(
                server.url + "lims/api/open", headers={"X-Lims-Token": token}, json={}, timeout=30
            )
            assert opened.status_code == 201, opened.text

            def save(formats: list[str]) -> requests.Response:
                return server.api(
                    "POST", "lims/api/save", data=json.dumps({"path": NOTEBOOK, "formats": formats})
                )

            # warm up: nbconvert imported and its templates loaded on a small notebook
            assert save(["ipynb", "html"]).status_code == 200

            path = server.root / NOTEBOOK
            path.write_text(json.dumps(big_notebook(50 * MIB)))
            size = path.stat().st_size
            assert size >= 48 * MIB

            # the notebook alone: the upload streams from a file, nothing of it stays in memory
            _reset_peak(pid)
            rss = _kib(pid, "VmRSS")
            started = time.monotonic()
            response = save(["ipynb"])
            ipynb_seconds = time.monotonic() - started
            assert response.status_code == 200, response.text
            ipynb_peak = (_kib(pid, "VmHWM") - rss) / 1024
            assert (
                lims.received[-1].size > size
                and lims.received[-1].content_length == lims.received[-1].size
            )

            # with the HTML export (nbconvert holds the notebook and the HTML), while
            # another client asks the server for its status every 50 ms
            path.write_text(path.read_text().replace("plot(0)", "plot(0) "))  # changed content
            latencies: list[float] = []
            done = threading.Event()

            def poll() -> None:
                while not done.is_set() and len(latencies) < 10_000:
                    t0 = time.monotonic()
                    server.api("GET", "lims/api/status")
                    latencies.append(time.monotonic() - t0)
                    done.wait(0.05)

            poller = threading.Thread(target=poll)
            _reset_peak(pid)
            rss = _kib(pid, "VmRSS")
            poller.start()
            started = time.monotonic()
            response = save(["ipynb", "html"])
            html_seconds = time.monotonic() - started
            done.set()
            poller.join(30)
            assert response.status_code == 200, response.text
            html_peak = (_kib(pid, "VmHWM") - rss) / 1024
            html_size = response.json()["files"][1]["size"] / MIB

            print(
                f"\nbench save-to-eln: notebook {size / MIB:.1f} MiB; ipynb only: "
                f"{ipynb_seconds:.2f} s, peak RSS +{ipynb_peak:.1f} MiB; with HTML "
                f"({html_size:.1f} MiB): {html_seconds:.2f} s, peak RSS +{html_peak:.1f} MiB; "
                f"status requests during the export: {len(latencies)}, slowest "
                f"{max(latencies) * 1000:.0f} ms"
            )
            # streamed: far less than the notebook itself is ever in memory for the upload
            assert ipynb_peak < 0.25 * size / MIB  # (the HTML export is nbconvert's: printed above)
            assert len(latencies) >= 3 and max(latencies) < 2.0
    finally:
        lims.stop()
