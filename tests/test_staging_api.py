"""Staging end to end through a real Jupyter server: POST lims/api/open with data
items, GET/POST lims/api/staging, events, and ``entry_data()`` on the result.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time

import pytest
from tornado.httpclient import HTTPClientError

from jupyter_lims_bridge import data as data_module
from jupyter_lims_bridge import events as bridge_events

from .conftest import RAW, body
from .support.fileserver import FileServer

CONTENT = os.urandom(2 * 1024 * 1024 + 7)
SHA = hashlib.sha256(CONTENT).hexdigest()


@pytest.fixture
def bridge_config(file_server):
    return {"data_url_prefixes": [file_server.prefix], "max_download_bytes": 16 * 1024 * 1024}


@pytest.fixture
def events(emitted):
    return lambda: emitted(bridge_events.STAGING)


async def job_of(jp_fetch, job_id: str, *, until_done: bool = True, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = body(await jp_fetch("lims", "api", "staging", job_id))
        if not until_done or job["state"] in ("done", "failed") or time.monotonic() > deadline:
            return job
        await asyncio.sleep(0.02)


async def test_open_queues_a_download_and_the_job_reports_progress_to_done(
    open_api, sign, jp_fetch, file_server, workspace, events, data_mount
):
    # Given a token naming mounted data and a signed download URL
    url = file_server.add("plate.csv", CONTENT)
    token = sign(
        data=[
            RAW,
            {"name": "plate.csv", "url": url + "?sig=SECRET", "sha256": SHA, "size": len(CONTENT)},
        ]
    )
    # When the LIMS opens it
    response = await open_api(token)
    # Then it answers at once: the mount item linked, the download queued with a job
    assert response.code == 201
    linked, queued = body(response)["data"]
    assert linked == {"name": "raw", "path": "lims/sample-S-42/data/raw", "status": "linked"}
    assert queued["status"] == "queued" and queued["path"] == "lims/sample-S-42/data/plate.csv"
    # And the job runs to done, with the exact bytes in place
    job = await job_of(jp_fetch, queued["job"])
    assert job["state"] == "done", job
    assert (job["bytesDone"], job["bytesTotal"], job["name"], job["path"]) == (
        len(CONTENT),
        len(CONTENT),
        "plate.csv",
        "lims/sample-S-42/data/plate.csv",
    )
    assert (workspace / "sample-S-42" / "data" / "plate.csv").read_bytes() == CONTENT
    # And GET lims/api/staging lists it
    listed = body(await jp_fetch("lims", "api", "staging"))["jobs"]
    assert [j["id"] for j in listed] == [queued["job"]]
    assert set(listed[0]) >= {
        "id",
        "name",
        "path",
        "state",
        "bytesDone",
        "bytesTotal",
        "speed",
        "reason",
    }
    # And each item was emitted as an event, the URL without its signature
    await asyncio.sleep(0.05)
    staged = events()
    assert [(e["action"], e["name"]) for e in staged] == [
        ("linked", "raw"),
        ("downloaded", "plate.csv"),
    ]
    assert staged[1]["url"] == url and "SECRET" not in json.dumps(staged)


async def test_reopening_finds_the_data_done_and_fetches_nothing(
    open_api, sign, jp_fetch, file_server
):
    url = file_server.add("plate.csv", CONTENT)
    item = {"name": "plate.csv", "url": url, "sha256": SHA}
    first = body(await open_api(sign(data=[item])))
    await job_of(jp_fetch, first["data"][0]["job"])
    second = body(await open_api(sign(data=[item])))
    assert second["data"] == [
        {"name": "plate.csv", "path": "lims/sample-S-42/data/plate.csv", "status": "done"}
    ]
    assert len(file_server.seen("plate.csv")) == 1


async def test_url_not_allowed_refuses_the_open_and_fetches_nothing(
    open_api, sign, file_server, workspace
):
    other = FileServer().start()
    try:
        url = other.add("plate.csv", CONTENT)
        response = await open_api(sign(data=[RAW, {"name": "plate.csv", "url": url}]))
        assert response.code == 403
        assert body(response)["reason"] == "url_not_allowed"
        assert other.requests == [] and file_server.requests == []
        assert not workspace.exists()  # all-or-nothing: not even the notebook
    finally:
        other.stop()


async def test_dry_run_fetches_nothing(open_api, sign, file_server, workspace):
    url = file_server.add("plate.csv", CONTENT)
    response = await open_api(sign(data=[{"name": "plate.csv", "url": url}]), dry_run=True)
    assert response.code == 200
    assert (
        body(response)["data"][0]["status"] == "queued" and "job" not in body(response)["data"][0]
    )
    await asyncio.sleep(0.1)
    assert file_server.requests == [] and not workspace.exists()


async def test_a_failed_job_reports_its_reason_and_can_be_retried(
    open_api, sign, jp_fetch, file_server, bridge, workspace
):
    # Given a server that answers 500 longer than the job retries
    bridge.stager.downloader.retries, bridge.stager.downloader.backoff = 1, 0.01
    url = file_server.add("flaky.bin", CONTENT, fail_first=2)
    [item] = body(await open_api(sign(data=[{"name": "flaky.bin", "url": url, "sha256": SHA}])))[
        "data"
    ]
    job = await job_of(jp_fetch, item["job"])
    assert (job["state"], job["reason"]) == ("failed", "download_failed")
    assert job["message"] and url not in job["message"]
    # When the owner retries it (POST, as the panel and the launch page do)
    response = await jp_fetch("lims", "api", "staging", item["job"], method="POST", body="")
    # Then it is queued again under the same id and ends done
    assert response.code == 202 and body(response)["id"] == item["job"]
    assert (await job_of(jp_fetch, item["job"]))["state"] == "done"
    assert (workspace / "sample-S-42" / "data" / "flaky.bin").read_bytes() == CONTENT
    # And a job that is not failed cannot be retried
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("lims", "api", "staging", item["job"], method="POST", body="")
    assert e.value.code == 409 and json.loads(e.value.response.body)["reason"] == "bad_request"


async def test_a_checksum_mismatch_is_reported_on_the_job(
    open_api, sign, jp_fetch, file_server, workspace, events
):
    url = file_server.add("bad.bin", CONTENT, corrupt=True)
    [item] = body(await open_api(sign(data=[{"name": "bad.bin", "url": url, "sha256": SHA}])))[
        "data"
    ]
    job = await job_of(jp_fetch, item["job"])
    assert (job["state"], job["reason"]) == ("failed", "checksum_mismatch")
    assert list((workspace / "sample-S-42" / "data").iterdir()) == []
    # the failure is an event that validates against the shipped schema
    await asyncio.sleep(0.05)
    [event] = events()
    assert (event["action"], event["name"], event["reason"], event["job"]) == (
        "failed",
        "bad.bin",
        "checksum_mismatch",
        item["job"],
    )


async def test_a_conflict_is_an_event_and_the_file_is_kept(
    open_api, sign, file_server, workspace, events
):
    data = workspace / "sample-S-42" / "data"
    data.mkdir(parents=True)
    (data / "plate.csv").write_text("mine")
    url = file_server.add("plate.csv", CONTENT)
    [item] = body(
        await open_api(sign(data=[{"name": "plate.csv", "url": url, "size": len(CONTENT)}]))
    )["data"]
    assert item == {
        "name": "plate.csv",
        "path": "lims/sample-S-42/data/plate.csv",
        "status": "conflict",
        "reason": "conflict",
    }
    assert (data / "plate.csv").read_text() == "mine" and file_server.requests == []
    assert [(e["action"], e["reason"]) for e in events()] == [("conflict", "conflict")]


async def test_unknown_job_is_not_found(jp_fetch):
    for method, kwargs in (("GET", {}), ("POST", {"body": ""})):
        with pytest.raises(HTTPClientError) as e:
            await jp_fetch("lims", "api", "staging", "nope", method=method, **kwargs)
        assert e.value.code == 404
        assert json.loads(e.value.response.body) == {
            "message": "There is no staging job with that id.",
            "reason": "not_found",
        }


@pytest.mark.parametrize("path", [("staging",), ("staging", "abc")])
async def test_staging_api_needs_the_owner(jp_fetch, path):
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("lims", "api", *path, headers={"Authorization": ""})
    assert e.value.code == 403


async def test_retry_needs_the_owner(jp_fetch):
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch(
            "lims", "api", "staging", "abc", method="POST", body="", headers={"Authorization": ""}
        )
    assert e.value.code == 403


async def test_entry_data_finds_the_paths_from_the_kernels_point_of_view(
    open_api, sign, jp_fetch, file_server, workspace, monkeypatch, data_mount
):
    # Given an entry opened with a mount item and a download
    url = file_server.add("plate.csv", CONTENT)
    result = body(await open_api(sign(data=[RAW, {"name": "plate.csv", "url": url}])))
    await job_of(jp_fetch, result["data"][1]["job"])
    folder = workspace / "sample-S-42"
    # When a kernel started for that notebook asks (it runs in the notebook's folder,
    # with JPY_SESSION_NAME set to the notebook's path relative to the server root)
    monkeypatch.chdir(folder)
    monkeypatch.setenv("JPY_SESSION_NAME", result["path"])
    found = data_module.entry_data()
    # Then it gets the local path of each item, which holds the data
    assert found == {"raw": folder / "data" / "raw", "plate.csv": folder / "data" / "plate.csv"}
    assert (found["raw"] / "run1.csv").read_text() == "a,b\n1,2\n"
    assert found["plate.csv"].read_bytes() == CONTENT


async def test_the_default_template_lists_the_data_and_runs(
    open_api, sign, workspace, monkeypatch, data_mount
):
    result = body(await open_api(sign(data=[RAW])))
    nb = json.loads((workspace / "sample-S-42" / "S-42.ipynb").read_text())
    [code] = [c for c in nb["cells"] if c["cell_type"] == "code"]
    source = "".join(code["source"])
    assert "data_paths = {'raw': 'data/raw'}" in source
    # Run the cell as a kernel would: in the notebook's folder
    monkeypatch.chdir(workspace / "sample-S-42")
    monkeypatch.setenv("JPY_SESSION_NAME", result["path"])
    namespace: dict = {}
    exec(compile(source, "cell", "exec"), namespace)
    assert namespace["entity_id"] == "S-42"
    assert namespace["data"] == {"raw": (workspace / "sample-S-42" / "data" / "raw").absolute()}


async def test_staging_api_needs_authorization(jp_fetch, jp_serverapp, monkeypatch):
    # Given an authorizer that refuses the staging resource (e.g. a shared read-only user)
    authorizer = jp_serverapp.web_app.settings["authorizer"]
    allowed = authorizer.is_authorized
    monkeypatch.setattr(
        authorizer,
        "is_authorized",
        lambda handler, user, action, resource: (
            resource != "lims_bridge:staging" and allowed(handler, user, action, resource)
        ),
    )
    for args, kwargs in (
        (("staging",), {}),
        (("staging", "abc"), {}),
        (("staging", "abc"), {"method": "POST", "body": ""}),
    ):
        with pytest.raises(HTTPClientError) as e:
            await jp_fetch("lims", "api", *args, **kwargs)
        assert e.value.code == 403
