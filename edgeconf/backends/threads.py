"""ONNX Runtime threading: the one place that decides the session options of every ONNX Runtime session.

Small classifiers at batch 1 run fastest and cheapest on **one intra-op thread with spinning off**: a thread
pool costs more to wake and synchronise than the work it shares out, and ONNX Runtime's default pool spins
between calls (measured here: 2.4–4× the CPU and 2.5–4× the wall time of one thread). Batches have more
work to share; a device profile may ask for more threads for them (``[threads]`` in its TOML file). A user
override (``--threads N``, ``load_bundle(threads=N)``) wins over both.

Every runner, the exporter's sessions included, builds its ``SessionOptions`` with :meth:`Threads.session_options`.
"""
from __future__ import annotations

import functools
import numbers
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Optional, Union

from edgeconf.errors import ConfigError

if TYPE_CHECKING:
    from edgeconf.devices.profiles import DeviceProfile

#: Inputs per call from which work counts as a batch (and a profile's ``batched`` thread count applies).
BATCHED_FROM = 32
#: Most intra-op threads a user may ask for. ONNX Runtime starts every thread of a session's pool at once, each
#: with its own stack, per model: a mistyped count (10**6) exhausted memory or crashed the process instead of
#: failing. 256 is above every board's core count (Jetson AGX Orin: 12; the largest servers: 256 and fewer),
#: and a fixed number, so a command that works on one machine works on another.
MAX_THREADS = 256


@dataclass(frozen=True)
class Threads:
    """The threading of one ONNX Runtime session, and why it was chosen."""

    intra_op: int = 1
    inter_op: int = 1
    spinning: bool = False
    sequential: bool = True
    reason: str = "default"

    def describe(self) -> str:
        return "%d intra-op thread%s, spinning %s, %s (%s)" % (
            self.intra_op, "" if self.intra_op == 1 else "s", "on" if self.spinning else "off",
            "sequential" if self.sequential else "parallel, %d inter-op threads" % self.inter_op, self.reason)

    def to_json(self) -> Dict[str, Any]:
        return {"intra_op": self.intra_op, "inter_op": self.inter_op, "spinning": self.spinning,
                "sequential": self.sequential, "reason": self.reason}

    def session_options(self, ort: Any = None) -> Any:
        """An ``onnxruntime.SessionOptions`` with these threads (and ORT's log level at errors only)."""
        if ort is None:
            import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.intra_op
        opts.inter_op_num_threads = self.inter_op
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL if self.sequential else ort.ExecutionMode.ORT_PARALLEL
        spin = "1" if self.spinning else "0"
        opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
        opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
        opts.log_severity_level = 3
        return opts


def check_threads(value: Any, what: str = "threads") -> int:
    """A user's thread count as an int in [1, :data:`MAX_THREADS`], or a one-line :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError("%s must be a whole number >= 1, got %r" % (what, value))
    if value < 1:
        raise ConfigError("%s must be >= 1, got %d; leave it out to let edgeconf choose (1 thread for batch-1 work)"
                          % (what, value))
    if value > MAX_THREADS:
        raise ConfigError("%s must be at most %d, got %d: ONNX Runtime starts every thread of each model's pool at "
                          "once, and more threads than cores only cost memory and wake-ups; leave it out to let "
                          "edgeconf choose (1 thread for batch-1 work)" % (what, MAX_THREADS, value))
    return int(value)


def check_batch(value: Any, what: str = "batch") -> int:
    """The inputs per call a user expects, as an int >= 1, or a one-line :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError("%s must be a whole number of inputs per call >= 1 (1: one input at a time), got %r"
                          % (what, value))
    return int(value)


@functools.lru_cache(maxsize=1)
def detected_profile() -> Optional["DeviceProfile"]:
    """The profile of the board this process runs on (detected once; None if detection fails)."""
    try:
        from edgeconf.devices.detect import detect_board
        from edgeconf.devices.profiles import profile_for

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an unknown board gets a generic profile; `edgeconf devices` says so
            return profile_for(detect_board())
    except Exception:  # threading must never fail because a board cannot be identified
        return None


def choose_threads(threads: Union[None, int, Threads] = None, batch: int = 1,
                   profile: Optional["DeviceProfile"] = None, detect: bool = True) -> Threads:
    """The threading for work of ``batch`` inputs per call: the user's ``threads``, else the profile's, else 1.

    ``profile`` defaults to the detected board's (``detect=False`` skips detection: built-in defaults only).
    """
    if isinstance(threads, Threads):
        return threads
    if threads is not None:
        n = check_threads(threads)
        return Threads(n, 1, False, True, "--threads %d" % n)
    if profile is None and detect:
        profile = detected_profile()
    batched = batch >= BATCHED_FROM
    hints = getattr(profile, "threads", None)
    if hints is not None:
        n = hints.batched if batched else hints.batch1
        return Threads(n, 1, hints.spinning, True, "profile %s, %s" % (profile.id, "batched" if batched else "batch 1"))
    return Threads(1, 1, False, True, "default for %s" % ("batches" if batched else "batch 1"))
