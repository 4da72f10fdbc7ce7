"""How the browser tests start Debian's Chromium (no browser download; runs as root)."""

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
