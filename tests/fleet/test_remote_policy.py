"""Circuit breaker, request coalescing and the cascade's remote fallback, without a server (fake clock, real threads
synchronised by events, never by sleeping)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from edgeconf.backends.base import Runner, TensorSpec
from edgeconf.backends.remote import CircuitBreaker, Coalescer
from edgeconf.cascade import Cascade, Stage
from edgeconf.errors import ConfigError, RemoteStageError
from edgeconf.memo import MemoCache
from edgeconf.preprocess import Preprocessing

from onnx_models import random_classifier, save


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_breaker_opens_after_failures_probes_and_closes():
    clock = FakeClock()
    b = CircuitBreaker(failures=3, cooldown_s=5.0, max_cooldown_s=12.0, clock=clock)
    for _ in range(2):
        assert b.allow()
        b.record(False)
    assert b.state == "closed"
    assert b.allow()
    b.record(False)
    assert b.state == "open" and not b.allow() and b.blocked()
    clock.t = 5.0
    assert not b.blocked() and b.allow()  # the probe
    assert not b.allow()  # only one probe at a time
    b.record(False)  # probe failed: open again, twice as long
    assert b.state == "open" and b.cooldown_s == 10.0
    clock.t = 14.9
    assert not b.allow()
    clock.t = 15.0
    assert b.allow()
    b.record(False)
    assert b.cooldown_s == 12.0  # capped
    clock.t = 27.0
    assert b.allow()
    b.record(True)
    assert b.state == "closed" and b.consecutive == 0 and b.cooldown_s == 5.0 and b.opened == 3 and b.probes == 3


def test_breaker_rejects_bad_settings():
    with pytest.raises(ConfigError):
        CircuitBreaker(failures=0)
    with pytest.raises(ConfigError):
        CircuitBreaker(cooldown_s=10, max_cooldown_s=5)


def test_coalescer_merges_inputs_that_arrive_while_a_request_is_in_flight():
    sent = []
    first_in = threading.Event()
    release = threading.Event()

    def send(x, deadline):
        sent.append(x.copy())
        if len(sent) == 1:
            first_in.set()
            release.wait(30)
        return {"y": x[:, :1] * 10}

    co = Coalescer(send)
    results = {}

    def call(name, x):
        results[name] = co.submit(x, deadline=float("inf"))["y"]

    a = threading.Thread(target=call, args=("a", np.full((1, 2), 1.0)))
    a.start()
    assert first_in.wait(30)
    b = threading.Thread(target=call, args=("b", np.full((2, 2), 2.0)))
    c = threading.Thread(target=call, args=("c", np.full((1, 2), 3.0)))
    b.start()
    c.start()
    while True:  # both queued behind the request in flight (a condition, not a duration)
        with co._cond:
            if len(co._queue) == 2:
                break
        threading.Event().wait(0.001)
    release.set()
    for t in (a, b, c):
        t.join(30)
    assert [s.shape[0] for s in sent] == [1, 3]  # b and c went in one request
    np.testing.assert_array_equal(results["a"], [[10.0]])
    np.testing.assert_array_equal(results["b"], [[20.0], [20.0]])
    np.testing.assert_array_equal(results["c"], [[30.0]])
    assert co.requests == 2 and co.merged == 1


def test_coalescer_follower_times_out_at_its_own_deadline():
    clock = FakeClock()
    gate = threading.Event()
    inflight = threading.Event()

    def send(x, deadline):
        inflight.set()
        gate.wait(30)
        return {"y": x}

    co = Coalescer(send, clock=clock)
    t = threading.Thread(target=lambda: co.submit(np.zeros((1, 1)), float("inf")))
    t.start()
    assert inflight.wait(30)
    clock.t = 10.0
    with pytest.raises(RemoteStageError) as err:
        co.submit(np.zeros((1, 1)), deadline=5.0)  # already past: no waiting
    assert err.value.reason == "timeout" and err.value.queued
    assert err.value.sent is False  # the server never saw it: not counted as sent
    gate.set()
    t.join(30)
    assert co._queue == []


def test_coalescer_passes_errors_to_every_caller():
    def send(x, deadline):
        raise RemoteStageError("down", "unavailable")

    co = Coalescer(send)
    with pytest.raises(RemoteStageError, match="down"):
        co.submit(np.zeros((1, 1)), float("inf"))

    def broken(x, deadline):
        raise KeyError("bug")

    with pytest.raises(RemoteStageError, match="KeyError") as err:
        Coalescer(broken).submit(np.zeros((1, 1)), float("inf"))
    assert err.value.reason == "error"


class FailingRemote(Runner):
    """A remote runner whose server never answers (the cascade's fallback branch without a network)."""

    backend = "test-remote"
    remote = True

    def __init__(self) -> None:
        self.inputs = (TensorSpec("input", (None, 1, 28, 28), "float32"),)
        self.outputs = (TensorSpec("logits", (None, 10), "float32"),)
        self.calls = 0

    def run_trusted(self, feeds, output_names):
        self.calls += 1
        raise RemoteStageError("server down", "unavailable")


@pytest.fixture
def fallback_cascade(tmp_path):
    from edgeconf.backends import prepare

    first = prepare(save(random_classifier(1, scale=0.2), tmp_path / "a.onnx"))
    stages = [Stage("small", first, "margin", 1.0), Stage("remote", FailingRemote(), "margin", 0.0)]
    return Cascade(stages, labels=["c%d" % i for i in range(10)], preprocessing=Preprocessing(size=(28, 28), channels=1),
                   memo=MemoCache(64, "exact"))


def test_cascade_keeps_the_local_answer_when_the_remote_stage_fails(fallback_cascade):
    casc = fallback_cascade
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(5)]
    local = casc.stages[0].runner.run(casc.preprocessing.batch(imgs))["logits"].argmax(1)
    batch = casc.classify_batch(imgs)
    one = casc.classify(imgs[0])
    assert [r.class_id for r in batch] == list(local) and one.class_id == local[0]
    assert all(r.stage == 0 and r.remote_failure == "unavailable" for r in batch + [one])
    c = casc.counters
    assert c.remote_inputs == 6 and c.remote_failures == 6 and c.remote_reasons == {"unavailable": 6}
    assert c.remote_sent == 6  # each went out (the server did not answer)
    # the remote stage was invoked for each: its wait is listed after the local stage's time, and the rows add up to
    # the counters (the batch's shares and the single call)
    assert all(r.stages_run == 1 and len(r.stage_seconds) == 2 and r.to_json()["stage_ms"][1] >= 0
               for r in batch + [one])
    assert sum(r.stage_seconds[1] for r in batch + [one]) == pytest.approx(c.stage_seconds[1], rel=1e-9, abs=1e-12)
    assert c.exits == [6, 0] and c.calls == [6, 6]
    assert len(casc.memo) == 0  # never remembered: the next call asks the server again
    casc.classify(imgs[0])
    assert casc.stages[1].runner.calls == 3
    assert c.to_json()["remote_failures"] == 7


class BreakerRemote(FailingRemote):
    """A server that never answers, behind a real circuit breaker: once open, inputs are answered here unsent."""

    def __init__(self, clock) -> None:
        super().__init__()
        self.breaker = CircuitBreaker(failures=2, cooldown_s=30.0, clock=clock)

    def run_trusted(self, feeds, output_names):
        if not self.breaker.allow():
            raise RemoteStageError("circuit breaker open; not calling it", "circuit_open")
        self.calls += 1
        self.breaker.record(False)
        raise RemoteStageError("server down", "unavailable")


def test_inputs_the_open_breaker_answered_here_are_not_counted_as_sent(tmp_path):
    from edgeconf.backends import prepare
    from edgeconf.backends.remote import reach_text

    assert RemoteStageError("x", "circuit_open").sent is False and RemoteStageError("x", "timeout").sent is True
    first = prepare(save(random_classifier(1, scale=0.2), tmp_path / "a.onnx"))
    remote = BreakerRemote(FakeClock())
    casc = Cascade([Stage("small", first, "margin", 1.0), Stage("remote", remote, "margin", 0.0)],
                   preprocessing=Preprocessing(size=(28, 28), channels=1))
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(12)]
    casc.classify_batch(imgs[:3])  # sent, fails
    casc.classify(imgs[3])  # sent, fails: the breaker opens
    casc.classify_batch(imgs[4:10])  # answered here, not sent
    casc.classify(imgs[10])  # answered here, not sent
    c = casc.counters
    assert remote.calls == 2
    assert c.remote_inputs == 11 and c.remote_sent == 4 and c.remote_failures == 11
    assert c.remote_reasons == {"unavailable": 4, "circuit_open": 7}
    assert c.to_json()["remote_sent"] == 4
    assert reach_text(c.remote_inputs, c.remote_sent, c.remote_reasons) == (
        "11 inputs reached the remote stage: 4 sent, 7 answered here while the circuit breaker was open")
    assert reach_text(5, 2, {"circuit_open": 1, "timeout": 4}, "crops") == (
        "5 crops reached the remote stage: 2 sent, 1 answered here while the circuit breaker was open, 2 answered "
        "here when their deadline passed while queued behind a request in flight")


def test_remote_first_stage_error_is_not_swallowed(tmp_path):
    stages = [Stage("remote", FailingRemote(), "margin", 0.0)]
    casc = Cascade(stages, preprocessing=Preprocessing(size=(28, 28), channels=1))
    with pytest.raises(RemoteStageError):
        casc.classify(np.zeros((28, 28), np.uint8))
