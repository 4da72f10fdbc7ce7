"""A Jupyter server killed (SIGKILL) in the middle of a download, then started again.

Given a real ``jupyter server`` process staging a slow download from the test
file server, when the process is killed without warning, then nothing is under
the file's final name (only the hidden partial file), and when the server is
started again and the entry opened again, the download resumes where it was
cut (one Range request for the missing bytes) and the final file is whole.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time

from jupyter_lims_bridge import signing
from tests.support.serverproc import (  # noqa: F401 - the fixtures switch pytest-jupyter off
    jp_asyncio_loop,
    jp_server_cleanup,
    jupyter_process,
)

OWNER = "alice"
CONTENT = os.urandom(4 * 1024 * 1024)
SHA = hashlib.sha256(CONTENT).hexdigest()


def open_entry(server, private_key, url: str) -> dict:
    token = signing.make_token(
        private_key,
        sub=OWNER,
        entity={"type": "sample", "id": "S-7"},
        data=[{"name": "big.bin", "url": url, "sha256": SHA, "size": len(CONTENT)}],
    )
    r = server.api("POST", "lims/api/open", headers={"X-Lims-Token": token})
    assert r.status_code in (200, 201), r.text
    [item] = r.json()["data"]
    return item


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_killed_server_leaves_no_corrupt_file_and_resumes(tmp_path, key_pair, file_server):
    url = file_server.add("big.bin", CONTENT, delay=0.05, chunk=64 * 1024)  # about 3 s
    data = tmp_path / "root" / "lims" / "sample-S-7" / "data"
    final, partial = data / "big.bin", data / ".big.bin.part"
    options = {"owner": OWNER, "public_key": key_pair[1], "data_url_prefixes": [file_server.prefix]}

    with jupyter_process(tmp_path, **options) as server:
        item = open_entry(server, key_pair[0], url)
        assert item["status"] in ("queued", "running")
        wait_for(lambda: partial.exists() and partial.stat().st_size >= 512 * 1024)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
    # the kill left the partial file and nothing under the final name
    written = partial.stat().st_size
    assert 0 < written < len(CONTENT)
    assert not final.exists()

    with jupyter_process(tmp_path, **options) as server:
        item = open_entry(server, key_pair[0], url)
        job = item["job"]
        wait_for(
            lambda: (
                server.api("GET", f"lims/api/staging/{job}").json()["state"] in ("done", "failed")
            )
        )
        assert server.api("GET", f"lims/api/staging/{job}").json()["state"] == "done"
    assert final.read_bytes() == CONTENT
    assert not partial.exists()
    # the second server asked only for what the first had not written
    resumed = file_server.seen("big.bin")[-1]
    assert resumed.range is not None and resumed.range.startswith("bytes=")
    start = int(resumed.range.split("=")[1].split("-")[0])
    assert 0 < start <= written
    assert resumed.body_bytes == len(CONTENT) - start
