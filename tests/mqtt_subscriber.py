"""A test MQTT subscriber (paho) that queues every message it receives, for the fleet tests."""
from __future__ import annotations

import json
import queue
import time

WAIT_S = 60.0  # upper bound on waiting for a broker's delivery (the tests wait on messages, not on durations)


class Subscriber:
    """A paho client that puts every (topic, JSON) it receives on a queue."""

    def __init__(self, port: int, topic: str, client_id: str = "", persistent: bool = False,
                 auth: tuple = ()) -> None:
        import paho.mqtt.client as mqtt

        self.q: "queue.Queue" = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or "",
                                  clean_session=not persistent, protocol=mqtt.MQTTv311)
        if auth:
            self.client.username_pw_set(*auth)
        self.subscribed = queue.Queue()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self.subscribed.put(True)
        self.client.on_message = lambda c, u, m: self.q.put((m.topic, json.loads(m.payload)))
        self.client.reconnect_delay_set(1, 2)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.subscribed.get(timeout=WAIT_S)

    def until(self, pred, what: str):
        """Messages up to and including the first one for which ``pred(topic, msg)`` holds."""
        got = []
        t_end = time.monotonic() + WAIT_S
        while True:
            left = t_end - time.monotonic()
            if left <= 0:
                raise AssertionError("no %s within %.0f s; got %s" % (what, WAIT_S, got[-5:]))
            try:
                item = self.q.get(timeout=left)
            except queue.Empty:
                continue
            got.append(item)
            if pred(*item):
                return got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
