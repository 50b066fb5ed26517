"""Early-exit networks: one ONNX graph per segment, and a bundle whose stages chain on features.

Protocol for the torch model: it has ``segments: nn.ModuleList`` (features → features; the first takes the
image) and ``exits: nn.ModuleList`` of the same length (features → logits). Exit k reads the output of
segment k. Segment k is exported as a graph with input ``input`` (k = 0) or ``features_in`` (k > 0) and
outputs ``features`` and ``logits``; the bundle's stage k > 0 takes the previous stage's ``features``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from edgeconf.bundle import MemoSettings
from edgeconf.cascade import IMAGE
from edgeconf.errors import ConfigError
from edgeconf.export.build import (BuildReport, _as_preprocessing, _check_split, _Source, _labels_for, assemble_bundle,
                                   infer_preprocessing, runtime_check)
from edgeconf.export.calibration import check_logits_labels
from edgeconf.export.data import _session, input_spec, measure_cost, model_ready
from edgeconf.export.head import read_head_metadata
from edgeconf.export.torch_export import TOLERANCE, ExportReport, export_torch
from edgeconf.lazy import require

FEATURES_IN = "features_in"
FEATURES = "features"
LOGITS = "logits"


@dataclass
class MultiExitExport:
    """The exported segment files, in order, and each segment's export report."""

    paths: List[str]
    reports: List[ExportReport] = field(default_factory=list)

    @property
    def max_abs_diff(self) -> float:
        return max((r.max_abs_diff for r in self.reports), default=0.0)


def _check_protocol(torch, model: Any) -> None:
    segs, exits = getattr(model, "segments", None), getattr(model, "exits", None)
    if not isinstance(segs, torch.nn.ModuleList) or not isinstance(exits, torch.nn.ModuleList):
        raise ConfigError("a multi-exit model must have 'segments' and 'exits' attributes of type nn.ModuleList "
                          "(segment k: features → features; exit k: features → logits)")
    if len(segs) != len(exits) or len(segs) < 2:
        raise ConfigError("a multi-exit model needs as many exits as segments and at least 2 of each; got %d "
                          "segments and %d exits" % (len(segs), len(exits)))


def multi_exit_logits(model: Any, x: Any) -> List[np.ndarray]:
    """Every exit's logits for ``x`` by running the whole torch model (the reference for the runtime)."""
    torch = require("torch", "running multi-exit models")
    _check_protocol(torch, model)
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    outs = []
    with torch.no_grad():
        f = x
        for seg, ex in zip(model.eval().segments, model.exits):
            f = seg(f)
            outs.append(ex(f).numpy().astype(np.float32))
    return outs


def export_multi_exit(model: Any, example: Any, out_dir: str, input_name: str = "input", opset: int = 17,
                      tolerance: float = TOLERANCE, prefix: str = "segment") -> MultiExitExport:
    """Export each segment with its exit as ``<out_dir>/<prefix><k>.onnx`` (k from 1), checking parity with torch."""
    torch = require("torch", "exporting multi-exit models")
    _check_protocol(torch, model)
    model = model.eval()

    class _Segment(torch.nn.Module):  # built here so the module imports without torch
        def __init__(self, seg, head):
            super().__init__()
            self.seg, self.head = seg, head

        def forward(self, x):
            f = self.seg(x)
            return f, self.head(f)

    if isinstance(example, np.ndarray):
        example = torch.from_numpy(np.ascontiguousarray(example, dtype=np.float32))
    os.makedirs(out_dir, exist_ok=True)
    paths, reports = [], []
    feed = example.float()
    for k, (seg, ex) in enumerate(zip(model.segments, model.exits)):
        path = os.path.join(out_dir, "%s%d.onnx" % (prefix, k + 1))
        rep = export_torch(_Segment(seg, ex), feed, path, input_name=input_name if k == 0 else FEATURES_IN,
                           output_names=(FEATURES, LOGITS), opset=opset, tolerance=tolerance)
        paths.append(path)
        reports.append(rep)
        with torch.no_grad():
            feed = seg(feed)
    return MultiExitExport(paths, reports)


def _chain(paths: Sequence[str], x: np.ndarray, batch: int = 256) -> List[Dict[str, np.ndarray]]:
    """Run the segments in order on every sample: per segment its input, features and logits."""
    out = []
    feed = x
    for path in paths:
        sess = _session(path)
        name = sess.get_inputs()[0].name
        feats, logits = [], []
        for i in range(0, feed.shape[0], batch):
            f, z = sess.run([FEATURES, LOGITS], {name: feed[i:i + batch]})
            feats.append(f)
            logits.append(z)
        f_all, z_all = np.concatenate(feats), np.concatenate(logits)
        out.append({"input": feed, FEATURES: f_all, LOGITS: z_all})
        feed = f_all
    return out


def build_early_exit_bundle(segment_paths: Sequence[str], calib: Any, test: Any = None, out: str = "bundle",
                            policy: str = "max-accuracy", score: str = "margin", combine: str = "last",
                            labels: Optional[Sequence[str]] = None, preprocessing: Any = None,
                            costs: Optional[Sequence[float]] = None, memo: Optional[MemoSettings] = None,
                            name: str = "early-exit", n: int = 2000, cost_repeats: int = 200) -> BuildReport:
    """A bundle of the exported segments: stage k > 0 takes stage k-1's ``features``.

    Temperatures and per-exit thresholds are fitted on ``calib`` (see :mod:`edgeconf.export.thresholds`);
    costs default to each segment's measured per-input time (ms, 1 thread, batch 1) on its own input.
    """
    if len(segment_paths) < 2:
        raise ConfigError("an early-exit bundle needs at least 2 segments, got %d" % len(segment_paths))
    xc, yc = _check_split(calib, "calibration data")
    sources = []
    for p in segment_paths:
        sess = _session(p)
        outs = {o.name for o in sess.get_outputs()}
        if not {FEATURES, LOGITS} <= outs:
            raise ConfigError("%s must output 'features' and 'logits' (it outputs %s); export it with "
                              "export_multi_exit" % (p, ", ".join(sorted(outs))))
        sources.append(_Source(str(p), LOGITS, None, read_head_metadata(p)))
    spec0 = input_spec(_session(segment_paths[0]))
    pre = _as_preprocessing(preprocessing) or next(
        (_as_preprocessing(s.meta["preprocessing"]) for s in sources if s.meta.get("preprocessing")), None)
    notes = []
    if pre is None:
        pre = infer_preprocessing(spec0.shape)
        if pre is None:
            raise ConfigError("no preprocessing given and none can be guessed from the input shape %s" % (spec0.shape,))
        notes.append("preprocessing guessed from the input shape (scale 1/255, no mean/std): %s" % pre.to_json())
    xc = model_ready(xc, spec0, pre, "calibration data")
    chain = _chain(segment_paths, xc)
    calib_logits = [c[LOGITS] for c in chain]
    check_logits_labels(calib_logits[0], yc, "calibration data")
    names = _labels_for(labels, sources, calib_logits[0].shape[1])
    if costs is None:
        cost_info = [measure_cost(p, c["input"][:64], repeats=cost_repeats) for p, c in zip(segment_paths, chain)]
    else:
        if len(costs) != len(segment_paths):
            raise ConfigError("costs has %d entries but there are %d segments" % (len(costs), len(segment_paths)))
        cost_info = [{"value": float(c), "how": "given"} for c in costs]
    test_logits, xt, yt = None, None, None
    if test is not None:
        xt, yt = _check_split(test, "test data")
        xt = model_ready(xt, spec0, pre, "test data")
        test_logits = [c[LOGITS] for c in _chain(segment_paths, xt)]
    inputs = [IMAGE] + [FEATURES] * (len(segment_paths) - 1)
    report = assemble_bundle(sources, inputs, calib_logits, yc, cost_info, out, policy, score, combine, names, pre,
                             memo, name, test_logits, yt, n=n, extra_provenance={"kind": "early-exit"})
    report.notes.extend(notes)
    if xt is not None and yt is not None:
        report.runtime_test = runtime_check(out, xt, yt, report.test)
    return report


__all__ = ["export_multi_exit", "build_early_exit_bundle", "multi_exit_logits", "MultiExitExport"]
