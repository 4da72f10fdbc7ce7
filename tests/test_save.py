"""Save to ELN through a real Jupyter server and a LIMS stand-in on 127.0.0.1.

``POST/GET lims/api/save``: every answer of DESIGN ("The way back to the ELN"),
the return claim kept server-side only, a retry after a lost answer, and no file
outside the workspace ever sent.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time

import pytest

from jupyter_lims_bridge import events as bridge_events
from jupyter_lims_bridge.eln_return import idempotency_key

from .conftest import body, files_under
from .support.lims_standin import REFUSAL_BODY, LimsStandIn

NOTEBOOK = "lims/sample-S-42/S-42.ipynb"
GRANT = "grant-S42-first"


@pytest.fixture
def lims():
    server = LimsStandIn(hang_seconds=4).start()
    yield server
    server.stop()


@pytest.fixture
def bridge_config(lims) -> dict:
    return {"return_url_prefixes": [lims.prefix], "return_timeout": 1.5}


@pytest.fixture
def save_api(jp_fetch):
    async def _save(path: str = NOTEBOOK, formats: list[str] | None = None, **kwargs):
        payload: dict = {"path": path}
        if formats is not None:
            payload["formats"] = formats
        return await jp_fetch(
            "lims",
            "api",
            "save",
            method="POST",
            body=json.dumps(payload),
            raise_error=False,
            **kwargs,
        )

    return _save


@pytest.fixture
def saves_of(jp_fetch):
    async def _get(path: str = NOTEBOOK):
        return await jp_fetch("lims", "api", "save", params={"path": path}, raise_error=False)

    return _get


@pytest.fixture
def opened(open_api, sign, lims):
    """Open S-42 with a return to the stand-in (``opened(**return overrides)``)."""

    async def _open(**overrides):
        response = await open_api(sign(**{"return": lims.return_claim(**overrides)}))
        assert response.code in (200, 201), response.body
        return body(response)

    return _open


# -- the return at open time ---------------------------------------------------------------


async def test_the_return_is_kept_server_side_only(opened, saves_of, workspace, tmp_path):
    # Given a token with a return
    answer = await opened()
    # Then neither the open's answer nor the notebook holds the grant
    assert GRANT not in json.dumps(answer)
    notebook = (workspace / "sample-S-42" / "S-42.ipynb").read_text()
    assert (
        GRANT not in notebook and "return" not in json.loads(notebook)["metadata"]["lims"]["claims"]
    )
    # And the state file holding it is private
    state = tmp_path / "state" / "eln_returns.json"
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o600
    assert json.loads(state.read_text())[NOTEBOOK]["return"]["grant"] == GRANT
    # And the server says the notebook can be saved, without the grant or the URL
    response = await saves_of()
    assert response.code == 200
    assert body(response) == {
        "path": NOTEBOOK,
        "hasReturn": True,
        "expiresAt": None,
        "expired": False,
        "saves": [],
    }


async def test_a_return_outside_the_prefixes_refuses_the_open(open_api, sign, workspace):
    # Given a return URL on a host the operator did not allow
    token = sign(**{"return": {"url": "https://elsewhere.example.org/api/jupyter/x", "grant": "g"}})
    # When the LIMS opens it
    response = await open_api(token)
    # Then the whole open is refused before anything is written
    assert response.code == 403 and body(response)["reason"] == "url_not_allowed"
    assert files_under(workspace) == {}


@pytest.mark.parametrize(
    "claim",
    [
        "not an object",
        {"url": "ftp://x/y", "grant": "g"},
        {"url": "https://x/y"},
        {"url": "https://x/y", "grant": ""},
        {"url": "https://x/y", "grant": "has space"},
        {"url": "https://x/y", "grant": "g", "expires": "tomorrow"},
    ],
)
async def test_a_malformed_return_is_bad_claims(open_api, sign, workspace, claim):
    response = await open_api(sign(**{"return": claim}))
    assert response.code == 422 and body(response)["reason"] == "bad_claims"
    assert "has space" not in body(response)["message"]
    assert files_under(workspace) == {}


async def test_a_later_open_with_a_new_grant_replaces_it(opened, save_api, lims):
    await opened()
    lims.grants = {"grant-S42-second"}  # the LIMS issued a new grant, the first is revoked
    await opened(grant="grant-S42-second")
    response = await save_api()
    assert response.code == 200, response.body
    assert lims.received[-1].grant_ok


# -- saving --------------------------------------------------------------------------------


async def test_save_uploads_notebook_html_and_provenance(
    opened, save_api, saves_of, lims, workspace, jp_fetch, emitted
):
    # Given a notebook opened with a return
    await opened()
    notebook_bytes = (workspace / "sample-S-42" / "S-42.ipynb").read_bytes()
    # When the owner saves it to the ELN
    response = await save_api()
    # Then the answer is DESIGN's
    assert response.code == 200, response.body
    result = body(response)
    sha = hashlib.sha256(notebook_bytes).hexdigest()
    assert result["status"] == "saved"
    assert result["files"][0] == {"name": "S-42.ipynb", "sha256": sha, "size": len(notebook_bytes)}
    assert result["files"][1]["name"] == "S-42.html"
    assert result["eln"] == {
        "status": 201,
        "version": 1,
        "url": f"{lims.origin}/entries/S-42/attachments/1",
    }
    assert result["savedAt"].endswith("Z")
    # And the LIMS received one multipart upload, with the grant and the idempotency key
    (got,) = lims.received
    assert got.grant_ok and got.content_type.startswith("multipart/form-data; boundary=")
    assert got.content_length == got.size and got.transfer_encoding is None  # not chunked
    assert got.idempotency_key == idempotency_key(lims.url, NOTEBOOK, ["ipynb", "html"], sha)
    (attachment,) = lims.attachments
    assert set(attachment.parts) == {"notebook", "html", "provenance"}
    assert attachment.parts["notebook"].content == notebook_bytes
    assert attachment.parts["notebook"].filename == "S-42.ipynb"
    html = attachment.parts["html"].content
    assert html.startswith(b"<!DOCTYPE html>") and b"Buffer screen 3" in html
    assert hashlib.sha256(html).hexdigest() == result["files"][1]["sha256"]
    provenance = attachment.json("provenance")
    assert provenance["entity"]["id"] == "S-42" and provenance["owner"] == "alice"
    assert provenance["path"] == NOTEBOOK and provenance["savedAt"] == result["savedAt"]
    assert provenance["bridgeVersion"]
    assert [f["sha256"] for f in provenance["files"]] == [f["sha256"] for f in result["files"]]
    # And the save is listed, and shown with the recent entry
    listed = body(await saves_of())
    assert [s["eln"]["version"] for s in listed["saves"]] == [1]
    status = body(await jp_fetch("lims", "api", "status"))
    assert status["recent"][0]["lastSave"]["eln"]["version"] == 1
    # And a save event was emitted
    (event,) = emitted(bridge_events.SAVE)
    assert event["action"] == "saved" and event["entityId"] == "S-42" and event["elnStatus"] == 201


async def test_ipynb_only_sends_no_html(opened, save_api, lims):
    await opened()
    response = await save_api(formats=["ipynb"])
    assert response.code == 200
    assert [f["name"] for f in body(response)["files"]] == ["S-42.ipynb"]
    assert set(lims.attachments[0].parts) == {"notebook", "provenance"}


async def test_unchanged_content_uploads_nothing_and_a_change_does(
    opened, save_api, lims, workspace
):
    await opened()
    first = body(await save_api())
    # When the same content is saved again
    second = await save_api()
    # Then nothing is uploaded and the answer says so
    assert second.code == 200
    assert body(second)["status"] == "unchanged"
    assert body(second)["eln"] == first["eln"] and body(second)["savedAt"] == first["savedAt"]
    assert len(lims.received) == 1
    # When the notebook changes, the next save uploads a new version
    path = workspace / "sample-S-42" / "S-42.ipynb"
    path.write_text(path.read_text().replace("Buffer screen 3", "Buffer screen 3, analysed"))
    third = body(await save_api())
    assert third["status"] == "saved" and third["eln"]["version"] == 2
    assert len(lims.attachments) == 2


async def test_a_retry_after_a_lost_answer_does_not_duplicate_the_attachment(
    opened, save_api, saves_of, lims
):
    # Given a LIMS that stores the upload but whose answer is lost
    await opened()
    lims.behaviours = ["drop"]
    first = await save_api()
    assert first.code == 504 and body(first)["reason"] == "eln_unreachable"
    assert len(lims.attachments) == 1
    assert body(await saves_of())["saves"] == []  # we do not know it was saved
    # When the user retries
    second = await save_api()
    # Then the LIMS recognises the idempotency key: the first answer, nothing stored again
    assert second.code == 200 and body(second)["status"] == "saved"
    assert body(second)["eln"]["version"] == 1
    assert len(lims.attachments) == 1 and len(lims.received) == 2
    assert lims.received[0].idempotency_key == lims.received[1].idempotency_key


@pytest.mark.parametrize("status", [403, 500, 302])
async def test_a_refusal_is_eln_refused_with_its_status_never_its_body(
    opened, save_api, saves_of, lims, status
):
    await opened()
    lims.behaviours = [status]
    response = await save_api()
    assert response.code == 502
    answer = body(response)
    assert answer["reason"] == "eln_refused" and f"HTTP {status}" in answer["message"]
    assert REFUSAL_BODY not in response.body.decode()
    assert body(await saves_of())["saves"] == []


async def test_a_lims_that_hangs_is_eln_unreachable_within_the_timeout(opened, save_api, lims):
    await opened()
    lims.behaviours = ["hang"]
    started = time.monotonic()
    response = await save_api()
    assert response.code == 504 and body(response)["reason"] == "eln_unreachable"
    assert time.monotonic() - started < 4  # return_timeout is 1.5 s; the LIMS hangs 4 s


async def test_a_lims_that_is_down_is_eln_unreachable(opened, save_api, lims):
    await opened()
    lims.stop()
    response = await save_api()
    assert response.code == 504 and body(response)["reason"] == "eln_unreachable"


async def test_an_expired_return_is_return_expired(opened, save_api, saves_of, lims):
    await opened(expires=int(time.time()) - 60)
    assert body(await saves_of())["expired"] is True
    response = await save_api()
    assert response.code == 410 and body(response)["reason"] == "return_expired"
    assert lims.received == []


async def test_a_notebook_opened_without_a_return_is_no_return(open_api, sign, save_api, saves_of):
    assert (await open_api(sign())).code == 201
    response = await save_api()
    assert response.code == 409 and body(response)["reason"] == "no_return"
    assert body(await saves_of())["hasReturn"] is False


async def test_a_deleted_notebook_with_a_return_is_not_found(opened, save_api, workspace, lims):
    await opened()
    (workspace / "sample-S-42" / "S-42.ipynb").unlink()
    response = await save_api()
    assert response.code == 404 and body(response)["reason"] == "not_found"
    assert lims.received == []


@pytest.mark.parametrize("formats", [["pdf"], ["html"], [], "ipynb"])
async def test_bad_formats_are_bad_request(opened, save_api, formats):
    await opened()
    response = await save_api(formats=formats)
    assert response.code == 400 and body(response)["reason"] == "bad_request"


# -- nothing outside the workspace is ever sent ----------------------------------------------


async def test_no_file_outside_the_workspace_can_be_sent(
    opened, save_api, saves_of, lims, workspace, jp_root_dir, tmp_path
):
    await opened()
    outside = tmp_path / "secret.ipynb"
    outside.write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    (jp_root_dir / "private.ipynb").write_text(outside.read_text())
    link = workspace / "sample-S-42" / "link.ipynb"
    link.symlink_to(outside)
    for path in (
        "../secret.ipynb",
        "private.ipynb",
        str(outside),
        "lims/../private.ipynb",
        "lims/sample-S-42/link.ipynb",
    ):
        response = await save_api(path)
        assert response.code == 403, (path, response.body)
        assert body(response)["reason"] == "path_not_allowed"
        assert (await saves_of(path)).code == 403
    # a notebook whose folder is a link out of the workspace
    (workspace / "escape").symlink_to(tmp_path, target_is_directory=True)
    response = await save_api("lims/escape/secret.ipynb")
    assert response.code == 403 and body(response)["reason"] == "path_not_allowed"
    assert lims.received == []


# -- who may call it, and secrets ------------------------------------------------------------


async def test_an_unauthenticated_save_is_refused(opened, save_api, saves_of, jp_fetch, lims):
    await opened()
    response = await save_api(headers={"Authorization": ""})
    assert response.code == 403
    response = await jp_fetch(
        "lims",
        "api",
        "save",
        params={"path": NOTEBOOK},
        headers={"Authorization": ""},
        raise_error=False,
    )
    assert response.code == 403
    assert lims.received == []


async def test_the_grant_is_never_in_logs_responses_or_events(
    opened, save_api, saves_of, lims, captured_logs, emitted, jp_fetch
):
    await opened()
    responses = [await save_api()]
    lims.behaviours = ["drop", 403, "hang"]
    for _ in range(3):  # other content (ipynb only): each of these reaches the LIMS
        responses.append(await save_api(formats=["ipynb"]))
    responses.append(await saves_of())
    responses.append(await jp_fetch("lims", "api", "status"))
    for response in responses:
        assert GRANT not in response.body.decode()
    assert GRANT not in captured_logs()
    assert GRANT not in json.dumps(emitted())
    reasons = [e.get("reason") for e in emitted(bridge_events.SAVE)]
    assert {"eln_unreachable", "eln_refused"} <= set(reasons)


# -- feature off --------------------------------------------------------------------------


@pytest.mark.parametrize("bridge_config", [{}], indirect=False)
async def test_with_the_feature_off_a_return_is_ignored(
    open_api, sign, save_api, saves_of, lims, tmp_path, bridge_config
):
    # Given no return_url_prefixes: the open works, the return is not kept
    response = await open_api(sign(**{"return": lims.return_claim()}))
    assert response.code == 201
    assert not (tmp_path / "state" / "eln_returns.json").exists()
    # And a save is no_return
    response = await save_api()
    assert response.code == 409 and body(response)["reason"] == "no_return"
    assert body(await saves_of())["hasReturn"] is False
    assert lims.received == []


async def test_a_dry_run_keeps_no_return(open_api, sign, lims, tmp_path):
    response = await open_api(sign(**{"return": lims.return_claim()}), dry_run=True)
    assert response.code == 200
    assert not (tmp_path / "state" / "eln_returns.json").exists()


def test_a_link_put_in_place_of_the_checked_notebook_is_not_followed(tmp_path):
    # Given a path that was resolved and contained, then replaced by a link out
    from jupyter_lims_bridge.eln_return import _copy_hashed

    outside = tmp_path / "outside.ipynb"
    outside.write_text("{}")
    swapped = tmp_path / "notebook.ipynb"
    swapped.symlink_to(outside)
    # When the save copies it, Then the link is refused, not followed
    with pytest.raises(OSError):
        _copy_hashed(swapped, tmp_path / "copy.ipynb")
    assert not (tmp_path / "copy.ipynb").exists()
