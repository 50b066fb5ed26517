"""The one fake the GUI tests use: a power source, because this machine has no power sensor."""
from __future__ import annotations

import time
from typing import Dict, Optional

from edgeconf.devices.power import PowerSample, PowerSource

#: rails of a fake Orin-like board, in mW; VDD_IN is the whole board
FAKE_RAILS_MW: Dict[str, float] = {"VDD_IN": 5000.0, "VDD_CPU_GPU_CV": 2000.0, "VDD_SOC": 1000.0}


class FakePowerSource(PowerSource):
    """Constant rails (mW), timestamped with perf_counter like the real sysfs readers."""

    name = "fake-ina3221"

    def __init__(self, rails_mw: Optional[Dict[str, float]] = None) -> None:
        super().__init__(time.perf_counter)
        self.rails_mw = dict(rails_mw or FAKE_RAILS_MW)
        self.available = True
        self.whole_board = True
        self.reason = "fake INA3221 (test)"
        self.rail_names = tuple(self.rails_mw)

    def read(self) -> PowerSample:
        return PowerSample(self.clock(), dict(self.rails_mw), self.rails_mw["VDD_IN"])
