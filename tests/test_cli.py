"""``jupyter lims-bridge`` keygen, sign and verify, run as a user would run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest

from jupyter_lims_bridge.cli import main


def run(*args, env=None, input=None):
    return subprocess.run(
        [sys.executable, "-m", "jupyter_lims_bridge.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        input=input if input is not None else "",
    )


@pytest.fixture
def keys(tmp_path):
    assert main(["keygen", "--out", str(tmp_path)]) == 0
    return tmp_path / "lims-private.pem", tmp_path / "lims-public.pem"


def test_keygen_writes_a_private_key_only_its_owner_can_read(keys, tmp_path):
    private, public = keys
    assert oct(private.stat().st_mode & 0o777) == "0o600"
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    # and never clobbers an existing pair
    assert main(["keygen", "--out", str(tmp_path)]) == 1
    assert main(["keygen", "--out", str(tmp_path), "--force"]) == 0


def test_sign_a_deep_link_for_a_hub(keys, capsys):
    private, public = keys
    assert (
        main(
            [
                "sign",
                "--key",
                str(private),
                "--sub",
                "alice",
                "--entity-type",
                "sample",
                "--entity-id",
                "S-42",
                "--title",
                "Buffer screen 3",
                "--mount",
                "raw=archive:2026/S-42/raw",
                "--download",
                "plate.csv=https://lims.example.org/f/1#sha256=" + "a" * 64,
                "--url",
                "https://hub.example.org/hub/user-redirect/",
            ]
        )
        == 0
    )
    link = capsys.readouterr().out.strip()
    assert link.startswith("https://hub.example.org/hub/user-redirect/lims/open?lims_token=")
    token = parse_qs(urlsplit(link).query)["lims_token"][0]
    claims = jwt.decode(
        token, public.read_text(), algorithms=["EdDSA"], audience="jupyter-lims-bridge"
    )
    assert claims["sub"] == "alice" and claims["entity"]["title"] == "Buffer screen 3"
    assert claims["data"] == [
        {"name": "raw", "mount": "archive", "path": "2026/S-42/raw"},
        {"name": "plate.csv", "url": "https://lims.example.org/f/1", "sha256": "a" * 64},
    ]
    assert claims["exp"] - claims["iat"] == 300


def test_sign_from_a_claims_file_for_a_plain_server(keys, tmp_path, capsys):
    private, _ = keys
    claims_file = tmp_path / "claims.json"
    claims_file.write_text(
        json.dumps(
            {
                "sub": "alice",
                "entity": {"type": "run", "id": "R-1"},
                "notebook": {"new": True},
                "project": "P-7",
            }
        )
    )
    assert (
        main(
            [
                "sign",
                "--key",
                str(private),
                "--claims",
                str(claims_file),
                "--url",
                "http://127.0.0.1:8888/",
            ]
        )
        == 0
    )
    link = capsys.readouterr().out.strip()
    assert link.startswith("http://127.0.0.1:8888/lims/open?lims_token=")
    token = parse_qs(urlsplit(link).query)["lims_token"][0]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["notebook"] == {"new": True} and claims["project"] == "P-7"


def test_sign_refuses_incomplete_claims(keys, capsys):
    assert main(["sign", "--key", str(keys[0]), "--sub", "alice"]) == 1
    assert "entity" in capsys.readouterr().err


def test_verify_explains_acceptance_and_each_refusal(keys, tmp_path):
    private, public = keys
    env = {
        "LIMS_BRIDGE_PUBLIC_KEYS": str(public),
        "LIMS_BRIDGE_OWNER": "alice",
        "LIMS_BRIDGE_STATE_DIR": str(tmp_path / "state"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
    }
    sign = run(
        "sign", "--key", str(private), "--sub", "alice", "--entity-type", "s", "--entity-id", "1"
    )
    token = sign.stdout.strip()
    accepted = run("verify", token, env=env)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "accepted" in accepted.stdout and "signature verifies" in accepted.stdout

    as_bob = run("verify", token, "--owner", "bob", env=env)
    assert as_bob.returncode == 1 and "refused: wrong_user (403)" in as_bob.stdout

    wrong_key = run("verify", token, env={**env, "LIMS_BRIDGE_PUBLIC_KEYS": "[]"})
    assert wrong_key.returncode == 1 and "no public_keys" in wrong_key.stdout

    short = run("verify", token, "--config", "LimsBridge.max_token_lifetime=60", env=env)
    assert short.returncode == 1 and "token_expired" in short.stdout

    link = f"http://127.0.0.1:1/lims/open?lims_token={token}"
    assert run("verify", link, env=env).returncode == 0


def test_verify_reads_the_token_from_stdin_so_ps_never_shows_it(keys, tmp_path):
    # Given a signed token and a deep link holding it
    private, public = keys
    env = {
        "LIMS_BRIDGE_PUBLIC_KEYS": str(public),
        "LIMS_BRIDGE_OWNER": "alice",
        "LIMS_BRIDGE_STATE_DIR": str(tmp_path / "state"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
    }
    token = run(
        "sign", "--key", str(private), "--sub", "alice", "--entity-type", "s", "--entity-id", "1"
    ).stdout.strip()
    link = f"http://127.0.0.1:1/lims/open?lims_token={token}"
    # When verify is run with no argument, or with -, and the token or link on stdin
    for args, text in (((), token + "\n"), (("-",), token), ((), link + "\n")):
        result = run("verify", *args, env=env, input=text)
        # Then it is checked as if it had been given, and no note about ps appears
        assert result.returncode == 0, result.stdout + result.stderr
        assert "accepted" in result.stdout and "process list" not in result.stderr
    # And a token given as an argument still works, with a note to pipe it instead
    argued = run("verify", token, env=env)
    assert argued.returncode == 0 and "process list" in argued.stderr
    # And the help says that standard input is the way
    assert "standard input" in run("verify", "--help").stdout
