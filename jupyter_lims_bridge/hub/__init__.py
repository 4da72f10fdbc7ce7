"""The JupyterHub side of jupyter-lims-bridge: runs in the hub, never in a user's server.

- :class:`LimsAuthenticator` (``c.JupyterHub.authenticator_class =
  "jupyter_lims_bridge.hub.LimsAuthenticator"``): one click from the ELN logs an
  anonymous browser in with the deep link's signed token;
- :class:`LimsSpawnHook` (``c.Spawner.pre_spawn_hook = LimsSpawnHook(config=c)``):
  asks the LIMS which stores a user's server mounts, at spawn time.

Installed with ``pip install "jupyter-lims-bridge[hub]"``. Nothing here imports
jupyter_server (a test proves it): the hub's image need not load a notebook server.
"""

from .authenticator import LimsAuthenticator
from .spawnhook import LimsSpawnHook

__all__ = ["LimsAuthenticator", "LimsSpawnHook"]
