"""Fake /proc, /etc and /sys trees of every supported board, with the paths and file formats of the real ones.

Jetson Nano (JetPack 4, iio): /sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0/rail_name_N, in_power{N}_input (mW),
in_current{N}_input (mA), in_voltage{N}_input (mV). Orin / Xavier on JetPack 5+ (hwmon):
/sys/bus/i2c/drivers/ina3221/<bus-addr>/hwmon/hwmonK/in{N}_label, in{N}_input (mV), curr{N}_input (mA), channel 7 the
"sum of shunt voltages". x86: /sys/class/powercap/intel-rapl:N[/:M]/{name,energy_uj,max_energy_range_uj}.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

RAPL_MAX_UJ = 262143328850  # a typical max_energy_range_uj


@dataclass
class FakeBoard:
    profile_id: str
    model: Optional[str]  # /proc/device-tree/model (None: no device tree)
    tegra_release: Optional[str]
    layout: str  # "iio" | "hwmon" | "rapl" | "pci-nvidia" | "none"
    # iio: chip -> [(channel, name)], hwmon: chip -> [(channel, label)]
    chips: Dict[str, List[Tuple[int, str]]] = field(default_factory=dict)
    machine: str = "aarch64"
    expected_source: str = "none"
    expected_l4t: Optional[str] = None
    expected_jetpack: Optional[str] = None
    expected_kind: str = "jetson"

    def write(self, root: Path, watts: Optional[Dict[str, float]] = None) -> Path:
        """Write the tree under ``root``; ``watts`` sets rail powers (default: distinct values per rail)."""
        root = Path(root)
        (root / "proc").mkdir(parents=True, exist_ok=True)
        (root / "proc/meminfo").write_text("MemTotal:        4051236 kB\nMemFree:          123456 kB\n")
        if self.model is not None:
            (root / "proc/device-tree").mkdir(parents=True, exist_ok=True)
            (root / "proc/device-tree/model").write_bytes(self.model.encode() + b"\x00")
        else:
            (root / "proc/cpuinfo").write_text("processor\t: 0\nmodel name\t: Fake CPU @ 2.0GHz\n")
        if self.tegra_release is not None:
            (root / "etc").mkdir(parents=True, exist_ok=True)
            (root / "etc/nv_tegra_release").write_text(self.tegra_release)
        if self.layout == "iio":
            for chip, chans in self.chips.items():
                d = root / "sys/bus/i2c/drivers/ina3221x" / chip / "iio:device0"
                d.mkdir(parents=True, exist_ok=True)
                (d / "name").write_text("ina3221x\n")
                for n, name in chans:
                    (d / ("rail_name_%d" % n)).write_text(name + "\n")
                    (d / ("warn_current_limit_%d" % n)).write_text("32760\n")
        elif self.layout == "hwmon":
            for chip, chans in self.chips.items():
                d = root / "sys/bus/i2c/drivers/ina3221" / chip / ("hwmon/hwmon%d" % (3 + list(self.chips).index(chip)))
                d.mkdir(parents=True, exist_ok=True)
                (d / "name").write_text("ina3221\n")
                for n, label in chans:
                    (d / ("in%d_label" % n)).write_text(label + "\n")
                    (d / ("in%d_input" % n)).write_text("0\n")
                    if n != 7:
                        (d / ("curr%d_input" % n)).write_text("0\n")
                        (d / ("curr%d_crit" % n)).write_text("32760\n")
                        (d / ("curr%d_max" % n)).write_text("32760\n")
        elif self.layout == "rapl":
            base = root / "sys/class/powercap"
            zones = {"intel-rapl:0": "package-0", "intel-rapl:0:0": "core", "intel-rapl:0:1": "uncore"}
            for z, name in zones.items():
                (base / z).mkdir(parents=True, exist_ok=True)
                (base / z / "name").write_text(name + "\n")
                (base / z / "energy_uj").write_text("1000000\n")
                (base / z / "max_energy_range_uj").write_text("%d\n" % RAPL_MAX_UJ)
            (base / "intel-rapl").mkdir(parents=True, exist_ok=True)  # the control type, no counter
        elif self.layout == "pci-nvidia":
            d = root / "sys/bus/pci/devices/0000:01:00.0"
            d.mkdir(parents=True, exist_ok=True)
            (d / "vendor").write_text("0x10de\n")
            (d / "class").write_text("0x030000\n")
        for rail, w in (watts or self.default_watts()).items():
            self.set_power(root, rail, w * 1000.0)
        return root

    def rails(self) -> List[str]:
        """Rail names as the sensor reports them (NC channels and the sum channel left out)."""
        out = []
        for chans in self.chips.values():
            for n, name in chans:
                if "NC" in name or n == 7:
                    continue
                out.append(name)
        return out

    def default_watts(self) -> Dict[str, float]:
        return {r: 1.5 + i for i, r in enumerate(self.rails())}

    def _channel(self, rail: str) -> Tuple[str, int]:
        for chip, chans in self.chips.items():
            for n, name in chans:
                if name == rail:
                    return chip, n
        raise KeyError(rail)

    def rail_files(self, root: Path, rail: str) -> List[Path]:
        chip, n = self._channel(rail)
        if self.layout == "iio":
            d = Path(root) / "sys/bus/i2c/drivers/ina3221x" / chip / "iio:device0"
            return [d / ("in_power%d_input" % n)]
        d = Path(root) / "sys/bus/i2c/drivers/ina3221" / chip / ("hwmon/hwmon%d" % (3 + list(self.chips).index(chip)))
        return [d / ("in%d_input" % n), d / ("curr%d_input" % n)]

    def set_power(self, root: Path, rail: str, mw: float) -> None:
        """Make ``rail`` read ``mw`` milliwatts (hwmon: a fixed voltage and the matching current)."""
        chip, n = self._channel(rail)
        if self.layout == "iio":
            d = Path(root) / "sys/bus/i2c/drivers/ina3221x" / chip / "iio:device0"
            mv = 5000
            (d / ("in_voltage%d_input" % n)).write_text("%d\n" % mv)
            (d / ("in_current%d_input" % n)).write_text("%d\n" % round(mw * 1000 / mv))
            (d / ("in_power%d_input" % n)).write_text("%d\n" % round(mw))
        else:
            volt, curr = self.rail_files(root, rail)
            mv = 5000
            volt.write_text("%d\n" % mv)
            curr.write_text("%d\n" % round(mw * 1000 / mv))  # exact for multiples of 5 mW

    def expected_total_mw(self, watts: Optional[Dict[str, float]] = None) -> Optional[float]:
        w = watts or self.default_watts()
        if not w:
            return None
        for whole in ("POM_5V_IN", "VDD_IN"):
            if whole in w:
                return w[whole] * 1000.0
        return sum(w.values()) * 1000.0


BOARDS: Dict[str, FakeBoard] = {b.profile_id: b for b in [
    FakeBoard("jetson-nano-4gb", "NVIDIA Jetson Nano Developer Kit",
              "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64, DATE: Sat Feb 19 17:05:08 UTC 2022\n",
              "iio", {"6-0040": [(0, "POM_5V_IN"), (1, "POM_5V_GPU"), (2, "POM_5V_CPU")]},
              expected_source="ina3221-iio", expected_l4t="32.7.1", expected_jetpack="4.6.1"),
    FakeBoard("jetson-nano-2gb", "NVIDIA Jetson Nano 2GB Developer Kit",
              "# R32 (release), REVISION: 7.4, GCID: 33514132, BOARD: t210ref, EABI: aarch64, DATE: Fri Jun  9 04:25:08 UTC 2023\n",
              "none", {}, expected_source="none", expected_l4t="32.7.4", expected_jetpack="4.6.4"),
    FakeBoard("jetson-xavier-nx", "NVIDIA Jetson Xavier NX Developer Kit",
              "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023\n",
              "hwmon", {"7-0040": [(1, "VDD_IN"), (2, "VDD_CPU_GPU_CV"), (3, "VDD_SOC"), (7, "sum of shunt voltages")]},
              expected_source="ina3221-hwmon", expected_l4t="35.4.1", expected_jetpack="5.1.2"),
    FakeBoard("jetson-orin-nano", "NVIDIA Jetson Orin Nano Developer Kit",
              "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13 04:36:44 UTC 2024\n",
              "hwmon", {"1-0040": [(1, "VDD_IN"), (2, "VDD_CPU_GPU_CV"), (3, "VDD_SOC"), (7, "sum of shunt voltages")]},
              expected_source="ina3221-hwmon", expected_l4t="36.4.0", expected_jetpack="6.1"),
    FakeBoard("jetson-agx-orin", "NVIDIA Jetson AGX Orin Developer Kit",
              "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n",
              "hwmon", {"1-0040": [(1, "VDD_GPU_SOC"), (2, "VDD_CPU_CV"), (3, "VIN_SYS_5V0"), (7, "sum of shunt voltages")],
                        "1-0041": [(1, "NC"), (2, "VDDQ_VDD2_1V8AO"), (3, "NC")]},
              expected_source="ina3221-hwmon", expected_l4t="36.4.3", expected_jetpack="6.2"),
    FakeBoard("x86-cpu", None, None, "rapl", {}, machine="x86_64", expected_source="rapl", expected_kind="x86"),
    FakeBoard("x86-nvidia", None, None, "pci-nvidia", {}, machine="x86_64", expected_source="nvml",
              expected_kind="x86-nvidia"),
]}


def rapl_set(root: Path, zone: str, uj: int) -> None:
    (Path(root) / "sys/class/powercap" / zone / "energy_uj").write_text("%d\n" % uj)


class ManualClock:
    """A clock the test moves by hand (seconds)."""

    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> float:
        self.t += dt
        return self.t


class FakeNvml:
    """The part of pynvml (nvidia-ml-py) the NVML source uses, with its documented units.

    nvmlDeviceGetPowerUsage: mW (unsigned int); nvmlDeviceGetTotalEnergyConsumption: mJ since driver load
    (unsigned long long, Volta or newer; older GPUs raise NVMLError_NotSupported).
    """

    class NVMLError(Exception):
        pass

    def __init__(self, power_mw: int = 70000, energy_mj: int = 5_000_000, energy_supported: bool = True,
                 name=b"NVIDIA H200") -> None:
        self.power_mw = power_mw
        self.energy_mj = energy_mj
        self.energy_supported = energy_supported
        self.name = name
        self.initialised = False
        self.fail = False

    def nvmlInit(self) -> None:
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

    def nvmlDeviceGetHandleByIndex(self, index: int) -> object:
        if index != 0:
            raise self.NVMLError("Invalid Argument")
        return ("handle", index)

    def nvmlDeviceGetName(self, handle: object):
        return self.name

    def nvmlDeviceGetPowerUsage(self, handle: object) -> int:
        if self.fail:
            raise self.NVMLError("GPU is lost")
        return self.power_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: object) -> int:
        if not self.energy_supported:
            raise self.NVMLError("Not Supported")
        return self.energy_mj


class FakeJtop:
    """A jtop client with the documented ``jetson.power`` shape: {'rail': {name: {...}}, 'tot': {...}} (mV, mA, mW).

    jtop moves the whole-board rail (VDD_IN / POM_5V_IN) out of 'rail' into 'tot' and adds its name there.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.started = False
        self.closed = False
        self.power = {
            "rail": {
                "VDD_CPU_GPU_CV": {"volt": 4984, "curr": 441, "power": 2198, "avg": 2099, "warn": 32760, "crit": 32760,
                                   "online": True, "type": "I2C"},
                "VDD_SOC": {"volt": 4984, "curr": 289, "power": 1440, "avg": 1424, "warn": 32760, "crit": 32760,
                            "online": True, "type": "I2C"},
            },
            "tot": {"volt": 4992, "curr": 1180, "power": 5890, "avg": 5612, "warn": 32760, "crit": 32760,
                    "online": True, "type": "I2C", "name": "VDD_IN"},
        }

    def start(self) -> None:
        self.started = True

    def ok(self, spin: bool = False) -> bool:
        if not spin:
            raise AssertionError("ok() without spin blocks until jtop's next update")
        return not self.closed

    def close(self) -> None:
        self.closed = True


class JtopException(Exception):
    """Stands in for jtop.core.exceptions.JtopException."""


def jtop_service_down(interval: float = 0.5) -> FakeJtop:
    client = FakeJtop(interval)

    def start() -> None:
        raise JtopException("The jtop.service is not active. Please run:\nsudo systemctl restart jtop.service")

    client.start = start  # type: ignore[assignment]
    return client
