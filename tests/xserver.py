"""A real X server for the tests that need one: Xvfb on a display number it chooses itself.

``-displayfd`` lets Xvfb pick a free display (it skips numbers in use and clears stale lock files) and write the
number once it accepts connections, so no test guesses free numbers from lock files; SIGTERM lets it remove its
lock and socket on the way out, so runs do not leave stale ones behind.
"""
from __future__ import annotations

import os
import select
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from typing import Iterator

import pytest


def _read_display(fd: int, proc: subprocess.Popen, timeout: float) -> str:
    """The display number Xvfb writes to ``fd`` when ready ('' if it exits or times out first)."""
    got = b""
    deadline = time.monotonic() + timeout
    while not got.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            return ""
        ready, _, _ = select.select([fd], [], [], min(left, 0.2))
        if ready:
            chunk = os.read(fd, 16)
            if not chunk:
                return ""
            got += chunk
    return got.decode().strip()


@contextmanager
def xvfb(screen: str = "320x240x24", timeout: float = 15.0) -> Iterator[str]:
    """Run Xvfb with one screen of ``screen`` (WxHxDEPTH) and yield its DISPLAY (``:N``); skip when there is none."""
    exe = shutil.which("Xvfb")
    if exe is None:
        pytest.skip("Xvfb is not installed (Debian package xvfb)")
    read_fd, write_fd = os.pipe()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([exe, "-displayfd", str(write_fd), "-screen", "0", screen, "-nolisten", "tcp"],
                                pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=log)
        os.close(write_fd)
        try:
            number = _read_display(read_fd, proc, timeout)
            if not number:
                log.seek(0)
                pytest.skip("Xvfb did not start: %s" % (log.read().decode(errors="replace")[-300:] or "timeout"))
            yield ":" + number
        finally:
            os.close(read_fd)
            proc.terminate()  # SIGTERM: Xvfb removes its lock file and socket
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
