"""Helpers the tests share: stand-in services (LIMS file server, proxy backends,
webhook receiver), real server subprocesses, and how Chromium is started."""
