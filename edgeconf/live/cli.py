"""``edgeconf run`` (a bundle on a camera, stream, video or folder) and ``edgeconf demo`` (the shipped
bundle on the built-in synthetic scene, with a summary scored against the scene's ground truth)."""
from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import click
import numpy as np

from edgeconf.commands import finite_range, threads_option
from edgeconf.errors import ConfigError, DataError, MissingDependencyError, OutputError, SourceError
from edgeconf.live.defaults import (DEFAULT_BASELINE, DEFAULT_BUNDLE, DEFAULT_REGIONS, DEFAULT_SOURCE, REGION_CHOICES,
                                    regions_note)

OUTPUT_HELP = ("Send the annotated video to URI (repeatable): file://out.mp4 or a path (H.264 through ffmpeg, else "
               "MJPG), rtp://HOST:PORT (H.264 in MPEG-TS; play with ffplay rtp://HOST:PORT), display://0 (a window).")
REGIONS_HELP = ("%s (the shipped detector; detector:class_score=0 drops its evidence rule, docs/pipeline.md) | "
                "detector:MODEL.onnx | motion | full | truth (oracle: the demo scene's own boxes, for diagnosis)"
                % DEFAULT_REGIONS)
__all__ = ["DEFAULT_BUNDLE", "DEFAULT_BASELINE", "DEFAULT_REGIONS", "DEFAULT_SOURCE", "REGION_CHOICES", "run_demo",
           "drive", "run_cmd", "demo_cmd"]


# -- power ------------------------------------------------------------------------------------------
def open_meter() -> Tuple[Any, str]:
    """A running energy meter on the board's power sensor, or (None, why not). Never invents a reading."""
    try:
        from edgeconf.devices.meter import EnergyMeter
        from edgeconf.devices.power import open_power_source
    except ImportError as exc:  # a build without the devices power module
        return None, "not measured (no power support: %s)" % exc
    try:
        src = open_power_source("auto")
    except Exception as exc:
        return None, "not measured (%s)" % (str(exc).splitlines()[0][:100] or type(exc).__name__)
    if not getattr(src, "available", False):
        reason = getattr(src, "reason", "") or "no power sensor"
        src.close()
        return None, "not measured (%s)" % ("no power sensor on this machine" if len(reason) > 80 else reason)
    try:
        meter = EnergyMeter(src).start()
    except Exception as exc:
        src.close()
        return None, "not measured (%s)" % exc
    return meter, "measured by %s" % getattr(src, "name", "sensor")


def close_meter(meter: Any) -> None:
    for name in ("close", "stop"):
        fn = getattr(meter, name, None)
        if fn is not None:
            try:
                fn()
            except Exception:
                pass
            return


# -- live panel -------------------------------------------------------------------------------------
def _fmt_rate(v: Optional[float]) -> str:
    return "--" if v is None else "%.1f %%" % (100.0 * v)


def panel(pipeline: Any, result: Any, power_note: str) -> Any:
    """A rich table with the live numbers."""
    from rich.markup import escape
    from rich.table import Table

    c = result.counters
    t = Table(title="edgeconf run — %s" % escape(str(getattr(pipeline.source, "uri", "source"))), show_header=False,
              expand=False)
    t.add_column(style="bold cyan")
    t.add_column()
    state = pipeline.source_state
    t.add_row("source", "%s (dropped %d)" % (getattr(state, "value", state), c.frames_dropped))
    t.add_row("frames", "%d  (errors %d)" % (c.frames, c.errors))
    t.add_row("fps", "%.1f" % c.fps)
    t.add_row("latency", "%.1f ms (regions %.1f, tracking %.1f, classify %.1f)" % (
        result.timings.processing_ms, result.timings.regions_ms, result.timings.tracking_ms, result.timings.classify_ms))
    t.add_row("tracks", "%d  (%s)" % (c.tracks, ", ".join(
        "%d:%s" % (tr.id, tr.label or tr.class_id) for tr in result.tracks[:8]) or "none"))
    t.add_row("exits per stage", " / ".join(str(x) for x in c.exits) + "  + memo %d" % c.memo_hits)
    t.add_row("escalation", "%s (recent %s)" % (_fmt_rate(c.escalation_rate), _fmt_rate(c.escalation_rate_recent)))
    t.add_row("memo hit rate", "%s (recent %s)" % (_fmt_rate(c.memo_hit_rate), _fmt_rate(c.memo_hit_rate_recent)))
    t.add_row("power", "%.2f W" % c.power_w if c.power_w is not None else escape(power_note))
    return t


# -- the shared loop --------------------------------------------------------------------------------
def drive(pipeline: Any, frames: Optional[int], events_path: Optional[str], record_path: Optional[str],
          live: bool, on_result: Any = None, record_fps: Optional[float] = None, power_note: str = "not measured",
          start_info: Optional[dict] = None, telemetry: Any = None, outputs: Sequence[str] = ()) -> Dict[str, Any]:
    """Run the pipeline with event log, recording, video outputs (``--output`` URIs), live panel and signal
    handling; return a summary.

    ``telemetry``: a started :class:`edgeconf.live.telemetry.Telemetry` that gets every event too (its status
    thread publishes the pipeline's status on its own)."""
    from edgeconf.live.events import EventLog, emit_frame, install_stop_signals, run_summary
    from edgeconf.live.outputs import open_output
    from edgeconf.live.overlay import draw_overlays
    from edgeconf.live.recording import Recorder
    from edgeconf.live.telemetry import EventFanout

    stop = threading.Event()
    opened: List[Any] = []
    for uri in outputs:  # checked before anything runs: a bad --output fails at once
        try:
            opened.append(open_output(uri, fps=record_fps or 30.0))
        except BaseException:
            _close_outputs(opened, quiet=True)
            raise
    log_file = EventLog(events_path) if events_path else None
    events = EventFanout(log_file, telemetry) if log_file is not None or telemetry is not None else None
    recorder = None
    live_ctx = None
    state: Dict[str, Any] = {"last_panel": 0.0, "last_state": None, "remote_failures": 0, "signal": None}
    t_start = time.perf_counter()
    cpu_start, thread_start = time.process_time(), time.thread_time()
    try:
        if record_path:
            recorder = Recorder(record_path, fps=record_fps or 30.0)
        if events is not None:
            events.emit("start", **(start_info or {}))
        if live:
            from rich.console import Console
            from rich.live import Live

            live_ctx = Live(console=Console(stderr=True), refresh_per_second=4, transient=False)
            live_ctx.start()

        def handle(res: Any) -> None:
            if events is not None:
                st = pipeline.source_state
                if st != state["last_state"]:
                    state["last_state"] = st
                    events.emit("source", state=getattr(st, "value", str(st)))
                state["remote_failures"] = emit_frame(events, res, state["remote_failures"])
            if recorder is not None:
                recorder.write(res)
            if opened:
                annotated = draw_overlays(res.image, res)
                for out in opened:
                    out.write(annotated)
            if on_result is not None:
                on_result(res)
            now = time.perf_counter()
            if live_ctx is not None and now - state["last_panel"] >= 0.25:
                state["last_panel"] = now
                live_ctx.update(panel(pipeline, res, power_note))

        def on_signal(signum: int) -> None:
            state["signal"] = signum
            pipeline.stop()

        with install_stop_signals(stop, on_signal=on_signal):
            pipeline.run(max_frames=frames, on_result=handle, stop_event=stop)
        wall = time.perf_counter() - t_start
        cpu = {"process_s": round(time.process_time() - cpu_start, 3),  # every thread: source, pipeline, models
               "pipeline_thread_s": round(time.thread_time() - thread_start, 3)}
        summary = run_summary(pipeline, wall, cpu, stop.is_set(), state.get("signal"), power_note)
        if opened:
            summary["outputs"] = [{"uri": o.uri, "kind": o.kind, "codec": getattr(o, "codec", None),
                                   "frames": o.frames_given} for o in opened]
        if events is not None:
            events.emit("summary", **summary)
        if telemetry is not None:
            telemetry.publish_status()
            summary["telemetry"] = dict(telemetry.stats(), broker=telemetry.config.describe())
        return summary
    finally:
        if live_ctx is not None:
            live_ctx.stop()
            if not live_ctx.console.is_terminal:
                live_ctx.console.line()  # a non-terminal stream gets the last panel without a line end
        problems = []
        if recorder is not None:
            try:
                recorder.close()
            except OutputError as exc:  # the log still gets its last lines
                problems.append(exc)
        if events is not None:
            events.emit("stop")
            try:
                events.close()
            except OutputError as exc:
                problems.append(exc)
        try:
            _close_outputs(opened, quiet=sys.exc_info()[0] is not None)
        except OutputError as exc:
            problems.append(exc)
        if problems and sys.exc_info()[0] is None:
            raise problems[0]


def _close_outputs(outputs: Sequence[Any], quiet: bool = False) -> None:
    """Finalise every output; the first failure is raised after all are closed (unless already failing)."""
    first: Optional[BaseException] = None
    for out in outputs:
        try:
            out.close()
        except Exception as exc:
            first = first or exc
    if first is not None and not quiet:
        raise first


#: ``run``'s retry policy for cameras and streams: a source that gives no frames for this long, or fails this
#: many (re)connection attempts in a row (back-off 0.25 s doubling to 4 s), ends the run with one line.
DEFAULT_RETRIES = 8
DEFAULT_RETRY_TIMEOUT = 30.0
_LIVE_SCHEMES = ("v4l2", "csi", "rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp")


def is_live_uri(uri: str) -> bool:
    """Whether ``uri`` names a camera or a network stream (the sources that retry)."""
    text = uri.strip()
    return text.isdigit() or text.split("://", 1)[0].lower() in _LIVE_SCHEMES and "://" in text


TELEMETRY_HELP = ("Publish status (once a second) and events to an MQTT broker: mqtt://[USER[:PASS]@]HOST[:1883]/TOPIC/"
                  "DEVICE[?tls=1&ca=FILE&queue=1000&frames=0]; mqtts:// for TLS (docs/fleet.md).")


def _parse_size(text: Optional[str]) -> Optional[Tuple[int, int]]:
    """``"640x480"`` → (640, 480) (None for no size); a bad size is a one-line ConfigError."""
    if not text:
        return None
    from edgeconf.live.sources import parse_size

    return parse_size(text)


def _check_size_option(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[str]:
    """``--size``: refused as a usage error (exit 2, naming the command's --help) unless it is a WxH frame size
    within the pixel limit; the text is passed on as given."""
    try:
        _parse_size(value)
    except (ConfigError, DataError) as exc:  # not WxH, not positive, over the pixel limit
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    return value


def _check_regions_option(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``--regions``: the kind, its option names and values checked before anything loads, as a usage error."""
    from edgeconf.live.regions import check_spec

    try:
        return check_spec(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _echo_json(data: dict) -> None:
    click.echo(json.dumps(data, indent=2, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


# -- outputs checked before a run -------------------------------------------------------------------
def uri_path(uri: Optional[str]) -> Optional[str]:
    """The file or folder a source or ``--output`` URI names (``file://PATH`` or a plain path, without a query
    such as ``?loop=1``), or None for a camera, stream, window or the demo scene."""
    if not uri or not uri.strip() or uri.strip().isdigit():
        return None
    text = uri.strip()
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if match is not None:
        if match.group(1).lower() != "file":
            return None
        text = text[match.end():]
    path = os.path.expanduser(text)
    return path.split("?", 1)[0] if "?" in path and not os.path.exists(path) else path


def check_outputs(events_path: Optional[str], record_path: Optional[str], outputs: Sequence[str],
                  inputs: Sequence[Optional[str]]) -> None:
    """Refuse, before anything runs or is written, an --events, --record or --output file that would overwrite
    one of ``inputs`` (the source, the bundle) or whose folder is missing or a file (one line, exit 1)."""
    from edgeconf.atomic import refuse_overwriting_inputs
    from edgeconf.pathcheck import refuse_missing_folder

    named = [(events_path, "--events"), (record_path, "--record")] + [(uri_path(u), "--output") for u in outputs]
    for path, option in named:
        if not path:
            continue
        refuse_overwriting_inputs(path, option, list(inputs))
        refuse_missing_folder(path, "cannot write %s %s" % (option, path))


# -- edgeconf run -----------------------------------------------------------------------------------
@click.command("run")
@click.argument("bundle", type=click.Path(), required=False)
@click.option("--source", "source_uri", default=DEFAULT_SOURCE, show_default=True,
              help="demo://, a video path or file://, a folder, rtsp://, v4l2:///dev/videoN, a camera index, csi://N.")
@click.option("--regions", default=DEFAULT_REGIONS, show_default=True, callback=_check_regions_option, help=REGIONS_HELP)
@click.option("--events", "events_path", type=click.Path(dir_okay=False), help="Write JSON-lines events here.")
@click.option("--record", "record_path", type=click.Path(dir_okay=False), help="Record the annotated video (MJPG .avi).")
@click.option("--output", "outputs", multiple=True, metavar="URI", help=OUTPUT_HELP)
@click.option("--frames", type=click.IntRange(min=1), help="Stop after this many processed frames.")
@click.option("--size", callback=_check_size_option, help="Resize frames to WxH (e.g. 640x480).")
@click.option("--fps", type=finite_range(min=0, min_open=True), help="Source frame rate (cameras, folders, demo).")
@click.option("--refresh", type=click.IntRange(min=1), default=30, show_default=True, help="Re-classify a track at least every N frames.")
@threads_option()
@click.option("--no-memo", is_flag=True, help="Disable the memo cache (every matched track is classified every frame).")
@click.option("--form", type=click.Choice(["auto", "staged", "fused"]), default="auto", show_default=True,
              help="Cascade form: staged, fused (the bundle's fused graph, from edgeconf fuse) or auto.")
@click.option("--telemetry", "telemetry_uri", default=None, help=TELEMETRY_HELP)
@click.option("--retry", "retries", type=click.IntRange(min=0), default=DEFAULT_RETRIES, show_default=True,
              help="Cameras and streams: failed (re)connection attempts in a row before giving up.")
@click.option("--retry-timeout", "retry_timeout", type=finite_range(min=0, min_open=True),
              default=DEFAULT_RETRY_TIMEOUT, show_default=True,
              help="Cameras and streams: seconds without frames (connecting or reconnecting) before giving up.")
@click.option("--no-live", is_flag=True, help="No live panel.")
@click.option("--json", "as_json", is_flag=True, help="Print the final summary as JSON.")
def run_cmd(bundle: Optional[str], source_uri: str, regions: str, events_path: Optional[str], record_path: Optional[str],
            outputs: Tuple[str, ...], frames: Optional[int], size: Optional[str], fps: Optional[float], refresh: int,
            threads: Optional[int], no_memo: bool, form: str, telemetry_uri: Optional[str], retries: int,
            retry_timeout: float, no_live: bool, as_json: bool) -> None:
    """Run BUNDLE (default: the shipped cascade) on a camera, stream, video or image folder (default: demo://):
    track objects (default: the shipped detector) and classify each one.

    A camera or stream that gives no frames is retried with back-off, at most --retry times in a row and for
    at most --retry-timeout seconds; then the run ends with one line naming the source (exit 1). Ctrl-C ends
    the run after the current frame: logs and recording are closed complete, and the exit status is 130.
    """
    from edgeconf.bundle import load_bundle
    from edgeconf.live.pipeline import Pipeline
    from edgeconf.live.sources import open_source
    from edgeconf.live.telemetry import open_telemetry, parse_telemetry_uri

    if telemetry_uri:
        parse_telemetry_uri(telemetry_uri)  # a wrong URI fails before anything loads
    bundle = _bundle_argument(bundle, source_uri)
    check_outputs(events_path, record_path, outputs, [uri_path(source_uri), bundle])
    cascade = load_bundle(bundle, threads=threads, memo=False if no_memo else None, form=form)
    meter, power_note = open_meter()
    source = telemetry = None
    try:
        retry = {"retries": retries, "retry_timeout": retry_timeout} if is_live_uri(source_uri) else {}
        source = open_source(source_uri, size=_parse_size(size), fps=fps, **retry)
        pipe = Pipeline(cascade, source, regions=regions, refresh_frames=refresh, meter=meter)
        telemetry = open_telemetry(telemetry_uri, pipe, meter)
        info = {"bundle": os.path.abspath(bundle), "source": source_uri, "regions": regions,
                "regions_note": regions_note(regions),
                "stages": [s.name for s in cascade.stages], "thresholds": cascade.thresholds, "memo": not no_memo,
                "form": cascade.form, "threads": cascade.threads.to_json()}
        summary = drive(pipe, frames, events_path, record_path, live=not no_live and not as_json,
                        record_fps=fps or getattr(source, "fps", None) or 30.0, power_note=power_note, start_info=info,
                        telemetry=telemetry, outputs=outputs)
    finally:
        if telemetry is not None:
            telemetry.close()
        if source is not None:
            source.close()
        close_meter(meter)
        cascade.close()
    _final_telemetry(summary, telemetry)
    summary.update(bundle=bundle, source=source_uri, regions=regions, regions_note=regions_note(regions),
                   form=cascade.form, threads=cascade.threads.to_json())
    if summary["source_state"] == "failed":
        raise SourceError(source.error or "source %s failed" % source_uri)
    if as_json:
        _echo_json(summary)
    else:
        print_run_summary(summary)
    exit_if_interrupted(summary)


def exit_if_interrupted(summary: Dict[str, Any]) -> None:
    """A run ended by a signal exits 128 + its number (130 for Ctrl-C) once its logs are closed."""
    if summary.get("interrupted"):
        raise SystemExit(128 + int(summary.get("signal") or 2))


def _bundle_argument(bundle: Optional[str], source_uri: str) -> str:
    """The BUNDLE argument of ``run``, or the shipped bundle; a video, URI or camera index given there instead
    (``edgeconf run clip.mp4``) is refused with the command that was meant."""
    if not bundle:
        return _shipped_bundle()
    if os.path.isdir(bundle):
        return bundle
    looks_like_source = os.path.isfile(bundle) or "://" in bundle or bundle.strip().isdigit()
    if looks_like_source:
        hint = "" if source_uri == DEFAULT_SOURCE else " (and drop --source %s)" % source_uri
        raise ConfigError("%s is a source, not a bundle folder: BUNDLE is run's optional first argument; run "
                          "`edgeconf run --source %s`%s" % (bundle, bundle, hint))
    return bundle


def _shipped_bundle() -> str:
    if not os.path.isdir(DEFAULT_BUNDLE):
        raise DataError("the shipped bundle is missing at %s; reinstall edgeconf or pass a BUNDLE folder" % DEFAULT_BUNDLE)
    return DEFAULT_BUNDLE


def print_run_summary(s: Dict[str, Any]) -> None:
    c = s["counters"]
    lat = s["latency_ms"]
    lines = [
        "regions       %s%s" % (s["regions"], "  (%s)" % s["regions_note"] if s.get("regions_note") else ""),
        "frames        %d in %.1f s (%.1f fps)%s" % (s["frames"], s["wall_s"], s["fps"] or 0.0, "  [interrupted]" if s.get("interrupted") else ""),
        "latency       %s" % _latency_text(lat),
        "answers       %d (models ran on %d, memo %d: cache %d + unchanged tracks %d)" % (
            c["answers"], c["model_inputs"], c["cache_hits"] + c["track_key_hits"], c["cache_hits"], c["track_key_hits"]),
        "exits/stage   %s" % " / ".join(str(x) for x in c["exits"]),
        "escalation    %s" % _fmt_rate(c["escalation_rate"]),
        "memo hits     %s" % _fmt_rate(c["memo_hit_rate"]),
        "errors        %d" % c["errors"],
        "power         %s" % s.get("power", "not measured"),
    ]
    if s.get("source_detail"):
        lines.append("source        %s: %s" % (s.get("source_state"), s["source_detail"]))
    if s.get("source_corrupt") and "did not decode" not in s.get("source_detail", ""):
        lines.append("corrupt       %d frames skipped by the source" % s["source_corrupt"])
    lines += _fleet_lines(s)
    click.echo("\n".join(lines))


def _latency_text(lat: Dict[str, Any]) -> str:
    """``p50 3.1 ms, p95 5.0 ms``, or "not measured" when no frame was processed (never "None ms")."""
    if lat.get("p50") is None:
        return "not measured (no frame processed)"
    return "p50 %s ms, p95 %s ms" % (lat["p50"], lat["p95"])


def _fleet_lines(s: Dict[str, Any]) -> List[str]:
    c = s["counters"]
    out = []
    if c.get("remote_inputs"):
        from edgeconf.backends.remote import reach_text

        reasons = c.get("remote_reasons") or {}
        line = "remote        " + reach_text(c["remote_inputs"], c.get("remote_calls", 0), reasons, "crops")
        if c.get("remote_failures"):
            line += "; %d answered by the last local stage instead (%s)" % (
                c["remote_failures"], ", ".join("%s %d" % kv for kv in sorted(reasons.items())))
        else:
            line += "; no fallback"
        out.append(line)
    tel = s.get("telemetry")
    if tel:
        line = "telemetry     %s: %d messages sent, %d dropped (queue %d)" % (
            tel["broker"], tel["sent"], tel["dropped"], tel["queue_size"])
        if tel.get("not_sent"):
            line += "; %d not sent (still queued when the run ended: the broker was not reachable%s)" % (
                tel["not_sent"], ": " + tel["connect_failure"] if tel.get("connect_failure") else "")
        if tel.get("unacknowledged"):
            line += "; %d sent but not acknowledged by the broker" % tel["unacknowledged"]
        out.append(line)
    return out


def _final_telemetry(summary: Dict[str, Any], telemetry: Any) -> None:
    """The telemetry counts after close: what was still queued then was never sent, and is counted as such."""
    if telemetry is not None and "telemetry" in summary:
        summary["telemetry"] = dict(telemetry.stats(), broker=telemetry.config.describe())


# -- edgeconf demo ----------------------------------------------------------------------------------
class BaselineProbe:
    """Times the baseline model on the same crops the pipeline answered, inside the same run (every
    ``every``-th frame, all of that frame's crops in one call, as a baseline deployment would batch them),
    so both sides run under the same conditions on this machine."""

    def __init__(self, path: str, preprocessing: Any, threads: Optional[int] = None, every: int = 5) -> None:
        from edgeconf.backends import prepare

        self.path = path
        self.preprocessing = preprocessing
        self.every = max(1, int(every))
        self.runner = prepare(path, threads=threads)
        self.input = self.runner.inputs[0].name
        self.seconds = 0.0
        self.crops = 0
        self.calls = 0
        self._seen = 0

    def observe(self, crops: List[np.ndarray]) -> None:
        self._seen += 1
        if not crops or self._seen % self.every:
            return
        x = self.preprocessing.batch(crops)
        t0 = time.perf_counter()
        self.runner.run({self.input: x})
        self.seconds += time.perf_counter() - t0
        self.crops += len(crops)
        self.calls += 1

    def estimate(self, answers: int) -> Optional[Dict[str, Any]]:
        """Model seconds the baseline would have needed to answer all ``answers`` crops."""
        if not self.crops:
            return None
        per_crop = self.seconds / self.crops
        return {"model": self.path, "seconds": per_crop * answers, "ms_per_crop": 1e3 * per_crop,
                "sampled_calls": self.calls, "sampled_crops": self.crops}

    def close(self) -> None:
        self.runner.close()


_SCENE_OPTIONS = ("objects", "size", "fps", "seed", "realtime")


@click.command("demo")
@click.option("--frames", type=click.IntRange(min=1), default=300, show_default=True,
              help="Frames of the scene (with --source: the most frames to process).")
@click.option("--objects", type=click.IntRange(min=0, max=64), default=8, show_default=True,
              help="Objects on screen at most (some travel in touching pairs).")
@click.option("--size", default="640x480", show_default=True, callback=_check_size_option,
              help="Frame size of the scene, WxH.")
@click.option("--fps", type=finite_range(min=0, min_open=True), default=30.0, show_default=True, help="Frame rate of the synthetic camera.")
@click.option("--seed", type=int, default=1, show_default=True, help="Scene seed (1-99 are never used to train the detector).")
@click.option("--source", "source_uri", default=None,
              help="Score any source that carries ground truth instead (e.g. demo://?seed=3&objects=10&frames=900); "
                   "the scene options above then do not apply.")
@click.option("--regions", default=DEFAULT_REGIONS, show_default=True, callback=_check_regions_option, help=REGIONS_HELP)
@click.option("--bundle", "bundle_path", type=click.Path(), default=None, help="Bundle to run (default: the shipped zoo bundle).")
@click.option("--baseline", "baseline_path", type=click.Path(), default=None, help="Baseline ONNX for the compute comparison (default: the zoo's big model).")
@click.option("--events", "events_path", type=click.Path(dir_okay=False))
@click.option("--record", "record_path", type=click.Path(dir_okay=False), help="Record the annotated video (MJPG .avi).")
@click.option("--output", "outputs", multiple=True, metavar="URI", help=OUTPUT_HELP)
@click.option("--refresh", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--realtime", is_flag=True, help="Pace the scene like a live camera (frames the pipeline misses are dropped); "
              "by default every frame is processed, as fast as possible, so the summary is reproducible.")
@threads_option()
@click.option("--form", type=click.Choice(["auto", "staged", "fused"]), default="auto", show_default=True,
              help="Cascade form: staged, fused (the bundle's fused graph, from edgeconf fuse) or auto.")
@click.option("--telemetry", "telemetry_uri", default=None, help=TELEMETRY_HELP)
@click.option("--no-live", is_flag=True, help="No live panel.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def demo_cmd(ctx: click.Context, frames: int, objects: int, size: str, fps: float, seed: int, source_uri: Optional[str],
             regions: str, bundle_path: Optional[str], baseline_path: Optional[str], events_path: Optional[str],
             record_path: Optional[str], outputs: Tuple[str, ...], refresh: int, realtime: bool, threads: Optional[int],
             form: str, telemetry_uri: Optional[str], no_live: bool, as_json: bool) -> None:
    """Run the shipped bundle and detector on demo:// (or --source) and score them against the ground truth."""
    if source_uri is not None:
        given = [n for n in _SCENE_OPTIONS if ctx.get_parameter_source(n) is click.core.ParameterSource.COMMANDLINE]
        if given:
            raise click.UsageError("--%s set the built-in scene, but --source names the source; put scene settings in "
                                   "the URI instead (e.g. demo://?seed=3&objects=10)" % ", --".join(given), ctx=ctx)
    summary = run_demo(frames=frames, objects=objects, size=size, fps=fps, seed=seed, regions=regions,
                       bundle_path=bundle_path, baseline_path=baseline_path, events_path=events_path,
                       record_path=record_path, refresh=refresh, realtime=realtime, live=not no_live and not as_json,
                       threads=threads, form=form, telemetry_uri=telemetry_uri, source=source_uri, outputs=outputs)
    if as_json:
        _echo_json(summary)
    else:
        print_demo_summary(summary)
    exit_if_interrupted(summary)


def demo_uri(seed: int = 1, objects: int = 8, size: str = "640x480", fps: float = 30.0, frames: int = 300,
             realtime: bool = False) -> str:
    """The ``demo://`` URI of the built-in scene with these settings."""
    w, h = _parse_size(size) or (640, 480)
    return "demo://?seed=%d&objects=%d&size=%dx%d&fps=%g&frames=%d&realtime=%s" % (
        seed, objects, w, h, fps, frames, "true" if realtime else "false")


def run_demo(frames: int = 300, objects: int = 8, size: str = "640x480", fps: float = 30.0, seed: int = 1,
             regions: str = DEFAULT_REGIONS, bundle_path: Optional[str] = None, baseline_path: Optional[str] = None,
             events_path: Optional[str] = None, record_path: Optional[str] = None, refresh: int = 30,
             realtime: bool = False, live: bool = False, threads: Optional[int] = None,
             form: str = "auto", telemetry_uri: Optional[str] = None, source: Optional[str] = None,
             outputs: Sequence[str] = ()) -> Dict[str, Any]:
    """The demo as a function (the command and the benchmark call it). ``source`` replaces the built-in scene
    (then ``frames`` bounds the frames processed); metrics need a source whose frames carry ground truth."""
    from edgeconf.bundle import load_bundle
    from edgeconf.live.pipeline import Pipeline, crop_box
    from edgeconf.live.sources import open_source
    from edgeconf.live.telemetry import open_telemetry, parse_telemetry_uri
    from edgeconf.live.track_eval import REQUIRED_VISIBLE, ClassificationEvaluator, TrackEvaluator

    if telemetry_uri:
        parse_telemetry_uri(telemetry_uri)  # a wrong URI fails before anything loads
    bundle = bundle_path or DEFAULT_BUNDLE
    if bundle_path and not os.path.isdir(bundle_path):
        raise DataError("bundle folder %s does not exist; pass --bundle a folder with edgeconf.json, or leave "
                        "--bundle out to run the shipped bundle" % bundle_path)
    if not os.path.isdir(bundle):
        raise DataError("the shipped demo bundle is missing at %s; reinstall edgeconf or pass --bundle FOLDER" % bundle)
    uri = source if source is not None else demo_uri(seed, objects, size, fps, frames, realtime)
    check_outputs(events_path, record_path, outputs, [uri_path(uri), bundle, baseline_path])
    cascade = load_bundle(bundle, threads=threads, form=form)
    remote_stages = [cascade.stages[k].name for k in cascade.remote_stages]
    meter, power_note = open_meter()
    try:
        tracking: Optional[TrackEvaluator] = TrackEvaluator(iou_threshold=0.5)
        tracking_note = ""
    except MissingDependencyError:
        tracking, tracking_note = None, "not measured (motmetrics is not installed: pip install motmetrics)"
    classes = ClassificationEvaluator(iou_threshold=0.5)
    base_path = baseline_path or DEFAULT_BASELINE
    if baseline_path and not os.path.isfile(baseline_path):  # a path the user gave (the shipped one may be left out)
        raise ConfigError("baseline model %s does not exist; give an ONNX classifier file, or leave --baseline out for "
                          "the zoo's big model" % baseline_path)
    probe: Optional[BaselineProbe] = None
    src = telemetry = None
    scored = {"frames": 0}

    def score(res: Any) -> None:
        shown = [t for t in res.tracks if t.frames_since_match == 0]
        if res.truth is None:
            return
        scored["frames"] += 1
        if tracking is not None:
            tracking.update(res.truth, shown)
        classes.update(res.truth, shown)
        if probe is not None:
            crops = [crop_box(res.image, t.box) for t in res.tracks if t.classified]
            probe.observe([c for c in crops if c is not None])

    try:
        if os.path.isfile(base_path):
            probe = BaselineProbe(base_path, cascade.preprocessing, threads=threads)
        src = open_source(uri)
        pipe = Pipeline(cascade, src, regions=regions, refresh_frames=refresh, meter=meter)
        telemetry = open_telemetry(telemetry_uri, pipe, meter)
        info = {"bundle": os.path.abspath(bundle), "source": uri, "regions": regions, "regions_note": regions_note(regions),
                "stages": [s.name for s in cascade.stages], "thresholds": cascade.thresholds, "form": cascade.form,
                "threads": cascade.threads.to_json()}
        summary = drive(pipe, frames if source is not None else None, events_path, record_path, live=live,
                        on_result=score, record_fps=fps if source is None else getattr(src, "fps", None) or 30.0,
                        power_note=power_note, start_info=info, telemetry=telemetry, outputs=outputs)
        baseline = probe.estimate(summary["counters"]["answers"]) if probe is not None else None
    finally:
        if telemetry is not None:
            telemetry.close()
        if probe is not None:
            probe.close()
        if src is not None:
            src.close()
        close_meter(meter)
        cascade.close()
    _final_telemetry(summary, telemetry)
    c = summary["counters"]
    compute: Dict[str, Any] = {"baseline": base_path if os.path.isfile(base_path) else None}
    if remote_stages:  # their time is the server's work plus the network: not this board's compute
        compute.update(remote_stages=remote_stages, remote_wait_s=round(c.get("remote_seconds", 0.0), 4),
                       note="cascade_model_s and saved count this board's (local) stages only; the remote stages' "
                            "wait is remote_wait_s")
    if baseline is None:
        compute["saved"] = "not measured" if not os.path.isfile(base_path) else "not measured (no crops)"
    else:
        compute.update(baseline_model_s=round(baseline["seconds"], 4), cascade_model_s=round(c["model_seconds"], 4),
                       sampled_crops=baseline["sampled_crops"],
                       baseline_ms_per_crop=None if baseline["ms_per_crop"] is None else round(baseline["ms_per_crop"], 4),
                       saved=round(1.0 - c["model_seconds"] / baseline["seconds"], 4) if baseline["seconds"] > 0 else None)
    truth_note = None if scored["frames"] else "not measured (the source's frames carry no ground truth)"
    if tracking is not None and scored["frames"]:
        track_json = tracking.metrics().to_json()
    else:
        track_json = {"note": tracking_note or truth_note}
    summary.update(
        bundle=bundle, source=uri, regions=regions, regions_note=regions_note(regions), form=cascade.form,
        threads=cascade.threads.to_json(), mota=track_json.get("mota"), idf1=track_json.get("idf1"),
        accuracy=None if classes.score.accuracy is None else round(classes.score.accuracy, 4),
        unknown_rate=c.get("unknown_rate"), memo_hit_rate=c["memo_hit_rate"], escalation_rate=c["escalation_rate"],
        classification=dict(classes.score.to_json(), note=truth_note) if truth_note else classes.score.to_json(),
        tracking=track_json, compute=compute,
        protocol={"iou": 0.5, "required_visible": REQUIRED_VISIBLE, "scored_frames": scored["frames"],
                  "tracks_scored": "matched on the frame (coasting tracks are not shown as answers)"})
    return summary


def print_demo_summary(s: Dict[str, Any]) -> None:
    c = s["counters"]
    tr = s["tracking"]
    acc = s["classification"]
    comp = s["compute"]
    lat = s["latency_ms"]
    if isinstance(comp.get("saved"), float):
        saved = "%.1f %% (cascade %.3f s vs baseline %.3f s of model time; baseline %.3f ms/crop measured now)" % (
            100 * comp["saved"], comp["cascade_model_s"], comp["baseline_model_s"], comp["baseline_ms_per_crop"])
    else:
        saved = str(comp.get("saved"))
    if "remote_wait_s" in comp:
        saved = saved.replace("of model time", "of this board's model time")
        saved += "; remote stage wait %.3f s, not this board's compute" % comp["remote_wait_s"]
    regions = s["regions"] + ("  (%s)" % s["regions_note"] if s.get("regions_note") else "")
    pct = lambda v: "--" if v is None else "%.1f %%" % (100 * v)  # noqa: E731
    lines = [
        "edgeconf demo — %s" % s["source"],
        "bundle        %s" % s["bundle"],
        "regions       %s" % regions,
        "frames        %d in %.1f s: %.1f fps end to end (dropped by source %d)" % (
            s["frames"], s["wall_s"], s["fps"] or 0.0, c["frames_dropped"]),
        "latency       %s per frame" % _latency_text(lat) if lat.get("p50") is not None else
        "latency       %s" % _latency_text(lat),
        ("accuracy      %s of %d class answers on matched track-frames; %s with the %d unknown answers on them counted "
         "wrong; %s with the %d not yet answered too" % (
             pct(acc["accuracy"]), acc["scored"], pct(acc.get("accuracy_unknown_wrong")), acc.get("unknown", 0),
             pct(acc.get("accuracy_all")), acc["unanswered"])
         if not acc.get("note") else "accuracy      %s" % acc["note"]),
        ("tracking      MOTA %s, IDF1 %s, ID switches %d (%d truth objects, %d track ids)" % (
            pct(tr["mota"]), pct(tr["idf1"]), tr["id_switches"], tr["truth_objects"], tr["track_ids"])
         if "note" not in tr else "tracking      %s" % tr["note"]),
        "answers       %d: models ran on %d, memo %d (cache %d + unchanged tracks %d)" % (
            c["answers"], c["model_inputs"], c["cache_hits"] + c["track_key_hits"], c["cache_hits"], c["track_key_hits"]),
        "exits/stage   %s" % " / ".join(str(x) for x in c["exits"]),
        "escalation    %s" % pct(c["escalation_rate"]),
        "memo hit rate %s" % pct(c["memo_hit_rate"]),
        "compute saved %s" % saved,
        "power         %s" % s.get("power", "not measured"),
    ]
    if c["errors"]:
        lines.append("errors        %d frames failed (see --events)" % c["errors"])
    lines += _fleet_lines(s)
    click.echo("\n".join(lines))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(demo_cmd())
