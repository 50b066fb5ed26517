"""edgeconf.export: turn classifiers into confidence-aware ONNX artifacts, bundles and engines.

Modules (each importable without torch; torch is imported only inside the PyTorch paths, the
``[torch]`` extra):

* :mod:`~edgeconf.export.torch_export` — ``export_torch`` (nn.Module → ONNX, parity-checked), safe weights loading;
* :mod:`~edgeconf.export.head` — ``add_confidence_head``, ``read_head_metadata``, ``retune``;
* :mod:`~edgeconf.export.calibration` — ``fit_temperature``;
* :mod:`~edgeconf.export.thresholds` — ``tradeoff_curve``, ``select``, ``evaluate``;
* :mod:`~edgeconf.export.pairing` — ``complementarity_matrix``, ``rank_pairs``;
* :mod:`~edgeconf.export.build` — ``build_cascade``;
* :mod:`~edgeconf.export.early_exit` — ``export_multi_exit``, ``build_early_exit_bundle``;
* :mod:`~edgeconf.export.quantize` — ``quantize_int8``;
* :mod:`~edgeconf.export.cli` — the ``export``, ``retune``, ``pair`` and ``cascade`` verbs.
"""
from __future__ import annotations
