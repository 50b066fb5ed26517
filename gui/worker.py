"""The worker thread that owns the pipeline; results reach the UI thread through signals.

The worker loads the bundle, opens the source and steps the pipeline on its own thread. It keeps only
the newest result in a one-slot mailbox and emits ``resultReady`` only when the UI has taken the
previous one, so the UI's event queue never fills up: a slow UI (or a slow pipeline) lowers the
display rate, and the window never waits for the pipeline. Operator changes (threshold, score, memo,
recording) are queued and applied by the worker between two frames, so the cascade is only ever
changed on the thread that runs it.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from PySide6.QtCore import QThread, Signal

from edgeconf.live.defaults import DEFAULT_REGIONS
from edgeconf.live.events import emit_frame, run_summary

log = logging.getLogger(__name__)


@dataclass
class WorkerConfig:
    """What the worker runs: a bundle folder on a source URI, and the pipeline's options."""

    bundle: str
    source: str
    regions: Any = DEFAULT_REGIONS  # spec string, or a region proposer object
    refresh_frames: int = 30
    threads: Optional[int] = None
    memo: Optional[bool] = None  # None: as the bundle says
    memo_radius: Optional[int] = None
    events_path: Optional[str] = None
    record_path: Optional[str] = None
    source_options: Dict[str, Any] = field(default_factory=dict)
    meter: Any = None  # an energy meter owned by the caller (the pipeline only reads it)
    telemetry_uri: Optional[str] = None  # publish status and events over MQTT (edgeconf.live.telemetry)


class PipelineWorker(QThread):
    """Runs one pipeline until stopped, the source ends or it fails (then ``finished`` is emitted)."""

    #: bundle loaded and source opened: {"stages": [(name, threshold, score)], "labels": [...], "memo": (on, radius), ...}
    ready = Signal(object)
    #: the newest result waits in the mailbox; take it with :meth:`take_result`
    resultReady = Signal()
    #: source state ("connecting", "live", ...) and a detail line
    sourceState = Signal(str, str)
    #: a user-facing failure (the worker stops) or a warning (it carries on): (message, fatal)
    problem = Signal(str, bool)
    #: a queued change took effect: (what, value), e.g. ("threshold", (0, 0.7)), ("recording", path or None)
    applied = Signal(str, object)

    def __init__(self, config: WorkerConfig, parent: Any = None) -> None:
        super().__init__(parent)
        self.setObjectName("edgeconf-pipeline-worker")
        self.config = config
        self.pipeline: Any = None
        self.cascade: Any = None
        self.frames_shown = 0
        self.frames_processed = 0
        self.end_reason = ""
        self._mailbox: Any = None
        self._mail_lock = threading.Lock()
        self._pending = False
        self._commands: "queue.Queue[Tuple[str, Any]]" = queue.Queue()
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._recorder: Any = None
        self._events: Any = None
        self._telemetry: Any = None
        self._last_state: Optional[str] = None
        self._started = False  # the start event was written
        self._failure = ""  # why the start failed
        self._remote_failures = 0  # remote failures already reported in a remote_failure event
        self._t_start: Optional[float] = None  # perf_counter, process_time and thread_time when the loop started

    # -- called from the UI thread ------------------------------------------------------------------
    def take_result(self) -> Any:
        """The newest result (None if the UI already took it); lets the worker announce the next one."""
        with self._mail_lock:
            res, self._mailbox, self._pending = self._mailbox, None, False
        if res is not None:
            self.frames_shown += 1
        return res

    def set_threshold(self, stage: int, value: float) -> None:
        self._commands.put(("threshold", (int(stage), float(value))))

    def set_score(self, stage: int, name: str) -> None:
        self._commands.put(("score", (int(stage), str(name))))

    def set_memo(self, enabled: bool, radius: Optional[int] = None) -> None:
        self._commands.put(("memo", (bool(enabled), radius)))

    def set_recording(self, path: Optional[str], fps: Optional[float] = None) -> None:
        """Start recording the annotated video to ``path`` (.avi), or stop with None."""
        self._commands.put(("recording", (path, fps)))

    def pause(self) -> None:
        self._paused.set()
        if self.pipeline is not None:
            self.pipeline.pause()

    def resume(self) -> None:
        self._paused.clear()
        if self.pipeline is not None:
            self.pipeline.resume()

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    def stop(self) -> None:
        """Ask the worker to end after the current frame (returns at once; ``wait()`` joins)."""
        self._stop.set()
        if self.pipeline is not None:
            self.pipeline.stop()

    def shutdown(self, timeout_s: float = 15.0) -> bool:
        """Stop and join; True when the thread ended."""
        self.stop()
        return self.wait(int(timeout_s * 1000)) if self.isRunning() else True

    # -- the thread ----------------------------------------------------------------------------------
    def run(self) -> None:  # noqa: C901 - one linear life cycle
        source = None
        try:
            try:
                source = self._open()
            except Exception as exc:  # bundle or source failed: say why, end cleanly
                self._emit_start()  # the log of a failed start is complete too: start, source failed, summary, stop
                self._failure = _one_line(exc)
                self._emit_state("failed", self._failure)
                self.problem.emit(self._failure, True)
                self.end_reason = "failed"
                return
            self._loop()
        finally:
            self._finish(source)

    def _open(self) -> Any:
        from edgeconf.bundle import load_bundle
        from edgeconf.live.pipeline import Pipeline
        from edgeconf.live.sources import open_source

        cfg = self.config
        self._emit_state("connecting", "loading bundle %s" % os.path.basename(os.path.normpath(cfg.bundle)))
        from edgeconf.live.telemetry import EventFanout, open_telemetry, parse_telemetry_uri

        if cfg.telemetry_uri:
            parse_telemetry_uri(cfg.telemetry_uri)  # a wrong URI fails before anything loads
        log_file = None
        if cfg.events_path:  # first, so that a bundle or source that fails is in the log
            from edgeconf.live.events import EventLog

            log_file = EventLog(cfg.events_path)
            self._events = EventFanout(log_file)
        self.cascade = load_bundle(cfg.bundle, threads=cfg.threads, memo=cfg.memo)
        source = open_source(cfg.source, **cfg.source_options)
        source.add_state_listener(lambda st: self._emit_state(getattr(st, "value", str(st)), getattr(source, "detail", "") or ""))
        self.pipeline = Pipeline(self.cascade, source, regions=cfg.regions, refresh_frames=cfg.refresh_frames,
                                 meter=cfg.meter)
        if cfg.telemetry_uri:
            self._telemetry = open_telemetry(cfg.telemetry_uri, self.pipeline, cfg.meter)
            self._events = EventFanout(log_file, self._telemetry)
        if cfg.memo_radius is not None and self.cascade.memo is not None:
            self.pipeline.set_memo(True, int(cfg.memo_radius))
        if self._paused.is_set():
            self.pipeline.pause()
        if cfg.record_path:
            self._apply("recording", (cfg.record_path, None))
        memo = self.cascade.memo
        info = {
            "bundle": cfg.bundle, "source": cfg.source,
            "name": getattr(getattr(self.cascade, "manifest", None), "name", "") or os.path.basename(os.path.normpath(cfg.bundle)),
            "stages": [(s.name, float(s.threshold), s.score) for s in self.cascade.stages],
            "remote_stages": list(self.cascade.remote_stages),
            "labels": list(self.cascade.labels or []),
            "memo": (memo is not None, int(memo.radius) if memo is not None else int(cfg.memo_radius or 0)),
        }
        self._emit_start()
        source.start()
        self._emit_state(getattr(source.state, "value", str(source.state)), "")
        self.ready.emit(info)
        return source

    def _emit_start(self) -> None:
        """The ``start`` event (once): with the cascade's stages when it loaded, the pipeline's regions when built."""
        if self._events is None or self._started:
            return
        self._started = True
        cfg = self.config
        fields: Dict[str, Any] = {"bundle": os.path.abspath(cfg.bundle), "source": cfg.source}
        if self.pipeline is not None:
            fields["regions"] = self.pipeline.regions_spec
        else:
            fields["regions"] = cfg.regions if isinstance(cfg.regions, str) else type(cfg.regions).__name__
        if self.cascade is not None:
            fields.update(stages=[s.name for s in self.cascade.stages], thresholds=self.cascade.thresholds,
                          memo=self.cascade.memo is not None)
        self._events.emit("start", gui=True, **fields)

    def _loop(self) -> None:
        pipe = self.pipeline
        self._t_start = (time.perf_counter(), time.process_time(), time.thread_time())
        while not self._stop.is_set():
            self._drain_commands()
            if self._paused.is_set():
                self._stop.wait(0.03)
                continue
            try:
                res = pipe.step(0.05)
            except Exception as exc:  # the pipeline gave up (too many bad frames in a row)
                self.problem.emit(_one_line(exc), True)
                self.end_reason = "failed"
                return
            if res is None:
                if pipe.source_done:
                    st = pipe.source_state
                    self.end_reason = getattr(st, "value", str(st))
                    src = pipe.source
                    if self.end_reason == "failed":
                        self.problem.emit("source failed: %s" % (getattr(src, "error", None) or "unknown error"), True)
                    return
                continue
            self.frames_processed += 1
            self._handle(res)
        self.end_reason = "stopped"

    def _handle(self, res: Any) -> None:
        if self._events is not None:
            self._remote_failures = emit_frame(self._events, res, self._remote_failures)
        rec = self._recorder
        if rec is not None:
            try:
                rec.write(res)
            except Exception as exc:  # disk full, codec gone: stop recording, keep running
                self._close_recorder()
                self.problem.emit("recording stopped: %s" % _one_line(exc), False)
                self.applied.emit("recording", None)
        with self._mail_lock:
            self._mailbox = res
            announce = not self._pending
            self._pending = True
        if announce:
            self.resultReady.emit()

    def _drain_commands(self) -> None:
        while True:
            try:
                what, arg = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                self._apply(what, arg)
            except Exception as exc:
                self.problem.emit(_one_line(exc), False)

    def _apply(self, what: str, arg: Any) -> None:
        pipe = self.pipeline
        if what == "threshold":
            k, v = arg
            pipe.set_threshold(k, v)
            self.applied.emit("threshold", (k, float(self.cascade.stages[k].threshold)))
        elif what == "score":
            from edgeconf.confidence import SCORES
            from edgeconf.errors import ConfigError

            k, name = arg
            if name not in SCORES:
                raise ConfigError("unknown score %r; choose one of %s" % (name, ", ".join(SCORES)))
            # applied between frames on this thread; the fingerprint (and so the memo key) follows
            self.cascade.stages[k].score = name
            self.applied.emit("score", (k, name))
        elif what == "memo":
            enabled, radius = arg
            pipe.set_memo(enabled, radius)
            memo = self.cascade.memo
            self.applied.emit("memo", (memo is not None, int(memo.radius) if memo is not None else int(radius or 0)))
        elif what == "recording":
            path, fps = arg
            self._close_recorder()
            if path:
                from edgeconf.live.recording import Recorder

                src_fps = fps or getattr(pipe.source, "fps", None) or 30.0
                self._recorder = Recorder(path, fps=float(src_fps))
                if self._events is not None:
                    self._events.emit("recording", path=path)
            self.applied.emit("recording", path or None)

    def _close_recorder(self) -> None:
        rec, self._recorder = self._recorder, None
        if rec is not None:
            rec.close()

    def _emit_state(self, state: str, detail: str) -> None:
        if self._events is not None and state != self._last_state:
            self._events.emit("source", state=state, detail=detail)
        self._last_state = state
        self.sourceState.emit(state, detail)

    def summary(self) -> Dict[str, Any]:
        """The run's summary, with the keys of ``edgeconf demo``/``run``'s ``summary`` event (edgeconf.live.cli.drive):
        only numbers this run measured (power is "not measured" without a sensor reading)."""
        t0, cpu0, thread0 = self._t_start or (time.perf_counter(), time.process_time(), time.thread_time())
        cpu = {"process_s": round(time.process_time() - cpu0, 3),
               "pipeline_thread_s": round(time.thread_time() - thread0, 3)}
        out = run_summary(self.pipeline, time.perf_counter() - t0, cpu, self.end_reason == "stopped", None,
                          "not measured")
        out.update(end_reason=self.end_reason or "stopped", gui=True)
        return out

    def _finish(self, source: Any) -> None:
        """Close everything this thread opened, in order: recording, source, events, models."""
        if self._events is not None:
            try:
                if self.pipeline is not None and self._t_start is not None:
                    self._events.emit("summary", **self.summary())
                else:  # it failed before the first frame: nothing was measured
                    self._events.emit("summary", frames=0, source_state="failed", source_detail=self._failure,
                                      end_reason=self.end_reason or "failed", gui=True)
            except Exception:
                log.exception("writing the summary event failed")
        try:
            self._close_recorder()
        except Exception as exc:  # the recording could not be finalised (disk full): say so, close the rest
            self.problem.emit("recording failed: %s" % _one_line(exc), False)
        if self.pipeline is not None:
            try:
                self.pipeline.close()
            except Exception:
                log.exception("closing the pipeline failed")
        elif source is not None:
            source.close()
        if self._telemetry is not None:
            # the last (retained) status, as demo and run publish it: after the source is closed, so it says
            # "ended" (or "failed"), never "live" for a window that stopped or closed
            try:
                self._telemetry.publish_status()
            except Exception:
                log.exception("publishing the last status failed")
        if self._events is not None:
            c = self.pipeline.counters.to_json() if self.pipeline is not None else {}
            self._events.emit("stop", reason=self.end_reason or "stopped", counters=c)
            self._events.close()
            self._events = None
        if self._telemetry is not None:
            try:
                self._telemetry.close()
            except Exception:
                log.exception("closing the telemetry failed")
            self._telemetry = None
        if self.cascade is not None:
            try:
                self.cascade.close()
            except Exception:
                log.exception("closing the cascade failed")
        if self.end_reason != "failed":
            self._emit_state("ended" if self.end_reason == "ended" else "stopped", self.end_reason)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", " ") or type(exc).__name__
    return text if len(text) < 400 else text[:397] + "..."

