"""``edgeconf gui`` from the command line, and the window for a few seconds on a real X server (Xvfb)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from xserver import xvfb

pytest.importorskip("PySide6", reason="PySide6 is not installed (pip install '.[gui]')")
pytest.importorskip("pyqtgraph", reason="pyqtgraph is not installed (pip install '.[gui]')")
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


@pytest.mark.slow
def test_window_runs_under_xvfb_and_saves_a_screenshot(tmp_path, gui_bundle):
    """The real CLI, on the xcb platform of a real X server: the window runs for a few seconds, then a
    screenshot of it is saved (copied to $EDGECONF_ARTIFACTS when that is set)."""
    with xvfb("1600x1000x24") as display:
        shot = tmp_path / "edgeconf-gui-xvfb.png"
        events = tmp_path / "events.jsonl"
        env = dict(os.environ, DISPLAY=display, QT_QPA_PLATFORM="xcb", XDG_CONFIG_HOME=str(tmp_path / "config"),
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


@pytest.mark.parametrize("args", [["--quit-after", "2"], ["--fleet", "mqtt://localhost/edgeconf", "--quit-after", "2"]])
def test_no_display_is_one_line_error_not_a_qt_abort(tmp_path, args):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    out = subprocess.run([sys.executable, "-m", "edgeconf", "gui", *args], capture_output=True, text=True,
                         timeout=120, env=env, cwd=str(tmp_path))
    assert out.returncode == 1, (out.returncode, out.stderr[-2000:])
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("edgeconf: error: no display"), out.stderr
    assert "xvfb-run -a edgeconf gui" in out.stderr and "QT_QPA_PLATFORM=offscreen" in out.stderr


def test_check_display_lets_any_display_or_platform_through():
    from edgeconf.gui.cli import NoDisplayError, check_display

    for env in ({"DISPLAY": "remote-host:0"}, {"WAYLAND_DISPLAY": "wayland-0"}, {"QT_QPA_PLATFORM": "offscreen"}):
        check_display(env, "linux")  # a remote X server cannot be checked from here: let Qt try
    check_display({}, "darwin")
    with pytest.raises(NoDisplayError):
        check_display({"DISPLAY": ""}, "linux")


def test_check_display_refuses_a_local_display_with_no_x_server_and_takes_a_running_one():
    from edgeconf.gui.cli import NoDisplayError, check_display

    with xvfb() as display:
        check_display({"DISPLAY": display}, "linux")
        check_display({"DISPLAY": "unix%s.0" % display}, "linux")
    # the server is gone now (Xvfb removed its socket): Qt would abort, the check says so in one line
    with pytest.raises(NoDisplayError, match="no X server is running for DISPLAY=%s; " % display):
        check_display({"DISPLAY": display}, "linux")
