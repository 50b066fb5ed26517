"""edgeconf.gui: the PySide6 operator window (the ``[gui]`` extra)."""
from __future__ import annotations
