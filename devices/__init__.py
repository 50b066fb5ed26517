"""edgeconf.devices: board detection, device profiles, power sources and the energy meter.

The base layer: imports only the standard library and numpy.
"""
from __future__ import annotations
