"""The documentation that is generated from the code is up to date."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_configuration_reference_is_generated_from_the_traits():
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "generate_config.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_readme_names_the_two_commands_and_every_cli_subcommand():
    readme = (ROOT / "README.md").read_text()
    for text in ("make demo", "make test", "keygen", "sign", "verify", "tokens", "demo"):
        assert text in readme


def test_readme_names_the_prerequisites_and_links_embedding():
    readme = (ROOT / "README.md").read_text()
    prerequisites = readme.split("## Prerequisites", 1)[1].split("\n## ", 1)[0]
    for text in ("Python ≥ 3.10", "Node.js", "npm", "apt-get", "root", "Chromium"):
        assert text in prerequisites, text
    assert "docs/embedding.md" in readme
