"""The fleet view: the model from MQTT messages, and the window with 20 simulated devices publishing through
paho-mqtt to a real mosquitto on 127.0.0.1."""
from __future__ import annotations

import json
import os
import sys

import pytest

from edgeconf.gui.fleet_model import FleetModel

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "scripts"))

from fleet_servers import MosquittoProcess  # noqa: E402


def _status(fps, **kw):
    d = {"fps": fps, "escalation_rate": 0.25, "memo_hit_rate": 0.5, "remote": {"calls": 4, "failures": 1},
         "power_w": None, "energy_per_answer_j": None, "online": True}
    d.update(kw)
    return json.dumps(d).encode()


def test_model_rows_from_messages():
    m = FleetModel("edgeconf")
    assert m.ingest("edgeconf/cam2/status", _status(10.0, power_w=4.5, energy_per_answer_j=0.0123)) == "cam2"
    m.ingest("edgeconf/cam1/state", b'{"online": true}')
    m.ingest("edgeconf/cam1/status", _status(12.5))
    m.ingest("edgeconf/cam1/status", _status(13.0))
    assert m.ingest("other/cam9/status", _status(1.0)) is None  # another topic base
    assert m.ingest("edgeconf/cam1/events", b'{"type": "frame"}') is None  # events are not rows
    assert m.ingest("edgeconf/cam3/status", b"not json") is None and m.bad_messages == 1
    rows = m.rows()
    assert [r.device for r in rows] == ["cam1", "cam2"]
    cam1, cam2 = rows
    assert cam1.fps_history() == [12.5, 13.0] and cam1.text("online") == "online"
    assert cam1.text("escalation") == "25.0 %" and cam1.text("memo") == "50.0 %" and cam1.text("remote_failures") == "1"
    assert cam1.text("power_w") == "—" and cam1.text("energy_j") == "—"  # not measured: shown as such
    assert cam2.text("power_w") == "4.5" and cam2.text("energy_j") == "0.0123"
    m.ingest("edgeconf/cam1/state", b'{"online": false, "reason": "connection lost"}')
    assert cam1.text("online") == "offline" and cam1.offline_reason == "connection lost"


@pytest.mark.gui
@pytest.mark.fleet
def test_fleet_window_shows_twenty_devices(qtbot, tmp_path, settings):
    why = MosquittoProcess.why_unavailable()
    if why:
        pytest.skip(why)
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (pip install '.[fleet]')")
    from edgeconf.gui.fleet import FleetWindow
    from edgeconf.live.telemetry import Telemetry, parse_telemetry_uri

    broker = MosquittoProcess(str(tmp_path), persistence=False)
    broker.start()
    devices = []
    win = None
    try:
        win = FleetWindow(broker.uri + "/edgeconf")
        qtbot.addWidget(win)
        qtbot.waitUntil(lambda: win.subscriber.connected.is_set(), timeout=30000)
        for i in range(20):
            t = Telemetry(parse_telemetry_uri(broker.uri + "/edgeconf/dev%02d" % i)).start()
            devices.append(t)
        for k in range(3):
            for i, t in enumerate(devices):
                t.publish_status({"fps": float(i + k), "escalation_rate": 0.1, "memo_hit_rate": 0.6,
                                  "remote": {"calls": 10, "failures": i % 3}, "power_w": None,
                                  "energy_per_answer_j": None})

        def all_in():
            win.refresh()
            rows = win.model.rows()
            return len(rows) == 20 and all(len(r.history) == 3 and r.online for r in rows)

        qtbot.waitUntil(all_in, timeout=60000)
        assert win.table.rowCount() == 20
        assert [win.table.item(i, 0).text() for i in range(20)] == ["dev%02d" % i for i in range(20)]
        assert win.table.item(7, 2).text() == "9.0"  # dev07's latest fps (7 + 2)
        assert win._sparks["dev07"].values == [7.0, 8.0, 9.0]
        assert win.select_device("dev07")
        detail = json.loads(win.detail_text())
        assert detail["device"] == "dev07" and detail["fps"] == 9.0 and detail["remote"]["failures"] == 1
        devices.pop(5).close()  # dev05 says goodbye

        def dev05_offline():
            win.refresh()
            return win.model.devices["dev05"].online is False

        qtbot.waitUntil(dev05_offline, timeout=60000)
        assert win.table.item(5, 1).text() == "offline"
        assert win.table.item(5, 2).text() == "—" and "last known" in win.table.item(5, 2).toolTip()  # fps no longer live
        win.grab().save(str(tmp_path / "fleet.png"), "PNG")
        assert os.path.getsize(tmp_path / "fleet.png") > 0
    finally:
        for t in devices:
            t.close(timeout_s=1.0)
        if win is not None:
            win.shutdown()
        broker.stop()


@pytest.mark.gui
@pytest.mark.fleet
def test_operator_window_publishes_telemetry(qtbot, tmp_path, settings, gui_bundle):
    why = MosquittoProcess.why_unavailable()
    if why:
        pytest.skip(why)
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (pip install '.[fleet]')")
    from edgeconf.gui.fleet_model import FleetModel, FleetSubscriber, parse_fleet_uri
    from edgeconf.gui.window import MainWindow

    broker = MosquittoProcess(str(tmp_path), persistence=False)
    broker.start()
    cfg, base = parse_fleet_uri(broker.uri + "/edgeconf")
    sub = FleetSubscriber(cfg, base).start()
    model = FleetModel(base)
    win = None
    try:
        win = MainWindow(bundle=gui_bundle, source="demo://?size=320x240&objects=3&seed=3", settings=settings,
                         output_dir=str(tmp_path), regions="truth",
                         worker_options={"telemetry_uri": broker.uri + "/edgeconf/gui-cam"})
        qtbot.addWidget(win)
        assert win.start()

        def status_seen():
            sub.drain(model)
            row = model.devices.get("gui-cam")
            return row is not None and row.status.get("frames", 0) > 0 and row.online

        qtbot.waitUntil(status_seen, timeout=60000)
        status = model.devices["gui-cam"].status
        assert status["device"] == "gui-cam" and status["power_w"] is None
        win.close()

        def offline():
            sub.drain(model)
            return model.devices["gui-cam"].online is False

        qtbot.waitUntil(offline, timeout=60000)
        assert model.devices["gui-cam"].offline_reason == "closed"
        # the last retained status is the closed run's, as demo's is: not "live" for a window that closed
        assert model.devices["gui-cam"].status["source_state"] == "ended"
    finally:
        if win is not None:
            win.shutdown()
        sub.close()
        broker.stop()


def test_an_offline_device_shows_no_live_numbers_and_keeps_the_last_known_in_the_tooltip():
    """QA: after a publisher's Last Will its row still read fps 30.0, escalation 54.3 %, memo 61.3 % as if live."""
    m = FleetModel("edgeconf")
    m.ingest("edgeconf/cam1/state", b'{"online": true}')
    m.ingest("edgeconf/cam1/status", _status(30.0, escalation_rate=0.543, memo_hit_rate=0.613, power_w=6.0,
                                             energy_per_answer_j=0.02, time=1700000000.0))
    row = m.devices["cam1"]
    assert row.text("fps") == "30.0" and row.text("escalation") == "54.3 %" and row.tooltip("fps") == ""
    m.ingest("edgeconf/cam1/state", b'{"online": false, "reason": "connection lost"}')  # the Last Will
    assert row.stale and row.text("online") == "offline" and row.text("device") == "cam1"
    for key in ("fps", "escalation", "memo", "remote_failures", "power_w", "energy_j"):
        assert row.text(key) == "—", key
        assert row.tooltip(key).startswith("offline: last known "), key
    assert "30.0" in row.tooltip("fps") and "54.3 %" in row.tooltip("escalation") and "61.3 %" in row.tooltip("memo")
    assert row.fps_history() == [30.0]  # the history stays (the plot shows when it stopped)
    m.ingest("edgeconf/cam1/state", b'{"online": true}')  # back: live again
    m.ingest("edgeconf/cam1/status", _status(29.0))
    assert row.text("fps") == "29.0" and row.tooltip("fps") == ""
