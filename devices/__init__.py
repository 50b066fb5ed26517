"""edgeconf.devices: board detection, device profiles, power sources and the energy meter.

The base layer: imports only the standard library and numpy (and tomli on Python < 3.11); optional
libraries (jetson-stats, nvidia-ml-py) are imported at first use.
"""
from __future__ import annotations

from edgeconf.devices.detect import Board, detect_board
from edgeconf.devices.errors import DeviceError, ProfileError, SensorReadError, SensorUnavailableError, UnknownProfileError
from edgeconf.devices.meter import EnergyMeter, Measurement
from edgeconf.devices.power import PowerSample, PowerSource, open_power_source
from edgeconf.devices.profiles import DeviceProfile, PowerMode, Rail, get_profile, list_profiles, profile_for

__all__ = [
    "Board", "detect_board", "DeviceError", "ProfileError", "SensorReadError", "SensorUnavailableError",
    "UnknownProfileError", "EnergyMeter", "Measurement", "PowerSample", "PowerSource", "open_power_source",
    "DeviceProfile", "PowerMode", "Rail", "get_profile", "list_profiles", "profile_for",
]
