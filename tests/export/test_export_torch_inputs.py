"""Exporting your own PyTorch model from calibration images alone: the layout is found or refused, never guessed."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgeconf.errors import ConfigError  # noqa: E402
from edgeconf.export import export_model  # noqa: E402
from edgeconf.export.head import read_head_metadata  # noqa: E402
from edgeconf.preprocess import Preprocessing  # noqa: E402

pytestmark = pytest.mark.torch

MODELS = textwrap.dedent('''
    from torch import nn

    class Last(nn.Module):  # takes (N, H, W, C)
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))

        def forward(self, x):
            return self.head(self.conv(x.permute(0, 3, 1, 2)))

    def make_first():
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))

    def make_last():
        return Last()

    def make_flat():  # runs on anything with 40*40*3 values: both layouts
        return nn.Sequential(nn.Flatten(), nn.Linear(40 * 40 * 3, 5))
''')


@pytest.fixture
def setup(tmp_path):
    (tmp_path / "mymodels.py").write_text(MODELS)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", x=rng.integers(0, 256, (60, 40, 40, 3), dtype=np.uint8), y=np.arange(60) % 5)
    return tmp_path


@pytest.mark.parametrize("factory, layout, shape", [("make_first", "NCHW", [3, 40, 40]),
                                                    ("make_last", "NHWC", [40, 40, 3])])
def test_uint8_calibration_images_tell_the_input_shape(setup, factory, layout, shape):
    out = str(setup / "m.onnx")
    res = export_model("%s:%s" % (setup / "mymodels.py", factory), out, data=str(setup / "calib.npz"))
    assert res.preprocessing == Preprocessing(size=(40, 40), channels=3, layout=layout)
    assert res.preprocessing_source == "inferred" and any("only layout the model runs on" in n for n in res.notes)
    assert read_head_metadata(out)["preprocessing"]["layout"] == layout
    import onnx

    dims = [d.dim_value for d in onnx.load(out).graph.input[0].type.tensor_type.shape.dim[1:]]
    assert dims == shape


def test_a_model_that_runs_on_both_layouts_is_refused(setup):
    with pytest.raises(ConfigError, match="runs on both .* so the layout is ambiguous; give input_shape"):
        export_model("%s:make_flat" % (setup / "mymodels.py"), str(setup / "m.onnx"), data=str(setup / "calib.npz"))
    res = export_model("%s:make_flat" % (setup / "mymodels.py"), str(setup / "m.onnx"), data=str(setup / "calib.npz"),
                       preprocessing={"size": [40, 40], "channels": 3, "layout": "NHWC"})
    assert res.preprocessing.layout == "NHWC"
