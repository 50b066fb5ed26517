"""Fixtures of the devices tests: fake board trees (tests/devices is on sys.path for fake_sysfs)."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fake_sysfs import BOARDS, ManualClock  # noqa: E402


@pytest.fixture(params=sorted(BOARDS))
def board(request, tmp_path):
    """(FakeBoard, root) for every profile's board."""
    b = BOARDS[request.param]
    return b, b.write(tmp_path / request.param)


@pytest.fixture
def clock():
    return ManualClock()
