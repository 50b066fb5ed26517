"""edgeconf.export: turn your classifiers into confidence-aware ONNX artifacts, cascade bundles and engines.

The public API mirrors the command line (``edgeconf export``, ``pair``, ``cascade``, ``retune``), and the
CLI calls these functions. Nothing here imports torch until a PyTorch model is exported (the ``[torch]``
extra)::

    from edgeconf.export import build_cascade, export_model, retune

    export_model(my_model, "tiny.onnx", data="calib.npz", preprocessing={"size": [40, 40], "channels": 3})
    report = build_cascade(["tiny.onnx", "big.onnx"], "calib.npz", calib_fraction=0.5, out="bundle")
    retune("bundle", stage=1, threshold=0.6)

* :func:`export_model` — a torch ``nn.Module``, ``module:function`` or ONNX file → ONNX with the confidence head
  (probs, confidence, exit), preprocessing and labels recorded, temperature fitted on calibration data;
* :func:`calibrate` / :func:`fit_temperature` — the temperature of a model on labelled data / of logits;
* :func:`pair_models` — rank pairs of models as two-stage cascades (complementarity, accuracy, cost);
* :func:`build_cascade` — a cascade bundle from several models and labelled data, thresholds by a policy;
* :func:`retune` — change a stored threshold or temperature of a bundle stage or a model;
* :func:`add_confidence_head`, :func:`export_torch`, :func:`tradeoff_curve`, :func:`select` — the building blocks.

Data is anything :func:`edgeconf.datasets.open_dataset` reads (docs/data.md), a Dataset, or ``(x, y)`` arrays.
"""
from __future__ import annotations

from edgeconf.export.api import (ExportResult, PairingResult, RetuneResult, calibrate, export_model, pair_models,
                                  retune)
from edgeconf.export.build import BuildReport, build_cascade
from edgeconf.export.calibration import CalibrationReport, fit_temperature
from edgeconf.export.head import add_confidence_head, read_head_metadata
from edgeconf.export.thresholds import select, tradeoff_curve
from edgeconf.export.torch_export import export_torch
from edgeconf.preprocess import Preprocessing

__all__ = ["export_model", "ExportResult", "calibrate", "fit_temperature", "CalibrationReport", "pair_models",
           "PairingResult", "build_cascade", "BuildReport", "retune", "RetuneResult", "add_confidence_head",
           "read_head_metadata", "export_torch", "tradeoff_curve", "select", "Preprocessing"]
