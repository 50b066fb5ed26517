"""Typed errors of the hardware layer (stdlib only; the CLI turns them into edgeconf errors)."""
from __future__ import annotations


class DeviceError(Exception):
    """Base class of the errors ``edgeconf.devices`` raises on purpose; the message says what to do."""


class ProfileError(DeviceError):
    """A device profile is unknown or its TOML file is invalid."""


class UnknownProfileError(ProfileError, KeyError):
    """No profile has the requested id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class SensorReadError(DeviceError):
    """One reading of a power sensor failed (file vanished, garbage, permission, service gone)."""


class SensorUnavailableError(DeviceError):
    """A power source that was asked for by name cannot be used on this machine."""
