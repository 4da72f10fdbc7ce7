"""What loading the extension costs a server: the heavy stacks (PyJWT,
cryptography, requests) are imported by the first request that needs them,
never by the entry point (issue #11: a server never used from the ELN pays
≤ +7 MiB RSS over a bare ``jupyter server``; bench/proxy.py measures it)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("jwt", "cryptography", "requests", "urllib3", "jupyterhub", "nbconvert")

PROBE = """
import json, sys
import jupyter_lims_bridge
points = jupyter_lims_bridge._jupyter_server_extension_points()
app = points[0]["app"]
from jupyter_lims_bridge.handlers import default_handlers
"""


def loaded_after(code: str) -> dict[str, bool]:
    script = code + f"\nprint(json.dumps({{m: m in sys.modules for m in {list(HEAVY)!r}}}))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_entry_point_imports_no_heavy_stack():
    # Given a fresh interpreter, When it loads the extension's entry point, its
    # app class and route table
    loaded = loaded_after(PROBE)
    # Then none of the heavy stacks is in sys.modules
    assert not any(loaded.values()), loaded


def test_configured_keys_are_parsed_on_first_use(tmp_path):
    # Given a key set built from a PEM file (as a deployment configures it)
    pem = tmp_path / "lims.pem"
    script = f"""
import json, sys
import jupyter_lims_bridge
from jupyter_lims_bridge.claims import KeySet
keys = KeySet([{str(pem)!r}], jwks_url="https://lims.example.org/jwks.json")
before = "cryptography" in sys.modules or "jwt" in sys.modules
algorithms = keys.algorithms
print(json.dumps({{"before": before, "algorithms": algorithms, "configured": keys.configured}}))
"""
    from jupyter_lims_bridge.signing import generate_key_pair

    pem.write_bytes(generate_key_pair()[1])
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # Then building it imported neither PyJWT nor cryptography, and the key
    # works once asked for (EdDSA, plus the JWKS's algorithms)
    assert result["before"] is False
    assert result["configured"] is True
    assert result["algorithms"] == ["ES256", "EdDSA", "RS256"]


def test_a_missing_key_file_still_fails_at_start(tmp_path):
    from jupyter_lims_bridge.claims import KeySet

    with pytest.raises(OSError):
        KeySet([str(tmp_path / "no-such.pem")])
