"""``jupyter lims-bridge demo`` as a subprocess, started as a user would, for the tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

START_TIMEOUT = 90.0
STOP_TIMEOUT = 20.0
BANNER_END = "Press Ctrl-C to stop."


class RunningDemo:
    """The demo process, what it printed, and where its ELN and files are."""

    def __init__(self, proc: subprocess.Popen[str], output: list[str]) -> None:
        self.proc = proc
        self.output = output
        self.eln_url = ""
        self.root = Path()

    def text(self) -> str:
        return "".join(self.output)


@contextmanager
def running_demo() -> Iterator[RunningDemo]:
    """The demo on free ports until the block ends; then SIGTERM (SIGKILL if it must)."""
    # the demo configures its JupyterLab itself: none of the caller's bridge settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIMS_BRIDGE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_lims_bridge.demo", "--port", "0", "--service-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
    )
    output: list[str] = []
    demo = RunningDemo(proc, output)
    try:
        # a thread reads the output, so that waiting for the banner stays bounded
        threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        while BANNER_END not in demo.text():
            if proc.poll() is not None:
                time.sleep(0.2)
                raise RuntimeError(f"the demo exited with {proc.returncode}:\n{demo.text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no banner in {START_TIMEOUT} s:\n{demo.text()}")
            time.sleep(0.1)
        text = demo.text()
        demo.eln_url = re.search(r"Open this URL:\s+(http://127\.0\.0\.1:\d+/)", text).group(1)
        demo.root = Path(re.search(r"files, keys and logs\s+(\S+)", text).group(1))
        yield demo
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)
