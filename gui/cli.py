"""``edgeconf gui [BUNDLE] [--source URI]``: open the operator window.

This module imports only click at load time; PySide6 and pyqtgraph are imported inside the command, so
``edgeconf --help`` works without the ``[gui]`` extra and ``edgeconf gui`` says what to install.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Optional, Tuple

import click

from edgeconf.commands import checked_by, finite_range
from edgeconf.errors import ConfigError, DataError, EdgeconfError, MissingDependencyError


class NoDisplayError(EdgeconfError):
    """There is no display for the window (Linux without X11 or Wayland, and no Qt platform chosen)."""


def check_display(environ: Optional[Any] = None, platform: Optional[str] = None) -> None:
    """Refuse, in one line, to open a window where Qt would abort for want of a display.

    On Linux Qt needs an X server (``DISPLAY``) or a Wayland compositor (``WAYLAND_DISPLAY``); without one, and
    without a platform plugin chosen by ``QT_QPA_PLATFORM``, creating the QApplication aborts the process.
    """
    env = os.environ if environ is None else environ
    if not (platform or sys.platform).startswith("linux"):
        return
    if env.get("WAYLAND_DISPLAY") or env.get("QT_QPA_PLATFORM"):
        return
    display = env.get("DISPLAY")
    if display:
        from edgeconf.live.outputs import x_display_running

        if x_display_running(display) is False:
            raise NoDisplayError("no X server is running for DISPLAY=%s; start the desktop session, run edgeconf gui "
                                 "under a virtual X server (xvfb-run -a edgeconf gui ...), or use "
                                 "QT_QPA_PLATFORM=offscreen for --screenshot without a display" % display)
        return
    raise NoDisplayError("no display to open the window on (DISPLAY and WAYLAND_DISPLAY are not set); run edgeconf "
                         "gui in a desktop session, under a virtual X server (xvfb-run -a edgeconf gui ...), or with "
                         "QT_QPA_PLATFORM=offscreen for --screenshot without a display")


def shipped_bundle() -> str:
    """The bundle shipped in the package (``edgeconf/data/zoo/bundle``): the default of demo, run and gui."""
    from edgeconf.live.defaults import DEFAULT_BUNDLE

    return DEFAULT_BUNDLE


def _require_qt() -> None:
    from edgeconf.lazy import require

    try:
        require("PySide6", "the operator window")
        require("pyqtgraph", "the operator window's plots")
    except MissingDependencyError as exc:
        raise MissingDependencyError("edgeconf gui is unavailable: %s" % exc) from None


def open_meter(name: str) -> Tuple[Any, str]:
    """An energy meter on the board's power sensor (started), or (None, why not). Never invents readings."""
    if name == "none":
        return None, "power measurement switched off (--power none)"
    try:
        from edgeconf.devices.meter import EnergyMeter
        from edgeconf.devices.power import open_power_source

        src = open_power_source(name)
        meter = EnergyMeter(src)
        meter.start()
        return meter, getattr(src, "reason", "")
    except Exception as exc:  # a broken sensor must not keep the window from opening
        return None, "power sensor unavailable: %s" % (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def _check_regions(value: str) -> None:
    from edgeconf.live.regions import check_spec

    check_spec(value)


def _check_power(value: str) -> None:
    from edgeconf.bench.cli import check_power

    check_power(value)


#: (parameter, as the user wrote it) of the operator window's arguments, which the fleet view does not take
_OPERATOR_ONLY = (("bundle", "BUNDLE"), ("source_uri", "--source"), ("regions", "--regions"), ("events_path", "--events"),
                  ("power_name", "--power"), ("no_start", "--no-start"), ("telemetry_uri", "--telemetry"))


@click.command("gui")
@click.argument("bundle", required=False, type=click.Path())
@click.option("--source", "source_uri", default=None,
              help="demo://, a video path, an image folder, rtsp://…, v4l2:///dev/videoN, a camera index or csi://N "
                   "(default: demo://).")
@click.option("--regions", default=None, callback=checked_by(_check_regions), help="detector (the shipped detector; the default, as in demo and run) | "
              "detector:MODEL.onnx | motion | full | truth (oracle: the demo scene's own boxes). Checked before "
              "anything is saved; a bad value kept in the settings falls back to detector.")
@click.option("--events", "events_path", type=click.Path(dir_okay=False), help="Write JSON-lines events here.")
@click.option("--power", "power_name", default="auto", show_default=True, callback=checked_by(_check_power),
              help="Power source: auto, ina3221-hwmon, ina3221-iio, jtop, nvml, rapl or none.")
@click.option("--no-start", is_flag=True, help="Open the window without starting the pipeline.")
@click.option("--screenshot", "screenshot_path", type=click.Path(dir_okay=False),
              help="Save a PNG of the whole window when --quit-after closes it (needs --quit-after; for docs and CI).")
@click.option("--quit-after", type=finite_range(min=0, min_open=True), default=None,
              help="Close the window after this many seconds.")
@click.option("--telemetry", "telemetry_uri", default=None,
              help="Publish status and events over MQTT: mqtt://[USER[:PASS]@]HOST[:1883]/TOPIC/DEVICE"
                   "[?OPTIONS]; mqtts:// (port 8883) for TLS. Options: tls=1, ca=FILE, cert=FILE&key=FILE, "
                   "insecure=1, queue=N, interval=S, frames=0, client_id=ID (docs/fleet.md).")
@click.option("--fleet", "fleet_uri", default=None,
              help="Open the fleet view instead, on a broker and the topic base the devices publish under: "
                   "mqtt://[USER[:PASS]@]HOST[:1883]/TOPIC (e.g. mqtt://HOST:1883/edgeconf, no DEVICE level); "
                   "mqtts:// and the ?options as for --telemetry. BUNDLE and the operator window's options (--source, "
                   "--regions, --events, --power, --no-start, --telemetry) do not apply to it.")
@click.pass_context
def gui_cmd(ctx: click.Context, bundle: Optional[str], source_uri: Optional[str], regions: Optional[str], events_path: Optional[str],
            power_name: str, no_start: bool, screenshot_path: Optional[str], quit_after: Optional[float],
            telemetry_uri: Optional[str], fleet_uri: Optional[str]) -> None:
    """Open the operator window on BUNDLE (default: the shipped bundle) and a source (default: demo://),
    or with --fleet the fleet view of every device publishing telemetry to a broker."""
    if screenshot_path and quit_after is None:
        raise click.UsageError("--screenshot is taken when --quit-after closes the window; add --quit-after SECONDS "
                               "(e.g. --quit-after 12 --screenshot %s)" % screenshot_path)
    if fleet_uri:
        given = [name for param, name in _OPERATOR_ONLY
                 if ctx.get_parameter_source(param) is click.core.ParameterSource.COMMANDLINE]
        if given:
            raise click.UsageError("--fleet opens the fleet view, which runs no pipeline of its own: %s %s not apply to "
                                   "it; drop %s, or open the operator window without --fleet"
                                   % (", ".join(given), "does" if len(given) == 1 else "do",
                                      "it" if len(given) == 1 else "them"), ctx=ctx)
    _require_qt()
    if fleet_uri:
        from edgeconf.gui.fleet_model import parse_fleet_uri

        parse_fleet_uri(fleet_uri)
        check_display()
        sys.exit(run_fleet_window(fleet_uri, screenshot_path=screenshot_path, quit_after=quit_after))
    if telemetry_uri:
        from edgeconf.live.telemetry import parse_telemetry_uri

        parse_telemetry_uri(telemetry_uri)
    check_arguments(regions, power_name, source_uri, events_path)  # before the window opens, so before anything is saved
    if bundle is None:
        bundle = shipped_bundle()
        if not os.path.isdir(bundle):
            raise DataError("the shipped bundle is missing at %s; reinstall edgeconf or pass a BUNDLE folder" % bundle)
        source_uri = source_uri or "demo://"
    elif not os.path.isdir(bundle):
        raise DataError("bundle folder %s does not exist; pass a folder with edgeconf.json" % bundle)
    check_display()
    sys.exit(run_window(bundle, source_uri or "demo://", regions=regions, events_path=events_path,
                        power_name=power_name, autostart=not no_start, screenshot_path=screenshot_path,
                        quit_after=quit_after, telemetry_uri=telemetry_uri))


def check_arguments(regions: Optional[str], power_name: str, source_uri: Optional[str],
                    events_path: Optional[str] = None) -> None:
    """Refuse what ``edgeconf run`` refuses before it starts, in one line, with the same parsers: a bad --regions
    (kind, options, values), --power (as ``bench``/``devices``), --source (opened when that is cheap: not a camera
    or stream), ``truth`` regions on a source without ground truth, and an --events file that cannot be written."""
    from edgeconf.bench.cli import check_power
    from edgeconf.live.events import check_log_path
    from edgeconf.live.regions import check_spec, parse_spec

    if regions is not None:
        check_spec(regions)
    check_power(power_name)
    has_truth = True  # the default source is demo://
    if source_uri:
        from edgeconf.live.cli import is_live_uri
        from edgeconf.live.sources import open_source

        if is_live_uri(source_uri):
            has_truth = False  # cameras and streams carry no ground truth
        else:
            source = open_source(source_uri)
            has_truth = bool(getattr(source, "has_truth", False))
            source.close()
    if regions is not None and parse_spec(regions)[0] == "truth" and not has_truth:
        raise ConfigError("regions 'truth' use the ground-truth boxes that only demo:// frames carry; %s has none: use "
                          "--regions detector (the default), motion, full or detector:MODEL.onnx" % source_uri)
    if events_path:
        check_log_path(events_path)


class RunFailedError(EdgeconfError):
    """The window's last run failed (the bundle, the source or the pipeline); raised after the window closed."""


def _screenshot(win: Any, path: str) -> list:
    """Save the window as a PNG; a failure is returned (raising inside a Qt timer would only print a traceback)."""
    from edgeconf.errors import OutputError
    from edgeconf.gui.video import save_png

    try:
        save_png(win.grab(), path)
    except OutputError as exc:
        return [exc]
    return []


def _exec(app: Any, win: Any, quit_after: Optional[float], screenshot_path: Optional[str],
          before_shot: Optional[Any] = None) -> int:
    """Run the event loop; with ``quit_after``, close the window then (after ``before_shot()`` and the screenshot).
    A screenshot that failed is raised after the window closed: the CLI prints it in one line."""
    from PySide6.QtCore import QTimer

    failed: list = []
    if quit_after is not None:
        def finish() -> None:
            if before_shot is not None:
                before_shot()
            if screenshot_path:
                failed.extend(_screenshot(win, screenshot_path))
            win.close()

        QTimer.singleShot(int(quit_after * 1000), finish)
    code = app.exec()
    win.shutdown()
    if failed:
        raise failed[0]
    return int(code)


def run_fleet_window(uri: str, screenshot_path: Optional[str] = None, quit_after: Optional[float] = None) -> int:
    """The fleet view's application and event loop; returns its exit code."""
    from PySide6.QtWidgets import QApplication

    from edgeconf.gui.fleet import FleetWindow

    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "edgeconf"])
    win = FleetWindow(uri)
    win.show()
    return _exec(app, win, quit_after, screenshot_path, before_shot=win.refresh)


def run_window(bundle: str, source_uri: str, regions: Optional[str] = None, events_path: Optional[str] = None,
               power_name: str = "auto", autostart: bool = True, screenshot_path: Optional[str] = None,
               quit_after: Optional[float] = None, telemetry_uri: Optional[str] = None) -> int:
    """Create the application and the window, run the event loop, and return its exit code."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from edgeconf.gui.window import MainWindow

    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "edgeconf"])
    app.setOrganizationName("edgeconf")
    app.setApplicationName("edgeconf-gui")
    meter, note = open_meter(power_name)
    try:
        options = {"telemetry_uri": telemetry_uri} if telemetry_uri else None
        win = MainWindow(bundle=bundle, source=source_uri, meter=meter, regions=regions, events_path=events_path,
                         worker_options=options,
                         power_note=note)
        win.show()
        if autostart:
            QTimer.singleShot(0, win.start)
        code = _exec(app, win, quit_after, screenshot_path)
        app.processEvents()  # the worker has ended: deliver what it signalled last (a failure) to the window
        if win.model.error:  # the window said "Could not run ..."; the exit status says it too
            raise RunFailedError("the run failed: %s" % win.model.error)
        return code
    finally:
        if meter is not None:
            meter.stop()
            meter.source.close()
