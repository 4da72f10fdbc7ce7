"""The wheel carries the prebuilt JupyterLab extension: ``pip install`` alone shows the panel.

Given ``pip wheel .`` of this checkout, then the wheel holds the built
labextension (in the package and as data for ``share/jupyter/labextensions``)
and the server extension's auto-enable file; and in a fresh virtual
environment (no system site-packages) with that wheel and JupyterLab
installed, ``jupyter labextension list`` shows the extension enabled and OK.

Takes about a minute (a venv and a pip install from the registry); set
``LIMS_BRIDGE_SKIP_WHEEL_TEST=1`` to skip it in a quick local run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from jupyter_lims_bridge import __version__

ROOT = Path(__file__).resolve().parents[1]
NAME = "jupyter-lims-bridge"

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("LIMS_BRIDGE_SKIP_WHEEL_TEST", "") not in ("", "0"),
        reason="LIMS_BRIDGE_SKIP_WHEEL_TEST is set",
    ),
    pytest.mark.timeout(900),
]


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    # the fresh venv must see nothing of the test run's own environment
    for name in (
        "PYTHONPATH",
        "VIRTUAL_ENV",
        "JUPYTER_PATH",
        "JUPYTER_CONFIG_DIR",
        "JUPYTER_DATA_DIR",
    ):
        env.pop(name, None)
    result = subprocess.run(args, capture_output=True, text=True, env=env, **kwargs)
    assert result.returncode == 0, (
        f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)])
    (built,) = out.glob("jupyter_lims_bridge-*.whl")
    return built


def test_the_wheel_contains_the_prebuilt_labextension(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    data = f"jupyter_lims_bridge-{__version__}.data/data"
    share = f"{data}/share/jupyter/labextensions/{NAME}"
    # the built extension, in the package (for _jupyter_labextension_paths) ...
    assert "jupyter_lims_bridge/labextension/package.json" in names
    assert "jupyter_lims_bridge/labextension/static/style.js" in names
    # ... and as data files where JupyterLab finds it without any build step
    assert f"{share}/package.json" in names
    assert f"{share}/install.json" in names
    assert f"{share}/schemas/{NAME}/plugin.json" in names
    assert any(
        re.fullmatch(rf"{re.escape(share)}/static/remoteEntry\.[0-9a-f]+\.js", n) for n in names
    )
    # the server extension enables itself
    assert f"{data}/etc/jupyter/jupyter_server_config.d/jupyter_lims_bridge.json" in names
    # and no sources or node packages ride along
    assert not [n for n in names if "node_modules" in n or n.endswith((".ts", ".tsx"))]


def test_the_wheel_carries_the_hub_sides_pages_and_script(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    for page in ("lims_hub_launch.html", "lims_hub_error.html", "lims_hub_start.html"):
        assert f"jupyter_lims_bridge/hub/templates/{page}" in names
    assert "jupyter_lims_bridge/hub/static/hub-login.js" in names
    metadata = (
        zipfile.ZipFile(wheel)
        .read(f"jupyter_lims_bridge-{__version__}.dist-info/METADATA")
        .decode()
    )
    assert "Provides-Extra: hub" in metadata


def test_a_fresh_venv_with_the_wheel_lists_the_extension_enabled(wheel: Path, tmp_path):
    # Given a fresh virtual environment without system site-packages
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    python = env_dir / "bin" / "python"
    # When only the wheel (with its dependencies) and JupyterLab are installed
    _run([str(python), "-m", "pip", "install", "-q", str(wheel), "jupyterlab>=4.2,<5"])
    # Then JupyterLab lists the prebuilt extension as enabled and OK
    listed = _run([str(env_dir / "bin" / "jupyter"), "labextension", "list"], cwd=tmp_path)
    text = re.sub(r"\x1b\[[0-9;]*m", "", listed.stdout + listed.stderr)  # colours
    line = next((ln for ln in text.splitlines() if NAME in ln), "")
    assert re.search(rf"{NAME}\s+v{re.escape(__version__)}\s+enabled\s+OK", line), text
    assert "(python, jupyter-lims-bridge)" in line
    # and the server extension is enabled too
    servers = _run([str(env_dir / "bin" / "jupyter"), "server", "extension", "list"], cwd=tmp_path)
    text = re.sub(r"\x1b\[[0-9;]*m", "", servers.stdout + servers.stderr)
    assert re.search(r"jupyter_lims_bridge\s+enabled", text), text
