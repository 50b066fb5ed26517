from __future__ import annotations

import numpy as np
import pytest

from edgeconf.errors import BundleError, InputValidationError
from edgeconf.preprocess import Preprocessing


def test_grey_nchw_normalisation():
    pre = Preprocessing(size=(28, 28), channels=1, mean=(0.5,), std=(0.25,))
    img = np.full((28, 28), 255, np.uint8)
    x = pre(img)
    assert x.shape == (1, 28, 28) and x.dtype == np.float32
    np.testing.assert_allclose(x, 2.0)


def test_rgb_to_grey_resize_and_nhwc():
    pre = Preprocessing(size=(8, 6), channels=3, layout="NHWC", scale=1.0, mean=(0, 0, 0), std=(1, 1, 1))
    img = np.zeros((16, 12), np.uint8)
    img[:, :6] = 200
    x = pre.batch([img, np.dstack([img] * 3)])
    assert x.shape == (2, 8, 6, 3)
    np.testing.assert_allclose(x[0], x[1])
    assert x[0, :, :3].min() == 200 and x[0, :, 3:].max() == 0
    grey = Preprocessing(size=(4, 4), channels=1, scale=1.0)
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    assert grey(rgb).max() == pytest.approx(76, abs=1)  # ITU-R BT.601 luma of red


@pytest.mark.parametrize("img, message", [
    (np.zeros((4, 4), np.float32), "uint8"),
    (np.zeros((4, 4, 2), np.uint8), "expected H×W grey"),
    (np.zeros((0, 4), np.uint8), "expected H×W grey"),
])
def test_bad_images(img, message):
    with pytest.raises(InputValidationError, match=message):
        Preprocessing()(img)


def test_bad_settings():
    with pytest.raises(BundleError, match="channels"):
        Preprocessing(channels=2)
    with pytest.raises(BundleError, match="layout"):
        Preprocessing(layout="CHW")
    with pytest.raises(BundleError, match="std values must be > 0"):
        Preprocessing(std=(0.0,))
    assert Preprocessing.from_json(Preprocessing(size=(4, 5)).to_json()) == Preprocessing(size=(4, 5))
