"""Power sources on fake sysfs trees of every board, RAPL wrap-around and permissions, jtop and NVML adapters."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgeconf.devices.errors import SensorReadError, SensorUnavailableError
from edgeconf.devices.power import (JtopSource, NanoIna3221Source, NullSource, NvmlSource, OrinIna3221Source,
                                    RaplSource, open_power_source, parse_jtop_power)
from edgeconf.devices.profiles import get_profile
from fake_sysfs import BOARDS, RAPL_MAX_UJ, FakeJtop, FakeNvml, jtop_service_down, rapl_set


def test_auto_picks_the_board_sensor(board, clock):
    fake, root = board
    src = open_power_source("auto", root=root, clock=clock, jtop_factory=jtop_service_down, nvml=FakeNvml())
    assert src.name == fake.expected_source
    profile = get_profile(fake.profile_id)
    if fake.layout in ("iio", "hwmon"):
        assert src.available and not src.counter
        assert list(src.rail_names) == [r.name for r in profile.rails]  # the profile names the real rails
        s = src.read()
        assert s.timestamp_s == clock.t
        assert s.rails_mw == pytest.approx({r: w * 1000 for r, w in fake.default_watts().items()})
        assert s.total_mw == pytest.approx(fake.expected_total_mw())
        assert src.whole_board == (profile.whole_board_rail is not None)
    elif fake.profile_id == "jetson-nano-2gb":
        assert not src.available and isinstance(src, NullSource)
        assert "jtop service is not running" in src.reason and "sudo jtop --install-service" in src.reason
        assert [p.name for p in src.probes] == ["ina3221-hwmon", "ina3221-iio", "jtop"]
        with pytest.raises(SensorReadError):
            src.read()
    elif fake.profile_id == "x86-cpu":
        assert src.available and src.counter and src.rail_names == ("package-0", "package-0/core", "package-0/uncore")
    else:
        assert src.available and src.rail_names == ("gpu",)


@pytest.mark.parametrize("pid", ["jetson-xavier-nx", "jetson-orin-nano", "jetson-agx-orin"])
def test_hwmon_power_is_volts_times_amps(tmp_path, pid):
    fake = BOARDS[pid]
    root = fake.write(tmp_path)
    rail = fake.rails()[0]
    volt, curr = fake.rail_files(root, rail)
    volt.write_text("5080\n")
    curr.write_text("1234\n")
    s = OrinIna3221Source(root).read()
    assert s.rails_mw[rail] == pytest.approx(5080 * 1234 / 1000)
    assert "NC" not in s.rails_mw and not any("sum" in r for r in s.rails_mw)


def test_nano_reads_in_power_directly(tmp_path):
    fake = BOARDS["jetson-nano-4gb"]
    root = fake.write(tmp_path, {"POM_5V_IN": 4.321, "POM_5V_GPU": 1.0, "POM_5V_CPU": 0.5})
    src = NanoIna3221Source(root)
    s = src.read()
    assert s.total_mw == 4321.0 and s.rails_mw["POM_5V_GPU"] == 1000.0
    assert src.whole_rail == "POM_5V_IN"
    assert not OrinIna3221Source(root).available  # the other layout finds nothing


def test_missing_or_garbage_rail_files(tmp_path):
    fake = BOARDS["jetson-orin-nano"]
    root = fake.write(tmp_path)
    src = OrinIna3221Source(root)
    soc_v, _ = fake.rail_files(root, "VDD_SOC")
    soc_v.write_text("garbage\n")  # a secondary rail fails: it is not measured, the total still comes from VDD_IN
    s = src.read()
    assert "VDD_SOC" not in s.rails_mw and s.total_mw == pytest.approx(1500.0)
    assert "not a number" in s.rail_errors["VDD_SOC"] and s.total_error is None
    _, in_i = fake.rail_files(root, "VDD_IN")
    in_i.unlink()  # the whole-board rail vanishes: the total is not measured, the other rails still are
    s = src.read()
    assert s.total_mw is None and "whole-board rail VDD_IN was not measured" in s.total_error
    assert "curr1_input" in s.total_error and "VDD_CPU_GPU_CV" in s.rails_mw
    in_i.write_text("\n")  # empty file: garbage
    s = src.read()
    assert s.total_mw is None and "not a number" in s.total_error


def test_sum_total_needs_every_rail(tmp_path):
    fake = BOARDS["jetson-agx-orin"]
    root = fake.write(tmp_path)
    src = OrinIna3221Source(root)
    assert src.whole_rail is None and not src.whole_board
    fake.rail_files(root, "VDD_CPU_CV")[1].write_text("x\n")
    s = src.read()
    assert s.total_mw is None and "VDD_CPU_CV" in s.rail_errors and "VDD_CPU_CV was not measured" in s.total_error


def test_rapl_counter_and_wrap_around(tmp_path, clock):
    root = BOARDS["x86-cpu"].write(tmp_path)
    for z in ("intel-rapl:0", "intel-rapl:0:0", "intel-rapl:0:1"):
        rapl_set(root, z, RAPL_MAX_UJ - 1_000_000)
    src = RaplSource(root, clock=clock)
    assert "not the whole machine" in src.reason and not src.whole_board
    first = src.read()
    assert first.energy_j == 0.0 and first.total_mw is None and first.rails_mw == {}
    clock.advance(0.5)
    rapl_set(root, "intel-rapl:0", 4_000_000)  # wrapped: 1 J to the top, then 4 J more
    rapl_set(root, "intel-rapl:0:0", RAPL_MAX_UJ - 500_000)
    s = src.read()
    assert s.energy_j == pytest.approx(5.0)
    assert s.total_mw == pytest.approx(10_000.0)  # 5 J in 0.5 s
    assert s.rails_mw["package-0/core"] == pytest.approx(1000.0)
    clock.advance(0.5)
    rapl_set(root, "intel-rapl:0", 6_000_000)
    assert src.read().energy_j == pytest.approx(7.0)


def test_rapl_psys_is_the_total(tmp_path, clock):
    root = BOARDS["x86-cpu"].write(tmp_path)
    z = root / "sys/class/powercap/intel-rapl:1"
    z.mkdir()
    (z / "name").write_text("psys\n")
    (z / "energy_uj").write_text("0\n")
    (z / "max_energy_range_uj").write_text("%d\n" % RAPL_MAX_UJ)
    src = RaplSource(root, clock=clock)
    assert src.whole_board and "psys" in src.reason
    src.read()
    clock.advance(1.0)
    rapl_set(root, "intel-rapl:1", 30_000_000)
    rapl_set(root, "intel-rapl:0", 11_000_000)
    assert src.read().energy_j == pytest.approx(30.0)


def test_rapl_permission_denied_says_how_to_grant(tmp_path, monkeypatch):
    root = BOARDS["x86-cpu"].write(tmp_path)
    energy = root / "sys/class/powercap/intel-rapl:0/energy_uj"
    if os.geteuid() != 0:
        energy.chmod(0)
    else:  # root reads everything: make the kernel's answer appear for that one file
        real = Path.read_text

        def read_text(self, *a, **kw):
            if self == energy:
                raise PermissionError(13, "Permission denied", str(self))
            return real(self, *a, **kw)

        monkeypatch.setattr(Path, "read_text", read_text)
    src = RaplSource(root)
    assert not src.available
    assert "permission denied" in src.reason and "chmod a+r" in src.reason and "root" in src.reason
    auto = open_power_source("auto", root=root)
    assert auto.name == "none" and "chmod a+r" in auto.reason


def test_rapl_read_failure_keeps_counter_state(tmp_path, clock):
    root = BOARDS["x86-cpu"].write(tmp_path)
    src = RaplSource(root, clock=clock)
    src.read()
    energy = root / "sys/class/powercap/intel-rapl:0/energy_uj"
    energy.write_text("garbage\n")
    clock.advance(0.1)
    with pytest.raises(SensorReadError, match="not a number"):
        src.read()
    rapl_set(root, "intel-rapl:0", 3_000_000)
    clock.advance(0.1)
    assert src.read().energy_j == pytest.approx(2.0)


# -- jtop: the documented data shape, without the service ----------------------------------------
def test_parse_jtop_power_uses_instantaneous_power():
    rails, total = parse_jtop_power(FakeJtop().power)
    assert total == 5890.0  # tot['power'], not tot['avg']
    assert rails == {"VDD_CPU_GPU_CV": 2198.0, "VDD_SOC": 1440.0, "VDD_IN": 5890.0}


def test_parse_jtop_power_without_tot_sums_rails_and_accepts_v3_keys():
    rails, total = parse_jtop_power({"rail": {"A": {"cur": 100, "avg": 90}, "B": {"cur": 50, "avg": 40}}})
    assert rails == {"A": 100.0, "B": 50.0} and total == 150.0
    assert parse_jtop_power({}) == ({}, None)
    with pytest.raises(SensorReadError):
        parse_jtop_power({"rail": {"A": {"volt": 5000}}})
    with pytest.raises(SensorReadError):
        parse_jtop_power([1, 2])


def test_jtop_source_reads_the_client(clock):
    client = FakeJtop(interval=0.25)
    src = JtopSource(interval_s=0.25, factory=lambda interval: client, clock=clock)
    assert src.available and client.started and src.whole_board
    assert src.preferred_rate_hz == 4.0
    s = src.read()
    assert s.total_mw == 5890.0 and s.timestamp_s == clock.t
    client.power["tot"]["power"] = 6000
    assert src.read().total_mw == 6000.0
    client.closed = True
    with pytest.raises(SensorReadError, match="jtop"):
        src.read()
    src.close()


def test_jtop_not_installed_and_service_down():
    src = JtopSource(factory=None) if _jtop_missing() else JtopSource(factory=_raise_import)
    assert not src.available and "pip install 'jetson-stats>=4.2'" in src.reason and "edgeconf[" not in src.reason
    down = JtopSource(factory=jtop_service_down)
    assert not down.available
    assert "jtop service is not running" in down.reason and "sudo jtop --install-service" in down.reason


def test_jtop_rate_is_the_services_own():
    from edgeconf.devices.meter import EnergyMeter

    src = JtopSource(interval_s=0.25, factory=lambda interval: FakeJtop(interval=1.0))  # another client set 1 s
    assert src.interval_s == 1.0 and src.preferred_rate_hz == 1.0
    meter = EnergyMeter(src)
    assert meter.rate_hz == 1.0 and meter.max_gap_s == pytest.approx(5.0)


def test_jtop_without_power_rails():
    client = FakeJtop()
    client.power = {}
    src = JtopSource(factory=lambda interval: client)
    assert not src.available and "no power rails" in src.reason and client.closed


def test_asking_for_jtop_falls_back_to_sysfs_and_says_so(tmp_path):
    root = BOARDS["jetson-nano-4gb"].write(tmp_path)
    src = open_power_source("jtop", root=root, jtop_factory=jtop_service_down)
    assert src.name == "ina3221-iio" and src.available
    assert "jtop service is not running" in src.reason and "using ina3221-iio instead" in src.reason


def test_auto_uses_jtop_when_sysfs_is_absent(tmp_path):
    root = BOARDS["jetson-nano-2gb"].write(tmp_path)
    src = open_power_source("auto", root=root, jtop_factory=lambda interval: FakeJtop(interval))
    assert src.name == "jtop" and src.available


def _jtop_missing() -> bool:
    try:
        import jtop  # noqa: F401
    except ImportError:
        return True
    return False


def _raise_import(interval=0.5):
    raise ImportError("No module named 'jtop'")


# -- NVML: the documented units, without a GPU -----------------------------------------------------
def test_nvml_counter_source(clock):
    nvml = FakeNvml(power_mw=70_000, energy_mj=1_000_000)
    src = NvmlSource(nvml=nvml, clock=clock)
    assert src.available and src.counter and "H200" in src.reason and not src.whole_board
    s = src.read()
    assert s.total_mw == 70_000.0 and s.rails_mw == {"gpu": 70_000.0} and s.energy_j == 0.0
    nvml.energy_mj += 35_000  # mJ
    assert src.read().energy_j == pytest.approx(35.0)
    nvml.fail = True
    with pytest.raises(SensorReadError, match="NVML"):
        src.read()
    src.close()
    assert not nvml.initialised


def test_nvml_power_only_gpu():
    src = NvmlSource(nvml=FakeNvml(energy_supported=False, name="Tesla P4"))
    assert src.available and not src.counter and src.read().energy_j is None


def test_nvml_missing_or_no_driver():
    class NoDriver(FakeNvml):
        def nvmlInit(self):
            raise self.NVMLError("Driver Not Loaded")

    assert "Driver Not Loaded" in NvmlSource(nvml=NoDriver()).reason
    assert not NvmlSource(index=3, nvml=FakeNvml()).available


def test_named_sources_and_unknown_name(tmp_path):
    root = BOARDS["jetson-orin-nano"].write(tmp_path)
    assert open_power_source("orin", root=root).name == "ina3221-hwmon"
    iio = open_power_source("ina3221-iio", root=root)
    assert iio.name == "ina3221-iio" and not iio.available and "no INA3221 channels" in iio.reason
    assert open_power_source("none").name == "none"
    with pytest.raises(SensorUnavailableError, match="unknown power source"):
        open_power_source("usb-meter")


def test_a_rail_with_a_missing_file_stays_a_rail_and_says_why(tmp_path):
    """Orin Nano without VDD_IN's current file: VDD_IN is a failed rail (not dropped), and the total is not measured."""
    fake = BOARDS["jetson-orin-nano"]
    root = fake.write(tmp_path)
    _, in_i = fake.rail_files(root, "VDD_IN")
    in_i.unlink()
    src = OrinIna3221Source(root)
    assert src.rail_names == ("VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC") and src.whole_rail == "VDD_IN"
    s = src.read()
    assert s.total_mw is None and set(s.rails_mw) == {"VDD_CPU_GPU_CV", "VDD_SOC"}
    assert "curr1_input" in s.rail_errors["VDD_IN"] and "No such file" in s.rail_errors["VDD_IN"]
    assert "check" in s.rail_errors["VDD_IN"] and s.total_error.startswith("the whole-board rail VDD_IN was not measured")


def test_agx_orin_total_is_not_a_sum_missing_a_rail(tmp_path):
    fake = BOARDS["jetson-agx-orin"]
    root = fake.write(tmp_path)
    rail = fake.rails()[1]
    fake.rail_files(root, rail)[1].unlink()
    src = OrinIna3221Source(root)
    assert rail in src.rail_names
    s = src.read()
    assert s.total_mw is None and rail not in s.rails_mw and rail in s.rail_errors
    assert "sum of the rails" in s.total_error and rail in s.total_error


@pytest.mark.parametrize("value, words", [("99999999999", "above 1 kW"), ("-500", "negative"), ("nan", "not a number")])
def test_impossible_hwmon_readings_are_not_measured(tmp_path, value, words):
    fake = BOARDS["jetson-orin-nano"]
    root = fake.write(tmp_path)
    fake.rail_files(root, "VDD_SOC")[1].write_text(value + "\n")
    s = OrinIna3221Source(root).read()
    assert "VDD_SOC" not in s.rails_mw and words in s.rail_errors["VDD_SOC"] and "curr3_input" in s.rail_errors["VDD_SOC"]
    assert s.total_mw == pytest.approx(1500.0) and s.total_error is None  # VDD_IN is still the whole board
    fake.rail_files(root, "VDD_SOC")[1].write_text("700\n")
    fake.rail_files(root, "VDD_SOC")[0].write_text("-5000\n")  # negative volts x negative amps is no power
    fake.rail_files(root, "VDD_SOC")[1].write_text("-700\n")
    s = OrinIna3221Source(root).read()
    assert "VDD_SOC" not in s.rails_mw and "negative" in s.rail_errors["VDD_SOC"]


@pytest.mark.parametrize("value, words", [("2000000", "above 1 kW"), ("-501", "negative")])
def test_impossible_iio_readings_are_not_measured(tmp_path, value, words):
    fake = BOARDS["jetson-nano-4gb"]
    root = fake.write(tmp_path)
    fake.rail_files(root, "POM_5V_GPU")[0].write_text(value + "\n")
    s = NanoIna3221Source(root).read()
    assert "POM_5V_GPU" not in s.rails_mw and words in s.rail_errors["POM_5V_GPU"]
    fake.rail_files(root, "POM_5V_GPU")[0].write_text("1000000\n")  # exactly 1 kW is still accepted
    assert NanoIna3221Source(root).read().rails_mw["POM_5V_GPU"] == 1_000_000.0


def test_a_failed_whole_board_rail_says_why_and_keeps_the_other_rails(tmp_path):
    fake = BOARDS["jetson-nano-4gb"]
    root = fake.write(tmp_path)
    fake.rail_files(root, "POM_5V_IN")[0].write_text("nan\n")
    s = NanoIna3221Source(root).read()
    assert s.total_mw is None and s.rails_mw == pytest.approx({"POM_5V_GPU": 2500.0, "POM_5V_CPU": 3500.0})
    assert "in_power0_input holds 'nan\\n', not a number" in s.total_error and "check the sensor" in s.total_error


def test_every_rail_failing_names_each_reason(tmp_path):
    fake = BOARDS["jetson-nano-4gb"]
    root = fake.write(tmp_path)
    for r in fake.rails():
        fake.rail_files(root, r)[0].write_text("x\n")
    with pytest.raises(SensorReadError) as exc:
        NanoIna3221Source(root).read()
    assert all(r in str(exc.value) for r in fake.rails())


def test_an_idle_rail_a_little_below_zero_reads_zero(tmp_path):
    """The INA3221's offset makes an idle rail read a few mA (or mW) below zero: that is 0, not a fault."""
    fake = BOARDS["jetson-orin-nano"]
    root = fake.write(tmp_path)
    fake.rail_files(root, "VDD_SOC")[1].write_text("-16\n")  # two 8 mA steps below zero
    s = OrinIna3221Source(root).read()
    assert s.rails_mw["VDD_SOC"] == 0.0 and "VDD_SOC" not in s.rail_errors
    fake = BOARDS["jetson-nano-4gb"]
    root = fake.write(tmp_path / "nano")
    fake.rail_files(root, "POM_5V_GPU")[0].write_text("-40\n")
    s = NanoIna3221Source(root).read()
    assert s.rails_mw["POM_5V_GPU"] == 0.0 and "POM_5V_GPU" not in s.rail_errors
