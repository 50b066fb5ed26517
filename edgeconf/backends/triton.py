"""Triton backend: a cascade stage served by NVIDIA Triton Inference Server (KServe v2 protocol, ``tritonclient``).

A remote stage never holds an answer up for long and never loses one. Each request has a deadline
(:data:`DEFAULT_DEADLINE_MS` unless the stage says otherwise) that covers every attempt; failures that can
pass (server unreachable or restarting) are retried at most ``retries`` times while the deadline allows.
When no answer comes, :meth:`TritonRunner.run_trusted` raises :class:`~edgeconf.errors.RemoteStageError`
and the cascade keeps the last local stage's answer, marked as a remote failure. After ``breaker_failures``
failed requests in a row a circuit breaker stops calling the server for ``breaker_cooldown_s`` (doubling
while probes fail), then lets one probe request through. Inputs of callers that arrive while a request is
in flight go together in the next request (see :class:`~edgeconf.backends.remote.Coalescer`).

At load the server's model metadata is checked against the stage: one input of the preprocessed image's
shape and dtype, a ``logits`` output with the bundle's class count, and a batch axis.
"""
from __future__ import annotations

import collections
import ipaddress
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgeconf.backends.base import Runner, TensorSpec
from edgeconf.backends.remote import CircuitBreaker, Clock, Coalescer
from edgeconf.errors import BackendUnavailableError, ConfigError, ModelLoadError, RemoteStageError
from edgeconf.schema.netloc import port_problem
from edgeconf.lazy import install_hint, require

#: Deadline of one remote request (all its attempts), in milliseconds, when the stage does not set one.
DEFAULT_DEADLINE_MS = 50.0
DEFAULT_RETRIES = 1
DEFAULT_BREAKER_FAILURES = 3
DEFAULT_BREAKER_COOLDOWN_S = 5.0
#: Time allowed for the checks at load (server live, model metadata and config).
DEFAULT_CONNECT_TIMEOUT_S = 5.0
SCHEMES = {"grpc": 8001, "http": 8000}
RETRYABLE = ("unavailable",)

#: KServe v2 data types -> numpy dtype names
V2_DTYPES = {"FP32": "float32", "FP16": "float16", "FP64": "float64", "INT64": "int64", "INT32": "int32",
             "INT8": "int8", "UINT8": "uint8", "BOOL": "bool"}
NUMPY_TO_V2 = {v: k for k, v in V2_DTYPES.items()}


@dataclass(frozen=True)
class RemoteSettings:
    """How a remote stage behaves when the server is slow or away (bundle keys of the same names)."""

    deadline_ms: float = DEFAULT_DEADLINE_MS
    retries: int = DEFAULT_RETRIES
    breaker_failures: int = DEFAULT_BREAKER_FAILURES
    breaker_cooldown_s: float = DEFAULT_BREAKER_COOLDOWN_S
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S

    def __post_init__(self) -> None:
        if not self.deadline_ms > 0:
            raise ConfigError("remote stage: deadline_ms must be > 0, got %r" % (self.deadline_ms,))
        if not 0 <= int(self.retries) <= 10:
            raise ConfigError("remote stage: retries must be in 0..10, got %r" % (self.retries,))
        if not self.connect_timeout_s > 0:
            raise ConfigError("remote stage: connect_timeout_s must be > 0, got %r" % (self.connect_timeout_s,))


@dataclass(frozen=True)
class Expectation:
    """What the cascade needs of the served model: per-sample input shape and dtype, logits and class count."""

    input_shape: Tuple[int, ...]
    dtype: str = "float32"
    classes: Optional[int] = None
    logits: str = "logits"


#: one label of a host name (RFC 1123; underscores are let through, some private networks use them)
_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")


def _check_host(url: str, host: str) -> None:
    """A host name or an IPv4 address (a bracketed IPv6 address is checked by the caller)."""
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise ConfigError("remote stage url %r: host %r is not a host name or an IP address (an IPv6 address goes "
                          "in brackets: grpc://[::1]:8001)" % (url, host))


def parse_url(url: str) -> Tuple[str, str]:
    """``grpc://host:port`` or ``http://host:port`` -> (protocol, "host:port"); the port defaults per protocol.

    The host is a host name, an IPv4 address or a bracketed IPv6 address, the port a number in 1..65535: anything
    else is a one-line :class:`~edgeconf.errors.ConfigError` here, before any client is built from it.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError("remote stage url %r must look like grpc://HOST:8001 or http://HOST:8000" % (url,))
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigError("remote stage url %r: scheme %r is not supported; use grpc:// or http://" % (url, scheme))
    host = rest.split("/", 1)[0]
    if not host or host.startswith(":"):
        raise ConfigError("remote stage url %r names no host; use e.g. %s://127.0.0.1:%d" % (url, scheme, SCHEMES[scheme]))
    if host.startswith("["):  # [v6]:port
        addr, closed, after = host[1:].partition("]")
        if not closed or (after and not after.startswith(":")):
            raise ConfigError("remote stage url %r: %r is not [IPv6 address]:PORT; use e.g. %s://[::1]:%d"
                              % (url, host, scheme, SCHEMES[scheme]))
        try:
            ipaddress.IPv6Address(addr)
        except ValueError:
            raise ConfigError("remote stage url %r: [%s] is not an IPv6 address; use e.g. %s://[::1]:%d"
                              % (url, addr, scheme, SCHEMES[scheme])) from None
        port = after[1:]
        addr = "[%s]" % addr
    else:
        addr, _, port = host.partition(":")
        _check_host(url, addr)
    problem = port_problem(port)
    if problem:
        number = port.isascii() and port.isdigit()
        raise ConfigError("remote stage url %r: %s%s" % (url, problem, " (Triton listens on %d for %s by default)"
                                                         % (SCHEMES[scheme], scheme) if number else ""))
    return scheme, "%s:%s" % (addr, int(port) if port else SCHEMES[scheme])


def available() -> Tuple[bool, str]:
    try:
        import tritonclient  # noqa: F401
    except ImportError:
        return False, "tritonclient is not installed: %s" % install_hint("tritonclient")
    from importlib.metadata import version

    return True, "tritonclient %s (grpc://, http://)" % version("tritonclient")


class RemoteStats:
    """Requests, inputs and failures of one remote stage, and the latency of the answered requests."""

    def __init__(self, keep: int = 4096) -> None:
        self.requests = 0
        self.attempts = 0
        self.inputs = 0
        self.answered = 0
        self.failed_inputs = 0
        self.failures: Dict[str, int] = collections.Counter()  # reason -> failed requests
        self.latency_ms: Deque[float] = collections.deque(maxlen=keep)
        self._lock = threading.Lock()

    def ok(self, n: int, ms: float) -> None:
        with self._lock:
            self.requests += 1
            self.inputs += n
            self.answered += n
            self.latency_ms.append(ms)

    def failed(self, n: int, reason: str) -> None:
        with self._lock:
            self.requests += 1
            self.inputs += n
            self.failed_inputs += n
            self.failures[reason] += 1

    def to_json(self) -> Dict[str, Any]:
        with self._lock:
            lat = np.asarray(self.latency_ms, dtype=np.float64)
            return {"requests": self.requests, "attempts": self.attempts, "inputs": self.inputs,
                    "answered": self.answered, "failed_inputs": self.failed_inputs, "failures": dict(self.failures),
                    "latency_ms_p50": round(float(np.percentile(lat, 50)), 3) if lat.size else None,
                    "latency_ms_p95": round(float(np.percentile(lat, 95)), 3) if lat.size else None}


def _reason(exc: BaseException) -> str:
    """Map a client exception to a failure reason."""
    status = ""
    status_fn = getattr(exc, "status", None)
    if callable(status_fn):
        try:
            status = str(status_fn() or "")
        except Exception:
            status = ""
    text = ("%s %s" % (status, exc)).lower()
    if "deadline" in text or "timeout" in text or "timed out" in text or isinstance(exc, TimeoutError):
        return "timeout"
    if ("unavailable" in text or "connect" in text or "refused" in text or "reset by peer" in text
            or isinstance(exc, (ConnectionError, OSError))):
        return "unavailable"
    return "error"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:240]


class TritonRunner(Runner):
    """One model on a Triton server, behind a deadline, bounded retries and a circuit breaker."""

    backend = "triton"
    remote = True

    def __init__(self, url: str, model: str, version: str = "", settings: Optional[RemoteSettings] = None,
                 expect: Optional[Expectation] = None, clock: Clock = time.monotonic,
                 breaker_clock: Optional[Clock] = None) -> None:
        if not isinstance(model, str) or not model:
            raise ConfigError("remote stage: 'model' must name the model on the Triton server, got %r" % (model,))
        self.protocol, self.address = parse_url(url)
        self.url = url
        self.model = model
        self.version = str(version or "")
        self.settings = settings or RemoteSettings()
        self.clock = clock
        self.deadline_s = self.settings.deadline_ms / 1e3
        self._module = require("tritonclient.%s" % self.protocol, "a Triton remote stage (%s)" % url)
        self._utils = require("tritonclient.utils", "a Triton remote stage")
        self._local = threading.local()  # HTTP clients are per thread (geventhttpclient is not thread-safe)
        self._grpc = self._new_grpc() if self.protocol == "grpc" else None
        self.metadata: Dict[str, str] = {}
        self.max_batch = 0
        self._load(expect)
        self.stats = RemoteStats()
        self.breaker = CircuitBreaker(self.settings.breaker_failures, self.settings.breaker_cooldown_s,
                                      clock=breaker_clock or clock)
        self._coalescers: Dict[Tuple[str, ...], Coalescer] = {}
        self._lock = threading.Lock()

    # -- clients ------------------------------------------------------------------------------------------
    def _new_grpc(self) -> Any:
        # short reconnect back-off: after a server restart the channel tries again within a second, not minutes
        args = [("grpc.max_send_message_length", 2 ** 31 - 1), ("grpc.max_receive_message_length", 2 ** 31 - 1),
                ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000)]
        try:
            return self._module.InferenceServerClient(self.address, channel_args=args)
        except Exception as exc:
            raise BackendUnavailableError("cannot create a gRPC client for %s: %s" % (self.url, _first_line(exc))) from None

    def _http(self, timeout_s: Optional[float] = None) -> Any:
        """This thread's HTTP client; with ``timeout_s`` a fresh one whose network timeout is that long."""
        if timeout_s is None:
            client = getattr(self._local, "client", None)
            if client is None:
                client = self._new_http(self.deadline_s)
                self._local.client = client
            return client
        return self._new_http(max(1e-3, timeout_s))

    def _new_http(self, timeout_s: float) -> Any:
        """An HTTP client; one whose constructor fails is a BackendUnavailableError, and leaves nothing to close.

        tritonclient's HTTP client closes itself in ``__del__``, which on an object whose ``__init__`` failed early
        prints an AttributeError traceback at garbage collection ("Exception ignored in ... '_closed'"). The object
        is made first and marked closed, so a failed ``__init__`` leaves one that ``__del__`` has nothing to do for.
        """
        cls = self._module.InferenceServerClient
        client = cls.__new__(cls)
        client._closed = True
        try:
            client.__init__(self.address, connection_timeout=timeout_s, network_timeout=timeout_s)
        except Exception as exc:
            raise BackendUnavailableError("cannot create an HTTP client for %s: %s; fix the stage's 'url'"
                                          % (self.url, _first_line(exc))) from None
        return client

    # -- load-time checks ---------------------------------------------------------------------------------
    def _load(self, expect: Optional[Expectation]) -> None:
        t = self.settings.connect_timeout_s
        where = "the Triton server at %s" % self.url
        http = self._http(t) if self._grpc is None else None  # a client that cannot be built says so itself
        try:
            if self._grpc is not None:
                live = self._grpc.is_server_live(client_timeout=t)
            else:
                live = http.is_server_live()
        except Exception as exc:
            raise BackendUnavailableError("cannot reach %s (%s); start the server or fix the stage's 'url'"
                                          % (where, _first_line(exc))) from None
        if not live:
            raise BackendUnavailableError("%s is not live; check the server's log" % where)
        try:
            if self._grpc is not None:
                meta = self._grpc.get_model_metadata(self.model, self.version, as_json=True, client_timeout=t)
                config = self._grpc.get_model_config(self.model, self.version, as_json=True, client_timeout=t)
                config = config.get("config", config)
            else:
                meta = http.get_model_metadata(self.model, self.version)
                config = http.get_model_config(self.model, self.version)
        except Exception as exc:
            reason = _reason(exc)
            if reason == "error":
                raise ModelLoadError("%s has no model %r%s (%s); serve it (see edgeconf triton-repo) or fix the "
                                     "stage's 'model'/'version'" % (where, self.model, " version %s" % self.version
                                                                      if self.version else "", _first_line(exc))) from None
            raise BackendUnavailableError("cannot read model %r from %s (%s)" % (self.model, where, _first_line(exc))) from None
        self.max_batch = int(config.get("max_batch_size", 0) or 0)
        self.inputs = tuple(self._spec(t, batched=self.max_batch > 0) for t in meta.get("inputs", []))
        self.outputs = tuple(self._spec(t, batched=self.max_batch > 0) for t in meta.get("outputs", []))
        self.metadata = {"triton.platform": str(meta.get("platform", "")),
                         "triton.versions": ",".join(str(v) for v in meta.get("versions", []))}
        self._check(expect)

    def _spec(self, t: Dict[str, Any], batched: bool) -> TensorSpec:
        # the metadata's shape already starts with -1 (the batch axis) when the model batches
        dims = [int(d) for d in t.get("shape", [])]
        shape = [d if d >= 0 else None for d in dims]
        return TensorSpec(str(t["name"]), tuple(shape), V2_DTYPES.get(str(t.get("datatype")), str(t.get("datatype"))))

    def _check(self, expect: Optional[Expectation]) -> None:
        name = "server model %r at %s" % (self.model, self.url)
        if len(self.inputs) != 1:
            raise ModelLoadError("%s has %d inputs; a cascade stage needs exactly one" % (name, len(self.inputs)))
        spec = self.inputs[0]
        if self.max_batch == 0 and not (spec.shape and spec.shape[0] is None):
            raise ModelLoadError("%s has no batch axis (max_batch_size 0 and input %s); serve it with max_batch_size "
                                 ">= 1 (edgeconf triton-repo writes that)" % (name, spec.describe()))
        if expect is None:
            return
        got = tuple(spec.shape[1:])
        want = tuple(expect.input_shape)
        if len(got) != len(want) or any(g is not None and g != w for g, w in zip(got, want)):
            raise ModelLoadError("%s takes input %s but this stage feeds [?,%s] %s; serve the stage's own model"
                                 % (name, spec.describe(), ",".join(str(d) for d in want), expect.dtype))
        if spec.dtype != expect.dtype:
            raise ModelLoadError("%s takes %s but this stage feeds %s; serve the stage's own model"
                                 % (name, spec.dtype, expect.dtype))
        outs = {s.name: s for s in self.outputs}
        if expect.logits not in outs:
            raise ModelLoadError("%s has no output %r (outputs: %s); fix the stage's 'logits'"
                                 % (name, expect.logits, ", ".join(sorted(outs)) or "none"))
        classes = outs[expect.logits].shape[-1] if outs[expect.logits].shape else None
        if expect.classes is not None and classes is not None and classes != expect.classes:
            raise ModelLoadError("%s answers %d classes but the bundle has %d labels; serve the stage's own model"
                                 % (name, classes, expect.classes))

    # -- running ------------------------------------------------------------------------------------------
    def run_trusted(self, feeds: Dict[str, np.ndarray], output_names: Optional[list]) -> Dict[str, np.ndarray]:
        x = feeds[self.inputs[0].name]
        names = tuple(output_names or [s.name for s in self.outputs])
        deadline = self.clock() + self.deadline_s
        if self.breaker.blocked():
            self.stats.failed(int(x.shape[0]), "circuit_open")
            raise RemoteStageError("circuit breaker open for %s (server failed %d times in a row); not calling it"
                                   % (self.url, self.breaker.consecutive), "circuit_open")
        with self._lock:
            co = self._coalescers.get(names)
            if co is None:
                co = self._coalescers[names] = Coalescer(lambda b, d: self._send(b, d, list(names)), clock=self.clock)
        try:
            return co.submit(np.ascontiguousarray(x), deadline)
        except RemoteStageError as exc:
            if getattr(exc, "queued", False):  # timed out in the queue: _send never saw these inputs
                self.stats.failed(int(x.shape[0]), "timeout")
            raise

    @property
    def requests_merged(self) -> int:
        return sum(c.merged for c in self._coalescers.values())

    def _send(self, x: np.ndarray, deadline: float, names: List[str]) -> Dict[str, np.ndarray]:
        """One request (split into chunks of the server's max batch): answers, or RemoteStageError."""
        n = int(x.shape[0])
        if not self.breaker.allow():
            self.stats.failed(n, "circuit_open")
            raise RemoteStageError("circuit breaker open for %s; not calling it" % self.url, "circuit_open")
        t0 = self.clock()
        try:
            step = self.max_batch if self.max_batch > 0 else n
            parts = [self._attempts(x[i:i + step], deadline, names) for i in range(0, n, step)]
        except RemoteStageError as exc:
            self.breaker.record(False)
            self.stats.failed(n, exc.reason)
            raise
        self.breaker.record(True)
        self.stats.ok(n, (self.clock() - t0) * 1e3)
        return parts[0] if len(parts) == 1 else {k: np.concatenate([p[k] for p in parts]) for k in names}

    def _attempts(self, x: np.ndarray, deadline: float, names: List[str]) -> Dict[str, np.ndarray]:
        tries = 0
        while True:
            left = deadline - self.clock()
            if left <= 0:
                raise RemoteStageError("no answer from %s within the %.0f ms deadline" % (self.url, self.settings.deadline_ms),
                                       "timeout")
            tries += 1
            self.stats.attempts += 1
            try:
                out = self._infer(x, names, left, fresh=tries > 1)
            except RemoteStageError as exc:
                if exc.reason not in RETRYABLE or tries > self.settings.retries:
                    raise
                continue
            for k in names:
                v = out.get(k)
                if v is None or v.shape[:1] != x.shape[:1]:
                    raise RemoteStageError("%s answered output %r with shape %s for %d inputs"
                                           % (self.url, k, getattr(v, "shape", None), x.shape[0]), "error")
            return out

    def _infer(self, x: np.ndarray, names: List[str], timeout_s: float, fresh: bool = False) -> Dict[str, np.ndarray]:
        m = self._module
        spec = self.inputs[0]
        inp = m.InferInput(spec.name, list(x.shape), NUMPY_TO_V2.get(str(x.dtype), "FP32"))
        inp.set_data_from_numpy(x)
        outs = [m.InferRequestedOutput(k) for k in names]
        try:
            if self._grpc is not None:
                res = self._grpc.infer(self.model, [inp], model_version=self.version, outputs=outs,
                                       client_timeout=timeout_s)
            else:
                client = self._http(timeout_s) if fresh else self._http()
                res = client.infer(self.model, [inp], model_version=self.version, outputs=outs)
        except Exception as exc:
            reason = _reason(exc)
            raise RemoteStageError("%s: %s" % (self.url, _first_line(exc)), reason) from None
        return {k: res.as_numpy(k) for k in names}

    def close(self) -> None:
        client, self._grpc = self._grpc, None
        if client is not None:
            try:
                client.close()
            except Exception:
                pass
        http = getattr(self._local, "client", None)
        if http is not None:
            try:
                http.close()
            except Exception:
                pass
            self._local.client = None


def prepare(model_path: str = "", url: str = "", model: str = "", version: str = "",
            settings: Optional[RemoteSettings] = None, expect: Optional[Expectation] = None,
            clock: Clock = time.monotonic, breaker_clock: Optional[Clock] = None, **_: object) -> TritonRunner:
    """Backend entry point: ``prepare(url=..., model=...)`` (``model_path`` is not used: the server has the model)."""
    return TritonRunner(url, model, version, settings, expect, clock, breaker_clock)


prepare.available = available  # type: ignore[attr-defined]


def remote_settings(values: Dict[str, Any], where: str = "remote stage") -> RemoteSettings:
    """Settings from a manifest stage's keys (``deadline_ms``, ``retries``, ``breaker_failures``, ``breaker_cooldown_s``)."""
    kw: Dict[str, Any] = {}
    for key, kind in (("deadline_ms", float), ("retries", int), ("breaker_failures", int), ("breaker_cooldown_s", float)):
        if key in values and values[key] is not None:
            v = values[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not float(v).is_integer()):
                raise ConfigError("%s: %r must be a number, got %r" % (where, key, v))
            kw[key] = kind(v)
    return RemoteSettings(**kw)


__all__: Sequence[str] = ["TritonRunner", "RemoteSettings", "Expectation", "parse_url", "prepare", "remote_settings",
                          "DEFAULT_DEADLINE_MS", "DEFAULT_RETRIES", "DEFAULT_BREAKER_FAILURES", "DEFAULT_BREAKER_COOLDOWN_S"]
