"""Policies of a remote stage, independent of the serving protocol: a circuit breaker and a request coalescer.

:class:`CircuitBreaker` stops calling a server after repeated failures and lets one probe through after a
cool-down. :class:`Coalescer` merges the inputs of callers that arrive while a request is in flight into the
next request (one request at a time per connection, so an idle server adds no waiting and a busy one gets
larger batches); every caller waits at most until its own deadline. Both take a ``clock`` so tests drive
them without sleeping.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Dict, List, Mapping, Optional

import numpy as np

from edgeconf.errors import ConfigError, RemoteStageError

Clock = Callable[[], float]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


def reach_text(reached: int, sent: int, reasons: Mapping[str, int], noun: str = "inputs") -> str:
    """``66 inputs reached the remote stage: 3 sent, 63 answered here while the circuit breaker was open``.

    ``reached`` counts what came to a remote stage, ``sent`` what went out to its server in a request; the rest was
    answered on this board without a request: the breaker was open (``reasons['circuit_open']``), or the deadline
    passed while the inputs waited behind a request in flight.
    """
    return "%d %s reached the remote stage: %s" % (reached, noun, ", ".join(reach_parts(reached, sent, reasons)))


def reach_parts(reached: int, sent: int, reasons: Mapping[str, int]) -> List[str]:
    """``["3 sent", "63 answered here while the circuit breaker was open"]``: what became of the ``reached`` inputs."""
    parts = ["%d sent" % sent]
    breaker = int(reasons.get("circuit_open", 0))
    queued = reached - sent - breaker
    if breaker:
        parts.append("%d answered here while the circuit breaker was open" % breaker)
    if queued > 0:
        parts.append("%d answered here when their deadline passed while queued behind a request in flight" % queued)
    return parts


class CircuitBreaker:
    """Closed → (``failures`` failures in a row) → open for ``cooldown_s`` → half-open: one probe request.

    A probe that succeeds closes the breaker; one that fails opens it again for twice the previous
    cool-down, at most ``max_cooldown_s``. ``allow()`` says whether a request may go out now.
    """

    def __init__(self, failures: int = 3, cooldown_s: float = 5.0, max_cooldown_s: float = 60.0,
                 clock: Clock = time.monotonic) -> None:
        if failures < 1:
            raise ConfigError("circuit breaker: failures must be >= 1, got %r" % (failures,))
        if not cooldown_s > 0 or max_cooldown_s < cooldown_s:
            raise ConfigError("circuit breaker: need 0 < cooldown_s <= max_cooldown_s, got %r, %r" % (cooldown_s, max_cooldown_s))
        self.failures = int(failures)
        self.base_cooldown_s = float(cooldown_s)
        self.max_cooldown_s = float(max_cooldown_s)
        self.clock = clock
        self.state = CLOSED
        self.consecutive = 0
        self.cooldown_s = self.base_cooldown_s
        self.open_until = 0.0
        self.opened = 0  # times the breaker opened
        self.probes = 0
        self._probe_out = False
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """True when a request may go out; in half-open state only the single probe is allowed."""
        with self._lock:
            if self.state == CLOSED:
                return True
            if self.state == OPEN:
                if self.clock() < self.open_until:
                    return False
                self.state = HALF_OPEN
                self._probe_out = False
            if self._probe_out:
                return False
            self._probe_out = True
            self.probes += 1
            return True

    def blocked(self) -> bool:
        """Open and still cooling down (a cheap check that takes no probe slot)."""
        with self._lock:
            return self.state == OPEN and self.clock() < self.open_until

    def record(self, ok: bool) -> None:
        with self._lock:
            if ok:
                self.state = CLOSED
                self.consecutive = 0
                self.cooldown_s = self.base_cooldown_s
                self._probe_out = False
                return
            self.consecutive += 1
            if self.state == HALF_OPEN:
                self.cooldown_s = min(self.max_cooldown_s, self.cooldown_s * 2.0)
                self._open()
            elif self.state == CLOSED and self.consecutive >= self.failures:
                self._open()

    def _open(self) -> None:
        self.state = OPEN
        self.open_until = self.clock() + self.cooldown_s
        self._probe_out = False
        self.opened += 1

    def to_json(self) -> Dict[str, object]:
        return {"state": self.state, "consecutive_failures": self.consecutive, "opened": self.opened,
                "probes": self.probes, "cooldown_s": self.cooldown_s}


class _Pending:
    __slots__ = ("x", "deadline", "done", "result", "error")

    def __init__(self, x: np.ndarray, deadline: float) -> None:
        self.x = x
        self.deadline = deadline
        self.done = False
        self.result: Optional[Dict[str, np.ndarray]] = None
        self.error: Optional[RemoteStageError] = None


#: send(batch, deadline) -> name -> output (rows in batch order); raises RemoteStageError
SendFn = Callable[[np.ndarray, float], Dict[str, np.ndarray]]


class Coalescer:
    """One request in flight at a time; inputs that arrive meanwhile go together in the next one.

    ``submit(x, deadline)`` returns this caller's rows of the output. The caller that finds no request in
    flight becomes the leader: it takes every queued input (up to ``max_batch`` rows, 0 = no limit), sends
    them as one batch with the earliest of their deadlines, and hands each caller its rows. Followers wait
    on a condition until their rows arrive or their own deadline passes (then they get a ``timeout``).
    """

    def __init__(self, send: SendFn, max_batch: int = 0, clock: Clock = time.monotonic) -> None:
        self.send = send
        self.max_batch = int(max_batch)
        self.clock = clock
        self._queue: List[_Pending] = []
        self._busy = False
        self._cond = threading.Condition()
        self.requests = 0  # requests sent
        self.merged = 0  # requests that carried the inputs of more than one caller

    def submit(self, x: np.ndarray, deadline: float) -> Dict[str, np.ndarray]:
        me = _Pending(x, deadline)
        with self._cond:
            self._queue.append(me)
            while not me.done and self._busy:
                left = me.deadline - self.clock()
                if left <= 0:
                    if me in self._queue:
                        self._queue.remove(me)
                    err = RemoteStageError("no answer within the deadline (queued behind a request in flight)", "timeout",
                                           sent=False)
                    err.queued = True  # type: ignore[attr-defined]
                    raise err
                self._cond.wait(min(left, 3600.0))
            if not me.done:
                self._busy = True
                batch = self._take()
        if not me.done:
            self._lead(batch)
        if me.error is not None:
            raise me.error
        assert me.result is not None
        return me.result

    def _take(self) -> List[_Pending]:
        taken: List[_Pending] = []
        rows = 0
        while self._queue:
            nxt = self._queue[0]
            if taken and self.max_batch and rows + nxt.x.shape[0] > self.max_batch:
                break
            taken.append(self._queue.pop(0))
            rows += nxt.x.shape[0]
        return taken

    def _lead(self, batch: List[_Pending]) -> None:
        try:
            x = batch[0].x if len(batch) == 1 else np.concatenate([p.x for p in batch])
            self.requests += 1
            self.merged += int(len(batch) > 1)
            try:
                out = self.send(x, min(p.deadline for p in batch))
                start = 0
                for p in batch:
                    n = p.x.shape[0]
                    p.result = {k: v[start:start + n] for k, v in out.items()}
                    start += n
            except RemoteStageError as exc:
                for p in batch:
                    p.error = exc
            except Exception as exc:  # a client library bug must not hang the followers
                err = RemoteStageError("remote request failed: %s: %s" % (type(exc).__name__, exc), "error")
                for p in batch:
                    p.error = err
        finally:
            with self._cond:
                for p in batch:
                    p.done = True
                self._busy = False
                self._cond.notify_all()
