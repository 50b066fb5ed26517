"""What ``edgeconf demo``, ``edgeconf run`` and ``edgeconf gui`` use when not told otherwise: one definition.

* the bundle: the shipped live cascade (``edgeconf/data/zoo/live``): ``zoo/bundle``'s three stages with the
  later two fine-tuned on demo-scene crops (``scripts/train_live.py``), plus a stage-1 out-of-distribution head
  that answers ``unknown`` for crops that are no class (``scripts/fit_ood.py``; ``classify`` and ``bench``
  default to ``zoo/bundle``, which does not pay for it);
* the regions: the shipped detector (``detector``: a tiny CenterNet trained on demo scenes by
  ``scripts/train_detector.py``, ``edgeconf/data/detector/detector.onnx``);
* the source: the built-in synthetic scene (``demo://``);
* the evidence a track needs before it shows a class (:data:`DETECTOR_CLASS_SCORE`, :data:`CLASS_ANSWERS`): the
  shipped detector's mean score on it, or that many answers naming a class (docs/pipeline.md, "When a track shows a
  class").

``truth`` (the scene's own boxes) stays available as an explicit oracle for diagnosis and is always labelled
as such (:func:`regions_note`).
"""
from __future__ import annotations

from typing import Optional

from edgeconf import data_path

DEFAULT_BUNDLE = data_path("zoo", "live")
DEFAULT_BASELINE = data_path("zoo", "big.onnx")
DETECTOR_MODEL = data_path("detector", "detector.onnx")
DEFAULT_REGIONS = "detector"
DEFAULT_SOURCE = "demo://"
ORACLE_REGIONS = "truth"
#: The choices offered by the GUI and named in ``--help``: the default first, the oracle last.
REGION_CHOICES = (DEFAULT_REGIONS, "motion", "full", ORACLE_REGIONS)
#: A track on the shipped detector's boxes shows a class only when the mean score of its detections is at least this,
#: or once CLASS_ANSWERS of its answers named a class; until then it shows "unknown". Chosen on training-side data
#: (validation scenes 230-244 and a video of the OOD fit's negative pictures; docs/pipeline.md).
DETECTOR_CLASS_SCORE = 0.7
CLASS_ANSWERS = 6
ORACLE_NOTE = "oracle regions: boxes from the scene's ground truth, not a proposer"


def is_oracle(regions: object) -> bool:
    """True for the ``truth`` regions (with or without options)."""
    return isinstance(regions, str) and regions.strip().lower().split(":", 1)[0] == ORACLE_REGIONS


def regions_note(regions: object) -> Optional[str]:
    """The label a summary, an event log or the GUI must show next to these regions (None when none needed)."""
    return ORACLE_NOTE if is_oracle(regions) else None


__all__ = ["DEFAULT_BUNDLE", "DEFAULT_BASELINE", "DETECTOR_MODEL", "DEFAULT_REGIONS", "DEFAULT_SOURCE",
           "ORACLE_REGIONS", "REGION_CHOICES", "ORACLE_NOTE", "DETECTOR_CLASS_SCORE", "CLASS_ANSWERS", "is_oracle", "regions_note"]
