# jupyter-lims-bridge, the JupyterHub side: log in from the ELN's deep link
# (LimsAuthenticator) and mount the user's LIMS stores at spawn (LimsSpawnHook).
#
# This file is the source of hub.extraConfig "10-lims-bridge" in deploy/values.yaml
# (a test checks the copy there is byte for byte this file), and the end-to-end
# tests' hub loads it as it is. It runs inside jupyterhub_config.py, where `c` is
# the hub's configuration. Everything site-specific comes from the hub's
# environment (hub.extraEnv), secrets from Kubernetes secrets:
#
#   LIMS_BRIDGE_PUBLIC_KEYS   PEM text, a JSON list of PEM texts or file paths
#   LIMS_BRIDGE_JWKS_URL      or the LIMS's JWKS URL
#   LIMS_BRIDGE_ISSUERS       accepted "iss" values (JSON list or comma-separated)
#   LIMS_HUB_ELN_URL          where the login page sends a visitor without a link
#   LIMS_HUB_MOUNTS_URL       e.g. https://lims.example.org/api/jupyter/users/{username}/mounts
#   LIMS_HUB_SERVICE_TOKEN    the hub's bearer token at the LIMS (a secret)
#   LIMS_HUB_MOUNTS_ON_ERROR  "fail" (default) or "continue"
import json
import os

from jupyter_lims_bridge.hub import LimsSpawnHook


def _lims_list(name):
    text = os.environ.get(name, "").strip()
    if not text:
        return []
    if text.startswith("["):
        return json.loads(text)
    if text.startswith("-----BEGIN"):
        return [text]
    return [part.strip() for part in text.split(",") if part.strip()]


c.JupyterHub.authenticator_class = "jupyter_lims_bridge.hub.LimsAuthenticator"
c.LimsAuthenticator.public_keys = _lims_list("LIMS_BRIDGE_PUBLIC_KEYS")
c.LimsAuthenticator.jwks_url = os.environ.get("LIMS_BRIDGE_JWKS_URL", "")
c.LimsAuthenticator.issuers = _lims_list("LIMS_BRIDGE_ISSUERS")
c.LimsAuthenticator.eln_url = os.environ.get("LIMS_HUB_ELN_URL", "")
# whoever the LIMS signs a link for may log in; narrow it with allowed_users or
# blocked_users (hub.config.Authenticator in values.yaml), as with any authenticator

if os.environ.get("LIMS_HUB_MOUNTS_URL"):
    c.LimsSpawnHook.mounts_url = os.environ["LIMS_HUB_MOUNTS_URL"]
    c.LimsSpawnHook.service_token = os.environ.get("LIMS_HUB_SERVICE_TOKEN", "")
    c.LimsSpawnHook.on_error = os.environ.get("LIMS_HUB_MOUNTS_ON_ERROR", "fail")
    c.Spawner.pre_spawn_hook = LimsSpawnHook(config=c)

# Embedding JupyterLab in the ELN (optional; the users' servers need
# LIMS_BRIDGE_EMBED_ORIGINS too, see docs/embedding.md). z2jh sets
# c.JupyterHub.tornado_settings itself: merge into it, never replace it.
#
# from jupyter_lims_bridge.embed import merge_frame_ancestors
# settings = c.JupyterHub.tornado_settings
# headers = settings.setdefault("headers", {})
# headers["Content-Security-Policy"] = merge_frame_ancestors(
#     headers.get("Content-Security-Policy"), ["https://eln.example.org"], "frame-ancestors 'self'"
# )
# settings.setdefault("cookie_options", {}).update({"SameSite": "None", "Secure": True})
