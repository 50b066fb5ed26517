"""The preprocessing an exported model or a bundle records: given, read from metadata, or inferred.

Inferred only where it is unambiguous: size, channels and layout from the model input shape (and from the
calibration images where the model leaves height and width open). The normalisation cannot be read from a
model; an inferred preprocessing assumes ``x / 255`` with no mean/std and says so in a note, and the
exporter's accuracy check on labelled calibration data flags a wrong guess.
"""
from __future__ import annotations

import json
import os
from typing import Any, List, Optional, Sequence, Tuple

import onnx
from onnx import helper

from edgeconf.errors import ConfigError
from edgeconf.preprocess import Preprocessing
from edgeconf.schema.jsonload import depth_problem

#: ``preprocessing="none"`` (CLI ``--preprocessing none``): the model takes model-ready arrays, recorded as null
NONE = "none"
PREPROCESSING_HELP = ('Preprocessing to record: a JSON object or a .json file, e.g. \'{"size": [40, 40], "channels": 3, '
                      '"layout": "NHWC", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}\' (keys: size [H, W], '
                      'channels 1|3, color rgb|bgr, layout NCHW|NHWC, scale, mean, std, resize stretch|letterbox|'
                      'center-crop; see docs/data.md), or "none" for a model fed model-ready arrays. Default: the '
                      "model's metadata, else inferred from its input shape (x/255, no mean/std).")


def parse_preprocessing(value: Any) -> Any:
    """A :class:`Preprocessing`, ``"none"`` or None from a Preprocessing, a dict, a JSON string or a .json file."""
    if value is None or isinstance(value, Preprocessing):
        return value
    if isinstance(value, dict):
        return Preprocessing.from_json(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == NONE:
            return NONE
        what = "preprocessing JSON"
        if not text.startswith("{") and os.path.isfile(text):
            what = "preprocessing file %s" % text
            try:
                with open(text, "r", encoding="utf-8") as f:
                    text = f.read()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError("cannot read preprocessing file %s: %s" % (value, exc)) from None
        too_deep = depth_problem(text, what)
        if too_deep:
            raise ConfigError(too_deep + '; give an object such as {"size": [224, 224]}')
        try:
            data = json.loads(text)
        except ValueError:
            raise ConfigError("preprocessing must be a JSON object, a .json file holding one, or 'none'; got %r"
                              % (value if len(value) < 80 else value[:77] + "...")) from None
        return Preprocessing.from_json(data)
    raise ConfigError("preprocessing must be an edgeconf.preprocess.Preprocessing, its JSON dict or 'none', got %s"
                      % type(value).__name__)


def _known(d: Any) -> Optional[int]:
    return d if isinstance(d, int) and d > 0 else None


def infer_preprocessing(shape: Sequence[Any], image_shape: Optional[Sequence[int]] = None
                        ) -> Tuple[Optional[Preprocessing], str]:
    """(preprocessing, why) from a model input shape without the batch axis; (None, reason) when ambiguous.

    ``image_shape``: the shape every calibration image has (H×W or H×W×C), used where the model leaves
    height/width dynamic or where the channel axis could be first or last.
    """
    dims = [_known(d) for d in shape]
    if len(dims) != 3:
        return None, "the model input %s is not an image (C, H, W) or (H, W, C)" % (tuple(shape),)
    first, last = dims[0] in (1, 3), dims[2] in (1, 3)
    img_hw = tuple(image_shape[:2]) if image_shape is not None and len(image_shape) in (2, 3) else None
    if first and last:  # e.g. (3, 28, 3): decide by the images' size, if they tell
        if img_hw == (dims[1], dims[2]):
            last = False
        elif img_hw == (dims[0], dims[1]):
            first = False
        else:
            return None, "the model input %s could be channels-first or channels-last" % (tuple(shape),)
    if not first and not last:
        return None, "the model input %s has no channel axis of 1 or 3 first or last" % (tuple(shape),)
    layout = "NCHW" if first else "NHWC"
    c, h, w = (dims[0], dims[1], dims[2]) if first else (dims[2], dims[0], dims[1])
    if h is None or w is None:
        if img_hw is None:
            return None, "the model input %s leaves height/width open and the data does not fix them" % (tuple(shape),)
        h, w = h or img_hw[0], w or img_hw[1]
    pre = Preprocessing(size=(h, w), channels=c, layout=layout)
    return pre, ("inferred from the model input %s: %s; the normalisation cannot be read from a model, so x/255 with "
                 "no mean/std is assumed: pass a preprocessing if the model was trained otherwise"
                 % (tuple(d if d is not None else "?" for d in dims), pre.describe()))


def resolve_preprocessing(given: Any, meta: Any, shape: Sequence[Any], image_shape: Optional[Sequence[int]] = None,
                          model: str = "the model") -> Tuple[Optional[Preprocessing], str, List[str]]:
    """(preprocessing or None, where it came from, notes): given > the model's metadata > inferred.

    ``given`` may be ``"none"`` (explicitly no preprocessing). Raises :class:`ConfigError` when nothing is
    given and nothing can be inferred, or when the result does not fit the model input (naming the key).
    """
    if given == NONE:
        return None, "none", []
    if isinstance(given, Preprocessing):
        pre, source, notes = given, "given", []
    elif isinstance(meta, dict) and meta:
        pre, source, notes = Preprocessing.from_json(meta), "metadata", []
    else:
        pre, why = infer_preprocessing(shape, image_shape)
        if pre is None:
            raise ConfigError("no preprocessing given and none can be inferred for %s: %s; pass one (CLI: "
                              "--preprocessing '{\"size\": [H, W], \"channels\": 3, \"layout\": \"NCHW\", ...}', see "
                              "docs/data.md), or 'none' for a model fed model-ready arrays" % (model, why))
        source, notes = "inferred", ["preprocessing " + why]
    problem = pre.model_input_problem(shape)
    if problem:
        raise ConfigError("%s: %s" % (model, problem))
    return pre, source, notes


def with_input_layout(model: onnx.ModelProto, layout: str) -> onnx.ModelProto:
    """A copy of an image model (one 4-D input) that takes ``layout`` input: a Transpose in front of the graph.

    Used to let an NHWC model and an NCHW model share one bundle preprocessing; the model itself is unchanged.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {i.name for i in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    if len(inputs) != 1 or len(inputs[0].type.tensor_type.shape.dim) != 4:
        raise ConfigError("only a model with one 4-D image input can have its layout adapted")
    vi = inputs[0]
    dims = list(vi.type.tensor_type.shape.dim)
    inner = "edgeconf_input_%s" % ("nchw" if layout == "NHWC" else "nhwc")
    for n in g.node:
        n.input[:] = [inner if x == vi.name else x for x in n.input]
    perm, order = ([0, 2, 3, 1], [0, 3, 1, 2]) if layout == "NCHW" else ([0, 3, 1, 2], [0, 2, 3, 1])
    new_dims = [dims[i] for i in order]
    del vi.type.tensor_type.shape.dim[:]
    for d in new_dims:
        vi.type.tensor_type.shape.dim.add().CopyFrom(d)
    g.node.insert(0, helper.make_node("Transpose", [vi.name], [inner], perm=perm, name="edgeconf_layout/transpose"))
    onnx.checker.check_model(out)
    return out


__all__ = ["parse_preprocessing", "infer_preprocessing", "resolve_preprocessing", "with_input_layout", "NONE",
           "PREPROCESSING_HELP"]
