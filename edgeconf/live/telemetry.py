"""MQTT telemetry of a running pipeline: a JSON status once a second and every event, through a bounded queue.

``--telemetry mqtt://[USER[:PASSWORD]@]HOST[:1883]/TOPIC/BASE[?options]`` (``mqtts://`` for TLS, port 8883).
Under the topic base the device publishes:

- ``BASE/status``: the status (:func:`status_of`), once a second, QoS 1, retained (a new viewer sees the latest);
- ``BASE/events``: each event of the run (``start``, ``source``, ``frame``, ``error``, ``remote_failure``,
  ``summary``, ``stop``), QoS 1;
- ``BASE/state``: ``{"online": true}`` on connect, retained; the broker publishes the Last Will
  ``{"online": false}`` there when the device vanishes without saying goodbye (a clean close publishes it too).

Publishing never blocks the pipeline: messages go into a queue of :data:`DEFAULT_QUEUE_SIZE` messages (``?queue=N``)
that a sender thread hands to the MQTT client while it is connected. While the broker is away the queue fills;
when it is full the oldest message is dropped and counted (``dropped`` in the status). Options: ``tls=1``,
``ca=PATH``, ``cert=PATH``, ``key=PATH``, ``insecure=1`` (no host name check), ``queue=N``, ``interval=SECONDS``,
``frames=0`` (no per-frame events), ``client_id=ID``. A password may also come from ``EDGECONF_MQTT_PASSWORD``.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

from edgeconf.errors import ConfigError
from edgeconf.schema.netloc import port_problem, port_text
from edgeconf.lazy import require
from edgeconf.live.events import json_default

log = logging.getLogger(__name__)

#: Messages waiting for the broker, at most; beyond this the oldest is dropped (and counted).
DEFAULT_QUEUE_SIZE = 1000
STATUS_INTERVAL_S = 1.0
QOS = 1
CONNECT_WAIT_S = 3.0  # how long start() waits for the broker's answer (a refusal is an error; silence is not)
PASSWORD_ENV = "EDGECONF_MQTT_PASSWORD"


@dataclass(frozen=True)
class TelemetryConfig:
    """Where and how to publish (parsed from a ``--telemetry`` URI)."""

    host: str
    port: int
    topic: str  # topic base, e.g. edgeconf/cam-01
    username: Optional[str] = None
    password: Optional[str] = None
    tls: bool = False
    ca_certs: Optional[str] = None
    certfile: Optional[str] = None
    keyfile: Optional[str] = None
    insecure: bool = False
    queue_size: int = DEFAULT_QUEUE_SIZE
    interval_s: float = STATUS_INTERVAL_S
    frames: bool = True
    client_id: str = ""

    @property
    def device(self) -> str:
        return self.topic.rsplit("/", 1)[-1]

    def describe(self) -> str:
        return "%s://%s:%d/%s" % ("mqtts" if self.tls else "mqtt", self.host, self.port, self.topic)


def _flag(value: str, key: str) -> bool:
    v = value.lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ConfigError("telemetry option %s=%r must be 1 or 0" % (key, value))


def _port(uri: str, netloc: str) -> Optional[int]:
    """The port a URI's ``netloc`` names (None: none given), refused in one line when it is no port 1..65535."""
    text = port_text(netloc)
    problem = port_problem(text)
    if problem:
        number = text.isascii() and text.isdigit()
        raise ConfigError("telemetry URI %r: %s%s" % (uri, problem, " (1883 for mqtt://, 8883 for mqtts://)" if number
                                                      else "; e.g. mqtt://HOST:1883/edgeconf/DEVICE"))
    return int(text) if text else None


class _Encrypted(Exception):
    """Raised by the password callback: the key is encrypted, so it is PEM (paho asks for its pass phrase)."""


def _no_password() -> bytes:
    raise _Encrypted()


def check_tls_files(ca: Optional[str], cert: Optional[str], key: Optional[str]) -> None:
    """Refuse, in one line naming the option and file, a CA, client certificate or key that is not a usable PEM
    file (paho's ``tls_set`` would raise a bare ``ssl.SSLError`` later)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for option, path in (("ca", ca), ("cert", cert)):
        if path:
            try:
                ctx.load_verify_locations(cafile=path)
            except ssl.SSLError:
                raise ConfigError("telemetry option %s=%s: the file holds no certificate; it must be a PEM file "
                                  "(-----BEGIN CERTIFICATE-----)" % (option, path)) from None
            except OSError as exc:
                raise ConfigError("telemetry option %s=%s: cannot read it (%s)" % (option, path, exc.strerror or exc)) \
                    from None
    if not cert:
        return
    try:
        ctx.load_cert_chain(cert, key, password=_no_password)
    except _Encrypted:
        return
    except ssl.SSLError as exc:
        if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
            raise ConfigError("telemetry option key=%s is not the private key of cert=%s; give the key that belongs to "
                              "the certificate" % (key, cert)) from None
        if key:
            raise ConfigError("telemetry option key=%s: the file holds no private key; it must be a PEM file "
                              "(-----BEGIN PRIVATE KEY-----)" % key) from None
        raise ConfigError("telemetry option cert=%s holds no private key; give the key with key=FILE (a PEM file)"
                          % cert) from None
    except OSError as exc:
        raise ConfigError("telemetry option key=%s: cannot read it (%s)" % (key, exc.strerror or exc)) from None


def parse_telemetry_uri(uri: str) -> TelemetryConfig:
    """``mqtt://user:pass@host:1883/edgeconf/DEVICE?queue=500`` -> :class:`TelemetryConfig` (ConfigError if wrong)."""
    try:
        parts = urlsplit(uri or "")
    except ValueError as exc:  # "Invalid IPv6 URL": an unclosed '[', or brackets around what is no IPv6 address
        raise ConfigError("telemetry URI %r is not a valid URI (%s); an IPv6 broker address goes in brackets, e.g. "
                          "mqtt://[::1]:1883/edgeconf/DEVICE" % (uri, exc)) from None
    scheme = parts.scheme.lower()
    if scheme not in ("mqtt", "mqtts"):
        raise ConfigError("telemetry URI %r must start with mqtt:// or mqtts://, e.g. mqtt://HOST:1883/edgeconf/DEVICE" % uri)
    if not parts.hostname:
        raise ConfigError("telemetry URI %r names no broker host; e.g. mqtt://HOST:1883/edgeconf/DEVICE" % uri)
    topic = unquote(parts.path).strip("/")
    if parts.fragment or (uri or "").endswith("#"):  # '#' starts a URI fragment: it is a wildcard here
        topic += "/#"
    if not topic:
        raise ConfigError("telemetry URI %r has no topic; add one naming the device, e.g. %s://%s/edgeconf/DEVICE"
                          % (uri, scheme, parts.netloc))
    if any(c in topic for c in "+#") or "//" in topic:
        raise ConfigError("telemetry topic %r may not contain '+', '#' or empty levels" % topic)
    port = _port(uri, parts.netloc)
    q = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    known = {"tls", "ca", "cert", "key", "insecure", "queue", "interval", "frames", "client_id"}
    unknown = sorted(set(q) - known)
    if unknown:
        raise ConfigError("unknown telemetry option(s) %s; known: %s" % (", ".join(unknown), ", ".join(sorted(known))))
    tls = scheme == "mqtts" or _flag(q.get("tls", "0"), "tls")
    try:
        queue = int(q.get("queue", DEFAULT_QUEUE_SIZE))
        interval = float(q.get("interval", STATUS_INTERVAL_S))
    except ValueError:
        raise ConfigError("telemetry options queue and interval must be numbers") from None
    if queue < 1:
        raise ConfigError("telemetry queue must hold at least 1 message, got %d" % queue)
    if not 0.05 <= interval <= 3600:
        raise ConfigError("telemetry interval must be in [0.05, 3600] seconds, got %g" % interval)
    for key in ("ca", "cert", "key"):
        if key in q and not os.path.isfile(q[key]):
            raise ConfigError("telemetry option %s=%s: no such file" % (key, q[key]))
    insecure = _flag(q.get("insecure", "0"), "insecure")
    tls_only = [k for k in ("ca", "cert", "key") if k in q] + (["insecure"] if insecure else [])
    if tls_only and not tls:
        raise ConfigError("telemetry option%s %s need%s TLS, which %r does not use; use mqtts:// or add tls=1"
                          % ("s" if len(tls_only) > 1 else "", ", ".join(k + "=" for k in tls_only),
                             "" if len(tls_only) > 1 else "s", uri))
    if "key" in q and "cert" not in q:
        raise ConfigError("telemetry option key=%s needs cert=FILE, the client certificate the key belongs to"
                          % q["key"])
    if tls:
        check_tls_files(q.get("ca"), q.get("cert"), q.get("key"))
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if username and password is None:
        password = os.environ.get(PASSWORD_ENV)
    return TelemetryConfig(parts.hostname, port or (8883 if tls else 1883), topic, username, password, tls,
                           q.get("ca"), q.get("cert"), q.get("key"), insecure,
                           queue, interval, _flag(q.get("frames", "1"), "frames"), q.get("client_id", ""))


class Telemetry:
    """Publishes status and events of one device to an MQTT broker without ever blocking the caller.

    ``status_fn`` returns the status dict (called on the status thread every ``interval_s``); ``publish_event``
    may be called from any thread. :meth:`start` connects (waiting at most :data:`CONNECT_WAIT_S` for the
    broker's answer: refused credentials raise :class:`ConfigError`, a broker that is away is retried in the
    background), :meth:`close` says goodbye and flushes what it can within its timeout.
    """

    def __init__(self, config: TelemetryConfig, status_fn: Optional[Callable[[], Dict[str, Any]]] = None) -> None:
        self.config = config
        self.status_fn = status_fn
        self.topic_status = config.topic + "/status"
        self.topic_events = config.topic + "/events"
        self.topic_state = config.topic + "/state"
        self._queue: Deque[Tuple[str, bytes, bool]] = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._answered = threading.Event()  # the first connection attempt's outcome is known: CONNACK, or a failure
        self.connect_error: Optional[str] = None
        #: why the last connection attempt failed (name resolution, connection refused, TLS handshake, ...); None
        #: once connected
        self.last_failure: Optional[str] = None
        self.enqueued = 0
        self.dropped = 0
        self.sent = 0  # handed to the MQTT client while connected (it resends unacknowledged QoS 1 messages)
        self.connects = 0
        self.seq = 0
        #: set by close(): messages still queued then (never handed to the broker, discarded), and messages handed
        #: over that the broker had not acknowledged by then; None while open
        self.not_sent: Optional[int] = None
        self.unacknowledged: Optional[int] = None
        self._threads: list = []
        self._client: Any = None
        self._infos: Deque[Any] = collections.deque(maxlen=max(64, config.queue_size))

    # -- queue --------------------------------------------------------------------------------------------
    def _enqueue(self, topic: str, payload: Dict[str, Any], retain: bool = False) -> None:
        data = json.dumps(payload, default=json_default, separators=(",", ":")).encode()
        with self._lock:
            if len(self._queue) >= self.config.queue_size:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append((topic, data, retain))
            self.enqueued += 1
        self._wake.set()

    @property
    def queued(self) -> int:
        with self._lock:
            return len(self._queue)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def publish_event(self, type: str, **fields: Any) -> None:
        """Queue one event (``{"type", "time", "device", ...fields}``); per-frame events only with ``frames``."""
        if type == "frame" and not self.config.frames:
            return
        rec: Dict[str, Any] = {"type": type, "time": round(time.time(), 6), "device": self.config.device}
        rec.update(fields)
        self._enqueue(self.topic_events, rec)

    def publish_status(self, status: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Queue a status now (``status_fn()`` when none is given); returns what was queued."""
        body = dict(status if status is not None else (self.status_fn() if self.status_fn else {}))
        with self._lock:
            self.seq += 1
            seq = self.seq
        body.update(device=self.config.device, time=round(time.time(), 3), seq=seq, online=True,
                    telemetry=self.stats())
        self._enqueue(self.topic_status, body, retain=True)
        return body

    def stats(self) -> Dict[str, Any]:
        with self._lock:
            out = {"queued": len(self._queue), "queue_size": self.config.queue_size, "dropped": self.dropped,
                   "sent": self.sent, "connected": self._connected.is_set(), "connects": self.connects}
            if self.not_sent is not None:  # closed: what never reached the broker is counted, not silently lost
                out.update(not_sent=self.not_sent, unacknowledged=self.unacknowledged)
                if self.last_failure and not self._connected.is_set():
                    out["connect_failure"] = self.last_failure
            return out

    # -- connection ---------------------------------------------------------------------------------------
    def _make_client(self) -> Any:
        mqtt = require("paho.mqtt.client", "MQTT telemetry")
        cfg = self.config
        cid = cfg.client_id or "edgeconf-%s-%d" % (cfg.device, os.getpid())
        if hasattr(mqtt, "CallbackAPIVersion"):
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv311)
        else:  # paho-mqtt 1.x
            client = mqtt.Client(client_id=cid, protocol=mqtt.MQTTv311)
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:
            try:
                client.tls_set(ca_certs=cfg.ca_certs, certfile=cfg.certfile, keyfile=cfg.keyfile)
            except (ssl.SSLError, OSError) as exc:  # parse_telemetry_uri checks the files; a config made in code may not
                raise ConfigError("cannot set up TLS for the broker at %s:%d (%s); ca=, cert= and key= must be PEM files"
                                  % (cfg.host, cfg.port, exc)) from None
            if cfg.insecure:
                client.tls_insecure_set(True)
        will = json.dumps({"online": False, "device": cfg.device, "reason": "connection lost"})
        client.will_set(self.topic_state, will, qos=QOS, retain=True)
        client.max_queued_messages_set(cfg.queue_size)
        client.reconnect_delay_set(min_delay=1, max_delay=5)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        if hasattr(client, "on_connect_fail"):  # paho-mqtt >= 1.6
            client.on_connect_fail = self._on_connect_fail
        return client

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, properties: Any = None) -> None:
        code = getattr(rc, "value", rc)
        if code != 0:
            self.connect_error = "the broker at %s:%d refused the connection (%s)" % (
                self.config.host, self.config.port, rc if not isinstance(rc, int) else _CONNACK.get(rc, "code %d" % rc))
            self._answered.set()
            return
        self.connect_error = None
        self.last_failure = None
        self.connects += 1
        client.publish(self.topic_state, json.dumps({"online": True, "device": self.config.device}), qos=QOS, retain=True)
        self._connected.set()
        self._answered.set()
        self._wake.set()

    def _on_disconnect(self, client: Any, *args: Any) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if not was_connected and self.connect_error is None and not self._stop.is_set():
            # the socket opened but the broker hung up before its CONNACK: what a TLS listener does to plain MQTT
            cfg = self.config
            self.last_failure = ("the broker closed the connection without answering the MQTT handshake%s"
                                 % ("" if cfg.tls else " (if %s:%d is a TLS listener, use mqtts://)" % (cfg.host, cfg.port)))
            self._answered.set()

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        """paho calls this from the ``except`` block of a failed connection attempt: the exception is the reason."""
        self.last_failure = describe_connect_failure(sys.exc_info()[1], self.config)
        self._answered.set()  # start() need not wait out CONNECT_WAIT_S: this attempt has failed, and why is known

    def start(self) -> "Telemetry":
        """Connect and start the sender and status threads."""
        cfg = self.config
        self._client = client = self._make_client()
        try:
            client.connect_async(cfg.host, cfg.port, keepalive=15)
        except (OSError, ValueError) as exc:
            raise ConfigError("cannot use the MQTT broker at %s:%d: %s" % (cfg.host, cfg.port, exc)) from None
        client.loop_start()
        self._answered.wait(CONNECT_WAIT_S)
        err = self.connect_error
        if err is not None and _refused_for_credentials(err):
            self._shutdown_client()
            raise ConfigError("%s; check the user name and password in the --telemetry URI (or %s)" % (err, PASSWORD_ENV))
        if not self.connected:
            why = self.last_failure
            if why:
                log.warning("telemetry: cannot connect to the MQTT broker at %s:%d: %s; queueing (at most %d messages) "
                            "and retrying", cfg.host, cfg.port, why, cfg.queue_size)
            else:
                log.warning("telemetry: no answer from the MQTT broker at %s:%d yet; queueing (at most %d messages) "
                            "and retrying", cfg.host, cfg.port, cfg.queue_size)
        self._threads = [threading.Thread(target=self._sender, name="edgeconf-telemetry-send", daemon=True)]
        if self.status_fn is not None:
            self._threads.append(threading.Thread(target=self._status_loop, name="edgeconf-telemetry-status", daemon=True))
        for t in self._threads:
            t.start()
        return self

    def _sender(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            self._drain()

    def _drain(self) -> None:
        client = self._client
        while self._connected.is_set() and client is not None:
            with self._lock:
                if not self._queue:
                    return
                topic, data, retain = self._queue.popleft()
            info = client.publish(topic, data, qos=QOS, retain=retain)
            if getattr(info, "rc", 0) not in (0, 4):  # 4: no connection (paho keeps QoS 1 messages and resends)
                with self._lock:
                    self._queue.appendleft((topic, data, retain))
                return
            with self._lock:
                self.sent += 1
            self._infos.append(info)

    def _status_loop(self) -> None:
        while not self._stop.wait(self.config.interval_s):
            try:
                self.publish_status()
            except Exception as exc:  # a status that cannot be built must not end telemetry
                log.warning("telemetry: status failed: %s", exc)

    def close(self, timeout_s: float = 3.0) -> None:
        """Say goodbye (``online: false``), hand over what is queued and wait at most ``timeout_s`` for the broker."""
        if self._client is None:
            return
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=2.0)
        t_end = time.monotonic() + timeout_s
        self._enqueue(self.topic_state, {"online": False, "device": self.config.device, "reason": "closed"}, retain=True)
        while time.monotonic() < t_end and self._connected.is_set():
            self._drain()
            if not self.queued and all(i.is_published() for i in list(self._infos)):
                break
            time.sleep(0.02)
        unacked = sum(1 for i in list(self._infos) if not _published(i))
        with self._lock:
            self.not_sent = len(self._queue)
            self.unacknowledged = unacked
            self._queue.clear()
        if self.not_sent or unacked:
            log.warning("telemetry: closed with %d messages not sent and %d not acknowledged by the broker at %s:%d",
                        self.not_sent, unacked, self.config.host, self.config.port)
        self._shutdown_client()

    def _shutdown_client(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.disconnect()
        finally:
            client.loop_stop()

    def __enter__(self) -> "Telemetry":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def describe_connect_failure(exc: Optional[BaseException], cfg: TelemetryConfig) -> str:
    """Why a connection attempt to the broker failed, in words that say what to check."""
    if exc is None:
        return "the connection failed"
    where = "%s:%d" % (cfg.host, cfg.port)
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, ssl.SSLCertVerificationError):
        hint = ("?insecure=1 skips the host-name check" if "hostname" in text.lower() or "host name" in text.lower()
                else "give the CA that signed it with ?ca=FILE")
        return "TLS handshake failed: the broker's certificate was not accepted (%s); %s" % (text, hint)
    if isinstance(exc, ssl.SSLError) or (cfg.tls and isinstance(exc, (ConnectionResetError, ConnectionAbortedError,
                                                                         BrokenPipeError, EOFError))):
        return ("TLS handshake failed (%s); is %s a TLS listener? a plain MQTT port takes mqtt://" % (text, where))
    if isinstance(exc, socket.gaierror):
        return "the host name %r does not resolve (%s); check the host in the URI" % (cfg.host, text)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: nothing listens on %s (the broker is down, or the port is wrong)" % where
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "no answer from %s (timed out)" % where
    return text


def _published(info: Any) -> bool:
    try:
        return bool(info.is_published())
    except Exception:  # paho raises for a message it refused; it was never published
        return False


_CONNACK = {1: "unacceptable protocol version", 2: "identifier rejected", 3: "server unavailable",
            4: "bad user name or password", 5: "not authorised"}


def _refused_for_credentials(text: str) -> bool:
    t = text.lower()
    return "user name or password" in t or "not author" in t or "bad user" in t


# -- the pipeline's status ---------------------------------------------------------------------------------
class StatusBuilder:
    """Builds the status dict from a pipeline (and an energy meter when there is one), between two calls.

    Fields: ``fps``, ``latency_ms`` (p50/p95 over the last 100 frames), ``frames``, ``answers``, ``errors``,
    ``exits`` (per stage), ``escalation_rate``, ``memo_hit_rate``, ``unknown_rate`` (share of answers shown as
    ``unknown`` for any reason: an OOD head's verdict or the evidence rule, so measured with any bundle),
    ``unknown_evidence_rate`` (the part shown ``unknown`` by the evidence rule alone), ``remote`` (``inputs`` that
    reached a remote stage; ``calls``: of them, those sent to its server; ``failures`` and their ``reasons``),
    ``source_state``, ``power_w`` and ``energy_per_answer_j`` (over the last interval) — ``null`` for whatever is
    not measured here (no power sensor; no answer yet).
    """

    def __init__(self, pipeline: Any, meter: Any = None) -> None:
        self.pipeline = pipeline
        self.meter = meter
        self._last: Optional[Tuple[float, int]] = None

    def __call__(self) -> Dict[str, Any]:
        import numpy as np

        p = self.pipeline
        res = p.last_result
        c = res.counters if res is not None else p.counters
        lat = np.asarray(list(p.latencies_ms)[-100:], dtype=np.float64)
        state = p.source_state
        unknown = getattr(c, "unknown_rate", None)
        return {"fps": round(float(c.fps), 3), "frames": c.frames, "answers": c.answers, "errors": c.errors,
                "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 3) if lat.size else None,
                               "p95": round(float(np.percentile(lat, 95)), 3) if lat.size else None},
                "exits": list(c.exits), "escalation_rate": _r(c.escalation_rate), "memo_hit_rate": _r(c.memo_hit_rate),
                "unknown_rate": _r(unknown() if callable(unknown) else unknown),
                "unknown_evidence_rate": _r(getattr(c, "unknown_evidence_rate", None)),
                "remote": {"inputs": getattr(c, "remote_inputs", 0), "calls": getattr(c, "remote_calls", 0),
                           "failures": getattr(c, "remote_failures", 0),
                           "reasons": dict(getattr(c, "remote_reasons", {}) or {})},
                "source_state": getattr(state, "value", None if state is None else str(state)),
                "power_w": _r(c.power_w, 3), "energy_per_answer_j": self._energy_per_answer(c.answers)}

    def _energy_per_answer(self, answers: int) -> Optional[float]:
        meter = self.meter
        if meter is None or not getattr(meter, "has_sensor", False):
            return None
        now = meter.clock()
        last, self._last = self._last, (now, answers)
        if last is None or answers <= last[1]:
            return None
        joules = meter.energy_j(last[0], now, min_coverage=0.9)
        return None if joules is None else round(joules / (answers - last[1]), 6)


def _r(v: Optional[float], nd: int = 4) -> Optional[float]:
    return None if v is None else round(float(v), nd)


class EventFanout:
    """Event sinks of one run: the JSON-lines log and the MQTT telemetry, either or both (``emit`` goes to each)."""

    def __init__(self, log_file: Any = None, telemetry: Optional[Telemetry] = None) -> None:
        self.log_file = log_file
        self.telemetry = telemetry

    def emit(self, type: str, **fields: Any) -> None:
        if self.log_file is not None:
            self.log_file.emit(type, **fields)
        if self.telemetry is not None:
            self.telemetry.publish_event(type, **fields)

    def close(self) -> None:
        """Close the log (the telemetry belongs to whoever started it)."""
        if self.log_file is not None:
            self.log_file.close()


def open_telemetry(uri: Optional[str], pipeline: Any = None, meter: Any = None) -> Optional[Telemetry]:
    """A started :class:`Telemetry` for ``uri`` (None when ``uri`` is empty) publishing ``pipeline``'s status."""
    if not uri:
        return None
    cfg = parse_telemetry_uri(uri)
    return Telemetry(cfg, StatusBuilder(pipeline, meter) if pipeline is not None else None).start()
