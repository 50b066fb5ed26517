"""Waiting in a test for a signal that a worker thread emits.

Why not ``qtbot.waitSignal`` on such a signal: PySide6 (seen with 6.11.3) still delivers emissions that were
already queued for a plain Python slot after that slot disconnected itself. pytest-qt's blocker disconnects
inside its first call and is freed after its ``with`` block, so the next queued emission of a signal a worker
emits every frame calls a freed object and the process dies (a segfault in 7 of 30 runs of one test under
load 7–8; reproduced without pytest by a QThread emitting in a loop and a slot that disconnects itself). A
:class:`SignalRecorder` is a QObject child of the window: it stays connected and alive as long as the window,
so a late emission lands on a live object, and Qt drops what is still queued for it once the window goes.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, List, Optional, Tuple

from PySide6.QtCore import QObject


class SignalRecorder(QObject):
    """Every emission of one signal, recorded in the GUI thread for the life of ``parent``."""

    def __init__(self, signal: Any, parent: QObject) -> None:
        super().__init__(parent)
        self.calls: List[Tuple[Any, ...]] = []
        signal.connect(self._record)

    def _record(self, *args: Any) -> None:
        self.calls.append(args)

    @contextlib.contextmanager
    def expect(self, qtbot: Any, check: Optional[Callable[..., bool]] = None, timeout: int = 20000
               ) -> Iterator[None]:
        """Run the ``with`` body, then wait until an emission after its start passes ``check``."""
        start = len(self.calls)
        yield
        qtbot.waitUntil(lambda: any(check is None or check(*a) for a in self.calls[start:]), timeout=timeout)
