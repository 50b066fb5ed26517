"""Pairing: which two models of a pool cover each other's weaknesses, and what each pair's cascade gives.

Complementarity of models i and j on N labelled samples (Kinnas et al., 2024):
  * ``exactly_one[i, j]``: share of samples on which exactly one of the two is right;
  * ``paper[i, j]``: ``exactly_one[i, j] - |err_i - err_j| / N`` (err = error count), which penalises pairs
    where one model is simply much worse than the other.
Each ordered pair (first runs on everything, second on the unsure rest) gets its threshold from the
policy on the calibration data; pairs are ranked on the calibration data, and reported on the test
data when it is given (never chosen on it).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import permutations
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from edgeconf.errors import ConfigError
from edgeconf.export.errors import PolicyError
from edgeconf.export.thresholds import evaluate, parse_policy, select, tradeoff_curve


@dataclass
class ComplementarityMatrix:
    names: List[str]
    exactly_one: np.ndarray  # (K, K)
    paper: np.ndarray  # (K, K)
    accuracy: np.ndarray  # (K,)

    def to_json(self) -> dict:
        return {"names": list(self.names), "exactly_one": np.round(self.exactly_one, 6).tolist(),
                "paper": np.round(self.paper, 6).tolist(), "accuracy": np.round(self.accuracy, 6).tolist()}


def complementarity_matrix(preds: Mapping[str, np.ndarray], labels: np.ndarray) -> ComplementarityMatrix:
    """Both complementarity measures for every pair of models, from their predicted classes ``(N,)``."""
    if len(preds) < 2:
        raise ConfigError("complementarity needs at least 2 models, got %d" % len(preds))
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0:
        raise ConfigError("labels must have shape (N,) with N > 0, got %s" % (y.shape,))
    names = list(preds)
    right = []
    for name in names:
        p = np.asarray(preds[name])
        if p.shape != y.shape:
            raise ConfigError("predictions of %s have shape %s but labels have %s" % (name, p.shape, y.shape))
        right.append(p == y)
    r = np.stack(right).astype(np.float64)  # (K, N)
    n = float(y.size)
    both = r @ r.T
    count = r.sum(axis=1)
    exactly = (count[:, None] + count[None, :] - 2.0 * both) / n
    err = n - count
    paper = exactly - np.abs(err[:, None] - err[None, :]) / n
    return ComplementarityMatrix(names, exactly, paper, count / n)


@dataclass
class PairReport:
    """One ordered pair's cascade: threshold from the policy on calibration data, metrics where stated."""

    first: str
    second: str
    complementarity: float
    paper_complementarity: float
    threshold: float
    accuracy: float  # on ``evaluated_on``
    cost: float
    escalation: float
    calib_accuracy: float
    calib_cost: float
    feasible: bool  # the policy could be met on the calibration data (else the row is at max-accuracy's threshold)
    evaluated_on: str  # "test" or "calibration"
    buildable: bool = True  # ``edgeconf cascade FIRST SECOND`` would build it
    why: Optional[str] = None  # why it would not (other preprocessing, other class names)
    #: when the policy is not met: the lowest cost (budget) or the highest accuracy (match) any threshold of the pair
    #: reaches on the calibration data
    reachable: Optional[float] = None

    def to_json(self) -> dict:
        return asdict(self)


def _costs_map(costs: Union[Mapping[str, float], Sequence[float]], names: Sequence[str]) -> Dict[str, float]:
    if isinstance(costs, Mapping):
        missing = [n for n in names if n not in costs]
        if missing:
            raise ConfigError("no cost given for %s" % ", ".join(missing))
        return {n: float(costs[n]) for n in names}
    costs = list(costs)
    if len(costs) != len(names):
        raise ConfigError("costs has %d entries but there are %d models" % (len(costs), len(names)))
    return dict(zip(names, map(float, costs)))


def rank_pairs(logits_by_model: Mapping[str, np.ndarray], labels: np.ndarray,
               costs: Union[Mapping[str, float], Sequence[float]], policy: str = "max-accuracy",
               score: str = "margin", temperatures: Optional[Mapping[str, float]] = None, combine: str = "last",
               test: Optional[Tuple[Mapping[str, np.ndarray], np.ndarray]] = None, n: int = 2000,
               ordered: bool = True, refusals: Optional[Mapping[Tuple[str, str], str]] = None) -> List[PairReport]:
    """Every (ordered) pair's cascade under ``policy``, best first; the first buildable one that meets the policy is
    recommended (:func:`recommended_pair`).

    Ranking uses the calibration data (``logits_by_model``/``labels``) only: buildable pairs first, then feasible
    ones, then by the policy (max-accuracy and budget: accuracy, then cost; match: cost, then accuracy). A pair
    that cannot meet the policy (``feasible`` False) is reported at its max-accuracy threshold, with ``reachable``
    saying how near it comes.
    ``refusals`` maps an ordered pair ``(first, second)`` to why it cannot be built as a cascade; such a pair is
    reported (``buildable`` False, ``why``) but ranked last. ``ordered=False`` keeps only the cheaper-first order
    of each pair.
    """
    names = list(logits_by_model)
    if len(names) < 2:
        raise ConfigError("pairing needs at least 2 models, got %d" % len(names))
    kind, _ = parse_policy(policy)
    cost = _costs_map(costs, names)
    temps = {n: float((temperatures or {}).get(n, 1.0)) for n in names}
    y = np.asarray(labels)
    comp = complementarity_matrix({n: np.asarray(logits_by_model[n]).argmax(axis=1) for n in names}, y)
    idx = {n: i for i, n in enumerate(names)}
    pairs = list(permutations(names, 2)) if ordered else \
        [(a, b) if cost[a] <= cost[b] else (b, a) for i, a in enumerate(names) for b in names[i + 1:]]
    reports = []
    for a, b in pairs:
        curve = tradeoff_curve([logits_by_model[a], logits_by_model[b]], y, [cost[a], cost[b]], score,
                               [temps[a], temps[b]], combine, n=n)
        feasible, reachable = True, None
        try:
            op = select(curve, policy)
        except PolicyError:
            feasible = False
            reachable = float(curve.cost.min()) if kind == "budget" else float(curve.accuracy.max())
            op = select(curve, "max-accuracy")
        where, ev = "calibration", op
        if test is not None:
            t_logits, t_y = test
            ev = evaluate([t_logits[a], t_logits[b]], t_y, op.thresholds, [cost[a], cost[b]], score,
                          [temps[a], temps[b]], combine)
            where = "test"
        i, j = idx[a], idx[b]
        why = (refusals or {}).get((a, b))
        reports.append(PairReport(a, b, float(comp.exactly_one[i, j]), float(comp.paper[i, j]), op.thresholds[0],
                                  ev.accuracy, ev.cost, ev.escalation, op.accuracy, op.cost, feasible, where,
                                  why is None, why, reachable))
    if kind == "match":
        reports.sort(key=lambda r: (not r.buildable, not r.feasible, r.calib_cost, -r.calib_accuracy))
    else:
        reports.sort(key=lambda r: (not r.buildable, not r.feasible, -r.calib_accuracy, r.calib_cost))
    return reports


def recommended_pair(reports: Sequence[PairReport]) -> Optional[PairReport]:
    """The best pair that can be built as a cascade and meets the policy on the calibration data, or None when none
    does (as ``edgeconf cascade`` refuses a policy no threshold meets)."""
    return next((r for r in reports if r.buildable and r.feasible), None)


def policy_shortfall(reports: Sequence[PairReport], policy: str, unit: str = "") -> Optional[str]:
    """Why no pair is recommended when pairs can be built but none meets ``policy``, e.g. ``no pair meets budget:0
    on the calibration data (the cheapest point of any pair costs 0.01276 ms)``; None when one meets it or none can
    be built. ``unit``: the cost unit to name ("ms"; "" for given costs)."""
    built = [r for r in reports if r.buildable]
    if not built or any(r.feasible for r in built):
        return None
    kind, _ = parse_policy(policy)
    near = [r.reachable for r in built if r.reachable is not None]
    if kind == "budget":
        how = " (the cheapest point of any pair costs %.4g%s)" % (min(near), " " + unit if unit else "") if near else ""
    else:
        how = " (the most accurate point of any pair reaches %.4f)" % max(near) if near else ""
    return "no pair meets %s on the calibration data%s" % (policy, how)


__all__ = ["ComplementarityMatrix", "complementarity_matrix", "PairReport", "rank_pairs", "recommended_pair",
           "policy_shortfall"]
