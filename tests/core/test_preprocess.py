from __future__ import annotations

import numpy as np
import pytest

from edgeconf.errors import BundleError, ConfigError, InputValidationError
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


# -- the contract: color, resize rules, strict validation, model-input checks -------------------------
def test_bgr_reverses_the_channel_order():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 200  # red
    pre = Preprocessing(size=(2, 2), channels=3, color="bgr", layout="NHWC", scale=1.0, mean=(0,), std=(1,))
    assert pre(rgb)[0, 0].tolist() == [0, 0, 200]
    assert Preprocessing(size=(2, 2), channels=3, layout="NHWC", scale=1.0)(rgb)[0, 0].tolist() == [200, 0, 0]


def test_letterbox_keeps_the_aspect_ratio_and_pads_with_zero():
    wide = np.full((10, 40), 255, np.uint8)  # 4:1
    pre = Preprocessing(size=(20, 20), resize="letterbox", scale=1.0)
    x = pre(wide)[0]
    assert x.shape == (20, 20)
    rows = np.flatnonzero(x.max(axis=1) > 0)
    assert rows.tolist() == list(range(7, 12))  # 5 rows of image, centred ((20 - 5) // 2 = 7)
    assert x[:7].max() == 0 and x[12:].max() == 0


def test_center_crop_fills_and_crops_the_middle():
    img = np.zeros((10, 30), np.uint8)
    img[:, 10:20] = 255  # the middle third is white
    x = Preprocessing(size=(10, 10), resize="center-crop", scale=1.0)(img)[0]
    assert x.min() == 255  # only the middle third survives
    stretched = Preprocessing(size=(10, 10), resize="stretch", scale=1.0)(img)[0]
    assert stretched.min() == 0


@pytest.mark.parametrize("kw, message", [
    ({"size": (28,)}, r"size must be \[height, width\]"),
    ({"size": (28, 0)}, "size must be"),
    ({"size": (True, 28)}, "size must be"),
    ({"channels": True}, "channels must be 1 or 3"),
    ({"color": "hsv"}, "color must be rgb or bgr"),
    ({"color": "bgr"}, "needs channels 3"),
    ({"resize": "fit"}, "resize must be one of stretch, letterbox, center-crop"),
    ({"scale": float("nan")}, "scale must be a finite number > 0"),
    ({"scale": "1/255"}, "scale must be"),
    ({"mean": ("a",)}, "mean must be a list of finite numbers"),
    ({"mean": (0.1, 0.2)}, "mean needs 1 or 1 values, got 2"),
    ({"dtype": "int8"}, "dtype must be one of"),
])
def test_every_key_is_validated_with_one_line(kw, message):
    with pytest.raises(BundleError, match=message) as err:
        Preprocessing(**kw)
    assert "\n" not in str(err.value)
    assert isinstance(err.value, ConfigError)  # a bad --preprocessing option is a ConfigError too


def test_from_json_round_trip_and_unknown_keys():
    pre = Preprocessing(size=(40, 32), channels=3, color="bgr", layout="NHWC", mean=(0.5, 0.4, 0.3), std=(0.2,),
                        resize="letterbox")
    assert Preprocessing.from_json(pre.to_json()) == pre
    with pytest.raises(BundleError, match="preprocessing has unknown key 'normalize'"):
        Preprocessing.from_json({"size": [2, 2], "normalize": True})
    with pytest.raises(BundleError, match="preprocessing must be an object"):
        Preprocessing.from_json(None)


def test_model_input_problem_names_the_key_to_change():
    nhwc = Preprocessing(size=(40, 40), channels=3, layout="NHWC")
    assert nhwc.model_input_problem((40, 40, 3)) is None
    assert nhwc.model_input_problem(("h", None, 3)) is None  # dynamic dimensions fit anything
    msg = nhwc.model_input_problem((3, 40, 40))
    assert 'set "layout": "NCHW"' in msg and "(3, 40, 40)" in msg
    assert 'set "channels": 1' in Preprocessing(size=(28, 28), channels=3).model_input_problem((1, 28, 28))
    assert 'set "size"' in Preprocessing(size=(28, 28)).model_input_problem((1, 32, 32))


def test_channel_mismatch_names_what_the_preprocessing_takes_and_what_the_images_are():
    from edgeconf.preprocess import Preprocessing, channel_mismatch

    grey, colour = Preprocessing(channels=1), Preprocessing(channels=3)
    g, c, a = np.zeros((4, 5), np.uint8), np.zeros((4, 5, 3), np.uint8), np.zeros((4, 5, 4), np.uint8)
    assert channel_mismatch([g, g[:, :, None]], grey) is None and channel_mismatch([c, a], colour) is None
    assert channel_mismatch([c], grey) == ("grey", "colour")
    assert channel_mismatch([g, c], colour) == ("colour", "grey and colour")
    assert channel_mismatch(np.stack([g, g]), colour) == ("colour", "grey")  # a stack (N, H, W)
    assert channel_mismatch(np.stack([c, c]), colour) is None  # a stack (N, H, W, 3)


def test_stage_metadata_nested_too_deep_is_a_problem_not_a_recursion_error():
    from edgeconf.preprocess import stage_problem

    pre = Preprocessing(size=(6, 6), channels=1)
    deep = '{"size": %s}' % ("[" * 100000 + "]" * 100000)
    assert stage_problem(pre, {"edgeconf.preprocessing": deep}) == (
        "its edgeconf.preprocessing metadata nests arrays/objects 100001 levels deep; at most 32 are allowed")
