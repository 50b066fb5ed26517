"""``edgeconf gui`` from the command line, and the window for a few seconds on a real X server (Xvfb)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("PySide6", reason="PySide6 is not installed (pip install 'edgeconf[gui]')")
pytest.importorskip("pyqtgraph", reason="pyqtgraph is not installed (pip install 'edgeconf[gui]')")
pytest.importorskip("pytestqt", reason="pytest-qt is not installed")
from click.testing import CliRunner

pytestmark = pytest.mark.gui

ROOT = Path(__file__).resolve().parents[2]


def test_gui_help_lists_the_options():
    from edgeconf.gui.cli import gui_cmd

    out = CliRunner().invoke(gui_cmd, ["--help"])
    assert out.exit_code == 0
    for opt in ("--source", "--regions", "--events", "--power", "--screenshot", "--quit-after"):
        assert opt in out.output


def test_a_missing_bundle_is_one_line_error(tmp_path):
    code = "from edgeconf.cli import main; main(['gui', %r])" % str(tmp_path / "nope")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, QT_QPA_PLATFORM="offscreen"))
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "bundle folder" in out.stderr and "does not exist" in out.stderr


def _free_display() -> int:
    for n in range(90, 400):
        if not os.path.exists("/tmp/.X%d-lock" % n) and not os.path.exists("/tmp/.X11-unix/X%d" % n):
            return n
    pytest.skip("no free X display number")


def _wait_for_x(n: int, proc: subprocess.Popen, timeout: float = 10.0) -> bool:
    path = "/tmp/.X11-unix/X%d" % n
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if os.path.exists(path):
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(path)
                return True
            except OSError:
                pass
            finally:
                s.close()
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_window_runs_under_xvfb_and_saves_a_screenshot(tmp_path, gui_bundle):
    """The real CLI, on the xcb platform of a real X server: the window runs for a few seconds, then a
    screenshot of it is saved (copied to $EDGECONF_ARTIFACTS when that is set)."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("Xvfb is not installed (Debian package xvfb)")
    n = _free_display()
    server = subprocess.Popen([xvfb, ":%d" % n, "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if not _wait_for_x(n, server):
            pytest.skip("Xvfb did not start: %s" % (server.stderr.read().decode(errors="replace")[-300:]
                                                     if server.poll() is not None else "timeout"))
        shot = tmp_path / "edgeconf-gui-xvfb.png"
        events = tmp_path / "events.jsonl"
        env = dict(os.environ, DISPLAY=":%d" % n, QT_QPA_PLATFORM="xcb", XDG_CONFIG_HOME=str(tmp_path / "config"),
                   HOME=str(tmp_path))
        code = "from edgeconf.cli import main; main()"
        out = subprocess.run([sys.executable, "-c", code, "gui", gui_bundle, "--source", "demo://?seed=1",
                              "--events", str(events), "--power", "none", "--quit-after", "5",
                              "--screenshot", str(shot)], capture_output=True, text=True, timeout=120, env=env,
                             cwd=str(tmp_path))
        assert out.returncode == 0, out.stderr[-3000:]
        assert shot.is_file() and shot.stat().st_size > 20000
        import cv2

        img = cv2.imread(str(shot))
        assert img is not None and img.shape[0] >= 600 and img.shape[1] >= 1000
        frames = [line for line in events.read_text().splitlines() if '"type":"frame"' in line]
        assert len(frames) >= 1  # the pipeline ran on xcb (how many frames in 5 s depends on the machine's load)
        assert events.read_text().splitlines()[-1].startswith('{"type":"stop"')
        assert (tmp_path / "config" / "edgeconf" / "edgeconf-gui.conf").is_file()  # settings saved, not in ~
        artifacts = os.environ.get("EDGECONF_ARTIFACTS")
        if artifacts:
            os.makedirs(artifacts, exist_ok=True)
            shutil.copy(shot, os.path.join(artifacts, shot.name))
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)
