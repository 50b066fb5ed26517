"""Device profiles: the shipped TOML files, lookups, matching and validation."""
from __future__ import annotations

from pathlib import Path

import pytest

from edgeconf.devices.errors import ProfileError, UnknownProfileError
from edgeconf.devices.profiles import (PROFILE_DIR, DeviceProfile, get_profile, list_profiles, load_profile_file,
                                       match_model, parse_profile)

REQUIRED = ["jetson-nano-4gb", "jetson-nano-2gb", "jetson-xavier-nx", "jetson-orin-nano", "jetson-agx-orin",
            "x86-cpu", "x86-nvidia"]


def test_every_required_profile_ships():
    ids = [p.id for p in list_profiles()]
    assert set(REQUIRED) <= set(ids)
    assert ids == sorted(ids)


@pytest.mark.parametrize("pid", REQUIRED)
def test_profile_fields(pid):
    p = get_profile(pid)
    assert isinstance(p, DeviceProfile) and p.id == pid and p.name
    assert p.kind in ("jetson", "x86", "x86-nvidia")
    assert "fp32" in p.precisions and set(p.precisions) <= {"fp32", "fp16", "int8"}
    assert p.int8 == ("int8" in p.precisions)
    if p.kind == "jetson":
        assert p.memory_mb > 0 and p.trt_workspace_mb > 0 and p.trt_workspace_mb < p.memory_mb
        assert p.jetpack and p.tensorrt and p.cuda_compute
        assert p.tensorrt.count(".") == 1  # major.minor
        assert p.power_modes and all(m.watts > 0 for m in p.power_modes)
        assert len({m.id for m in p.power_modes}) == len(p.power_modes)
        assert p.match and match_model("NVIDIA %s Developer Kit" % p.match[0]) is p
    assert sum(r.whole_board for r in p.rails) <= 1


def test_nano_facts():
    nano = get_profile("jetson-nano-4gb")
    assert nano.precisions == ("fp32", "fp16") and not nano.int8  # no INT8 tensor cores on Maxwell
    assert nano.tensorrt == "8.2" and nano.cuda_compute == "5.3" and nano.memory_mb == 4096
    assert nano.whole_board_rail == "POM_5V_IN"
    assert [m.name for m in nano.power_modes] == ["MAXN", "5W"]
    assert nano.power_mode(1).watts == 5.0
    with pytest.raises(ProfileError, match="no power mode 7"):
        nano.power_mode(7)
    assert get_profile("jetson-nano-2gb").rails == ()  # no INA3221 on the 2GB
    assert get_profile("jetson-orin-nano").whole_board_rail == "VDD_IN"
    assert get_profile("jetson-agx-orin").whole_board_rail is None  # sum of module rails


@pytest.mark.parametrize("model,pid", [
    ("NVIDIA Jetson Nano Developer Kit", "jetson-nano-4gb"),
    ("NVIDIA Jetson Nano 2GB Developer Kit", "jetson-nano-2gb"),  # longest match wins over "Jetson Nano"
    ("NVIDIA Jetson Orin Nano Developer Kit", "jetson-orin-nano"),
    ("NVIDIA Jetson Xavier NX Developer Kit", "jetson-xavier-nx"),
    ("Jetson AGX Orin", "jetson-agx-orin"),
    ("NVIDIA Jetson TX2", None),
    ("Raspberry Pi 4 Model B Rev 1.4", None),
])
def test_match_model(model, pid):
    p = match_model(model)
    assert (p.id if p else None) == pid


def test_unknown_profile_names_the_known_ones():
    with pytest.raises(UnknownProfileError) as exc:
        get_profile("jetson-tx1")
    msg = str(exc.value)
    assert "jetson-tx1" in msg and all(pid in msg for pid in REQUIRED)
    assert isinstance(exc.value, KeyError)


def test_profiles_are_package_data():
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '"edgeconf.devices" = ["profiles/*.toml"]' in text
    assert sorted(f.stem for f in PROFILE_DIR.glob("*.toml")) == [p.id for p in list_profiles()]


def test_to_json_round_trips_through_parse():
    for p in list_profiles():
        d = p.to_json()
        again = parse_profile(d, "json")
        assert again.to_json() == d


@pytest.mark.parametrize("change,message", [
    ({"kind": "arm"}, "kind must be one of"),
    ({"precisions": ["fp8"]}, "precisions"),
    ({"memory_mb": "4GB"}, "memory_mb must be int"),
    ({"memory_mb": True}, "memory_mb must be int"),
    ({"int8": "no"}, "int8 must be bool"),
    ({"sensor": "usb"}, "sensor must be one of"),
    ({"rails": [{"name": "A", "whole_board": True}, {"name": "B", "whole_board": True}]}, "at most one rail"),
    ({"power_modes": [{"id": 0, "name": "MAXN"}]}, "missing required key 'watts'"),
])
def test_invalid_profile_data(change, message):
    d = get_profile("jetson-nano-4gb").to_json()
    d.update(change)
    with pytest.raises(ProfileError, match=message):
        parse_profile(d, "test.toml")


def test_invalid_toml_file(tmp_path):
    bad = tmp_path / "broken.toml"
    bad.write_text("id = 'broken'\nname = \n")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile_file(bad)
    wrong = tmp_path / "other.toml"
    wrong.write_text((PROFILE_DIR / "x86-cpu.toml").read_text())
    with pytest.raises(ProfileError, match="must match the file name"):
        load_profile_file(wrong)
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile_file(tmp_path / "missing.toml")
