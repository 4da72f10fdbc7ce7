"""How the browser tests start Debian's Chromium (no browser download; runs as root)."""

from __future__ import annotations

from pathlib import Path

#: Flags for headless Chromium on these machines: no sandbox (root), and no
#: background networking (the network is closed; it would only fail loudly).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def profile_with_third_party_cookies(user_data_dir: Path, *, allowed: bool) -> Path:
    """A Chromium profile directory that allows or blocks third-party cookies.

    Measured with Debian's Chromium 156: it blocks third-party cookies by default
    (in Playwright's contexts and in a fresh profile alike), and
    ``--test-third-party-cookie-phaseout`` changes nothing either way. The
    profile preference ``profile.cookie_controls_mode`` decides (0: allow, 1: block,
    2: block in incognito only), as a user's or an enterprise policy's choice would. Use the
    directory with ``browser_type.launch_persistent_context``.
    """
    import json

    default = user_data_dir / "Default"
    default.mkdir(parents=True, exist_ok=True)
    preferences = {"profile": {"cookie_controls_mode": 0 if allowed else 1}}
    (default / "Preferences").write_text(json.dumps(preferences))
    return user_data_dir
