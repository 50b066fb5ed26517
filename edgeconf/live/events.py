"""A JSON-lines event log that loses nothing: flushed at least every second and on SIGINT/SIGTERM.

The log is a live file, readable while the run goes (``tail -f``), so it is not written atomically like the
other outputs: each run starts it anew (an earlier file at that path is replaced, never appended to), and a run
that crashes leaves every event up to its last flush.

Writers append whole lines under a lock; a background thread flushes the file every ``flush_s``
seconds, and :meth:`close` flushes and fsyncs. Signal handlers never write themselves (a handler
may run while the lock is held); :func:`install_stop_signals` makes SIGINT/SIGTERM only set a stop
flag, so the loop ends its frame and the ``finally`` blocks close the log and the recording.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from edgeconf.atomic import describe_os_error
from edgeconf.errors import ConfigError, OutputError
from edgeconf.pathcheck import refuse_missing_folder


def json_default(obj: Any) -> Any:
    """JSON for numpy scalars/arrays and small dataclasses (``json.dumps(..., default=json_default)``)."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "to_json"):
        return obj.to_json()
    if hasattr(obj, "value"):
        return obj.value
    return str(obj)


def emit_frame(events: Any, res: Any, reported_failures: int) -> int:
    """The events of one pipeline frame result, as ``demo``, ``run`` and the GUI write them: ``frame``, ``error``
    when it has one, and ``remote_failure`` when remote calls failed since the last one reported. Returns the
    remote failures reported so far (pass it back in with the next frame)."""
    events.emit("frame", **res.to_json())
    if res.error:
        events.emit("error", frame=res.frame_index, message=res.error)
    failed = res.counters.remote_failures
    if failed > reported_failures:
        c = res.counters  # reached: crops that came to the remote stage; calls: of those, sent to its server
        events.emit("remote_failure", frame=res.frame_index, inputs=failed - reported_failures, total=failed,
                    reached=c.remote_inputs, calls=c.remote_calls, reasons=dict(c.remote_reasons))
        return failed
    return reported_failures


def run_summary(pipeline: Any, wall_s: float, cpu: Dict[str, float], interrupted: bool, signal_name: Optional[str],
                power_note: str) -> Dict[str, Any]:
    """The ``summary`` of a live run (``demo``, ``run``, the GUI): only numbers the run measured; power is
    ``power_note`` (e.g. "not measured") without a sensor reading."""
    counters = pipeline.counters
    frames = int(counters.frames)
    return {"frames": frames, "wall_s": round(wall_s, 3), "fps": round(frames / wall_s, 2) if wall_s > 0 else None,
            "cpu": cpu, "interrupted": interrupted, "signal": signal_name, "counters": counters.to_json(),
            "latency_ms": {k: (None if v is None else round(v, 3)) for k, v in pipeline.latency_percentiles().items()},
            "source_state": getattr(pipeline.source_state, "value", str(pipeline.source_state)),
            "source_detail": getattr(pipeline.source, "detail", "") or "",
            "source_corrupt": int(getattr(pipeline.source, "frames_corrupt", 0) or 0),  # frames/images skipped
            "power": power_note if counters.power_w is None else "%.2f W" % counters.power_w}


def check_log_path(path: str) -> None:
    """Refuse, in one line (OutputError), an event log path that cannot be written: a missing folder, a folder
    in the way, no write permission. Checked without creating anything (the GUI checks before its window opens)."""
    folder = os.path.dirname(os.path.abspath(path))
    refuse_missing_folder(path, "cannot write the event log %s" % path)
    if os.path.isdir(path):
        raise OutputError("cannot write the event log %s: it is a folder; give a file name" % path)
    if not os.access(folder if not os.path.exists(path) else path, os.W_OK):
        raise OutputError("cannot write the event log %s: permission denied; choose a folder you can write to" % path)


class EventLog:
    """A new JSON-lines file (an earlier one at ``path`` is truncated, so one file holds one run);
    ``emit(type, **fields)`` writes one line with a wall-clock time."""

    def __init__(self, path: str, flush_s: float = 0.5) -> None:
        if flush_s <= 0 or flush_s > 1.0:
            raise ConfigError("event log flush interval must be in (0, 1] seconds, got %r" % flush_s)
        check_log_path(path)
        try:
            self._f = open(path, "w", encoding="utf-8")
        except OSError as exc:
            raise OutputError(describe_os_error(path, exc, "write the event log")) from None
        self.path = path
        #: the first write error (disk full, file gone); the run goes on, and :meth:`close` reports it
        self.error: Optional[str] = None
        self.flush_s = float(flush_s)
        self.lines = 0
        self._lock = threading.Lock()
        self._closed = False
        self._dirty = False
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._flusher, name="edgeconf-events-flush", daemon=True)
        self._thread.start()

    def emit(self, type: str, **fields: Any) -> None:
        """Write one event line (``{"type": ..., "time": unix seconds, ...fields}``)."""
        rec: Dict[str, Any] = {"type": type, "time": round(time.time(), 6)}
        rec.update(fields)
        line = json.dumps(rec, default=json_default, separators=(",", ":")) + "\n"
        with self._lock:
            if self._closed:
                return
            try:
                self._f.write(line)
            except OSError as exc:  # a full buffer flushed onto a full disk: reported at close
                self.error = self.error or describe_os_error(self.path, exc, "write the event log")
            self.lines += 1
            self._dirty = True

    def flush(self) -> None:
        with self._lock:
            if self._closed or not self._dirty:
                return
            try:
                self._f.flush()
            except OSError as exc:  # disk full or file gone: keep the pipeline alive, report it at close
                self.error = self.error or describe_os_error(self.path, exc, "write the event log")
            self._dirty = False

    def _flusher(self) -> None:
        while not self._wake.wait(self.flush_s):
            try:
                self.flush()
            except ValueError:  # closed under us
                pass

    def close(self) -> None:
        """Flush, fsync and close (idempotent)."""
        self._wake.set()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._f.flush()
                os.fsync(self._f.fileno())
            except OSError as exc:
                self.error = self.error or describe_os_error(self.path, exc, "write the event log")
            try:
                self._f.close()
            except OSError as exc:
                self.error = self.error or describe_os_error(self.path, exc, "write the event log")
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=2.0)
        if self.error:
            raise OutputError("%s; the log is incomplete (%d events were emitted)" % (self.error, self.lines))

    def __enter__(self) -> "EventLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StopSignals:
    """SIGINT/SIGTERM set ``event`` (and run ``on_signal``); a second SIGINT, ``insist_after_s`` seconds or more
    after the first, raises KeyboardInterrupt (the user insists). One that comes sooner is the same interrupt
    delivered twice (``timeout -s INT`` signals the process and then its group) and is ignored.

    Restores the previous handlers on :meth:`restore`. Only the main thread can install handlers;
    elsewhere this does nothing (the caller's own stop event still works). ``clock``: seconds, monotonic
    (injectable for tests).
    """

    def __init__(self, event: threading.Event, on_signal: Optional[Callable[[int], None]] = None,
                 insist_after_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.event = event
        self.on_signal = on_signal
        self.insist_after_s = float(insist_after_s)
        self.clock = clock
        self.received: List[int] = []
        self._first_at: Optional[float] = None
        self._old: Dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except (ValueError, OSError):
                pass

    def _handle(self, signum: int, frame: Any) -> None:
        now = self.clock()
        self.received.append(signum)
        if self._first_at is None:
            self._first_at = now
        elif self.event.is_set() and signum == signal.SIGINT:
            if now - self._first_at >= self.insist_after_s:
                raise KeyboardInterrupt  # the user insists; finally blocks still close files
            return  # the first interrupt again: the run is already ending
        self.event.set()
        if self.on_signal is not None:
            self.on_signal(signum)

    def restore(self) -> None:
        for sig, old in self._old.items():
            try:
                signal.signal(sig, old)
            except (ValueError, OSError):
                pass
        self._old = {}

    def __enter__(self) -> "StopSignals":
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


def install_stop_signals(event: threading.Event, on_signal: Optional[Callable[[int], None]] = None) -> StopSignals:
    """:class:`StopSignals` for ``event`` (use it as a context manager)."""
    return StopSignals(event, on_signal)
