"""PyTorch → ONNX with a dynamic batch axis and a parity check against torch.

Torch is imported only inside these functions (the ``[torch]`` extra). Weights for the CLI form
``module:function`` are read with ``torch.load(..., weights_only=True)`` or from safetensors; a pickle
of arbitrary objects is refused.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from edgeconf.errors import ConfigError, ModelLoadError
from edgeconf.export.errors import ExportError, ParityError, UnsafeWeightsError
from edgeconf.lazy import require

TOLERANCE = 1e-4


@dataclass
class ExportReport:
    """Where the ONNX file went and how closely it matches torch on the example batch."""

    path: str
    max_abs_diff: float
    opset: int = 17
    input_name: str = "input"
    output_names: List[str] = field(default_factory=lambda: ["logits"])
    exporter: str = ""
    parameters: int = 0

    def to_json(self) -> dict:
        return asdict(self)


def _torch():
    return require("torch", "exporting PyTorch models")


def _to_tensor(torch, example: Any):
    if isinstance(example, np.ndarray):
        example = torch.from_numpy(np.ascontiguousarray(example))
    if not isinstance(example, torch.Tensor):
        raise ConfigError("the example input must be a torch.Tensor or numpy array, got %s" % type(example).__name__)
    if example.ndim < 1 or example.shape[0] < 1:
        raise ConfigError("the example input needs a batch axis with at least one sample, got shape %s"
                          % (tuple(example.shape),))
    return example


def _outputs(torch, result: Any) -> list:
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, (tuple, list)) and all(isinstance(r, torch.Tensor) for r in result):
        return list(result)
    raise ExportError("the model's forward must return a tensor or a tuple of tensors, got %s" % type(result).__name__)


def _single_file(path: str) -> None:
    """Re-save a model whose weights went to an external data file as one self-contained file."""
    import onnx

    folder = os.path.dirname(os.path.abspath(path))
    model = onnx.load(path, load_external_data=False)
    externals = {e.value for init in model.graph.initializer for e in init.external_data if e.key == "location"}
    if not externals:
        return
    onnx.load_external_data_for_model(model, folder)
    onnx.save(model, path)
    for rel in externals:
        full = os.path.join(folder, rel)
        if os.path.isfile(full):
            os.remove(full)


def _run_export(torch, model, example, path: str, input_name: str, output_names: Sequence[str], opset: int,
                exporter: str) -> str:
    axes = {input_name: {0: "batch"}}
    axes.update({name: {0: "batch"} for name in output_names})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's exporters warn about their own deprecations
        if exporter in ("auto", "torchscript"):
            try:
                torch.onnx.export(model, (example,), path, input_names=[input_name], output_names=list(output_names),
                                  opset_version=opset, dynamic_axes=axes, dynamo=False, do_constant_folding=True)
                return "torchscript"
            except TypeError:
                if exporter == "torchscript":
                    raise ExportError("this torch has no TorchScript ONNX exporter; use exporter='dynamo'") from None
        batch = torch.export.Dim("batch", min=1)
        torch.onnx.export(model, (example,), path, input_names=[input_name], output_names=list(output_names),
                          opset_version=opset, dynamic_shapes=({0: batch},), dynamo=True, external_data=False,
                          verbose=False)
        return "dynamo"


def _ort_run(path: str, input_name: str, x: np.ndarray, names: Sequence[str]) -> list:
    import onnxruntime as ort

    from edgeconf.backends.threads import Threads

    opts = Threads(reason="export parity check").session_options(ort)
    sess = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    return sess.run(list(names), {input_name: x})


def _last_line(exc: BaseException, most: int = 300) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:most]


def _check_forward(torch: Any, model: Any, one: Any) -> None:
    """Run the model once on a one-sample batch; its failure (usually a wrong input shape) as one ExportError."""
    try:
        with torch.no_grad():
            model(one)
    except Exception as exc:
        shape = tuple(one.shape)
        hint = ""
        if len(shape) == 4 and shape[-1] in (1, 3, 4) and shape[1] not in (1, 3, 4):  # (N, H, W, C)
            hint = ("; this input is channels-last (H, W, C) and PyTorch models usually take channels first: with a "
                    "preprocessing, set \"layout\": \"NCHW\" (or --input-shape C,H,W)")
        raise ExportError("the model failed on an input of shape %s (%s: %s); check the input shape (CLI --input-shape "
                          "C,H,W, or the preprocessing's size and channels) against the input the model was built for%s"
                          % (shape, type(exc).__name__, _last_line(exc), hint)) from None


def export_torch(model: Any, example: Any, path: str, input_name: str = "input",
                 output_names: Sequence[str] = ("logits",), opset: int = 17, tolerance: float = TOLERANCE,
                 exporter: str = "auto") -> ExportReport:
    """Export ``model`` (an ``nn.Module``) to ``path`` with a dynamic batch axis and check parity.

    ONNX Runtime's outputs on ``example`` (and on the example twice over, to exercise the dynamic batch)
    must match torch's within ``tolerance`` (max abs diff), else :class:`ParityError`.
    ``exporter``: ``auto`` (TorchScript exporter when this torch has it, else dynamo), ``torchscript``, ``dynamo``.
    """
    torch = _torch()
    if not isinstance(model, torch.nn.Module):
        raise ConfigError("export_torch needs a torch.nn.Module, got %s" % type(model).__name__)
    if exporter not in ("auto", "torchscript", "dynamo"):
        raise ConfigError("exporter must be auto, torchscript or dynamo, got %r" % exporter)
    example = _to_tensor(torch, example).float()
    output_names = [str(n) for n in output_names]
    model = model.eval()
    _check_forward(torch, model, example[:1])
    with torch.no_grad():
        ref = _outputs(torch, model(example))
        ref2 = _outputs(torch, model(torch.cat([example, example])))
    if len(ref) != len(output_names):
        raise ConfigError("the model returns %d outputs but output_names has %d (%s)"
                          % (len(ref), len(output_names), ", ".join(output_names)))
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    try:
        used = _run_export(torch, model, example, path, input_name, output_names, opset, exporter)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError("torch could not export the model to ONNX: %s" % str(exc).splitlines()[0][:300]) from exc
    _single_file(path)
    x = example.numpy()
    diff = 0.0
    for feed, want in ((x, ref), (np.concatenate([x, x]), ref2)):
        got = _ort_run(path, input_name, feed, output_names)
        for name, g, w in zip(output_names, got, want):
            w = w.detach().numpy()
            if g.shape != w.shape:
                raise ParityError("output %r has shape %s in ONNX but %s in torch (batch %d)"
                                  % (name, g.shape, w.shape, feed.shape[0]))
            diff = max(diff, float(np.abs(g.astype(np.float64) - w).max()) if g.size else 0.0)
    if not diff <= tolerance:
        raise ParityError("the exported ONNX differs from torch by %.3g (max abs diff) on the example batch, above "
                          "the tolerance %.0e; check for train-mode layers or ops torch exports inexactly"
                          % (diff, tolerance))
    import onnx

    opset_used = next((int(o.version) for o in onnx.load(path, load_external_data=False).opset_import
                       if o.domain in ("", "ai.onnx")), opset)
    params = int(sum(p.numel() for p in model.parameters()))
    return ExportReport(path, diff, opset_used, input_name, output_names, used, params)


def probe_input_shape(model: Any, candidates: Sequence[Sequence[int]], option: str = "input_shape"
                      ) -> "tuple":
    """The one candidate input shape (no batch axis) the model runs on, and a note; ConfigError otherwise.

    Used when only the calibration images tell the size: (C, H, W) and (H, W, C) are tried; a model that runs
    on both (e.g. a flat MLP) is ambiguous and refused rather than guessed.
    """
    torch = _torch()
    ok, errors = [], []
    model = model.eval()
    for shape in dict.fromkeys(tuple(int(d) for d in c) for c in candidates):
        try:
            with torch.no_grad():
                model(torch.zeros((1,) + shape))
            ok.append(shape)
        except Exception as exc:  # the model's own error for a wrong shape; reported below in one line
            errors.append("%s: %s" % (shape, str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__))
    if len(ok) == 1:
        layout = "NCHW" if ok[0] == tuple(candidates[0]) else "NHWC"
        return ok[0], "input shape %s (%s) taken from the calibration images: the only layout the model runs on" \
            % (ok[0], layout)
    if not ok:
        raise ConfigError("the model runs on neither layout of the calibration images (%s); give %s (CLI "
                          "--input-shape) or a preprocessing with the right size, channels and \"layout\""
                          % ("; ".join(errors), option))
    raise ConfigError("the model runs on both %s and %s inputs, so the layout is ambiguous; give %s (CLI "
                      "--input-shape) or a preprocessing with \"layout\" NCHW or NHWC" % (ok[0], ok[1], option))


# -- the CLI form: module:function + weights -----------------------------------------------------------
def _import_target(spec: str):
    mod_name, sep, attr = spec.rpartition(":")
    if not sep or not mod_name or not attr:
        raise ConfigError("model %r must be an .onnx file or 'module:function' (or 'path/file.py:function')" % spec)
    try:
        if mod_name.endswith(".py"):
            if not os.path.isfile(mod_name):
                raise ConfigError("python file %s does not exist" % mod_name)
            name = "edgeconf_user_" + os.path.splitext(os.path.basename(mod_name))[0]
            loader_spec = importlib.util.spec_from_file_location(name, mod_name)
            module = importlib.util.module_from_spec(loader_spec)  # type: ignore[arg-type]
            sys.modules[name] = module
            loader_spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            module = importlib.import_module(mod_name)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError("cannot import %s for %r: %s" % (mod_name, spec, exc)) from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError("%s has no callable %r" % (mod_name, attr))
    return fn


def load_weights(path: str) -> Dict[str, Any]:
    """A state dict from ``.safetensors`` or a torch file read with ``weights_only=True`` (pickles refused)."""
    torch = _torch()
    if not os.path.isfile(path):
        raise ModelLoadError("weights file %s does not exist" % path)
    if path.endswith(".safetensors"):
        st = require("safetensors.torch", "reading .safetensors weights")
        try:
            return dict(st.load_file(path))
        except Exception as exc:
            raise ModelLoadError("cannot read %s as safetensors: %s" % (path, str(exc)[:200])) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UnsafeWeightsError(
            "refused to load %s: it is not a plain tensor file (torch.load(weights_only=True) rejects it: a pickle "
            "of arbitrary objects, or not a torch file at all). edgeconf never unpickles arbitrary objects; save "
            "the weights with torch.save(model.state_dict(), PATH) or as .safetensors" % path) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise UnsafeWeightsError("%s does not hold a state dict (name → tensor); save model.state_dict()" % path)
    return obj


def _state_dict_problem(exc: BaseException, most: int = 300) -> str:
    """torch's load_state_dict error in one line: its first problem (missing, unexpected or mismatched), and how many
    more there are."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) < 2:
        return (lines[0] if lines else type(exc).__name__)[:most]
    first = lines[1] if len(lines[1]) <= most else lines[1][:most - 1] + "…"
    more = len(lines) - 2
    return "%s %s%s" % (lines[0], first, " (and %d more problem%s)" % (more, "s" if more > 1 else "") if more else "")


def load_factory(spec: str, weights: Optional[str] = None) -> Any:
    """Build the model ``module:function`` returns and load ``weights`` into it (strict)."""
    torch = _torch()
    fn = _import_target(spec)
    try:
        model = fn()
    except Exception as exc:
        raise ConfigError("%s() failed: %s" % (spec, exc)) from exc
    if not isinstance(model, torch.nn.Module):
        raise ConfigError("%s() returned %s, not a torch.nn.Module" % (spec, type(model).__name__))
    if weights:
        state = load_weights(weights)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelLoadError("weights %s do not fit %s: %s; give the weights saved from the model %s builds"
                                 % (weights, spec, _state_dict_problem(exc), spec)) from None
    return model.eval()


def export_factory(spec: str, weights: Optional[str], input_shape: Sequence[int], path: Optional[str] = None,
                   **kw: Any) -> ExportReport:
    """CLI helper: build ``module:function``, load weights, export with a random example of ``input_shape``."""
    torch = _torch()
    model = load_factory(spec, weights)
    if not input_shape or any(int(d) < 1 for d in input_shape):
        raise ConfigError("--input-shape must list the input's dimensions without the batch, e.g. 1,28,28")
    gen = torch.Generator().manual_seed(0)
    example = torch.randn((2,) + tuple(int(d) for d in input_shape), generator=gen)
    if path is None:
        path = os.path.join(tempfile.mkdtemp(prefix="edgeconf-export-"), "model.onnx")
    return export_torch(model, example, path, **kw)


__all__ = ["ExportReport", "export_torch", "load_factory", "load_weights", "export_factory", "probe_input_shape",
           "TOLERANCE"]
