"""Power sources: read a board's power sensors into :class:`PowerSample` values.

Sources: the Jetson INA3221 monitor in its two sysfs layouts (Nano ``iio``, Orin ``hwmon``), jtop
(``jetson-stats``, optional), Intel RAPL (a cumulative energy counter), NVML for NVIDIA GPUs
(``nvidia-ml-py``, optional) and none. Each takes a ``root`` path (sysfs readers) or an injectable
client (jtop, NVML) so tests run without the hardware. :func:`open_power_source` picks the best one.

Timestamps come from ``time.perf_counter()`` (or the ``clock`` given), the clock the cascade stamps its
stage invocations with, so energy can be attributed to them.
"""
from __future__ import annotations

import importlib
import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from edgeconf.devices.detect import detect_board
from edgeconf.devices.errors import SensorReadError, SensorUnavailableError

PathLike = Union[str, Path]
Clock = Callable[[], float]

#: Rail names that measure the whole board's input on Jetson boards.
WHOLE_BOARD_RAILS = ("POM_5V_IN", "VDD_IN")
IIO_DRIVER = "sys/bus/i2c/drivers/ina3221x"  # Nano (and TX/Xavier on JetPack 4): iio layout
HWMON_DRIVER = "sys/bus/i2c/drivers/ina3221"  # Orin (and Xavier on JetPack 5): hwmon layout
RAPL_DIR = "sys/class/powercap"
#: The largest power one INA3221 rail can report on a Jetson board: the chip's bus voltage tops out at 26 V and
#: the boards' shunts at 32.76 A (the driver's ``curr*_crit``), about 852 W; a reading above 1 kW (or below
#: zero) is a sensor or driver fault and is reported as not measured.
MAX_RAIL_MW = 1_000_000.0
#: An idle rail can read a little below zero: the INA3221's shunt-voltage offset (a few 40 µV steps, i.e. a few 8 mA
#: steps on the boards' 5 mΩ shunts). Currents down to this many mA below zero, and powers down to OFFSET_MW below
#: zero, are read as 0 (the rail draws about nothing); lower ones are a fault and are reported as not measured.
OFFSET_MA = 100.0
OFFSET_MW = 500.0  # 5 V x OFFSET_MA
JTOP_SERVICE_HINT = ("start it with 'sudo systemctl restart jtop.service', or install it with "
                     "'sudo jtop --install-service' (then log out and in again)")
RAPL_PERMISSION_HINT = ("RAPL energy counters are readable by root only (since Linux 5.10); grant read access with "
                        "'sudo chmod a+r /sys/class/powercap/intel-rapl:*/energy_uj "
                        "/sys/class/powercap/intel-rapl:*:*/energy_uj' (until reboot; a udev rule makes it permanent), "
                        "or run as root")


@dataclass(frozen=True)
class PowerSample:
    """One reading. ``rails_mw``: each rail's power in mW; ``total_mw``: the board (or device) total.

    ``energy_j`` is set by counter-based sources (RAPL, NVML's energy counter): cumulative joules since the
    source was opened, with counter wrap-around already undone.

    A rail that could not be read this time is not in ``rails_mw``: it is in ``rail_errors`` (rail -> why).
    ``total_mw`` is None when the total cannot be known (the whole-board rail failed, or a rail of a sum did),
    and ``total_error`` then says why; a total is never a sum that silently misses a rail.
    """

    timestamp_s: float
    rails_mw: Dict[str, float]
    total_mw: Optional[float]
    energy_j: Optional[float] = None
    rail_errors: Dict[str, str] = field(default_factory=dict)
    total_error: Optional[str] = None


def _read_number(path: Path) -> float:
    """Read one sysfs number; missing files and garbage become :class:`SensorReadError`."""
    try:
        text = path.read_text()
    except PermissionError as exc:
        raise SensorReadError("cannot read %s: permission denied; check its permissions (ls -l) or run as root"
                              % path) from exc
    except OSError as exc:
        raise SensorReadError("cannot read %s: %s; check that the driver still lists it (ls %s)"
                              % (path, exc.strerror or exc, path.parent)) from exc
    token = text.strip().split(" ")[0] if text.strip() else ""
    try:
        value = float(int(token))
    except ValueError:
        raise SensorReadError("%s holds %r, not a number; check the sensor with 'cat %s' (if it stays so, the "
                              "sensor or its driver is faulty)" % (path, text[:40], path)) from None
    return value


def _implausible(what: str, path: Path) -> SensorReadError:
    return SensorReadError("%s: %s, which an INA3221 rail cannot report (0 to %g kW); check the sensor with 'cat %s' "
                           "(if it stays so, the sensor or its driver is faulty)"
                           % (path, what, MAX_RAIL_MW / 1e6, path))


def _plausible_mw(mw: float, path: Path, what: str) -> float:
    """A rail's power in mW (0 within :data:`OFFSET_MW` below zero), or :class:`SensorReadError` when it is further
    below zero or above :data:`MAX_RAIL_MW`."""
    if mw < 0:
        if mw >= -OFFSET_MW:
            return 0.0  # the sensor's offset around zero: the rail draws about nothing
        raise _implausible("%s is negative" % what, path)
    if mw > MAX_RAIL_MW:
        raise _implausible("%s is above %g kW" % (what, MAX_RAIL_MW / 1e6), path)
    return mw


def _read_label(path: Path) -> str:
    return path.read_text().replace("\x00", "").strip()


class PowerSource:
    """The interface: ``read()`` returns a :class:`PowerSample` or raises :class:`SensorReadError`.

    ``available`` says whether the source can be read at all and ``reason`` why not (or what it measures).
    ``counter`` is True for sources whose ``energy_j`` is a cumulative counter (integrate by differences).
    ``whole_board`` says whether ``total_mw`` is the whole board's draw.
    """

    name = "none"
    counter = False
    preferred_rate_hz = 50.0

    def __init__(self, clock: Optional[Clock] = None) -> None:
        self.clock: Clock = clock or time.perf_counter
        self.available = False
        self.reason = ""
        self.whole_board = False
        self.rail_names: Tuple[str, ...] = ()
        self.probes: List[ProbeResult] = []  # what open_power_source tried before picking this one

    def read(self) -> PowerSample:
        raise SensorReadError("power source %s cannot be read: %s" % (self.name, self.reason or "not available"))

    def close(self) -> None:
        """Release the sensor (a client connection, a library handle)."""

    def describe(self) -> Dict[str, Any]:
        return {"name": self.name, "available": self.available, "reason": self.reason, "counter": self.counter,
                "whole_board": self.whole_board, "rails": list(self.rail_names)}

    def __enter__(self) -> "PowerSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<%s %s available=%s>" % (type(self).__name__, self.name, self.available)


class NullSource(PowerSource):
    """No power sensor: every reading fails, and the meter reports ``None`` rather than a guess."""

    name = "none"

    def __init__(self, reason: str = "no power sensor on this machine", clock: Optional[Clock] = None) -> None:
        super().__init__(clock)
        self.reason = reason


@dataclass
class _Channel:
    name: str
    paths: Tuple[Path, ...]  # iio: (power,), hwmon: (voltage, current)


def _total(rails: Dict[str, float], whole: Optional[str], failed: Dict[str, str]) -> Tuple[Optional[float], Optional[str]]:
    """(total mW, None), or (None, why) when the total cannot be known from this reading."""
    if whole is not None:
        if whole in failed:
            return None, "the whole-board rail %s was not measured: %s" % (whole, failed[whole])
        return rails[whole], None
    if failed:
        return None, ("the total is the sum of the rails and %s %s not measured (%s)"
                      % (", ".join(failed), "was" if len(failed) == 1 else "were",
                         "; ".join("%s: %s" % kv for kv in failed.items())))
    return float(sum(rails.values())), None


class _Ina3221Base(PowerSource, ABC):
    """Shared logic of the two INA3221 sysfs layouts."""

    layout_hint = ""

    def __init__(self, root: PathLike = "/", whole_board: Optional[Sequence[str]] = None,
                 clock: Optional[Clock] = None) -> None:
        super().__init__(clock)
        self.root = Path(root)
        self.channels: List[_Channel] = []
        self._errors: Dict[str, str] = {}
        try:
            self.channels = self._discover()
        except OSError as exc:
            self.reason = "cannot list %s: %s" % (self.layout_hint, exc)
        names = [c.name for c in self.channels]
        self.rail_names = tuple(names)
        wanted = tuple(whole_board) if whole_board is not None else WHOLE_BOARD_RAILS
        self.whole_rail = next((n for n in names if n in wanted), None)
        self.whole_board = self.whole_rail is not None
        if self.channels:
            self.available = True
            self.reason = ("rail %s is the whole board" % self.whole_rail if self.whole_rail
                           else "no whole-board rail: the total is the sum of the rails")
        elif not self.reason:
            self.reason = "no INA3221 channels under %s" % (self.root / self.layout_hint)

    @abstractmethod
    def _discover(self) -> List[_Channel]:
        """Implemented by every subclass."""

    @abstractmethod
    def _channel_mw(self, ch: _Channel) -> float:
        """Implemented by every subclass."""

    def read(self) -> PowerSample:
        if not self.available:
            return super().read()
        t = self.clock()
        rails: Dict[str, float] = {}
        failed: Dict[str, str] = {}
        for ch in self.channels:
            try:
                rails[ch.name] = self._channel_mw(ch)
            except SensorReadError as exc:
                failed[ch.name] = str(exc)
        self._errors = failed  # the last reading's failures
        if not rails:
            raise SensorReadError("no rail could be read: %s" % "; ".join("%s: %s" % kv for kv in failed.items()))
        total, why = _total(rails, self.whole_rail, failed)
        return PowerSample(t, rails, total, rail_errors=failed, total_error=why)


class NanoIna3221Source(_Ina3221Base):
    """Jetson Nano INA3221 (iio layout, JetPack 4): ``rail_name_N`` and ``in_power{N}_input`` in mW.

    The documented path is ``/sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0``; other I2C addresses
    (TX2 and Xavier on JetPack 4) are found the same way. Channel 0 (POM_5V_IN) is the whole board.
    """

    name = "ina3221-iio"
    layout_hint = IIO_DRIVER

    def _discover(self) -> List[_Channel]:
        out: List[_Channel] = []
        for dev in sorted((self.root / IIO_DRIVER).glob("*/iio:device*")):
            for label in sorted(dev.glob("rail_name_*"), key=lambda p: int(re.sub(r"\D", "", p.name) or 0)):
                n = label.name[len("rail_name_"):]
                if not n.isdigit():
                    continue
                name = _read_label(label)
                if not name:
                    continue
                out.append(_Channel(_unique(name, out), (dev / ("in_power%s_input" % n),)))
        return out

    def _channel_mw(self, ch: _Channel) -> float:
        mw = _read_number(ch.paths[0])
        return _plausible_mw(mw, ch.paths[0], "%.0f mW" % mw)


class OrinIna3221Source(_Ina3221Base):
    """Jetson Orin INA3221 (hwmon layout, JetPack 5+): ``in{N}_label``, ``in{N}_input`` mV, ``curr{N}_input`` mA.

    Power is P = V·I. Channels whose label contains "NC" (not connected) and the "sum of shunt
    voltages" channel are skipped. Path: ``/sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon*``.
    """

    name = "ina3221-hwmon"
    layout_hint = HWMON_DRIVER

    def _discover(self) -> List[_Channel]:
        out: List[_Channel] = []
        for dev in sorted((self.root / HWMON_DRIVER).glob("*/hwmon/hwmon*")):
            labels = [p for p in dev.glob("in*_label") if re.fullmatch(r"in\d+_label", p.name)]
            for label in sorted(labels, key=lambda p: int(re.sub(r"\D", "", p.name))):
                n = label.name[2:-len("_label")]
                name = _read_label(label)
                if not name or "NC" in name:
                    continue
                if "sum" in name.lower():
                    continue  # the sum-of-shunt-voltages channel has no current of its own
                # a labelled rail whose files are missing stays a rail: reading it fails and says which file
                out.append(_Channel(_unique(name, out), (dev / ("in%s_input" % n), dev / ("curr%s_input" % n))))
        return out

    def _channel_mw(self, ch: _Channel) -> float:
        mv = _read_number(ch.paths[0])
        if mv < 0:
            raise _implausible("a bus voltage of %.0f mV is negative" % mv, ch.paths[0])
        ma = _read_number(ch.paths[1])
        if ma < -OFFSET_MA:
            raise _implausible("a current of %.0f mA is negative" % ma, ch.paths[1])
        ma = max(ma, 0.0)  # within the sensor's offset of zero: the rail draws about nothing
        return _plausible_mw(mv * ma / 1000.0, ch.paths[1], "%.0f mV x %.0f mA = %.0f mW" % (mv, ma, mv * ma / 1000.0))


def _unique(name: str, existing: Iterable[_Channel]) -> str:
    names = {c.name for c in existing}
    if name not in names:
        return name
    i = 2
    while "%s#%d" % (name, i) in names:
        i += 1
    return "%s#%d" % (name, i)


@dataclass
class _RaplZone:
    key: str  # rail name: "package-0" or "package-0/core"
    energy: Path
    max_range_uj: float
    top: bool
    psys: bool
    last_uj: Optional[float] = None
    total_uj: float = 0.0  # unwrapped since the first read


class RaplSource(PowerSource):
    """Intel RAPL via ``/sys/class/powercap/intel-rapl:*/energy_uj``: a cumulative µJ counter.

    The counter wraps at ``max_energy_range_uj``; each read adds the difference and undoes the wrap, so
    ``energy_j`` is cumulative. The total is the ``psys`` zone when present (the whole platform), else the
    sum of the package (and DRAM) zones: CPU energy, not the whole machine.
    """

    name = "rapl"
    counter = True

    def __init__(self, root: PathLike = "/", clock: Optional[Clock] = None) -> None:
        super().__init__(clock)
        self.root = Path(root)
        self.zones: List[_RaplZone] = []
        self._last_t: Optional[float] = None
        self._last_total_uj: Optional[float] = None
        base = self.root / RAPL_DIR
        dirs = sorted(d for d in base.glob("intel-rapl:*") if re.fullmatch(r"intel-rapl:\d+(:\d+)?", d.name))
        if not dirs:
            self.reason = "no Intel RAPL zones under %s" % base
            return
        names: Dict[str, str] = {}
        try:
            for d in dirs:
                zname = _read_label(d / "name") if (d / "name").exists() else d.name
                parts = d.name.split(":")
                top = len(parts) == 2
                names[d.name] = zname
                key = zname if top else "%s/%s" % (names.get(":".join(parts[:2]), parts[1]), zname)
                max_range = _read_number(d / "max_energy_range_uj")
                self.zones.append(_RaplZone(key, d / "energy_uj", max_range, top, top and zname.startswith("psys")))
            for z in self.zones:
                _read_number(z.energy)  # probe: root-only on recent kernels
        except (SensorReadError, OSError) as exc:
            self.zones = []
            msg = str(exc)
            self.reason = ("%s; %s" % (msg, RAPL_PERMISSION_HINT)) if "permission denied" in msg else msg
            return
        self.available = True
        self.rail_names = tuple(z.key for z in self.zones)
        has_psys = any(z.psys for z in self.zones)
        self._total_zones = [z for z in self.zones if (z.psys if has_psys else (z.top and not z.psys))]
        self.reason = ("psys zone: the whole platform" if has_psys
                       else "CPU package energy (%s), not the whole machine" % ", ".join(z.key for z in self._total_zones))
        self.whole_board = has_psys

    def read(self) -> PowerSample:
        if not self.available:
            return super().read()
        t = self.clock()
        raw = [_read_number(z.energy) for z in self.zones]  # all or nothing: a failure leaves state untouched
        prev_t = self._last_t
        deltas: Dict[str, float] = {}
        for z, uj in zip(self.zones, raw):
            if z.last_uj is not None:
                d = uj - z.last_uj
                if d < 0:  # the counter wrapped at max_energy_range_uj
                    d = uj + (z.max_range_uj - z.last_uj)
                z.total_uj += d
                deltas[z.key] = d
            z.last_uj = uj
        total_uj = sum(z.total_uj for z in self._total_zones)
        rails: Dict[str, float] = {}
        total_mw: Optional[float] = None
        if prev_t is not None and t > prev_t and deltas:
            dt = t - prev_t
            rails = {k: d / dt / 1000.0 for k, d in deltas.items()}  # µJ/s = µW -> mW
            total_mw = (total_uj - (self._last_total_uj or 0.0)) / dt / 1000.0
        self._last_t = t
        self._last_total_uj = total_uj
        return PowerSample(t, rails, total_mw, total_uj / 1e6)


def parse_jtop_power(power: Any) -> Tuple[Dict[str, float], Optional[float]]:
    """jtop's ``jetson.power`` -> (rails in mW, total in mW), using instantaneous power, never ``avg``.

    The documented shape is ``{'rail': {name: {'volt', 'curr', 'power', 'avg', ...}}, 'tot': {'power',
    'avg', 'name'?}}`` (mV, mA, mW); jtop moves the whole-board rail (VDD_IN / POM_5V_IN) out of ``rail``
    into ``tot`` and names it there. jetson-stats 3.x used ``cur`` instead of ``power``.
    """
    if not isinstance(power, dict):
        raise SensorReadError("jtop returned power data of type %s, expected a dict" % type(power).__name__)

    def _mw(entry: Any, what: str) -> float:
        if not isinstance(entry, dict):
            raise SensorReadError("jtop %s is %r, expected a dict" % (what, entry))
        v = entry.get("power", entry.get("cur"))
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise SensorReadError("jtop %s has no numeric 'power' (got %r)" % (what, v))
        return float(v)

    rails = {str(name): _mw(vals, "rail %s" % name) for name, vals in (power.get("rail") or {}).items()}
    tot = power.get("tot")
    total: Optional[float] = None
    if tot:
        total = _mw(tot, "tot")
        if isinstance(tot.get("name"), str):
            rails[tot["name"]] = total
    elif rails:
        total = float(sum(rails.values()))
    return rails, total


def _jtop_factory() -> Callable[..., Any]:
    mod = importlib.import_module("jtop")
    return getattr(mod, "jtop")


class JtopSource(PowerSource):
    """jtop (``jetson-stats``): the jtop service's readings, at the service's own rate.

    ``factory`` builds the client (default: ``jtop.jtop``, imported at first use); tests pass a fake.
    """

    name = "jtop"

    def __init__(self, interval_s: float = 0.5, factory: Optional[Callable[..., Any]] = None,
                 clock: Optional[Clock] = None) -> None:
        super().__init__(clock)
        self.interval_s = float(interval_s)
        self.preferred_rate_hz = 1.0 / self.interval_s
        self.client: Any = None
        try:
            make = factory or _jtop_factory()
        except ImportError as exc:
            self.reason = ("jetson-stats is not installed (%s): pip install 'jetson-stats>=4.2' on the board "
                           "(edgeconf's [jetson] extra), then 'sudo jtop --install-service'" % exc)
            return
        try:
            client = make(interval=self.interval_s)
            client.start()
        except Exception as exc:  # jtop raises JtopException when its service is down
            self.reason = "jtop service is not running (%s): %s" % (str(exc).strip() or type(exc).__name__, JTOP_SERVICE_HINT)
            return
        self.client = client
        served = getattr(client, "interval", None)  # the service's own rate may differ from the one asked for
        if isinstance(served, (int, float)) and not isinstance(served, bool) and served > 0:
            self.interval_s = float(served)
            self.preferred_rate_hz = 1.0 / self.interval_s
        try:
            rails, total = parse_jtop_power(client.power)
        except Exception as exc:
            self.close()
            self.reason = "jtop gives no usable power data: %s" % exc
            return
        if total is None:
            self.close()
            self.reason = "jtop reports no power rails on this board (it has no power monitor)"
            return
        self.available = True
        self.rail_names = tuple(rails)
        tot = client.power.get("tot") or {}
        self.whole_board = isinstance(tot.get("name"), str)
        self.reason = ("jtop total %s at %.3g Hz" % (tot.get("name") or "(sum of rails)", self.preferred_rate_hz))

    def read(self) -> PowerSample:
        if not self.available:
            return super().read()
        t = self.clock()
        try:
            # spin=True: do not block for fresh data (the meter already samples at jtop's rate); raises the
            # client's stored error, returns False once the connection to the service is gone.
            ok = self.client.ok(spin=True) if hasattr(self.client, "ok") else True
            power = self.client.power
        except Exception as exc:
            raise SensorReadError("jtop read failed: %s" % exc) from exc
        if ok is False:
            raise SensorReadError("the jtop client stopped: %s" % JTOP_SERVICE_HINT)
        rails, total = parse_jtop_power(power)
        return PowerSample(t, rails, total)

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except Exception:
                pass
            self.client = None


class NvmlSource(PowerSource):
    """An NVIDIA GPU through NVML (``nvidia-ml-py``, module ``pynvml``): the GPU board's draw, not the host's.

    ``nvmlDeviceGetPowerUsage`` gives mW (averaged over 1 s on Ampere and newer); where the GPU supports
    ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since driver load, Volta+) the meter integrates that counter.
    """

    name = "nvml"

    def __init__(self, index: int = 0, nvml: Any = None, clock: Optional[Clock] = None) -> None:
        super().__init__(clock)
        self.index = index
        self._nvml: Any = None
        self._handle: Any = None
        self._e0_mj: Optional[float] = None
        try:
            lib = nvml if nvml is not None else importlib.import_module("pynvml")
        except ImportError as exc:
            self.reason = "nvidia-ml-py is not installed (%s): pip install nvidia-ml-py" % exc
            return
        try:
            lib.nvmlInit()
        except Exception as exc:
            self.reason = "NVML cannot start (%s): is an NVIDIA driver installed?" % exc
            return
        self._nvml = lib
        try:
            self._handle = lib.nvmlDeviceGetHandleByIndex(index)
            gpu = lib.nvmlDeviceGetName(self._handle)
            gpu = gpu.decode() if isinstance(gpu, bytes) else str(gpu)
            float(lib.nvmlDeviceGetPowerUsage(self._handle))
        except Exception as exc:
            self.reason = "NVML cannot read the power of GPU %d: %s" % (index, exc)
            self.close()
            return
        try:
            self._e0_mj = float(lib.nvmlDeviceGetTotalEnergyConsumption(self._handle))
            self.counter = True
        except Exception:
            self.counter = False
        self.available = True
        self.rail_names = ("gpu",)
        self.gpu_name = gpu
        self.reason = "GPU %d (%s): %s" % (index, gpu, "energy counter" if self.counter else "power readings")

    def read(self) -> PowerSample:
        if not self.available:
            return super().read()
        t = self.clock()
        try:
            mw = float(self._nvml.nvmlDeviceGetPowerUsage(self._handle))
            energy = None
            if self.counter:
                energy = (float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)) - (self._e0_mj or 0.0)) / 1000.0
        except Exception as exc:
            raise SensorReadError("NVML read failed: %s" % exc) from exc
        return PowerSample(t, {"gpu": mw}, mw, energy)

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
            self._nvml = None


#: Names accepted by :func:`open_power_source` (besides "auto"), with aliases.
SOURCE_NAMES = ("ina3221-hwmon", "ina3221-iio", "jtop", "nvml", "rapl", "none")
_ALIASES = {"orin": "ina3221-hwmon", "hwmon": "ina3221-hwmon", "nano": "ina3221-iio", "iio": "ina3221-iio",
            "null": "none"}


@dataclass
class ProbeResult:
    """Why each candidate source was or was not picked."""

    name: str
    available: bool
    reason: str

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "available": self.available, "reason": self.reason}


def _make(name: str, root: PathLike, clock: Optional[Clock], jtop_factory: Optional[Callable[..., Any]],
          nvml: Any) -> PowerSource:
    if name == "ina3221-iio":
        return NanoIna3221Source(root, clock=clock)
    if name == "ina3221-hwmon":
        return OrinIna3221Source(root, clock=clock)
    if name == "rapl":
        return RaplSource(root, clock=clock)
    if name == "jtop":
        return JtopSource(factory=jtop_factory, clock=clock)
    if name == "nvml":
        return NvmlSource(nvml=nvml, clock=clock)
    return NullSource(clock=clock)


def _auto_order(root: Path) -> Tuple[List[str], List[ProbeResult]]:
    """Candidates to try on this board, best first, and the ones skipped without trying."""
    board = detect_board(root)
    if board.kind == "jetson":
        # Direct sysfs is read at 50 Hz without a service; jtop is the fallback (e.g. in a container).
        return ["ina3221-hwmon", "ina3221-iio", "jtop"], []
    if board.has_nvidia_gpu:
        return ["nvml", "rapl"], []
    return ["rapl"], [ProbeResult("nvml", False, "no NVIDIA GPU found")]


def open_power_source(name: str = "auto", root: PathLike = "/", clock: Optional[Clock] = None,
                      jtop_factory: Optional[Callable[..., Any]] = None, nvml: Any = None) -> PowerSource:
    """Open a power source by name, or the best available one for ``auto``.

    The result's ``.name`` says which source was picked, ``.available`` whether it can be read, and
    ``.reason`` why (for ``auto`` without any sensor: what was tried). ``.probes`` lists every candidate
    tried. Asking for ``jtop`` when its service is down falls back to the INA3221 sysfs readers and says so.
    """
    key = _ALIASES.get(name.lower(), name.lower())
    if key != "auto" and key not in SOURCE_NAMES:
        raise SensorUnavailableError("unknown power source %r; choose auto or one of %s" % (name, ", ".join(SOURCE_NAMES)))
    root = Path(root)
    skipped: List[ProbeResult] = []
    if key == "auto":
        order, skipped = _auto_order(root)
    elif key == "jtop":
        order = ["jtop", "ina3221-hwmon", "ina3221-iio"]
    else:
        order = [key]
    probes: List[ProbeResult] = []
    for i, cand in enumerate(order):
        src = _make(cand, root, clock, jtop_factory, nvml)
        probes.append(ProbeResult(cand, src.available, src.reason))
        last = i == len(order) - 1
        if src.available or (last and key not in ("auto", "jtop")):
            if src.available and i > 0 and key != "auto":
                src.reason = "%s; using %s instead (%s)" % (probes[0].reason, src.name, src.reason)
            src.probes = probes
            return src
        src.close()
    probes += skipped
    why = "; ".join("%s: %s" % (p.name, p.reason) for p in probes)
    null = NullSource("no power sensor found (%s)" % why, clock=clock)
    null.probes = probes
    return null
