"""POST lims/api/open through a real Jupyter server: success, every refusal, no side effect on refusal."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from jupyter_lims_bridge import events as bridge_events
from jupyter_lims_bridge import signing

from .conftest import RAW, body, files_under


@pytest.fixture
def events(emitted):
    return lambda: emitted(bridge_events.OPEN)


# -- success ------------------------------------------------------------------


async def test_open_creates_the_notebook_with_data_linked(
    open_api, sign, workspace, jp_base_url, data_mount
):
    # Given a signed token for the owner naming mounted data
    token = sign(data=[RAW])
    # When the LIMS backend posts it with no Jupyter credentials
    response = await open_api(token)
    # Then the notebook is created and the answer is DESIGN's JSON
    assert response.code == 201
    result = body(response)
    assert result == {
        "fileName": "S-42.ipynb",
        "path": "lims/sample-S-42/S-42.ipynb",
        "url": f"{jp_base_url}lab/tree/lims/sample-S-42/S-42.ipynb",
        "created": True,
        "dryRun": False,
        "data": [{"name": "raw", "path": "lims/sample-S-42/data/raw", "status": "linked"}],
    }
    notebook = json.loads((workspace / "sample-S-42" / "S-42.ipynb").read_text())
    link = workspace / "sample-S-42" / "data" / "raw"
    assert link.is_symlink() and link.resolve() == (data_mount / "2026/S-42/raw").resolve()
    # and provenance is recorded in the notebook
    lims = notebook["metadata"]["lims"]
    assert lims["entity"]["id"] == "S-42" and lims["subject"] == "alice" and lims["jti"]
    assert "Buffer screen 3" in "".join(notebook["cells"][0]["source"])


async def test_token_in_json_body_is_accepted(jp_fetch, sign):
    response = await jp_fetch(
        "lims",
        "api",
        "open",
        method="POST",
        body=json.dumps({"token": sign()}),
        headers={"Authorization": ""},
    )
    assert response.code == 201


async def test_second_open_of_the_same_entity_reuses_the_notebook(open_api, sign, workspace):
    first = await open_api(sign())
    path = workspace / "sample-S-42" / "S-42.ipynb"
    path.write_text(path.read_text().replace("Buffer screen 3", "edited by the scientist"))
    second = await open_api(sign())
    assert (first.code, second.code) == (201, 200)
    assert body(second)["created"] is False and body(second)["path"] == body(first)["path"]
    assert "edited by the scientist" in path.read_text()  # never overwritten


async def test_notebook_new_makes_numbered_copies(open_api, sign, workspace):
    paths = []
    for _ in range(3):
        response = await open_api(sign(notebook={"new": True}))
        paths.append(body(response)["path"])
    assert paths == [
        "lims/sample-S-42/S-42.ipynb",
        "lims/sample-S-42/S-42-1.ipynb",
        "lims/sample-S-42/S-42-2.ipynb",
    ]


async def test_notebook_path_from_the_token(open_api, sign, workspace):
    response = await open_api(sign(notebook={"path": "screens/2026/S 42 (run).ipynb"}))
    assert response.code == 201
    assert body(response)["path"] == "lims/screens/2026/S 42 (run).ipynb"
    assert (workspace / "screens" / "2026" / "S 42 (run).ipynb").is_file()


async def test_fifty_concurrent_opens_make_exactly_one_notebook(open_api, sign, workspace):
    responses = await asyncio.gather(*(open_api(sign()) for _ in range(50)))
    codes = sorted(r.code for r in responses)
    assert codes == [200] * 49 + [201]
    assert [p.name for p in (workspace / "sample-S-42").glob("*.ipynb")] == ["S-42.ipynb"]


async def test_dry_run_writes_nothing_and_keeps_the_link_usable(open_api, sign, workspace):
    token = sign(data=[RAW])
    response = await open_api(token, dry_run=True)
    assert response.code == 200
    result = body(response)
    assert result["dryRun"] is True and result["created"] is True
    assert result["data"][0]["status"] == "linked"
    assert files_under(workspace) == {}
    # the same token still opens for real
    assert (await open_api(token)).code == 201


async def test_custom_template_with_placeholders(open_api, sign, workspace, bridge, tmp_path):
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "plate.ipynb").write_text(
        json.dumps(
            {
                "cells": [
                    {
                        "cell_type": "markdown",
                        "metadata": {},
                        "source": "# Plate {{ entity.id }}: {{ entity.title }}",
                    },
                    {
                        "cell_type": "code",
                        "metadata": {},
                        "source": "title = {{ entity.title }}\nraw = {{ data_paths }}",
                        "outputs": [],
                        "execution_count": None,
                    },
                ],
                "metadata": {},
                "nbformat": 4,
                "nbformat_minor": 5,
            }
        )
    )
    bridge.workspace.templates_dir = templates
    hostile = "x'\nimport os; os.system('echo pwned') #*[link](javascript:1)"
    response = await open_api(
        sign(
            entity={"type": "plate", "id": "P-1", "title": hostile},
            notebook={"template": "plate"},
            data=[RAW],
        )
    )
    assert response.code == 201
    nb = json.loads((workspace / "plate-P-1" / "P-1.ipynb").read_text())
    markdown, code = ("".join(c["source"]) for c in nb["cells"])
    assert markdown.startswith("# Plate P\\-1: x'")
    assert "\n" not in markdown and "\\[link\\]\\(javascript:1\\)" in markdown
    # the code cell holds Python literals: the hostile title is one string
    namespace: dict = {}
    exec(compile(code, "cell", "exec"), {}, namespace)
    assert namespace == {"title": hostile, "raw": {"raw": "data/raw"}}


async def test_events_record_accepted_and_refused_opens_without_the_token(open_api, sign, events):
    token = sign()
    await open_api(token)
    await open_api(token)  # replayed
    await open_api(sign(sub="bob"))
    emitted = events()
    assert [(e["action"], e.get("reason")) for e in emitted] == [
        ("opened", None),
        ("refused", "token_replayed"),
        ("refused", "wrong_user"),
    ]
    assert emitted[0]["entityId"] == "S-42" and emitted[0]["path"] == "lims/sample-S-42/S-42.ipynb"
    assert all(token not in json.dumps(e) for e in emitted)


async def test_the_token_never_appears_in_logs_or_responses(open_api, sign, jp_fetch, jp_serverapp):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    loggers = [logging.getLogger(), jp_serverapp.log, logging.getLogger("tornado.access")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        tokens = [sign(), sign(sub="bob"), sign(aud="x")]
        responses = [await open_api(t) for t in tokens]
        responses.append(await open_api(tokens[0]))
        page = await jp_fetch("lims", "open", params={"lims_token": tokens[1]}, raise_error=False)
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    logged = stream.getvalue()
    for token in tokens:
        assert token not in logged
        signature = token.rsplit(".", 1)[1]
        assert signature not in logged
        for response in [*responses, page]:
            assert signature not in response.body.decode()


@pytest.fixture
def broken_jwks(bridge_config):
    """A JWKS endpoint on 127.0.0.1 that answers an HTML error page, configured as jwks_url."""
    from .test_claims import JWKSServer

    server = JWKSServer()
    server.body = b"<html>502 Bad Gateway</html>"
    bridge_config["jwks_url"] = server.url
    yield server
    server.stop()


async def test_a_broken_jwks_neither_fails_opens_nor_logs_tokens(
    broken_jwks, open_api, sign, jp_fetch, captured_logs
):
    # Given a server with a PEM key and a JWKS URL whose endpoint answers garbage
    # When the LIMS opens with a token of the PEM key (with a kid, as JWKS users do)
    good = sign(headers={"kid": "k1"})
    response = await open_api(good)
    # Then the open succeeds: the PEM key is tried first
    assert response.code == 201
    # When a token that only the JWKS could verify arrives, by API and by deep link
    stranger = sign(key=ed25519.Ed25519PrivateKey.generate(), headers={"kid": "k2"})
    refused = await open_api(stranger)
    page = await jp_fetch("lims", "open", params={"lims_token": stranger}, raise_error=False)
    # Then both are refused as invalid tokens, not 500s
    assert (refused.code, body(refused)["reason"]) == (401, "token_invalid")
    assert page.code == 401
    # and the logs say the JWKS lookup failed, holding neither token nor its query
    logged = captured_logs()
    assert "JWKS lookup failed" in logged
    for token in (good, stranger):
        assert token.rsplit(".", 1)[1] not in logged
    assert "lims_token=" not in logged.replace("lims_token=[secret]", "")


async def test_an_unexpected_error_is_logged_with_its_path_but_not_its_query(
    jp_fetch, open_api, sign, bridge, monkeypatch, captured_logs
):
    # Given an open that fails in a way nobody foresaw
    async def broken(*args, **kwargs):
        raise RuntimeError("unforeseen")

    monkeypatch.setattr(bridge.opener, "inspect", broken)
    monkeypatch.setattr(bridge.opener, "open", broken)
    token = sign()
    # When a deep link and an API call hit it
    page = await jp_fetch("lims", "open", params={"lims_token": token}, raise_error=False)
    api = await open_api(token)
    # Then both answer 500 without a traceback
    assert (page.code, api.code) == (500, 500)
    assert "Traceback" not in page.body.decode() and "Traceback" not in api.body.decode()
    # and the log names the failing path, never the query that holds the token
    logged = captured_logs()
    assert "uncaught exception in GET" in logged and "/lims/open" in logged
    assert "uncaught exception in POST" in logged
    assert token.rsplit(".", 1)[1] not in logged
    assert "lims_token=" not in logged.replace("lims_token=[secret]", "")


# -- the body of POST lims/api/open: bounded before it is read -----------------


def _raw_exchange(port: int, head: bytes, chunks=(), timeout: float = 10.0) -> tuple[int, dict]:
    """Send ``head`` then ``chunks`` on a raw connection, stopping as soon as the
    server answers; return the status and JSON body of the answer."""
    import select
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        for chunk in chunks:
            # the server answers (and closes) as soon as it has seen too much:
            # stop sending then, so its answer is not lost to a reset
            if select.select([sock], [], [], 0.02)[0]:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        data = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _content_length(data):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no complete answer; got {data[:200]!r}")
            part = sock.recv(65536)
            if not part:
                break
            data += part
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    status = int(head_bytes.split(b" ", 2)[1])
    return status, json.loads(payload[: _content_length(data)])


def _content_length(data: bytes) -> int:
    import re

    m = re.search(rb"(?im)^content-length:\s*(\d+)", data.split(b"\r\n\r\n", 1)[0])
    return int(m.group(1)) if m else 0


def _post_head(base_url: str, port: int, extra: str) -> bytes:
    return (
        f"POST {base_url}lims/api/open HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\n{extra}\r\n"
    ).encode()


async def test_a_body_over_64_kib_is_refused_from_its_content_length_before_it_is_read(
    http_server_client, jp_http_port, jp_base_url
):
    # Given an anonymous client announcing a 40 MB body
    head = _post_head(jp_base_url, jp_http_port, "Content-Length: 41943040\r\n")
    # When it has sent only the headers and a few bytes
    status, answer = await asyncio.to_thread(_raw_exchange, jp_http_port, head + b'{"token": "')
    # Then the server answers 413 at once, without waiting for (or reading) the body
    assert (status, answer["reason"]) == (413, "body_too_large")
    assert "64 KiB" in answer["message"]


async def test_a_chunked_body_is_cut_at_64_kib(http_server_client, jp_http_port, jp_base_url, sign):
    # Given a chunked body (no Content-Length) holding a valid token and 1 MiB of padding
    body = json.dumps({"token": sign(), "pad": "x" * (1 << 20)}).encode()
    pieces = [body[i : i + 8192] for i in range(0, len(body), 8192)]
    chunks = [b"%x\r\n%s\r\n" % (len(c), c) for c in pieces] + [b"0\r\n\r\n"]
    head = _post_head(jp_base_url, jp_http_port, "Transfer-Encoding: chunked\r\n")
    # When it is streamed
    status, answer = await asyncio.to_thread(_raw_exchange, jp_http_port, head, chunks)
    # Then it is refused once 64 KiB have arrived
    assert (status, answer["reason"]) == (413, "body_too_large")


async def test_a_body_of_64_kib_is_still_read(jp_fetch, sign):
    token = sign()
    body = json.dumps({"token": token, "pad": ""}).encode()
    body = body.replace(b'"pad": ""', b'"pad": "' + b"x" * (64 * 1024 - len(body)) + b'"')
    assert len(body) == 64 * 1024
    response = await jp_fetch(
        "lims", "api", "open", method="POST", body=body, headers={"Authorization": ""}
    )
    assert response.code == 201


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"\xff\xfe",
        b"[" * 20000 + b"]" * 20000,
        b'{"a":' * 10000 + b"1" + b"}" * 10000,
    ],
    ids=["malformed", "not-utf8", "deep-list", "deep-object"],
)
async def test_a_malformed_or_too_deep_body_is_bad_request(jp_fetch, raw):
    # Given a body that is not JSON, or nested deeper than the parser goes
    assert len(raw) <= 64 * 1024
    # When it is posted without a token header
    response = await jp_fetch(
        "lims",
        "api",
        "open",
        method="POST",
        body=raw,
        headers={"Authorization": ""},
        raise_error=False,
    )
    # Then it is refused as a bad request, not a 500
    assert (response.code, body(response)["reason"]) == (400, "bad_request")


# -- refusals: status, reason, and nothing written ----------------------------


def _claims_with(**overrides):
    return overrides


REFUSALS = [
    ("no token", None, 401, "token_missing"),
    ("garbage", "not-a-jwt", 401, "token_invalid"),
    ("unknown key", "OTHER_KEY", 401, "token_invalid"),
    ("expired", {"iat": -700, "exp": -400}, 401, "token_expired"),
    ("future", {"iat": 600, "exp": 700}, 401, "token_expired"),
    ("too long-lived", {"iat": 0, "exp": 3600}, 401, "token_expired"),
    ("audience", {"aud": "another-app"}, 401, "wrong_audience"),
    ("other user", {"sub": "bob"}, 403, "wrong_user"),
    ("missing entity", {"entity": None}, 422, "bad_claims"),
    ("ill-typed data", {"data": "raw"}, 422, "bad_claims"),
    ("unknown template", {"notebook": {"template": "nope"}}, 422, "bad_claims"),
    ("traversal", {"notebook": {"path": "../../outside.ipynb"}}, 403, "path_not_allowed"),
    ("absolute", {"notebook": {"path": "/etc/x.ipynb"}}, 403, "path_not_allowed"),
    ("data name", {"data": [{**RAW, "name": "../x"}]}, 403, "path_not_allowed"),
    ("mount escape", {"data": [{**RAW, "path": "../../../etc"}]}, 403, "path_not_allowed"),
    ("whole mount", {"data": [{**RAW, "path": ""}]}, 403, "path_not_allowed"),
    ("whole mount, dot", {"data": [{**RAW, "path": "."}]}, 403, "path_not_allowed"),
    ("unknown mount", {"data": [{**RAW, "mount": "nope"}]}, 422, "unknown_mount"),
    ("missing data", {"data": [{**RAW, "path": "2026/none"}]}, 422, "data_missing"),
    (
        "url not allowed",
        {"data": [{"name": "f.csv", "url": "https://elsewhere.example/f.csv"}]},
        403,
        "url_not_allowed",
    ),
]


@pytest.mark.parametrize("case,spec,status,reason", REFUSALS, ids=[r[0] for r in REFUSALS])
async def test_refusals(case, spec, status, reason, open_api, sign, workspace, jp_root_dir):
    # Given a workspace that already holds work
    (workspace / "sample-S-42").mkdir(parents=True)
    (workspace / "sample-S-42" / "notes.txt").write_text("mine")
    before = files_under(jp_root_dir)
    # When a bad token is posted
    if spec is None:
        token = None
    elif spec == "OTHER_KEY":
        token = sign(key=ed25519.Ed25519PrivateKey.generate())
    elif isinstance(spec, str):
        token = spec
    else:
        now = int(time.time())
        overrides = dict(spec)
        for k in ("iat", "exp"):
            if k in overrides:
                overrides[k] += now
        if "data" in overrides and overrides["data"] != "raw":
            # one good item first: one bad item must refuse the whole open
            overrides["data"] = [dict(RAW, name="good"), *list(overrides["data"])]
        token = sign(**overrides)
    response = await open_api(token)
    # Then it is refused with DESIGN's status and stable reason
    assert response.code == status, response.body
    result = body(response)
    assert result["reason"] == reason
    assert result["message"]
    if token:
        assert token not in response.body.decode()
    # and nothing was written, changed or removed
    assert files_under(jp_root_dir) == before


async def test_replayed_jti_is_409_and_writes_nothing_more(open_api, sign, jp_root_dir):
    token = sign()
    assert (await open_api(token)).code == 201
    before = files_under(jp_root_dir)
    response = await open_api(token)
    assert (response.code, body(response)["reason"]) == (409, "token_replayed")
    assert files_under(jp_root_dir) == before


async def test_replay_protection_survives_a_restart(open_api, sign, bridge):
    from jupyter_lims_bridge.claims import ReplayStore

    token = sign()
    assert (await open_api(token)).code == 201
    # a new store loaded from the same file, as after a server restart
    bridge.verifier.replay = ReplayStore(bridge.verifier.replay.path)
    assert body(await open_api(token))["reason"] == "token_replayed"


async def test_symlinked_folder_leaving_the_workspace_is_refused(
    open_api, sign, workspace, tmp_path
):
    outside = tmp_path / "outside"
    outside.mkdir()
    workspace.mkdir(parents=True, exist_ok=True)
    (workspace / "sample-S-42").symlink_to(outside, target_is_directory=True)
    response = await open_api(sign())
    assert (response.code, body(response)["reason"]) == (403, "path_not_allowed")
    assert list(outside.iterdir()) == []


async def test_existing_user_file_at_a_data_link_is_kept_as_conflict(open_api, sign, workspace):
    data_dir = workspace / "sample-S-42" / "data"
    data_dir.mkdir(parents=True)
    (data_dir / "raw").write_text("my own file")
    response = await open_api(sign(data=[RAW]))
    assert body(response)["data"][0]["status"] == "conflict"
    assert (data_dir / "raw").read_text() == "my own file"


async def test_status_lists_recent_opens(open_api, sign, jp_fetch):
    await open_api(sign())
    await open_api(sign(entity={"type": "run", "id": "R-1", "title": "Run 1"}))
    status = body(await jp_fetch("lims", "api", "status"))
    assert status["owner"] == "alice"
    assert [r["entity"]["id"] for r in status["recent"]] == ["R-1", "S-42"]
    assert status["recent"][0]["path"] == "lims/run-R-1/R-1.ipynb"
    assert status["mounts"] == ["archive"]
    assert set(status["proxy"]) >= {"mode", "allowedPorts"}


async def test_status_needs_jupyter_credentials(jp_fetch):
    response = await jp_fetch(
        "lims", "api", "status", headers={"Authorization": ""}, raise_error=False
    )
    assert response.code == 403


async def test_hs256_token_accepted_only_with_hmac_secret(open_api, bridge):
    secret = "per-user-secret-0123456789abcdef0123"
    token = signing.make_token(secret, sub="alice", entity={"type": "s", "id": "1"})
    assert body(await open_api(token))["reason"] == "token_invalid"
    bridge.verifier.keys.hmac_secret = secret
    assert (await open_api(token)).code == 201
