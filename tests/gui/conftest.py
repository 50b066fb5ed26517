"""Fixtures of the GUI tests: offscreen Qt, a temporary QSettings, a real bundle, and a thread-leak check."""
from __future__ import annotations

import os
import sys
import threading
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # fakes.py

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from onnx_models import linear_classifier, save  # noqa: E402

try:  # each test module skips itself without Qt (a skip here, in a conftest, would be an error)
    from PySide6.QtCore import QSettings, QThread
except ImportError:
    QSettings = QThread = None

#: threads that may outlive a test because they are not the GUI's (pytest-timeout, Qt's own helpers)
FOREIGN_THREAD_PREFIXES = ("pytest_timeout",)


def _ridge(x: np.ndarray, y: np.ndarray, lam: float) -> tuple:
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.linalg.solve(xb.T @ xb + lam * np.eye(xb.shape[1]), xb.T @ np.eye(10)[y])
    return w[:-1], w[-1]


@pytest.fixture(scope="session")
def gui_bundle(tmp_path_factory):
    """A real two-stage FashionMNIST bundle (28×28 grey): ridge classifiers fitted on 1000 / 6000 images."""
    from edgeconf.bundle import MemoSettings, StageSpec, save_bundle
    from edgeconf.datasets import load_fashion_mnist
    from edgeconf.live.demo_scene import LABELS
    from edgeconf.preprocess import Preprocessing

    try:
        images, labels = load_fashion_mnist("train")
        x = images[:6000].reshape(6000, -1).astype(np.float64) / 255.0
        y = labels[:6000].astype(np.int64)
    except Exception:  # no dataset here: random weights still make a runnable cascade
        rng = np.random.default_rng(0)
        x, y = rng.random((2000, 784)), rng.integers(0, 10, 2000)
    folder = tmp_path_factory.mktemp("gui_bundle")
    files = {}
    for name, n, lam in (("small", 1000, 30.0), ("large", len(x), 3.0)):
        w, b = _ridge(x[:n], y[:n], lam)
        files[name + ".onnx"] = save(linear_classifier(w * 8.0, b * 8.0), folder / ("src_" + name + ".onnx"))
    stages = [StageSpec("small", "small.onnx", "margin", 0.5), StageSpec("large", "large.onnx", "margin", 0.0)]
    save_bundle(str(folder / "bundle"), stages, files, list(LABELS), Preprocessing(size=(28, 28), channels=1),
                memo=MemoSettings(True, "dhash256", 0, 4096), name="gui-test")
    return str(folder / "bundle")


@pytest.fixture
def settings(tmp_path):
    """A QSettings on a temporary INI file, so no test touches the user's settings."""
    if QSettings is None:
        pytest.skip("PySide6 is not installed (pip install '.[gui]')")
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "qsettings"))
    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(tmp_path / "qsettings"))
    return QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat)


@pytest.fixture(autouse=True)
def no_leaked_threads(monkeypatch):
    """Fail a test that leaves a QThread running or a Python thread alive that it started."""
    started = []
    real_start = None

    def recording_start(self, *args):
        started.append(self)
        return real_start(self, *args)

    if QThread is not None:
        real_start = QThread.start
        monkeypatch.setattr(QThread, "start", recording_start)
    before = {t.ident for t in threading.enumerate()}
    yield
    deadline = time.monotonic() + 3.0
    while True:
        qthreads = [t for t in started if _running(t)]
        # _DummyThread: Python's stand-in for a thread it did not start (a QThread), checked above
        threads = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()
                   and not isinstance(t, threading._DummyThread) and not t.name.startswith(FOREIGN_THREAD_PREFIXES)]
        if not qthreads and not threads or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not qthreads, "QThreads still running after the test: %s" % [t.objectName() for t in qthreads]
    assert not threads, "threads still alive after the test: %s" % [t.name for t in threads]


def _running(t) -> bool:
    try:
        return t.isRunning()
    except RuntimeError:  # the C++ object is gone, so is its thread
        return False
