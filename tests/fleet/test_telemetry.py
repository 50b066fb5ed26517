"""MQTT telemetry against a real mosquitto broker on 127.0.0.1: status and events arrive, the Last Will fires on
SIGKILL, a broker restart loses at most the queue's overflow (counted), refused credentials are a clear error."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from edgeconf.errors import ConfigError
from edgeconf.live.telemetry import DEFAULT_QUEUE_SIZE, Telemetry, parse_telemetry_uri

from fleet_servers import MosquittoProcess
from mqtt_subscriber import WAIT_S, Subscriber


def test_uri_parsing():
    c = parse_telemetry_uri("mqtt://edge:s%40cret@127.0.0.1:1884/edgeconf/cam-01?queue=50&frames=0")
    assert (c.host, c.port, c.topic, c.device, c.username, c.password) == ("127.0.0.1", 1884, "edgeconf/cam-01",
                                                                          "cam-01", "edge", "s@cret")
    assert c.queue_size == 50 and not c.frames and not c.tls
    t = parse_telemetry_uri("mqtts://127.0.0.1/edgeconf/cam")
    assert t.tls and t.port == 8883 and t.queue_size == DEFAULT_QUEUE_SIZE


@pytest.mark.parametrize("uri, words", [
    ("mqtt://127.0.0.1:1883", "has no topic"),
    ("mqtt://127.0.0.1:1883/", "has no topic"),
    ("http://127.0.0.1/edgeconf/x", "must start with mqtt://"),
    ("mqtt:///edgeconf/x", "names no broker host"),
    ("mqtt://127.0.0.1/edgeconf/#", "may not contain"),
    ("mqtt://127.0.0.1/edgeconf/x?color=red", "unknown telemetry option"),
    ("mqtt://127.0.0.1/edgeconf/x?queue=0", "at least 1 message"),
    ("mqtt://127.0.0.1/edgeconf/x?tls=1&ca=/nonexistent/ca.pem", "no such file"),
    ("mqtt://[::1/t/d", r"'mqtt://\[::1/t/d' is not a valid URI \(Invalid IPv6 URL\); an IPv6 broker address goes in "
                        r"brackets, e.g. mqtt://\[::1\]:1883/edgeconf/DEVICE"),
    ("mqtt://127.0.0.1:abc/edgeconf/x", "port 'abc' is not a number"),
    ("mqtt://127.0.0.1:0/edgeconf/x", r"port 0 is out of range; a port is 1..65535"),
    ("mqtt://127.0.0.1:65536/edgeconf/x", r"port 65536 is out of range; a port is 1..65535"),
    ("mqtt://127.0.0.1/edgeconf/x?insecure=1", "option insecure= needs TLS, which .* does not use; use mqtts:// or "
                                               "add tls=1"),
])
def test_bad_uris(uri, words):
    with pytest.raises(ConfigError, match=words) as err:
        parse_telemetry_uri(uri)
    assert "\n" not in str(err.value)


def test_an_ipv6_broker_in_brackets_and_its_port():
    c = parse_telemetry_uri("mqtt://[::1]:1884/edgeconf/cam")
    assert (c.host, c.port) == ("::1", 1884)


def test_tls_files_that_are_not_pem_or_need_tls_are_refused_in_one_line(tmp_path):
    from fleet_servers import make_test_certificates

    try:
        certs = make_test_certificates(str(tmp_path))
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        pytest.skip("cannot make test certificates: %s" % exc)
    os.makedirs(str(tmp_path / "other"))
    other = make_test_certificates(str(tmp_path / "other"))
    junk = tmp_path / "afile"
    junk.write_text("hi\n")
    base = "mqtts://127.0.0.1/edgeconf/x?"
    cases = [
        (base + "ca=%s" % junk, "option ca=%s: the file holds no certificate; it must be a PEM file" % junk),
        ("mqtt://u:p@127.0.0.1/edgeconf/x?tls=1&ca=%s" % junk, "option ca=%s: the file holds no certificate" % junk),
        (base + "cert=%s&key=%s" % (junk, certs["key"]), "option cert=%s: the file holds no certificate" % junk),
        (base + "cert=%s&key=%s" % (certs["cert"], junk), "option key=%s: the file holds no private key; it must be a "
                                                          "PEM file" % junk),
        (base + "cert=%s&key=%s" % (certs["cert"], other["key"]), "key=%s is not the private key of cert=%s"
                                                                  % (other["key"], certs["cert"])),
        (base + "cert=%s" % certs["cert"], "option cert=%s holds no private key; give the key with key=FILE"
                                           % certs["cert"]),
        (base + "key=%s" % certs["key"], "option key=%s needs cert=FILE" % certs["key"]),
        ("mqtt://127.0.0.1/edgeconf/x?cert=%s&key=%s" % (certs["cert"], certs["key"]),
         "options cert=, key= need TLS, which .* does not use; use mqtts:// or add tls=1"),
        ("mqtt://127.0.0.1/edgeconf/x?ca=%s" % certs["ca"], "option ca= needs TLS"),
    ]
    for uri, words in cases:
        with pytest.raises(ConfigError, match=words) as err:
            parse_telemetry_uri(uri)
        assert "\n" not in str(err.value), uri
    good = parse_telemetry_uri(base + "ca=%s&cert=%s&key=%s" % (certs["ca"], certs["cert"], certs["key"]))
    assert good.tls and (good.ca_certs, good.certfile, good.keyfile) == (certs["ca"], certs["cert"], certs["key"])


def test_a_config_made_in_code_with_a_non_pem_ca_fails_in_one_line_at_start(tmp_path):
    from dataclasses import replace

    junk = tmp_path / "afile"
    junk.write_text("hi\n")
    cfg = replace(parse_telemetry_uri("mqtts://127.0.0.1:1/edgeconf/x"), ca_certs=str(junk))
    with pytest.raises(ConfigError, match="cannot set up TLS for the broker at 127.0.0.1:1 .*; ca=, cert= and key= "
                                          "must be PEM files") as err:
        Telemetry(cfg).start()
    assert "\n" not in str(err.value)


def test_run_without_topic_is_a_one_line_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "edgeconf", "demo", "--frames", "2", "--no-live",
                        "--telemetry", "mqtt://127.0.0.1:1883"], capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "has no topic" in r.stderr




@pytest.mark.fleet
def test_demo_publishes_status_and_events(mosquitto):
    from click.testing import CliRunner

    from edgeconf.cli import cli

    sub = Subscriber(mosquitto.port, "edgeconf/cam1/#")
    try:
        r = CliRunner().invoke(cli, ["demo", "--frames", "12", "--objects", "2", "--size", "160x120", "--no-live",
                                     "--json", "--telemetry", mosquitto.uri + "/edgeconf/cam1"])
        assert r.exit_code == 0, r.output
        summary = json.loads(r.output)
        msgs = sub.until(lambda t, m: t.endswith("/state") and m.get("online") is False, "offline state")
    finally:
        sub.close()
    events = [m for t, m in msgs if t == "edgeconf/cam1/events"]
    statuses = [m for t, m in msgs if t == "edgeconf/cam1/status"]
    states = [m for t, m in msgs if t == "edgeconf/cam1/state"]
    types = [e["type"] for e in events]
    assert types[0] == "start" and types[-1] == "stop" and "summary" in types
    assert types.count("frame") == 12 and all(e["device"] == "cam1" for e in events)
    assert states[0]["online"] is True and states[-1] == {"online": False, "device": "cam1", "reason": "closed"}
    last = statuses[-1]
    for key in ("fps", "latency_ms", "exits", "escalation_rate", "memo_hit_rate", "unknown_rate", "remote",
                "source_state", "power_w", "energy_per_answer_j", "frames", "answers"):
        assert key in last, key
    assert last["frames"] == 12 and last["device"] == "cam1" and last["answers"] == summary["counters"]["answers"]
    assert last["power_w"] is None and last["energy_per_answer_j"] is None  # no sensor here: null, never invented
    assert last["unknown_rate"] == summary["counters"]["unknown_rate"]  # measured by the pipeline (issue 14)
    assert last["remote"] == {"inputs": 0, "calls": 0, "failures": 0, "reasons": {}}
    assert summary["telemetry"]["dropped"] == 0


@pytest.mark.fleet
def test_last_will_fires_when_the_device_is_killed(mosquitto):
    code = ("import sys, time\n"
            "from edgeconf.live.telemetry import Telemetry, parse_telemetry_uri\n"
            "t = Telemetry(parse_telemetry_uri(sys.argv[1])).start()\n"
            "print('connected' if t.connected else 'not connected', flush=True)\n"
            "time.sleep(600)\n")
    sub = Subscriber(mosquitto.port, "edgeconf/dead/state")
    proc = subprocess.Popen([sys.executable, "-c", code, mosquitto.uri + "/edgeconf/dead"], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "connected"
        sub.until(lambda t, m: m.get("online") is True, "online state")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        msgs = sub.until(lambda t, m: m.get("online") is False, "last will")
        assert msgs[-1][1] == {"online": False, "device": "dead", "reason": "connection lost"}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        sub.close()


@pytest.mark.fleet
def test_broker_restart_loses_only_the_counted_overflow(tmp_path):
    why = MosquittoProcess.why_unavailable()
    if why:
        pytest.skip(why)
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (pip install '.[fleet]')")
    broker = MosquittoProcess(str(tmp_path), persistence=True)
    broker.start()
    tel = Telemetry(parse_telemetry_uri(broker.uri + "/edgeconf/cam7?queue=5"))
    sub = None
    try:
        sub = Subscriber(broker.port, "edgeconf/cam7/status", client_id="viewer-7", persistent=True)
        tel.start()
        assert tel.connected
        for _ in range(3):
            tel.publish_status({"n": 1})
        before = sub.until(lambda t, m: m["seq"] == 3, "status 3")
        broker.stop()  # SIGTERM: mosquitto saves the viewer's session
        t_end = time.monotonic() + WAIT_S
        while tel.connected and time.monotonic() < t_end:  # the client notices the broker left
            time.sleep(0.01)
        assert not tel.connected
        for _ in range(12):  # seq 4..15 while the broker is away: the queue keeps the newest 5
            tel.publish_status({"n": 1})
        assert tel.dropped == 7 and tel.queued == 5
        broker.start()
        after = sub.until(lambda t, m: m["seq"] == 15, "status 15")
        received = {m["seq"] for _, m in before + after}  # QoS 1 is at least once: repeats are allowed
        lost = sorted(set(range(1, 16)) - received)
        assert lost == [4, 5, 6, 7, 8, 9, 10]  # the oldest, dropped from the full queue and counted
        assert tel.stats()["dropped"] == 7
    finally:
        if sub is not None:
            sub.close()
        tel.close(timeout_s=1.0)
        broker.stop()


@pytest.mark.fleet
def test_refused_credentials_are_a_clear_error(tmp_path):
    why = MosquittoProcess.why_unavailable()
    if why:
        pytest.skip(why)
    broker = MosquittoProcess(str(tmp_path), users={"edge": "right"})
    broker.start()
    try:
        bad = Telemetry(parse_telemetry_uri("mqtt://edge:wrong@127.0.0.1:%d/edgeconf/x" % broker.port))
        with pytest.raises(ConfigError, match="refused the connection.*check the user name and password"):
            bad.start()
        good = Telemetry(parse_telemetry_uri("mqtt://edge:right@127.0.0.1:%d/edgeconf/x" % broker.port)).start()
        assert good.connected
        good.close()
    finally:
        broker.stop()


@pytest.mark.fleet
@pytest.mark.slow
def test_tls_with_the_brokers_ca(tmp_path):
    why = MosquittoProcess.why_unavailable()
    if why:
        pytest.skip(why)
    from fleet_servers import make_test_certificates

    try:
        certs = make_test_certificates(str(tmp_path))
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        pytest.skip("cannot make test certificates: %s" % exc)
    broker = MosquittoProcess(str(tmp_path), tls=certs, persistence=False)
    broker.start()
    try:
        uri = "mqtts://127.0.0.1:%d/edgeconf/secure?ca=%s" % (broker.port, certs["ca"])
        tel = Telemetry(parse_telemetry_uri(uri)).start()
        try:
            assert tel.connected  # TLS handshake with the CA's certificate, host name checked
        finally:
            tel.close()
        plain = Telemetry(parse_telemetry_uri("mqtt://127.0.0.1:%d/edgeconf/plain" % broker.port)).start()
        try:
            assert not plain.connected  # a plain client gets nowhere with a TLS listener (and is not blocked)
            assert plain.last_failure == ("the broker closed the connection without answering the MQTT handshake (if "
                                          "127.0.0.1:%d is a TLS listener, use mqtts://)" % broker.port)
        finally:
            plain.close(timeout_s=0.5)
        no_ca = Telemetry(parse_telemetry_uri("mqtts://127.0.0.1:%d/edgeconf/no-ca" % broker.port)).start()
        try:  # the system's CAs do not know the test CA
            assert not no_ca.connected and no_ca.last_failure.startswith(
                "TLS handshake failed: the broker's certificate was not accepted ([SSL: CERTIFICATE_VERIFY_FAILED]")
            assert no_ca.last_failure.endswith("give the CA that signed it with ?ca=FILE")
        finally:
            no_ca.close(timeout_s=0.5)
    finally:
        broker.stop()


def test_messages_still_queued_at_close_are_counted_not_sent():
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (pip install '.[fleet]')")
    from fleet_servers import free_port

    tel = Telemetry(parse_telemetry_uri("mqtt://127.0.0.1:%d/edgeconf/away" % free_port()))  # nobody listens there
    tel.start()
    assert not tel.connected
    for i in range(7):
        tel.publish_event("frame", frame=i)
    assert "not_sent" not in tel.stats()  # still open: they are queued, not lost
    tel.close(timeout_s=0.2)
    stats = tel.stats()
    assert stats["sent"] == 0 and stats["dropped"] == 0
    assert stats["not_sent"] == 8  # the 7 events and the goodbye state: never handed to the broker, and said so
    assert stats["queued"] == 0


def test_demo_with_the_broker_down_says_what_was_not_sent():
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (pip install '.[fleet]')")
    from click.testing import CliRunner

    from edgeconf.cli import cli
    from fleet_servers import free_port

    uri = "mqtt://127.0.0.1:%d/edgeconf/x" % free_port()
    args = ["demo", "--frames", "6", "--objects", "2", "--size", "160x120", "--no-live", "--telemetry", uri]
    r = CliRunner().invoke(cli, args + ["--json"])
    assert r.exit_code == 0, r.output
    tel = json.loads(r.output)["telemetry"]
    assert tel["sent"] == 0 and tel["queued"] == 0
    assert tel["not_sent"] >= 6  # at least the 6 frame events; all of them counted
    assert tel["connect_failure"].startswith("connection refused: nothing listens on 127.0.0.1:")
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    line = [x for x in r.output.splitlines() if x.startswith("telemetry")][0]
    assert "0 messages sent" in line and "not sent (still queued when the run ended" in line
    assert "the broker was not reachable: connection refused: nothing listens on" in line


@pytest.mark.parametrize("scheme, host, words", [
    ("mqtts", "BROKER", "); is 127.0.0.1:PORT a TLS listener? a plain MQTT port takes mqtt://"),
    ("mqtt", "nosuch.invalid", "the host name 'nosuch.invalid' does not resolve"),
    ("mqtt", "FREE", "connection refused: nothing listens on 127.0.0.1:PORT"),
])
def test_a_broker_that_cannot_be_used_is_reported_with_the_reason(tmp_path, caplog, monkeypatch, scheme, host, words):
    """mqtts:// against a plain broker, a mistyped host and a closed port used to read alike ("no answer from the
    broker"); the warning, the stats at close and the run's summary now say why. The name lookup of the mistyped host
    fails at once here, as a resolver answers it (NXDOMAIN), whatever DNS the test machine has or lacks."""
    import logging
    import socket

    from fleet_servers import free_port

    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (pip install '.[fleet]')")
    broker = None
    port = 1883
    if host == "BROKER":
        why = MosquittoProcess.why_unavailable()
        if why:
            pytest.skip(why)
        broker = MosquittoProcess(str(tmp_path), persistence=False)  # plain MQTT only
        broker.start()
        host, port = "127.0.0.1", broker.port
    elif host == "FREE":
        host, port = "127.0.0.1", free_port()
    else:
        lookup = socket.getaddrinfo

        def no_such_host(name, *args, **kwargs):
            if name == host:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return lookup(name, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    words = words.replace("PORT", str(port))
    try:
        tel = Telemetry(parse_telemetry_uri("%s://%s:%d/edgeconf/x" % (scheme, host, port)))
        with caplog.at_level(logging.WARNING, logger="edgeconf.live.telemetry"):
            tel.start()
        assert not tel.connected and words in tel.last_failure, tel.last_failure
        assert tel.last_failure.startswith("TLS handshake failed (") == (scheme == "mqtts")  # reset, or an SSL error
        warning = [r.getMessage() for r in caplog.records if "telemetry: cannot connect" in r.getMessage()]
        assert len(warning) == 1 and words in warning[0]
        tel.close(timeout_s=0.2)
        assert words in tel.stats()["connect_failure"]
    finally:
        if broker is not None:
            broker.stop()
