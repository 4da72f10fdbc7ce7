"""jupyter-lims-bridge: open signed LIMS/ELN deep links in Jupyter, stage their data,
and let external clients reach local services through a scoped proxy.

This module only declares the extension points for jupyter_server and JupyterLab.
"""

from ._version import __version__


def _jupyter_server_extension_points() -> list[dict]:
    from .app import LimsBridge

    return [{"module": "jupyter_lims_bridge", "app": LimsBridge}]


def _jupyter_labextension_paths() -> list[dict]:
    return [{"src": "labextension", "dest": "jupyter-lims-bridge"}]


__all__ = ["__version__"]
