"""Download jobs against a real file server on 127.0.0.1: verified, atomic, resumable, bounded.

Given / When / Then. Each test drives :class:`DataStager` directly (plan, then
apply, then wait for the job) and asserts on the bytes on disk and on what the
file server saw.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import socket
import time
from pathlib import Path

import pytest

from jupyter_lims_bridge import events, staging
from jupyter_lims_bridge.claims import DataItem
from jupyter_lims_bridge.errors import LimsError
from jupyter_lims_bridge.staging import DataStager

from .support.fileserver import FileServer

MiB = 1024 * 1024
CONTENT = os.urandom(3 * MiB + 123)
SHA = hashlib.sha256(CONTENT).hexdigest()


class Recorder:
    """A stand-in event logger: keeps what was emitted."""

    def __init__(self) -> None:
        self.emitted: list[tuple[str, dict]] = []

    def emit(self, *, schema_id: str, data: dict) -> None:
        self.emitted.append((schema_id, data))

    def actions(self) -> list[tuple[str, str]]:
        return [(d["action"], d["name"]) for s, d in self.emitted if s == events.STAGING]


@pytest.fixture
def server():
    s = FileServer().start()
    yield s
    s.stop()


@pytest.fixture
def root(tmp_path) -> Path:
    r = tmp_path / "ws"
    (r / "entry").mkdir(parents=True)
    return r.resolve()


@pytest.fixture
def data_dir(root) -> Path:
    return root / "entry" / "data"


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_stager(server, recorder):
    made: list[DataStager] = []

    def _make(**overrides) -> DataStager:
        options = {
            "mounts": {},
            "url_prefixes": [server.prefix],
            "max_download_bytes": 64 * MiB,
            "max_concurrent": 2,
            "event_logger": recorder,
            "connect_timeout": 2.0,
            "read_timeout": 2.0,
            "retries": 2,
            "backoff": 0.05,
        }
        options.update(overrides)
        stager = DataStager(**options)
        made.append(stager)
        return stager

    yield _make
    for stager in made:
        stager._stopping.set()
        if stager._executor is not None:
            stager._executor.shutdown(wait=True, cancel_futures=True)


async def stage(stager: DataStager, data_dir: Path, root: Path, *items: DataItem) -> list[dict]:
    planned = stager.plan(tuple(items), data_dir, "ws/entry/data", root)
    return await stager.apply(planned)


async def finished(stager: DataStager, job_id: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = stager.job(job_id)
        if not job.active:
            await asyncio.sleep(0.02)  # let the loop deliver the job's event
            return job.to_json()
        await asyncio.sleep(0.01)
    raise AssertionError(f"job {job_id} did not finish: {stager.job(job_id)}")


def leftovers(data_dir: Path) -> list[str]:
    return sorted(p.name for p in data_dir.iterdir()) if data_dir.exists() else []


# -- success -------------------------------------------------------------------


async def test_download_is_verified_and_placed(server, make_stager, data_dir, root, recorder):
    # Given a file with its size and sha256
    url = server.add("plate.csv", CONTENT)
    stager = make_stager()
    # When it is staged
    [result] = await stage(
        stager, data_dir, root, DataItem("plate.csv", url=url, sha256=SHA, size=len(CONTENT))
    )
    # Then apply answers at once with a queued job
    assert result["status"] == "queued" and result["job"]
    assert result["path"] == "ws/entry/data/plate.csv"
    job = await finished(stager, result["job"])
    # And the job ends done with the exact bytes and nothing else left behind
    assert job["state"] == "done", job
    assert job["bytesDone"] == job["bytesTotal"] == len(CONTENT)
    assert (data_dir / "plate.csv").read_bytes() == CONTENT
    assert leftovers(data_dir) == ["plate.csv"]
    assert recorder.actions() == [("downloaded", "plate.csv")]
    assert set(job) >= {"id", "name", "path", "state", "bytesDone", "bytesTotal", "speed", "reason"}
    assert stager.jobs() == [job]


async def test_no_partial_file_is_ever_visible_under_its_final_name(
    server, make_stager, data_dir, root
):
    # Given a slow server
    url = server.add("slow.bin", CONTENT, delay=0.01, chunk=128 * 1024)
    stager = make_stager()
    [result] = await stage(stager, data_dir, root, DataItem("slow.bin", url=url, sha256=SHA))
    final, partial = data_dir / "slow.bin", data_dir / ".slow.bin.part"
    seen_partial = seen_running = False
    # When we watch the final name while the job runs
    while stager.job(result["job"]).active:
        if final.exists():
            # Then whenever it exists, it is complete
            assert final.read_bytes() == CONTENT
        seen_partial |= partial.exists()
        job = stager.job(result["job"]).to_json()
        if job["state"] == "running" and 0 < job["bytesDone"] < len(CONTENT):
            seen_running = True
        await asyncio.sleep(0.005)
    assert seen_partial and seen_running
    assert final.read_bytes() == CONTENT
    assert not partial.exists()


async def test_speed_is_reported_while_running(server, make_stager, data_dir, root):
    url = server.add("slow.bin", CONTENT, delay=0.02, chunk=64 * 1024)
    stager = make_stager()
    [result] = await stage(stager, data_dir, root, DataItem("slow.bin", url=url))
    speeds = []
    while stager.job(result["job"]).active:
        speeds.append(stager.job(result["job"]).to_json()["speed"])
        await asyncio.sleep(0.05)
    assert max(speeds) > 0
    assert (await finished(stager, result["job"]))["state"] == "done"


# -- integrity -----------------------------------------------------------------


async def test_wrong_bytes_are_a_checksum_mismatch_and_leave_nothing(
    server, make_stager, data_dir, root, recorder
):
    # Given a server that sends one wrong byte
    url = server.add("bad.bin", CONTENT, corrupt=True)
    stager = make_stager()
    [result] = await stage(
        stager, data_dir, root, DataItem("bad.bin", url=url, sha256=SHA, size=len(CONTENT))
    )
    job = await finished(stager, result["job"])
    # Then the job fails, and neither the final nor the partial file remains
    assert (job["state"], job["reason"]) == ("failed", "checksum_mismatch")
    assert leftovers(data_dir) == []
    assert recorder.actions() == [("failed", "bad.bin")]


async def test_wrong_size_is_refused_from_content_length(server, make_stager, data_dir, root):
    url = server.add("short.bin", CONTENT, delay=0.02)
    stager = make_stager()
    [result] = await stage(
        stager, data_dir, root, DataItem("short.bin", url=url, size=len(CONTENT) + 1)
    )
    job = await finished(stager, result["job"])
    assert (job["state"], job["reason"]) == ("failed", "checksum_mismatch")
    assert server.seen("short.bin")[0].body_bytes < len(CONTENT)  # it stopped reading
    assert leftovers(data_dir) == []


async def test_a_body_longer_than_the_size_is_a_mismatch_while_streaming(
    server, make_stager, data_dir, root
):
    # Given a server that sends no Content-Length and more bytes than announced
    url = server.add("long.bin", CONTENT, content_length=False)
    stager = make_stager()
    [result] = await stage(stager, data_dir, root, DataItem("long.bin", url=url, size=MiB))
    job = await finished(stager, result["job"])
    assert (job["state"], job["reason"]) == ("failed", "checksum_mismatch")
    assert leftovers(data_dir) == []


async def test_a_body_of_unknown_length(server, make_stager, data_dir, root):
    url = server.add("stream.bin", CONTENT, content_length=False)
    stager = make_stager()
    [result] = await stage(stager, data_dir, root, DataItem("stream.bin", url=url, sha256=SHA))
    job = await finished(stager, result["job"])
    assert job["state"] == "done", job
    assert (data_dir / "stream.bin").read_bytes() == CONTENT


# -- resume --------------------------------------------------------------------


async def test_interrupted_download_resumes_next_time_fetching_only_the_missing_bytes(
    server, make_stager, data_dir, root
):
    # Given a server that cuts the connection half-way, and no retries
    half = len(CONTENT) // 2
    url = server.add("big.bin", CONTENT, cut_after=half)
    item = DataItem("big.bin", url=url, sha256=SHA, size=len(CONTENT))
    stager = make_stager(retries=0)
    [first] = await stage(stager, data_dir, root, item)
    job = await finished(stager, first["job"])
    # Then the first job fails, keeping a hidden partial file and nothing under the final name
    assert (job["state"], job["reason"]) == ("failed", "download_failed")
    assert not (data_dir / "big.bin").exists()
    assert (data_dir / ".big.bin.part").read_bytes() == CONTENT[:half]
    # When the entry is opened again (a new server: jobs do not survive a restart)
    again = make_stager()
    [second] = await stage(again, data_dir, root, item)
    job = await finished(again, second["job"])
    # Then only the missing bytes were fetched, with a Range request
    assert job["state"] == "done"
    assert (data_dir / "big.bin").read_bytes() == CONTENT
    requests = server.seen("big.bin")
    assert [r.range for r in requests] == [None, f"bytes={half}-"]
    assert requests[1].status == 206 and requests[1].body_bytes == len(CONTENT) - half
    assert again.job(second["job"]).bytes_fetched == len(CONTENT) - half
    assert leftovers(data_dir) == ["big.bin"]


async def test_a_cut_connection_is_retried_within_the_job_by_range(
    server, make_stager, data_dir, root
):
    third = len(CONTENT) // 3
    url = server.add("big.bin", CONTENT, cut_after=third, cuts=2)
    stager = make_stager(retries=3)
    [result] = await stage(stager, data_dir, root, DataItem("big.bin", url=url, sha256=SHA))
    job = await finished(stager, result["job"])
    assert job["state"] == "done", job
    assert (data_dir / "big.bin").read_bytes() == CONTENT
    ranges = [r.range for r in server.seen("big.bin")]
    assert ranges == [None, f"bytes={third}-", f"bytes={2 * third}-"]
    assert sum(r.body_bytes for r in server.seen("big.bin")) == len(CONTENT)


async def test_a_server_without_range_support_is_fetched_whole_again(
    server, make_stager, data_dir, root
):
    # Given a server that ignores Range and cuts the first transfer
    half = len(CONTENT) // 2
    url = server.add("norange.bin", CONTENT, ranges=False, cut_after=half)
    stager = make_stager(retries=2)
    [result] = await stage(stager, data_dir, root, DataItem("norange.bin", url=url, sha256=SHA))
    job = await finished(stager, result["job"])
    # Then the resume attempt got a 200 and the file was rewritten from the start
    assert job["state"] == "done", job
    assert (data_dir / "norange.bin").read_bytes() == CONTENT
    requests = server.seen("norange.bin")
    assert [(r.range, r.status) for r in requests] == [(None, 200), (f"bytes={half}-", 200)]


async def test_a_partial_file_of_other_data_is_not_resumed(server, make_stager, data_dir, root):
    # Given a partial file left by a download of different data under the same name
    data_dir.mkdir(parents=True)
    (data_dir / ".x.bin.part").write_bytes(b"something else")
    (data_dir / ".x.bin.part.json").write_text(
        '{"url": "http://elsewhere/x", "sha256": null, "size": null}'
    )
    url = server.add("x.bin", CONTENT)
    stager = make_stager()
    [result] = await stage(stager, data_dir, root, DataItem("x.bin", url=url, sha256=SHA))
    assert (await finished(stager, result["job"]))["state"] == "done"
    assert [r.range for r in server.seen("x.bin")] == [None]
    assert (data_dir / "x.bin").read_bytes() == CONTENT


async def test_a_changed_file_on_the_server_restarts_through_if_range(
    server, make_stager, data_dir, root
):
    # Given a partial file fetched under an ETag the server no longer has
    half = len(CONTENT) // 2
    url = server.add("v.bin", CONTENT, cut_after=half, etag='"v1"')
    item = DataItem("v.bin", url=url)
    stager = make_stager(retries=0)
    [first] = await stage(stager, data_dir, root, item)
    assert (await finished(stager, first["job"]))["state"] == "failed"
    new = bytes(reversed(CONTENT))
    server.add("v.bin", new, etag='"v2"')
    stager2 = make_stager()
    [second] = await stage(stager2, data_dir, root, item)
    job = await finished(stager2, second["job"])
    # Then the Range request carried If-Range, and the server sent the whole new file
    assert job["state"] == "done"
    assert (data_dir / "v.bin").read_bytes() == new
    last = server.seen("v.bin")[-1]
    assert (last.range, last.headers.get("If-Range"), last.status) == (
        f"bytes={half}-",
        '"v1"',
        200,
    )


# -- bounds --------------------------------------------------------------------


async def test_500_then_200_is_retried(server, make_stager, data_dir, root):
    url = server.add("flaky.bin", CONTENT, fail_first=2)
    stager = make_stager(retries=3)
    [result] = await stage(stager, data_dir, root, DataItem("flaky.bin", url=url, sha256=SHA))
    assert (await finished(stager, result["job"]))["state"] == "done"
    assert [r.status for r in server.seen("flaky.bin")] == [500, 500, 200]


async def test_retries_back_off_exponentially(server, make_stager, data_dir, root):
    url = server.add("flaky.bin", CONTENT, fail_first=2)
    stager = make_stager(retries=3, backoff=0.3)
    [result] = await stage(stager, data_dir, root, DataItem("flaky.bin", url=url, sha256=SHA))
    assert (await finished(stager, result["job"]))["state"] == "done"
    times = [r.at for r in server.seen("flaky.bin")]
    # waits of backoff, then twice that, between the attempts (lower bounds only)
    assert times[1] - times[0] >= 0.3
    assert times[2] - times[1] >= 0.6


async def test_persistent_5xx_fails_after_the_retries(server, make_stager, data_dir, root):
    url = server.add("down.bin", CONTENT, fail_first=100)
    stager = make_stager(retries=2)
    [result] = await stage(stager, data_dir, root, DataItem("down.bin", url=url))
    job = await finished(stager, result["job"])
    assert (job["state"], job["reason"]) == ("failed", "download_failed")
    assert "3 attempts" in job["message"]
    assert len(server.seen("down.bin")) == 3
    assert leftovers(data_dir) == []


async def test_404_fails_without_retrying(server, make_stager, data_dir, root):
    url = server.add("gone.bin", CONTENT, status=404)
    stager = make_stager(retries=3)
    [result] = await stage(stager, data_dir, root, DataItem("gone.bin", url=url))
    job = await finished(stager, result["job"])
    assert (job["state"], job["reason"]) == ("failed", "download_failed")
    assert len(server.seen("gone.bin")) == 1


async def test_a_stalled_server_times_out_and_is_retried(server, make_stager, data_dir, root):
    url = server.add("stall.bin", CONTENT, stall=1.5)
    stager = make_stager(read_timeout=0.5, retries=2)
    [result] = await stage(stager, data_dir, root, DataItem("stall.bin", url=url, sha256=SHA))
    assert (await finished(stager, result["job"]))["state"] == "done"
    assert len(server.seen("stall.bin")) == 2


async def test_too_large_from_content_length_fetches_no_body(server, make_stager, data_dir, root):
    url = server.add("huge.bin", CONTENT, delay=0.05)
    stager = make_stager(max_download_bytes=MiB)
    [result] = await stage(stager, data_dir, root, DataItem("huge.bin", url=url))
    job = await finished(stager, result["job"])
    assert (job["state"], job["reason"]) == ("failed", "too_large")
    # refused on the announced length (which the message gives), before a byte was written
    assert job["message"].startswith(f"huge.bin is {len(CONTENT) / MiB:.1f} MiB, more than")
    assert job["bytesDone"] == 0
    assert leftovers(data_dir) == []
    assert server.seen("huge.bin")[0].body_bytes < len(CONTENT)


async def test_too_large_while_streaming(server, make_stager, data_dir, root):
    url = server.add("huge.bin", CONTENT, content_length=False)
    stager = make_stager(max_download_bytes=MiB)
    [result] = await stage(stager, data_dir, root, DataItem("huge.bin", url=url))
    job = await finished(stager, result["job"])
    assert (job["state"], job["reason"]) == ("failed", "too_large")
    assert leftovers(data_dir) == []


async def test_a_declared_size_over_the_limit_is_refused_before_anything(
    server, make_stager, data_dir, root
):
    url = server.add("huge.bin", CONTENT)
    stager = make_stager(max_download_bytes=MiB)
    with pytest.raises(LimsError) as e:
        await stage(stager, data_dir, root, DataItem("huge.bin", url=url, size=2 * MiB))
    assert (e.value.reason, e.value.status) == ("too_large", 413)
    assert server.requests == []


async def test_concurrency_is_bounded(server, make_stager, data_dir, root):
    items = [
        DataItem(
            f"f{i}.bin", url=server.add(f"f{i}.bin", CONTENT[:MiB], delay=0.01, chunk=64 * 1024)
        )
        for i in range(5)
    ]
    stager = make_stager(max_concurrent=2)
    results = await stage(stager, data_dir, root, *items)
    most = 0
    while any(stager.job(r["job"]).active for r in results):
        most = max(most, sum(stager.job(r["job"]).state == "running" for r in results))
        await asyncio.sleep(0.005)
    assert most == 2
    assert server.most_in_flight == 2  # as the LIMS's server saw it
    assert all(stager.job(r["job"]).state == "done" for r in results)


# -- disk full -------------------------------------------------------------------


async def test_disk_full_while_writing_fails_clearly_and_removes_the_partial(
    server, make_stager, data_dir, root, monkeypatch
):
    url = server.add("full.bin", CONTENT)
    real_write = os.write
    writes = []

    def write(fd, data):
        writes.append(len(data))
        if len(writes) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(staging.download.os, "write", write)
    stager = make_stager()
    [result] = await stage(stager, data_dir, root, DataItem("full.bin", url=url, sha256=SHA))
    job = await finished(stager, result["job"])
    assert (job["state"], job["reason"]) == ("failed", "download_failed")
    assert "disk is full" in job["message"]
    assert leftovers(data_dir) == []


async def test_not_enough_free_space_is_known_before_writing(
    server, make_stager, data_dir, root, monkeypatch
):
    url = server.add("full.bin", CONTENT)
    monkeypatch.setattr(
        staging.download.shutil, "disk_usage", lambda p: type("U", (), {"free": 1000})()
    )
    stager = make_stager()
    [result] = await stage(stager, data_dir, root, DataItem("full.bin", url=url))
    job = await finished(stager, result["job"])
    assert (job["state"], job["reason"]) == ("failed", "download_failed")
    assert "disk is full" in job["message"] and "needs" in job["message"]
    assert leftovers(data_dir) == []


# -- what is already there -------------------------------------------------------


async def test_reopening_a_complete_verified_file_downloads_nothing(
    server, make_stager, data_dir, root
):
    url = server.add("plate.csv", CONTENT)
    item = DataItem("plate.csv", url=url, sha256=SHA, size=len(CONTENT))
    stager = make_stager()
    [first] = await stage(stager, data_dir, root, item)
    await finished(stager, first["job"])
    # When opened again by this server, and by a fresh one (that has to hash the file)
    [again] = await stage(stager, data_dir, root, item)
    [fresh] = await stage(make_stager(), data_dir, root, item)
    # Then both are done at once, with no job and no request
    assert (
        again == fresh == {"name": "plate.csv", "path": "ws/entry/data/plate.csv", "status": "done"}
    )
    assert len(server.seen("plate.csv")) == 1


async def test_a_different_file_at_the_final_name_is_a_conflict_and_kept(
    server, make_stager, data_dir, root, recorder
):
    data_dir.mkdir(parents=True)
    (data_dir / "plate.csv").write_bytes(b"my own notes")
    url = server.add("plate.csv", CONTENT)
    stager = make_stager()
    [result] = await stage(stager, data_dir, root, DataItem("plate.csv", url=url, sha256=SHA))
    assert result["status"] == "conflict" and "job" not in result
    assert (data_dir / "plate.csv").read_bytes() == b"my own notes"
    assert server.requests == []
    assert recorder.actions() == [("conflict", "plate.csv")]


async def test_a_file_appearing_during_the_download_is_kept(server, make_stager, data_dir, root):
    url = server.add("race.bin", CONTENT, delay=0.02, chunk=256 * 1024)
    stager = make_stager()
    [result] = await stage(stager, data_dir, root, DataItem("race.bin", url=url, sha256=SHA))
    while not (data_dir / ".race.bin.part").exists():
        await asyncio.sleep(0.005)
    (data_dir / "race.bin").write_bytes(b"the user was faster")
    job = await finished(stager, result["job"])
    assert (job["state"], job["reason"]) == ("failed", "conflict")
    assert (data_dir / "race.bin").read_bytes() == b"the user was faster"


async def test_two_opens_of_one_item_share_one_job(server, make_stager, data_dir, root):
    url = server.add("one.bin", CONTENT, delay=0.01)
    stager = make_stager()
    item = DataItem("one.bin", url=url, sha256=SHA)
    [a] = await stage(stager, data_dir, root, item)
    [b] = await stage(stager, data_dir, root, item)
    assert a["job"] == b["job"]
    await finished(stager, a["job"])
    assert len(server.seen("one.bin")) == 1


# -- allowlist, redirects, secrets --------------------------------------------------


async def test_url_not_allowed_fetches_nothing(server, make_stager, data_dir, root):
    server.add("plate.csv", CONTENT)
    stager = make_stager(url_prefixes=[server.prefix + "allowed/"])
    with pytest.raises(LimsError) as e:
        await stage(stager, data_dir, root, DataItem("plate.csv", url=server.url("plate.csv")))
    assert (e.value.reason, e.value.status) == ("url_not_allowed", 403)
    assert server.requests == []
    assert leftovers(data_dir) == []


async def test_a_redirect_must_stay_inside_the_allowed_prefixes(
    server, make_stager, data_dir, root
):
    other = FileServer().start()
    try:
        other.add("x.bin", CONTENT)
        url = server.add("moved.bin", CONTENT, redirect=other.url("x.bin"))
        stager = make_stager()
        [result] = await stage(stager, data_dir, root, DataItem("moved.bin", url=url))
        job = await finished(stager, result["job"])
        assert (job["state"], job["reason"]) == ("failed", "url_not_allowed")
        assert other.requests == []
    finally:
        other.stop()
    # and a redirect inside the prefix is followed
    server.add("target.bin", CONTENT)
    url = server.add("here.bin", CONTENT, redirect=server.url("target.bin"))
    [result] = await stage(stager, data_dir, root, DataItem("here.bin", url=url, sha256=SHA))
    assert (await finished(stager, result["job"]))["state"] == "done"


async def test_a_signed_url_query_never_reaches_logs_events_or_jobs(
    server, make_stager, data_dir, root, recorder, caplog
):
    caplog.set_level(logging.DEBUG)
    server.add("ok.bin", CONTENT)
    server.add("bad.bin", CONTENT, corrupt=True, fail_first=1)
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/files/"
    stager = make_stager(
        log=logging.getLogger("test-staging"), url_prefixes=[server.prefix, closed], retries=1
    )
    results = await stage(
        stager,
        data_dir,
        root,
        DataItem("ok.bin", url=server.url("ok.bin", "sig=TOPSECRET")),
        DataItem("bad.bin", url=server.url("bad.bin", "sig=TOPSECRET"), sha256=SHA),
        DataItem("gone.bin", url=closed + "gone.bin?sig=TOPSECRET"),
    )
    jobs = [await finished(stager, r["job"]) for r in results]
    assert [j["state"] for j in jobs] == ["done", "failed", "failed"]
    assert server.seen("ok.bin")[0].query == "sig=TOPSECRET"  # it was used…
    ours = [r.getMessage() for r in caplog.records]
    assert any("urllib3" in r.name for r in caplog.records)
    assert [m for m in ours if "TOPSECRET" in m] == []  # …but never written down
    assert "TOPSECRET" not in repr(recorder.emitted) and "TOPSECRET" not in repr(stager.jobs())
    urls = {d.get("url") for _, d in recorder.emitted}
    assert urls == {server.url("ok.bin"), server.url("bad.bin"), closed + "gone.bin"}


# -- retry and shutdown ---------------------------------------------------------------


async def test_a_failed_job_can_be_retried_and_resumes(server, make_stager, data_dir, root):
    half = len(CONTENT) // 2
    url = server.add("r.bin", CONTENT, cut_after=half)
    stager = make_stager(retries=0)
    [result] = await stage(stager, data_dir, root, DataItem("r.bin", url=url, sha256=SHA))
    assert (await finished(stager, result["job"]))["state"] == "failed"
    with pytest.raises(LimsError) as e:
        stager.retry("nope")
    assert e.value.reason == "not_found"
    job = stager.retry(result["job"])
    assert job.id == result["job"] and job.state in ("queued", "running")
    assert (await finished(stager, job.id))["state"] == "done"
    assert server.seen("r.bin")[-1].range == f"bytes={half}-"
    with pytest.raises(LimsError) as e:
        stager.retry(job.id)
    assert (e.value.reason, e.value.status) == ("bad_request", 409)


async def test_close_stops_running_jobs_and_leaves_no_corrupt_file(
    server, make_stager, data_dir, root
):
    url = server.add("long.bin", CONTENT, delay=0.05, chunk=64 * 1024)
    stager = make_stager()
    [result] = await stage(stager, data_dir, root, DataItem("long.bin", url=url, sha256=SHA))
    while stager.job(result["job"]).bytes_done == 0:
        await asyncio.sleep(0.01)
    started = time.monotonic()
    await stager.close()
    assert time.monotonic() - started < 2
    job = stager.job(result["job"]).to_json()
    assert (job["state"], job["reason"]) == ("failed", "download_failed")
    assert not (data_dir / "long.bin").exists()
    assert (data_dir / ".long.bin.part").exists()  # kept for the resume
    # a restarted server resumes it
    server.files["long.bin"].delay = 0
    again = make_stager()
    [second] = await stage(again, data_dir, root, DataItem("long.bin", url=url, sha256=SHA))
    assert (await finished(again, second["job"]))["state"] == "done"
    assert (data_dir / "long.bin").read_bytes() == CONTENT
    assert server.seen("long.bin")[-1].range is not None


async def test_a_big_existing_file_is_verified_by_a_job_and_nothing_is_fetched(
    server, make_stager, data_dir, root, monkeypatch, recorder
):
    # Given files already in place, bigger than what apply hashes before answering
    monkeypatch.setattr(staging.stager, "INLINE_VERIFY_BYTES", 1024)
    data_dir.mkdir(parents=True)
    (data_dir / "same.bin").write_bytes(CONTENT)
    (data_dir / "other.bin").write_bytes(bytes(reversed(CONTENT)))
    (data_dir / ".same.bin.part").write_bytes(b"stale")  # left by an old interrupted job
    stager = make_stager()
    items = [DataItem(n, url=server.add(n, CONTENT), sha256=SHA) for n in ("same.bin", "other.bin")]
    # When the entry is opened: apply answers at once with checking jobs
    same, other = await stage(stager, data_dir, root, *items)
    assert same["status"] == other["status"] == "queued"
    # Then the identical file is done, the different one a conflict (and kept)
    assert (await finished(stager, same["job"]))["state"] == "done"
    job = await finished(stager, other["job"])
    assert (job["state"], job["reason"]) == ("failed", "conflict")
    assert (data_dir / "other.bin").read_bytes() == bytes(reversed(CONTENT))
    assert server.requests == []
    assert recorder.actions() == [("conflict", "other.bin")]
    # And once verified, the next open answers done at once, and the stale partial is gone
    [again] = await stage(stager, data_dir, root, items[0])
    assert again["status"] == "done"
    assert leftovers(data_dir) == ["other.bin", "same.bin"]


async def test_a_job_that_ends_before_apply_answers_is_still_answered_as_queued(
    server, make_stager, data_dir, root, monkeypatch
):
    # Given a worker that runs each job to its end the moment it is handed over
    # (what a busy machine's thread scheduling can do with a quick check)
    class Inline:
        def submit(self, fn, *args):
            fn(*args)

        def shutdown(self, **kwargs):
            return None

    monkeypatch.setattr(staging.stager, "INLINE_VERIFY_BYTES", 1024)
    data_dir.mkdir(parents=True)
    (data_dir / "other.bin").write_bytes(bytes(reversed(CONTENT)))
    stager = make_stager()
    stager._executor = Inline()
    item = DataItem("other.bin", url=server.add("other.bin", CONTENT), sha256=SHA)
    # When the entry is opened and the checking job has failed (a conflict) already
    [answer] = await stage(stager, data_dir, root, item)
    # Then the answer is the queued job, not a refusal; the job tells the rest
    assert answer["status"] == "queued" and "reason" not in answer
    job = await finished(stager, answer["job"])
    assert (job["state"], job["reason"]) == ("failed", "conflict")


PREFIXES = ["https://lims.example.org/files/", "https://lims.example.org/api/v1"]


@pytest.mark.parametrize(
    "url",
    [
        "https://lims.example.org/files/..;/admin/secret",
        "https://lims.example.org/files/%2e%2e;/admin/secret",
        "https://lims.example.org/files/..%3B/admin/secret",
        "https://lims.example.org/files/x;jsessionid=1/y",
        "https://lims.example.org/api/v1;/../admin",
        "https://lims.example.org/api/v1/..;/admin",
        # segment boundaries
        "https://lims.example.org/api/v1x/data",
        "https://lims.example.org/api/v10",
        "https://lims.example.org/filesX/a",
        "https://lims.example.org/files",
    ],
)
def test_url_prefix_check_refuses_path_parameters_and_partial_segments(url):
    assert not staging.url_allowed(url, PREFIXES)


@pytest.mark.parametrize(
    "url",
    [
        "https://lims.example.org/files/a/b.csv?sig=x;y",  # ';' in the query is not the path
        "https://lims.example.org/api/v1",
        "https://lims.example.org/api/v1/data/7",
        "https://LIMS.example.org/files/a",
    ],
)
def test_url_prefix_check_admits_what_lies_below_a_prefix(url):
    assert staging.url_allowed(url, PREFIXES)
