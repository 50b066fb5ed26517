"""Exit thresholds from held-out stage outputs: the whole accuracy/cost trade-off curve and policies.

Two stages: one threshold λ, swept over ``n`` evenly spaced values in [0, 1] (the paper sweeps 2000);
a sample escalates when its stage-1 confidence is below λ.

N stages (N >= 3), per-exit thresholds. The curve holds two families of candidates:
  * ``shared``: one λ for every exit (LGViT), ``n`` values in [0, 1];
  * ``geometric``: the Dynamic-Perceiver rule. For a ratio q the share of samples leaving at exit k is
    proportional to q**k; each exit's threshold is the confidence quantile (among the samples still
    running) that lets that share leave. q sweeps ``n`` values, log-spaced from e**-6 to e**6.
Every candidate is evaluated by simulating the cascade exactly as :class:`edgeconf.cascade.Cascade`
runs it (same scores, temperatures, combine rule and the ``confidence < threshold`` escalation test).
The ``mean`` rule answers with the average of the calibrated probabilities of every stage that ran and
exits on that average's confidence: it is simulated as ``last`` over the running averages
(:func:`stage_outputs` with ``combine="mean"``). :func:`choose_combine` tries every rule and keeps the one
whose operating point the policy prefers.

Expected cost = Σ_k (share of samples reaching stage k) × cost_k, in the unit of ``costs``.
Choose thresholds on a calibration split and report them on a separate test split (:func:`evaluate`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from edgeconf.cascade import COMBINE_RULES
from edgeconf.confidence import SCORES, score as np_score, softmax
from edgeconf.errors import ConfigError
from edgeconf.export.calibration import check_logits_labels
from edgeconf.export.errors import PolicyError

Scores = Union[str, Sequence[str]]


@dataclass
class OperatingPoint:
    """One choice of thresholds and what it gives: accuracy (fraction 0..1), expected cost, escalation share."""

    thresholds: List[float]
    accuracy: float
    cost: float
    escalation: float  # share of samples that reach stage 2
    reach: List[float] = field(default_factory=list)  # share of samples reaching each stage
    policy: str = ""
    family: str = ""

    def to_json(self) -> dict:
        return {"thresholds": [round(float(t), 6) for t in self.thresholds], "accuracy": float(self.accuracy),
                "cost": float(self.cost), "escalation": float(self.escalation),
                "reach": [float(r) for r in self.reach], "policy": self.policy, "family": self.family}


@dataclass
class TradeoffCurve:
    """Candidate operating points. ``thresholds`` has shape (n, stages - 1); the others (n,)."""

    thresholds: np.ndarray
    accuracy: np.ndarray
    cost: np.ndarray
    escalation: np.ndarray
    reach: np.ndarray  # (n, stages)
    family: np.ndarray  # (n,) "sweep", "shared" or "geometric"
    costs: List[float]
    scores: List[str]
    temperatures: List[float]
    combine: str = "last"

    def __len__(self) -> int:
        return int(self.accuracy.shape[0])

    @property
    def lambdas(self) -> np.ndarray:
        """The single threshold of a two-stage curve (shape (n,))."""
        if self.thresholds.shape[1] != 1:
            raise ConfigError("lambdas is defined for two-stage curves; this one has %d exits" % self.thresholds.shape[1])
        return self.thresholds[:, 0]

    def point(self, i: int, policy: str = "") -> OperatingPoint:
        return OperatingPoint([float(t) for t in self.thresholds[i]], float(self.accuracy[i]), float(self.cost[i]),
                              float(self.escalation[i]), [float(r) for r in self.reach[i]], policy, str(self.family[i]))

    def pareto(self) -> np.ndarray:
        """Indices of the points no other point beats on both accuracy and cost, by rising cost."""
        order = np.lexsort((-self.accuracy, self.cost))
        keep, best = [], -np.inf
        for i in order:
            if self.accuracy[i] > best:
                keep.append(i)
                best = self.accuracy[i]
        return np.asarray(keep, dtype=np.int64)


def _as_list(value: Union[None, str, float, Sequence], k: int, name: str, default) -> list:
    if value is None:
        return [default] * k
    if isinstance(value, (str, int, float)):
        return [value] * k
    value = list(value)
    if len(value) != k:
        raise ConfigError("%s has %d entries but there are %d stages" % (name, len(value), k))
    return value


def stage_outputs(stage_logits: Sequence[np.ndarray], labels: np.ndarray, scores: Scores = "margin",
                  temperatures: Optional[Sequence[float]] = None, min_samples: int = 1, combine: str = "last"
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, List[str], List[float]]:
    """Validated (confidence (K, N), predictions (K, N), labels (N,), scores, temperatures).

    With ``combine="mean"`` row k holds the answer after stage k: the average of the probabilities of
    stages 0..k and its confidence (under stage k's score), so ``simulate(..., "mean")`` runs it as ``last``.
    """
    if len(stage_logits) < 2:
        raise ConfigError("a cascade needs at least 2 stages, got %d" % len(stage_logits))
    k = len(stage_logits)
    score_list = [str(s) for s in _as_list(scores, k, "scores", "margin")]
    for s in score_list:
        if s not in SCORES:
            raise ConfigError("unknown score %r; choose one of %s" % (s, ", ".join(SCORES)))
    temps = [float(t) for t in _as_list(temperatures, k, "temperatures", 1.0)]
    if any(not t > 0 for t in temps):
        raise ConfigError("temperatures must be > 0, got %s" % temps)
    confs, preds, classes, y = [], [], None, None
    summed = None
    for i, z in enumerate(stage_logits):
        z, y = check_logits_labels(z, labels, "stage %d" % (i + 1), min_samples=min_samples, min_classes=1)
        if classes is not None and z.shape[1] != classes:
            raise ConfigError("stage %d has %d classes but stage 1 has %d; all stages must share the classes"
                              % (i + 1, z.shape[1], classes))
        classes = z.shape[1]
        p = softmax(z, temps[i])
        if combine == "mean":
            summed = p if summed is None else summed + p
            p = summed / (i + 1)
        confs.append(np_score(score_list[i], p))
        preds.append(p.argmax(axis=1))
    return np.stack(confs), np.stack(preds), y, score_list, temps  # type: ignore[return-value]


def simulate(confs: np.ndarray, preds: np.ndarray, thresholds: Sequence[float], combine: str = "last"
             ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the cascade rule on precomputed stage outputs: (final prediction, answering stage, stages run).

    For ``mean``, pass the running averages from ``stage_outputs(..., combine="mean")``: the rule is then ``last``.
    """
    k, n = confs.shape
    pred = np.zeros(n, dtype=np.int64)
    conf = np.zeros(n)
    stage_of = np.zeros(n, dtype=np.int64)
    stages_run = np.zeros(n, dtype=np.int64)
    active = np.arange(n)
    for s in range(k):
        if active.size == 0:
            break
        stages_run[active] = s + 1
        c = confs[s, active]
        take = np.ones(active.size, dtype=bool) if s == 0 or combine != "best" else c > conf[active]
        idx = active[take]
        pred[idx] = preds[s, idx]
        conf[idx] = confs[s, idx]
        stage_of[idx] = s
        if s == k - 1:
            break
        active = active[c < thresholds[s]]
    return pred, stage_of, stages_run


def _check_costs(costs: Sequence[float], k: int) -> List[float]:
    costs = [float(c) for c in costs]
    if len(costs) != k:
        raise ConfigError("costs has %d entries but there are %d stages" % (len(costs), k))
    if any(not math.isfinite(c) or c < 0 for c in costs):
        raise ConfigError("costs must be finite numbers >= 0, got %s" % costs)
    return costs


def _point_arrays(confs, preds, y, thr, combine, costs):
    pred, _, run = simulate(confs, preds, thr, combine)
    k = confs.shape[0]
    reach = np.array([(run > s).mean() for s in range(k)])
    return float((pred == y).mean()), float(reach @ np.asarray(costs)), reach


def _geometric_thresholds(confs: np.ndarray, q: float) -> List[float]:
    k, n = confs.shape
    w = q ** np.arange(k, dtype=np.float64)
    w = w / w.sum()
    active = np.arange(n)
    thr = []
    for s in range(k - 1):
        tail = w[s:].sum()
        frac = w[s] / tail if tail > 0 else 1.0
        c = np.sort(confs[s, active])[::-1]
        m = int(round(frac * c.size))
        t = 1.0 if m == 0 or c.size == 0 else float(min(1.0, max(0.0, c[m - 1])))
        thr.append(t)
        active = active[confs[s, active] < t]
    return thr


def tradeoff_curve(stage_logits: Sequence[np.ndarray], labels: np.ndarray, costs: Sequence[float],
                   scores: Scores = "margin", temperatures: Optional[Sequence[float]] = None, combine: str = "last",
                   n: int = 2000) -> TradeoffCurve:
    """Accuracy, expected cost and escalation share for ``n`` threshold candidates (see the module doc)."""
    if combine not in COMBINE_RULES:
        raise ConfigError("unknown combine rule %r; choose one of %s" % (combine, ", ".join(COMBINE_RULES)))
    if n < 2:
        raise ConfigError("the sweep needs n >= 2 points, got %d" % n)
    confs, preds, y, score_list, temps = stage_outputs(stage_logits, labels, scores, temperatures, combine=combine)
    k = confs.shape[0]
    costs = _check_costs(costs, k)
    lam = np.linspace(0.0, 1.0, n)
    if k == 2:
        c1 = confs[0]
        r1 = (preds[0] == y).astype(np.float64)
        r2 = (preds[1] == y).astype(np.float64)
        r_esc = r2 if combine != "best" else np.where(confs[1] > c1, r2, r1)
        order = np.argsort(c1, kind="stable")
        cs = c1[order]
        cum1 = np.concatenate([[0.0], np.cumsum(r1[order])])
        cum_e = np.concatenate([[0.0], np.cumsum(r_esc[order])])
        m = np.searchsorted(cs, lam, side="left")  # samples with c1 < λ escalate
        total = float(y.size)
        acc = (cum_e[m] + cum1[-1] - cum1[m]) / total
        esc = m / total
        reach = np.stack([np.ones_like(esc), esc], axis=1)
        return TradeoffCurve(lam[:, None], acc, costs[0] + esc * costs[1], esc, reach,
                             np.array(["sweep"] * n), costs, score_list, temps, combine)
    thr_rows: List[List[float]] = [[float(v)] * (k - 1) for v in lam]
    fams = ["shared"] * n
    for q in np.exp(np.linspace(-6.0, 6.0, n)):
        thr_rows.append(_geometric_thresholds(confs, float(q)))
        fams.append("geometric")
    acc_l, cost_l, reach_l = [], [], []
    for thr in thr_rows:
        a, c, r = _point_arrays(confs, preds, y, thr, combine, costs)
        acc_l.append(a)
        cost_l.append(c)
        reach_l.append(r)
    reach = np.asarray(reach_l)
    return TradeoffCurve(np.asarray(thr_rows), np.asarray(acc_l), np.asarray(cost_l), reach[:, 1], reach,
                         np.asarray(fams), costs, score_list, temps, combine)


def parse_policy(policy: str) -> Tuple[str, Optional[float]]:
    """``max-accuracy`` | ``match:<accuracy>`` | ``budget:<cost>`` → (kind, value).

    Accuracy for ``match`` is a fraction in [0, 1] (``match:0.93``) or a percentage above 1
    (``match:93`` or ``match:93%``); both mean 93 %.
    """
    text = str(policy).strip().lower()
    if text in ("max-accuracy", "max_accuracy", "maxacc"):
        return "max-accuracy", None
    kind, sep, raw = text.partition(":")
    if kind not in ("match", "budget") or not sep or not raw:
        raise PolicyError("unknown threshold policy %r; use max-accuracy, match:<accuracy> (e.g. match:0.93 or "
                          "match:93%%) or budget:<cost> (in the unit of the stage costs)" % (policy,))
    pct = raw.endswith("%")
    try:
        value = float(raw.rstrip("%"))
    except ValueError:
        raise PolicyError("policy %r: %r is not a number" % (policy, raw)) from None
    if not math.isfinite(value) or value < 0:
        raise PolicyError("policy %r: the value must be a finite number >= 0" % (policy,))
    if kind == "match":
        if pct or value > 1.0:
            value /= 100.0
        if value > 1.0:
            raise PolicyError("policy %r: accuracy above 100 %% cannot be matched" % (policy,))
    return kind, value


def select(curve: TradeoffCurve, policy: str = "max-accuracy") -> OperatingPoint:
    """The operating point a policy picks from the curve.

    ``max-accuracy``: highest accuracy, cheapest among ties. ``match:<acc>``: cheapest point with accuracy
    >= acc, most accurate among ties. ``budget:<cost>``: most accurate point with cost <= budget, cheapest
    among ties.
    """
    kind, value = parse_policy(policy)
    acc, cost = curve.accuracy, curve.cost
    eps = 1e-12
    if kind == "max-accuracy":
        ok = np.ones(len(curve), dtype=bool)
        key = np.lexsort((cost, -acc))
    elif kind == "match":
        ok = acc >= value - eps  # type: ignore[operator]
        if not ok.any():
            raise PolicyError("no threshold reaches accuracy %.4f (policy %r); the best on this data is %.4f"
                              % (value, policy, float(acc.max())))
        key = np.lexsort((-acc, cost))
    else:
        ok = cost <= value + eps  # type: ignore[operator]
        if not ok.any():
            raise PolicyError("no threshold fits the cost budget %g (policy %r); the cheapest point costs %g"
                              % (value, policy, float(cost.min())))
        key = np.lexsort((cost, -acc))
    best = next(int(i) for i in key if ok[i])
    return curve.point(best, policy=str(policy))


def grid_three_stage(stage_logits: Sequence[np.ndarray], labels: np.ndarray, temperatures: Sequence[float],
                     costs: Sequence[float], target: float, n: int = 501) -> Tuple[List[float], bool]:
    """Thresholds (t1, t2) of a three-stage ``last`` cascade with margin scores, searched on an n×n grid over
    [0, 1]: the cheapest pair whose accuracy on the given data reaches ``target`` (the most accurate among
    equal costs), and True; when no pair reaches it, the most accurate pair and False.

    Every (t1, t2) is tried, not only the sweep families of :func:`tradeoff_curve`; for a fixed t1 all t2
    are priced at once from cumulative sums over the escalated samples sorted by stage-2 confidence.
    """
    if len(stage_logits) != 3:
        raise ConfigError("grid_three_stage needs 3 stages, got %d" % len(stage_logits))
    c = _check_costs(costs, 3)
    confs, preds, yy, _, _ = stage_outputs(stage_logits, labels, "margin", temperatures)
    right = (preds == yy[None, :]).astype(np.float64)
    total = float(yy.size)
    grid = np.linspace(0.0, 1.0, n)
    best = None  # (key: (reached, -cost or accuracy, ...), thresholds)
    for t1 in grid:
        esc = confs[0] < t1
        base = right[0][~esc].sum()
        c2 = confs[1][esc]
        order = np.argsort(c2, kind="stable")
        cum2 = np.concatenate([[0.0], np.cumsum(right[1][esc][order])])
        cum3 = np.concatenate([[0.0], np.cumsum(right[2][esc][order])])
        m = np.searchsorted(c2[order], grid, side="left")  # escalated samples with c2 < t2 go on to stage 3
        acc = (base + cum3[m] + cum2[-1] - cum2[m]) / total
        cost = c[0] + esc.sum() / total * c[1] + m / total * c[2]
        ok = acc >= target - 1e-12
        if ok.any():
            i = int(np.lexsort((-acc, np.where(ok, cost, np.inf)))[0])
            key = (1, -cost[i], acc[i])
        else:
            i = int(np.lexsort((cost, -acc))[0])
            key = (0, acc[i], -cost[i])
        if best is None or key > best[0]:
            best = (key, [float(t1), float(grid[i])])
    return best[1], bool(best[0][0])


def evaluate(stage_logits: Sequence[np.ndarray], labels: np.ndarray, thresholds: Sequence[float],
             costs: Sequence[float], scores: Scores = "margin", temperatures: Optional[Sequence[float]] = None,
             combine: str = "last", policy: str = "") -> OperatingPoint:
    """Accuracy, expected cost and escalation of fixed thresholds on (test) data."""
    if combine not in COMBINE_RULES:
        raise ConfigError("unknown combine rule %r; choose one of %s" % (combine, ", ".join(COMBINE_RULES)))
    confs, preds, y, _, _ = stage_outputs(stage_logits, labels, scores, temperatures, combine=combine)
    k = confs.shape[0]
    if len(thresholds) < k - 1:
        raise ConfigError("%d stages need %d thresholds, got %d" % (k, k - 1, len(thresholds)))
    thr = [float(t) for t in thresholds][: k - 1]
    acc, c, reach = _point_arrays(confs, preds, y, thr, combine, _check_costs(costs, k))
    return OperatingPoint(thr, acc, c, float(reach[1]), [float(r) for r in reach], policy, "fixed")


def _preference(op: OperatingPoint, policy: str) -> Tuple[float, ...]:
    """Sort key of an operating point under ``policy``: larger is preferred."""
    kind, _ = parse_policy(policy)
    if kind == "match":
        return (-op.cost, op.accuracy)
    return (op.accuracy, -op.cost)


def choose_combine(stage_logits: Sequence[np.ndarray], labels: np.ndarray, costs: Sequence[float],
                   scores: Scores = "margin", temperatures: Optional[Sequence[float]] = None,
                   policy: str = "max-accuracy", rules: Sequence[str] = COMBINE_RULES, n: int = 2000
                   ) -> Tuple[str, TradeoffCurve, OperatingPoint, dict]:
    """The combine rule whose policy-selected operating point is best on this (calibration) data.

    ``max-accuracy`` and ``budget`` prefer accuracy, then cost; ``match`` prefers cost, then accuracy.
    Ties keep the earlier rule in ``rules`` (``last`` first: the simplest). Returns (rule, its curve, its
    point, {rule: point or None when the policy cannot be met with that rule}).
    """
    found = {}
    best = None
    for rule in rules:
        curve = tradeoff_curve(stage_logits, labels, costs, scores, temperatures, rule, n=n)
        try:
            op = select(curve, policy)
        except PolicyError:
            found[rule] = None
            continue
        found[rule] = op
        if best is None or _preference(op, policy) > _preference(best[2], policy):
            best = (rule, curve, op)
    if best is None:
        select(tradeoff_curve(stage_logits, labels, costs, scores, temperatures, rules[0], n=n), policy)  # raises
        raise PolicyError("policy %r cannot be met with any combine rule" % policy)  # pragma: no cover
    return best[0], best[1], best[2], found


__all__ = ["TradeoffCurve", "choose_combine", "OperatingPoint", "tradeoff_curve", "select", "evaluate", "grid_three_stage", "simulate", "parse_policy",
           "stage_outputs"]
