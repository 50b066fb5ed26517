"""``edgeconf devices`` on fake boards and on a tree with no sensor."""
from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from edgeconf.commands.devices import devices_cmd
from fake_sysfs import BOARDS


def test_no_sensor_json_gives_null_readings(tmp_path):
    res = CliRunner().invoke(devices_cmd, ["--json", "--root", str(tmp_path), "--source", "rapl"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["readings"] is None
    assert doc["power"]["available"] is False and doc["power"]["source"] == "rapl"
    assert "no Intel RAPL zones" in doc["power"]["reason"]


def test_no_sensor_text_says_so_honestly(tmp_path):
    res = CliRunner().invoke(devices_cmd, ["--root", str(tmp_path), "--source", "rapl"])
    assert res.exit_code == 0, res.output
    assert "no power sensor" in res.output and "readings none" in res.output
    res = CliRunner().invoke(devices_cmd, ["--root", str(tmp_path), "--source", "rapl", "--watch"])
    assert res.exit_code == 0 and "nothing to watch" in res.output


def test_nano_readings_json(tmp_path):
    root = BOARDS["jetson-nano-4gb"].write(tmp_path, {"POM_5V_IN": 4.2, "POM_5V_GPU": 1.1, "POM_5V_CPU": 0.9})
    res = CliRunner().invoke(devices_cmd, ["--json", "--root", str(root), "--count", "2", "--interval", "0.01",
                                           "--source", "ina3221-iio"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["board"]["profile_id"] == "jetson-nano-4gb" and doc["board"]["jetpack"] == "4.6.1"
    assert doc["profile"]["precisions"] == ["fp32", "fp16"]
    assert doc["power"]["source"] == "ina3221-iio" and doc["power"]["whole_board"] is True
    assert [r["total_mw"] for r in doc["readings"]] == [4200.0, 4200.0]
    assert doc["readings"][0]["rails_mw"]["POM_5V_GPU"] == 1100.0


def test_watch_json_lines_and_table(tmp_path):
    root = BOARDS["jetson-orin-nano"].write(tmp_path)
    res = CliRunner().invoke(devices_cmd, ["--watch", "--json", "--root", str(root), "--count", "3", "--interval", "0.01",
                                           "--source", "ina3221-hwmon"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.output.strip().splitlines()]
    assert len(lines) == 3 and all(x["total_mw"] == 1500.0 for x in lines)
    res = CliRunner().invoke(devices_cmd, ["--watch", "--root", str(root), "--count", "2", "--interval", "0.01",
                                           "--source", "ina3221-hwmon"])
    assert res.exit_code == 0, res.output
    assert "VDD_SOC" in res.output and "total" in res.output


def test_unknown_board_warns_in_output(tmp_path):
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson TX2\x00")
    res = CliRunner().invoke(devices_cmd, ["--json", "--root", str(tmp_path), "--source", "none"])
    doc = json.loads(res.output)
    assert doc["profile"]["id"] == "jetson-generic" and "unknown board" in doc["warnings"][0]


def test_unknown_profile_is_a_one_line_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "edgeconf", "devices", "--profile", "jetson-tx1", "--root", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.startswith("edgeconf: error: unknown device profile 'jetson-tx1'") and out.stderr.count("\n") == 1


def test_this_machine_runs(tmp_path):
    """The real machine: whatever it has, the command works and never invents readings."""
    out = subprocess.run([sys.executable, "-m", "edgeconf", "devices", "--json", "--count", "1", "--interval", "0.05"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert (doc["readings"] is None) == (not doc["power"]["available"])


def test_a_root_that_does_not_exist_is_refused_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "edgeconf", "devices", "--root", str(tmp_path / "nonexistent")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeconf: error: --root ") and "no such folder" in lines[0]


def test_a_fake_jetson_tree_shows_its_board_and_the_jtop_hint_whole(tmp_path):
    import importlib.util

    import pytest

    if importlib.util.find_spec("jtop") is not None:
        pytest.skip("jetson-stats is installed here: there is no install hint to print")
    root = BOARDS["jetson-nano-4gb"].write(tmp_path)
    res = CliRunner().invoke(devices_cmd, ["--root", str(root), "--source", "jtop", "--count", "1"],
                             env={"COLUMNS": "400"})
    assert res.exit_code == 0, res.output
    board = [x for x in res.output.splitlines() if x.startswith("board")][0]
    assert "NVIDIA Jetson Nano Developer Kit" in board
    import platform

    assert platform.machine() not in board.split(" · ")  # the host's architecture is not the tree's board
    # rich markup must not eat "[jetson]" out of the install hint
    assert "pip install 'jetson-stats>=4.2' on the board (edgeconf's [jetson] extra)" in res.output
    doc = json.loads(CliRunner().invoke(devices_cmd, ["--json", "--root", str(root), "--source", "none"]).output)
    assert doc["board"]["machine"] is None and doc["board"]["model"] == "NVIDIA Jetson Nano Developer Kit"


def test_a_rail_that_fails_is_shown_as_not_measured_with_its_reason(tmp_path):
    fake = BOARDS["jetson-orin-nano"]
    root = fake.write(tmp_path)
    fake.rail_files(root, "VDD_CPU_GPU_CV")[1].write_text("garbage\n")
    base = ["--root", str(root), "--count", "1", "--interval", "0.01", "--source", "ina3221-hwmon"]
    doc = json.loads(CliRunner().invoke(devices_cmd, ["--json"] + base).output)
    r = doc["readings"][0]
    assert list(r["rails_mw"]) == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"] and r["rails_mw"]["VDD_CPU_GPU_CV"] is None
    assert "curr2_input holds 'garbage\\n', not a number" in r["rail_errors"]["VDD_CPU_GPU_CV"]
    assert r["total_mw"] == 1500.0 and r["total_error"] is None and r["error"] is None
    res = CliRunner().invoke(devices_cmd, base, env={"COLUMNS": "400"})
    assert "VDD_CPU_GPU_CV not measured (" in res.output and "not a number" in res.output
    res = CliRunner().invoke(devices_cmd, ["--watch"] + base, env={"COLUMNS": "400"})
    assert res.exit_code == 0 and "VDD_CPU_GPU_CV" in res.output and "not a number" in res.output
    line = json.loads(CliRunner().invoke(devices_cmd, ["--watch", "--json"] + base).output)
    assert line["rails_mw"]["VDD_CPU_GPU_CV"] is None and "not a number" in line["rail_errors"]["VDD_CPU_GPU_CV"]


def test_a_failed_whole_board_rail_gives_no_total_and_says_why(tmp_path):
    fake = BOARDS["jetson-orin-nano"]
    root = fake.write(tmp_path)
    fake.rail_files(root, "VDD_IN")[1].unlink()
    base = ["--root", str(root), "--count", "1", "--interval", "0.01", "--source", "ina3221-hwmon"]
    doc = json.loads(CliRunner().invoke(devices_cmd, ["--json"] + base).output)
    r = doc["readings"][0]
    assert doc["power"]["whole_board"] is True and "VDD_IN is the whole board" in doc["power"]["reason"]
    assert r["total_mw"] is None and r["rails_mw"]["VDD_IN"] is None and r["rails_mw"]["VDD_SOC"] == 3500.0
    assert "whole-board rail VDD_IN was not measured" in r["total_error"] and "curr1_input" in r["total_error"]
    res = CliRunner().invoke(devices_cmd, base, env={"COLUMNS": "400"})
    assert "total not measured (the whole-board rail VDD_IN" in res.output
    res = CliRunner().invoke(devices_cmd, ["--watch"] + base, env={"COLUMNS": "400"})
    assert "not measured" in res.output and "whole-board rail VDD_IN" in res.output


def test_watch_table_ends_with_a_newline(tmp_path):
    root = BOARDS["jetson-orin-nano"].write(tmp_path)
    res = CliRunner().invoke(devices_cmd, ["--watch", "--root", str(root), "--count", "1", "--interval", "0.01",
                                           "--source", "ina3221-hwmon"])
    assert res.exit_code == 0 and res.output.endswith("\n")
