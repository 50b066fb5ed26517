"""The fleet view's state as plain Python: one row per device from the MQTT telemetry, and the subscriber.

No Qt here. :class:`FleetModel` ingests ``(topic, payload)`` messages of ``BASE/DEVICE/status`` and
``BASE/DEVICE/state`` (as :mod:`edgeconf.live.telemetry` publishes them) into :class:`DeviceRow`s with a bounded
history each; :class:`FleetSubscriber` is a paho-mqtt client on its own network thread that puts messages on a
queue, which the view drains on the UI thread (so the UI never waits for the network).
"""
from __future__ import annotations

import collections
import json
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Deque, Dict, List, Optional, Tuple

from edgeconf.errors import ConfigError

HISTORY = 120  # status points kept per device (two minutes at one a second)
#: columns of the fleet table: (key, header)
COLUMNS = (("device", "device"), ("online", "state"), ("fps", "fps"), ("escalation", "escalation"),
           ("memo", "memo hits"), ("remote_failures", "remote failures"), ("power_w", "power W"),
           ("energy_j", "J / answer"))
#: columns that describe the device now: "—" once it is offline (the last known value is in the cell's tooltip)
LIVE_KEYS = frozenset(k for k, _ in COLUMNS) - {"device", "online"}


@dataclass
class DeviceRow:
    """What the fleet view knows about one device."""

    device: str
    online: Optional[bool] = None  # None: no state message seen yet
    last_seen: float = 0.0  # time.time() of the last message
    status: Dict[str, Any] = field(default_factory=dict)  # the latest status, as published
    history: Deque[Tuple[float, Optional[float]]] = field(default_factory=lambda: collections.deque(maxlen=HISTORY))
    offline_reason: str = ""

    def cell(self, key: str) -> Optional[Any]:
        s = self.status
        if key == "device":
            return self.device
        if key == "online":
            return None if self.online is None else ("online" if self.online else "offline")
        if key == "fps":
            return s.get("fps")
        if key == "escalation":
            return s.get("escalation_rate")
        if key == "memo":
            return s.get("memo_hit_rate")
        if key == "remote_failures":
            return (s.get("remote") or {}).get("failures")
        if key == "power_w":
            return s.get("power_w")
        if key == "energy_j":
            return s.get("energy_per_answer_j")
        raise KeyError(key)

    @property
    def stale(self) -> bool:
        """The device went offline (its Last Will or a closing state message): its status is no longer live."""
        return self.online is False

    def text(self, key: str) -> str:
        """The table cell: an offline device's numbers are "—" (what it last published is in :meth:`tooltip`)."""
        if key in LIVE_KEYS and self.stale:
            return "—"
        return self._format(key)

    def tooltip(self, key: str) -> str:
        """For an offline device, the value it last published in this column and when; empty otherwise."""
        if key not in LIVE_KEYS or not self.stale:
            return ""
        when = self.status.get("time")
        at = time.strftime(" at %H:%M:%S", time.localtime(float(when))) if isinstance(when, (int, float)) else ""
        return "offline: last known %s (status%s, before it went offline)" % (self._format(key), at)

    def _format(self, key: str) -> str:
        v = self.cell(key)
        if v is None:
            return "—" if key not in ("device", "online") else ("unknown" if key == "online" else self.device)
        if key in ("escalation", "memo"):
            return "%.1f %%" % (100.0 * float(v))
        if key in ("fps", "power_w"):
            return "%.1f" % float(v)
        if key == "energy_j":
            return "%.4f" % float(v)
        return str(v)

    def fps_history(self) -> List[float]:
        return [v for _, v in self.history if v is not None]


class FleetModel:
    """Devices under one topic base, updated from MQTT messages; ``changed`` counts updates (for views)."""

    def __init__(self, base: str) -> None:
        self.base = base.strip("/")
        self.devices: Dict[str, DeviceRow] = {}
        self.bad_messages = 0
        self.messages = 0
        self.changed = 0

    def _device_of(self, topic: str) -> Optional[Tuple[str, str]]:
        prefix = self.base + "/"
        if not topic.startswith(prefix):
            return None
        rest = topic[len(prefix):].split("/")
        if len(rest) != 2 or not rest[0]:
            return None
        return rest[0], rest[1]

    def ingest(self, topic: str, payload: bytes, now: Optional[float] = None) -> Optional[str]:
        """Apply one message; returns the device it changed (None when ignored)."""
        where = self._device_of(topic)
        if where is None:
            return None
        device, kind = where
        if kind not in ("status", "state"):
            return None
        try:
            msg = json.loads(payload.decode("utf-8") if isinstance(payload, (bytes, bytearray)) else payload)
        except (ValueError, UnicodeDecodeError):
            self.bad_messages += 1
            return None
        if not isinstance(msg, dict):
            self.bad_messages += 1
            return None
        row = self.devices.get(device)
        if row is None:
            row = self.devices[device] = DeviceRow(device)
        t = time.time() if now is None else now
        row.last_seen = t
        self.messages += 1
        if kind == "status":
            row.status = msg
            fps = msg.get("fps")
            row.history.append((float(msg.get("time", t) or t), float(fps) if isinstance(fps, (int, float)) else None))
            if row.online is None:
                row.online = bool(msg.get("online", True))
        else:
            row.online = bool(msg.get("online"))
            row.offline_reason = "" if row.online else str(msg.get("reason", ""))
        self.changed += 1
        return device

    def rows(self) -> List[DeviceRow]:
        return [self.devices[k] for k in sorted(self.devices)]


def parse_fleet_uri(uri: str) -> Tuple[Any, str]:
    """``mqtt://HOST:1883/edgeconf`` -> (telemetry config of the broker, topic base the devices publish under)."""
    from urllib.parse import urlsplit

    from edgeconf.live.telemetry import parse_telemetry_uri

    takes = ("--fleet takes an MQTT broker and the topic base the devices publish under: mqtt://[USER[:PASS]@]HOST"
             "[:1883]/TOPIC, e.g. mqtt://HOST:1883/edgeconf (mqtts:// for TLS; docs/fleet.md)")
    try:
        parts = urlsplit(uri.strip())
        parts.hostname  # (a mistyped IPv6 address raises here or in urlsplit)
    except ValueError as exc:
        raise ConfigError("fleet URI %r cannot be read (%s); %s" % (uri, exc, takes)) from None
    if parts.scheme.lower() not in ("mqtt", "mqtts"):
        raise ConfigError("fleet URI %r is not an MQTT URI; %s" % (uri, takes))
    if not parts.hostname:
        raise ConfigError("fleet URI %r names no broker host; %s" % (uri, takes))
    if not parts.path.strip("/"):
        raise ConfigError("fleet URI %r has no topic base; %s" % (uri, takes))
    cfg = parse_telemetry_uri(uri)
    if cfg.topic.endswith("/#"):
        cfg = replace(cfg, topic=cfg.topic[:-2])
    if not cfg.topic:
        raise ConfigError("fleet URI %r needs the topic base the devices publish under, e.g. mqtt://HOST:1883/edgeconf" % uri)
    return cfg, cfg.topic


class FleetSubscriber:
    """Subscribes to ``BASE/+/status`` and ``BASE/+/state`` on its own thread; messages wait in :attr:`messages`."""

    def __init__(self, config: Any, base: str) -> None:
        from edgeconf.lazy import require

        mqtt = require("paho.mqtt.client", "the fleet view")
        self.config = config
        self.base = base
        self.messages: "queue.Queue[Tuple[str, bytes]]" = queue.Queue(maxsize=100000)
        self.connected = threading.Event()
        self.error: Optional[str] = None
        cid = "edgeconf-fleet-%d-%d" % (int(time.time()), threading.get_ident() % 100000)
        if hasattr(mqtt, "CallbackAPIVersion"):
            self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv311)
        else:
            self.client = mqtt.Client(client_id=cid, protocol=mqtt.MQTTv311)
        if config.username:
            self.client.username_pw_set(config.username, config.password)
        if config.tls:
            self.client.tls_set(ca_certs=config.ca_certs, certfile=config.certfile, keyfile=config.keyfile)
            if config.insecure:
                self.client.tls_insecure_set(True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 5)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, properties: Any = None) -> None:
        if getattr(rc, "value", rc) != 0:
            self.error = "the broker refused the connection (%s)" % rc
            return
        self.error = None
        client.subscribe([(self.base + "/+/status", 1), (self.base + "/+/state", 1)])
        self.connected.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            self.messages.put_nowait((msg.topic, bytes(msg.payload)))
        except queue.Full:  # the UI stopped draining: drop rather than grow without bound
            pass

    def start(self) -> "FleetSubscriber":
        try:
            self.client.connect_async(self.config.host, self.config.port, keepalive=15)
        except (OSError, ValueError) as exc:
            raise ConfigError("cannot use the MQTT broker at %s:%d: %s" % (self.config.host, self.config.port, exc)) from None
        self.client.loop_start()
        return self

    def drain(self, model: FleetModel, limit: int = 10000) -> int:
        """Move waiting messages into ``model`` (call on the UI thread); returns how many."""
        n = 0
        while n < limit:
            try:
                topic, payload = self.messages.get_nowait()
            except queue.Empty:
                break
            model.ingest(topic, payload)
            n += 1
        return n

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()
