"""Cascades: ordered stages where a later stage runs only on the inputs an earlier one is unsure of."""
from __future__ import annotations

import hashlib
import json
import logging
import numbers
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from edgeconf.backends.base import BoundCall, Runner, validate_input
from edgeconf.confidence import OOD_SCORES, SCORES, energy, score, softmax
from edgeconf.errors import ConfigError, InputValidationError, RemoteStageError
from edgeconf.schema import loads

if TYPE_CHECKING:
    from edgeconf.memo import Answer, MemoCache
    from edgeconf.preprocess import Preprocessing

#: last: a later stage's answer replaces the earlier; best: keep the answer with the higher score; mean: average
#: the calibrated probabilities of every stage that ran (the answer and its confidence, which the exit test uses)
COMBINE_RULES = ("last", "best", "mean")
IMAGE = "image"
PROBS = "probs"  # outputs of the confidence head that edgeconf.export appends
CONFIDENCE = "confidence"
#: class id and label of an answer whose input is no class the model knows (its OOD score is past the threshold)
UNKNOWN = -1
UNKNOWN_LABEL = "unknown"

log = logging.getLogger(__name__)


def _finite_or_none(value: float) -> Optional[float]:
    """``value`` rounded for JSON, or None for NaN and ±inf (which are no JSON numbers)."""
    v = float(value)
    return round(v, 6) if v - v == 0.0 else None


@dataclass(frozen=True)
class OodRule:
    """When a stage calls its input ``unknown``: its out-of-distribution score is above ``threshold``.

    ``output`` names the model output that holds the score (the OOD head ``edgeconf.export.ood`` appends);
    without one, ``score`` must be a score the runtime computes from the logits (``energy``).
    ``escalate`` (optional, ≤ ``threshold``) opens a doubt band: an input scoring above it but not above
    ``threshold`` may not leave the cascade at this stage, whatever its confidence; it goes on to the next stage
    (whose own rule then judges it), exactly as if this stage were unsure of its class.
    """

    threshold: float
    score: str = "graph"
    output: Optional[str] = "ood"
    escalate: Optional[float] = None

    def validate(self, stage: str) -> None:
        if np.isnan(float(self.threshold)):
            raise ConfigError("stage %s: the OOD threshold must be a number (inf: never unknown), got %r"
                              % (stage, self.threshold))
        if self.escalate is not None and not float(self.escalate) <= float(self.threshold):
            raise ConfigError("stage %s: the OOD escalate threshold (%r) must be a number no higher than the OOD "
                              "threshold (%r)" % (stage, self.escalate, self.threshold))
        if self.output is None and self.score not in OOD_SCORES:
            raise ConfigError("stage %s: OOD score %r is not computed by the runtime (%s); name the model output "
                              "that holds it" % (stage, self.score, ", ".join(OOD_SCORES)))

def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_threshold(value: Any, where: str) -> float:
    """An exit threshold as a float: a finite number in [0, 1] (the last stage's too: it has no effect there),
    or a one-line :class:`ConfigError`."""
    if not _is_number(value) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError("%s: threshold must be in [0, 1], a number (an input leaves at this stage when its "
                          "confidence reaches it), got %r" % (where, value))
    return float(value)


def check_temperature(value: Any, where: str) -> Any:
    """A softmax temperature: a finite number > 0, or a one-line :class:`ConfigError`."""
    if not _is_number(value) or not 0.0 < float(value) < float("inf"):
        raise ConfigError("%s: temperature must be a finite number > 0, got %r" % (where, value))
    return value


def _check_score(value: Any, where: str) -> Any:
    if not isinstance(value, str) or value not in SCORES:
        raise ConfigError("%s: unknown score %r; choose one of %s" % (where, value, ", ".join(SCORES)))
    return value


def check_combine(value: Any) -> str:
    if not isinstance(value, str) or value not in COMBINE_RULES:
        raise ConfigError("unknown combine rule %r; choose one of %s" % (value, ", ".join(COMBINE_RULES)))
    return value


#: a Stage field's check, run whenever the field is set (at construction and on every later change)
_STAGE_CHECKS: Dict[str, Callable[[Any, str], Any]] = {
    "threshold": check_threshold, "temperature": check_temperature, "score": _check_score}

#: Bumped whenever a stage or a cascade changes anything that decides an answer. A cascade rebuilds its
#: call plan and fingerprint only when this moved, so the per-input cost of checking is one comparison.
_EPOCH = [0]


def _bump() -> None:
    _EPOCH[0] += 1


@dataclass
class Stage:
    """A runner plus its confidence rule and where its input comes from.

    ``input`` is ``"image"`` (the preprocessed input) or the name of an output of the previous stage
    (features, for early-exit segments). ``logits`` names the output holding the class logits.
    """

    name: str
    runner: Runner
    score: str = "margin"
    threshold: float = 0.5
    temperature: float = 1.0
    input: str = IMAGE
    logits: str = "logits"
    model_sha256: str = ""
    #: (score, temperature) that the model's own confidence head computes into its ``probs`` and
    #: ``confidence`` outputs, when it has one; while they equal this stage's settings the runtime reads
    #: those outputs instead of recomputing them (ONNX Runtime runs the head anyway).
    head: Optional[Tuple[str, float]] = None
    #: out-of-distribution rule: inputs past it are answered ``unknown`` by this stage (no later stage runs)
    ood: Optional[OodRule] = None

    def __post_init__(self) -> None:
        self.validate()

    def __setattr__(self, name: str, value: Any) -> None:
        check = _STAGE_CHECKS.get(name)
        if check is not None:  # checked when set, so a bad value never reaches a run
            value = check(value, "stage %s" % self.__dict__.get("name", "?"))
        object.__setattr__(self, name, value)
        _bump()  # any field may decide answers (model, score, threshold, temperature, input, head)

    def graph_head_active(self) -> bool:
        return self.head is not None and self.head[0] == self.score and self.head[1] == float(self.temperature)

    def validate(self) -> None:
        where = "stage %s" % self.name
        for name, check in _STAGE_CHECKS.items():
            check(getattr(self, name), where)
        outs = {s.name for s in self.runner.outputs}
        if self.logits not in outs:
            raise ConfigError("stage %s: the model has no output %r (outputs: %s)" % (self.name, self.logits, ", ".join(sorted(outs))))
        if self.ood is not None:
            self.ood.validate(self.name)
            if self.ood.output is not None and self.ood.output not in outs:
                raise ConfigError("stage %s: the OOD rule reads output %r, which the model lacks (outputs: %s); add the "
                                  "OOD head with `edgeconf ood`" % (self.name, self.ood.output, ", ".join(sorted(outs))))

    def needed_outputs(self, forward: Optional[str]) -> List[str]:
        own = [PROBS, CONFIDENCE] if self.graph_head_active() else [self.logits]
        if self.ood is not None:
            extra = self.ood.output if self.ood.output is not None else self.logits
            if extra not in own:
                own.append(extra)
        return own + ([forward] if forward and forward not in own else [])

    def unknown(self, out: Dict[str, np.ndarray]) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        """(OOD scores, unknown flags) of a batch, or (None, None) when this stage has no OOD rule."""
        rule = self.ood
        if rule is None:
            return None, None
        if rule.output is not None:
            s = np.asarray(out[rule.output], dtype=np.float64).reshape(-1)
        else:
            s = energy(out[self.logits], self.temperature)
        return s, s > rule.threshold

    def doubt(self, scores: Optional[np.ndarray], unknown: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """Inputs in this stage's doubt band (above ``ood.escalate``, not unknown), or None without a band."""
        rule = self.ood
        if rule is None or rule.escalate is None or scores is None:
            return None
        return (scores > rule.escalate) & ~unknown  # type: ignore[operator]

    def answer(self, out: Dict[str, np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
        """(probabilities, confidence) of a batch from this stage's outputs."""
        if self.graph_head_active():
            return out[PROBS], out[CONFIDENCE]
        p = softmax(out[self.logits], self.temperature)
        return p, score(self.score, p)


def graph_head(runner: Runner) -> Optional[Tuple[str, float]]:
    """The (score, temperature) an edgeconf-exported model's head computes, from its metadata."""
    meta = getattr(runner, "metadata", None) or {}
    names = {s.name for s in runner.outputs}
    if PROBS not in names or CONFIDENCE not in names:
        return None
    try:
        head = (loads(meta["edgeconf.score"], "edgeconf.score", ConfigError),
                float(loads(meta["edgeconf.temperature"], "edgeconf.temperature", ConfigError)))
    except (KeyError, ValueError, TypeError, ConfigError):
        return None
    return head if head[0] in SCORES else None


@dataclass(eq=False)
class CascadeResult:
    """The answer for one input.

    ``==`` compares every field but ``stage_seconds`` (a measurement, different on every run), arrays by value
    (:func:`numpy.array_equal`); a result is mutable and so not hashable.
    """

    class_id: int
    confidence: float
    stage: int  # index of the stage whose answer was kept
    probs: np.ndarray
    #: own model time of each invoked stage (batch share for batches); a remote stage's is the wait on its server, and
    #: it is listed when that stage failed too (``remote_failure``: one entry more than ``stages_run`` then)
    stage_seconds: Tuple[float, ...]
    stages_run: int
    label: Optional[str] = None
    memo_hit: bool = False
    #: why a remote stage gave no answer (``timeout``, ``unavailable``, ``error``, ``circuit_open``): the answer
    #: is then the last local stage's; None when no remote stage failed
    remote_failure: Optional[str] = None
    #: the input is no class the model knows: ``class_id`` is ``UNKNOWN`` and ``label`` is ``"unknown"``; also
    #: the answer when the kept stage's confidence is not finite (a broken model output, e.g. fp16/INT8 overflow:
    #: ``confidence`` is then NaN, written as null in JSON)
    unknown: bool = False
    ood_score: Optional[float] = None  # OOD score of the last stage with an OOD rule that ran on this input

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CascadeResult):
            return NotImplemented
        return (self.class_id == other.class_id and self.confidence == other.confidence
                and self.stage == other.stage and self.stages_run == other.stages_run and self.label == other.label
                and self.memo_hit == other.memo_hit and self.remote_failure == other.remote_failure
                and self.unknown == other.unknown and self.ood_score == other.ood_score
                and np.array_equal(self.probs, other.probs))

    __hash__ = None  # type: ignore[assignment]

    @property
    def seconds(self) -> float:
        return float(sum(self.stage_seconds))

    def to_json(self) -> dict:
        """The answer as a JSON object; a non-finite confidence or OOD score is null (NaN is no JSON number)."""
        d = {"class": self.class_id, "label": self.label, "confidence": _finite_or_none(self.confidence),
             "stage": self.stage, "stages_run": self.stages_run, "memo_hit": self.memo_hit,
             "unknown": self.unknown, "ood": None if self.ood_score is None else _finite_or_none(self.ood_score),
             "stage_ms": [round(s * 1e3, 4) for s in self.stage_seconds]}
        if self.remote_failure is not None:
            d["remote_failure"] = self.remote_failure
        return d


@dataclass
class BatchResult:
    """Answers for a batch, as arrays in input order."""

    class_ids: np.ndarray
    confidence: np.ndarray
    stage: np.ndarray  # stage whose answer was kept
    stages_run: np.ndarray  # how many stages ran for each input
    probs: np.ndarray
    stage_seconds: List[float]  # wall time of each stage invocation over its sub-batch
    stage_counts: List[int]  # inputs each stage saw
    stage_spans: List[Tuple[float, float]]  # perf_counter (start, end) of each invocation, for energy attribution
    remote_failures: Dict[int, str] = field(default_factory=dict)  # input index -> reason its remote stage failed
    unknown: Optional[np.ndarray] = None  # bool per input: answered unknown (class_ids holds UNKNOWN there)
    ood: Optional[np.ndarray] = None  # OOD score of the last stage with an OOD rule that ran (NaN: none did)

    def __len__(self) -> int:
        return int(self.class_ids.shape[0])

    def items(self, labels: Optional[Sequence[str]] = None) -> List[CascadeResult]:
        """Every answer as a :class:`CascadeResult` (what :meth:`item` gives, built in one pass)."""
        n_all = len(self)
        share = [s / max(1, c) for s, c in zip(self.stage_seconds, self.stage_counts)]
        secs = [tuple(share[:k]) for k in range(len(share) + 1)]
        cids, confs = self.class_ids.tolist(), self.confidence.tolist()
        stages, runs = self.stage.tolist(), self.stages_run.tolist()
        probs, failures = self.probs, self.remote_failures
        unknown = self.unknown.tolist() if self.unknown is not None else None
        ood = self.ood.tolist() if self.ood is not None else None
        out = []
        for i in range(n_all):
            cid, n = cids[i], runs[i]
            o = ood[i] if ood is not None else None
            waited = 1 if failures and i in failures else 0  # the remote stage that failed was invoked: its wait
            out.append(CascadeResult(cid, confs[i], stages[i], probs[i], secs[min(n + waited, len(share))], n, label_of(cid, labels),
                                     remote_failure=failures.get(i) if failures else None,
                                     unknown=bool(unknown[i]) if unknown is not None else False,
                                     ood_score=o if o is not None and o == o and abs(o) != float("inf") else None))
        return out

    def item(self, i: int, labels: Optional[Sequence[str]] = None) -> CascadeResult:
        n = int(self.stages_run[i])
        waited = 1 if i in self.remote_failures else 0  # the remote stage that failed was invoked: its wait
        secs = tuple(self.stage_seconds[k] / max(1, self.stage_counts[k])
                     for k in range(min(n + waited, len(self.stage_seconds))))
        cid = int(self.class_ids[i])
        unknown = bool(self.unknown[i]) if self.unknown is not None else False
        ood = float(self.ood[i]) if self.ood is not None and np.isfinite(self.ood[i]) else None
        return CascadeResult(cid, float(self.confidence[i]), int(self.stage[i]), self.probs[i], secs, n,
                             label=label_of(cid, labels), unknown=unknown, ood_score=ood,
                             remote_failure=self.remote_failures.get(i))


class Answers(Sequence[CascadeResult]):
    """What ``classify_batch`` returns: the answers in input order, both as arrays (``class_ids``, ``confidence``,
    ``stage``, ``stages_run``, ``probs``, ``unknown``, ``memo_hit``) and as a sequence of :class:`CascadeResult`.

    The per-input objects are built the first time one is read (all at once, then kept); reading only the
    arrays builds none, which is the cheap way to take a large batch's answers.
    """

    __slots__ = ("_batch", "_build", "_items", "_arrays")

    def __init__(self, batch: Optional[BatchResult] = None, build: Optional[Callable[[], List[CascadeResult]]] = None,
                 results: Optional[List[CascadeResult]] = None) -> None:
        self._batch = batch
        self._build = build
        self._items = results
        self._arrays: Optional[Dict[str, np.ndarray]] = None

    @classmethod
    def of_batch(cls, batch: BatchResult, labels: Optional[Sequence[str]]) -> "Answers":
        return cls(batch, lambda: batch.items(labels))

    @classmethod
    def of_results(cls, results: List[CascadeResult]) -> "Answers":
        return cls(None, None, results)

    def _results(self) -> List[CascadeResult]:
        if self._items is None:
            self._items = self._build()  # type: ignore[misc]
            self._build = None
        return self._items

    def __len__(self) -> int:
        return len(self._batch) if self._batch is not None else len(self._items or ())

    def __getitem__(self, i: Any) -> Any:  # an int gives one CascadeResult, a slice a list of them
        return (self._items if self._items is not None else self._results())[i]

    def __iter__(self) -> Iterator[CascadeResult]:
        return iter(self._items if self._items is not None else self._results())

    def __add__(self, other: Sequence[CascadeResult]) -> List[CascadeResult]:  # as the list it replaces
        return self._results() + list(other)

    def __radd__(self, other: Sequence[CascadeResult]) -> List[CascadeResult]:
        return list(other) + self._results()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, Answers)):
            return self._results() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "Answers(%d inputs, classes %s)" % (len(self), self.class_ids.tolist()[:8])

    def _from_results(self, name: str, make: Callable[[List[CascadeResult]], np.ndarray]) -> np.ndarray:
        """An array made once from the per-input results (answers that came without a batch's arrays)."""
        if self._arrays is None:
            self._arrays = {}
        got = self._arrays.get(name)
        if got is None:
            got = self._arrays[name] = make(self._results())
        return got

    def _column(self, batch_name: str, item_name: str, dtype: Any) -> np.ndarray:
        """The batch's own array ``batch_name``, or each result's ``item_name`` as one array."""
        if self._batch is not None:
            return getattr(self._batch, batch_name)
        return self._from_results(item_name, lambda rs: np.array([getattr(r, item_name) for r in rs], dtype=dtype))

    @property
    def class_ids(self) -> np.ndarray:
        """Class per input (``UNKNOWN`` where the answer is unknown), int64."""
        return self._column("class_ids", "class_id", np.int64)

    @property
    def confidence(self) -> np.ndarray:
        return self._column("confidence", "confidence", np.float64)

    @property
    def stage(self) -> np.ndarray:
        """Index of the stage whose answer was kept, per input."""
        return self._column("stage", "stage", np.int64)

    @property
    def stages_run(self) -> np.ndarray:
        """Stages that ran per input (0 for a memo hit)."""
        return self._column("stages_run", "stages_run", np.int64)

    @property
    def unknown(self) -> np.ndarray:
        b = self._batch
        if b is not None and b.unknown is None:
            return np.zeros(len(b), bool)
        return self._column("unknown", "unknown", bool)

    @property
    def memo_hit(self) -> np.ndarray:
        if self._batch is not None:  # a batch's answers all come from the models
            return np.zeros(len(self._batch), bool)
        return self._from_results("memo_hit", lambda rs: np.array([r.memo_hit for r in rs], dtype=bool))

    @property
    def probs(self) -> np.ndarray:
        """The kept answer's probabilities, ``(N, classes)``."""
        if self._batch is not None:
            return self._batch.probs
        return self._from_results("probs", lambda rs: np.stack([np.asarray(r.probs) for r in rs]) if rs
                                  else np.zeros((0, 0)))


def label_of(class_id: int, labels: Optional[Sequence[str]]) -> Optional[str]:
    """The label of an answer: ``"unknown"`` for ``UNKNOWN``, the class label, or None without labels."""
    if class_id == UNKNOWN:
        return UNKNOWN_LABEL
    return labels[class_id] if labels and 0 <= class_id < len(labels) else None


@dataclass
class CascadeCounters:
    """Running counters since the cascade was built (or ``reset``)."""

    inputs: int = 0
    exits: List[int] = field(default_factory=list)  # answers kept from each stage
    calls: List[int] = field(default_factory=list)  # inputs each stage ran on
    stage_seconds: List[float] = field(default_factory=list)
    unknown: int = 0  # answers that were unknown (no class)
    remote_inputs: int = 0  # inputs that reached a remote stage (sent to its server, or answered here without that)
    remote_failures: int = 0  # of those, answered by the last local stage instead (reasons in remote_reasons)
    remote_reasons: Dict[str, int] = field(default_factory=dict)
    #: of remote_inputs, those sent to the server in a request (answered or not); the others were answered here
    #: without a request: the circuit breaker was open (circuit_open), or their deadline passed while queued
    remote_sent: int = 0

    def remote_failed(self, n: int, reason: str, sent: bool = True) -> None:
        self.remote_failures += n
        self.remote_reasons[reason] = self.remote_reasons.get(reason, 0) + n
        self.remote_sent += n if sent else 0

    @property
    def escalation_rate(self) -> Optional[float]:
        """Share of inputs that went past the first stage."""
        if not self.inputs or len(self.calls) < 2:
            return None
        return self.calls[1] / self.inputs

    def to_json(self) -> dict:
        return {"inputs": self.inputs, "exits": list(self.exits), "calls": list(self.calls),
                "stage_seconds": [round(s, 6) for s in self.stage_seconds], "escalation_rate": self.escalation_rate,
                "unknown": self.unknown, "remote_inputs": self.remote_inputs, "remote_failures": self.remote_failures,
                "remote_reasons": dict(self.remote_reasons), "remote_sent": self.remote_sent}


@dataclass
class _Step:
    """One stage as the run loops call it, rebuilt whenever the configuration changes."""

    stage: Stage
    run: Callable[[Dict[str, np.ndarray], Optional[list]], Dict[str, np.ndarray]]
    input_name: str
    names: List[str]
    head: bool  # the model's own head computes probs and confidence
    threshold: float
    next_input: Optional[str]  # the next stage's input: None for the image, else an output of this stage
    call: Optional[BoundCall] = None  # the batch-1 call with bound buffers, made at the first batch-1 input
    remote: bool = False  # served by a remote backend: a failure falls back on the answer held so far
    escalate: float = float("inf")  # lower edge of the stage's OOD doubt band (inf: none)


class Cascade:
    """Ordered stages and a combine rule; optionally preprocessing, labels and a memo cache.

    ``run_batch``/``run`` take model-ready arrays and validate them once at entry (names, shape, dtype,
    finite values); ``classify``/``classify_batch`` take raw uint8 images, which the preprocessing checks
    while it turns them into model inputs, and feed those to the stages without a second check. A stage runs
    through its runner's bound batch-1 call (:meth:`Runner.bind`) for one input and :meth:`Runner.run_trusted`
    for batches, timed once per call (``stage_seconds``, ``energy_hook``).
    """

    #: ``"staged"``: one runtime call per stage; :class:`edgeconf.fused.FusedCascade` says ``"fused"``.
    form = "staged"
    #: why ``load_bundle`` chose this form (empty for a cascade built by hand)
    form_reason = ""

    def __init__(self, stages: Sequence[Stage], combine: str = "last", labels: Optional[Sequence[str]] = None,
                 preprocessing: Optional["Preprocessing"] = None, memo: Optional["MemoCache"] = None,
                 name: str = "cascade") -> None:
        if not stages:
            raise ConfigError("a cascade needs at least one stage")
        check_combine(combine)
        if stages[0].input != IMAGE:
            raise ConfigError("the first stage must take the image as input, not %r" % stages[0].input)
        for k, (prev, st) in enumerate(zip(stages, stages[1:])):
            if st.input != IMAGE and st.input not in {o.name for o in prev.runner.outputs}:
                raise ConfigError("stage %d (%s) takes input %r, which stage %d (%s) does not output (its outputs: %s); "
                                  "a stage takes %r or an output of the stage before it (stages[%d].input in a bundle's "
                                  "edgeconf.json)" % (k + 2, st.name, st.input, k + 1, prev.name,
                                                      ", ".join(o.name for o in prev.runner.outputs), IMAGE, k + 1))
        for st in stages:
            if len(st.runner.inputs) != 1:
                raise ConfigError("stage %s: a cascade stage needs a model with exactly one input, this one has %d"
                                  % (st.name, len(st.runner.inputs)))
        self._epoch = -1
        self.stages = list(stages)
        self.combine = combine
        self.labels = list(labels) if labels else None
        self.preprocessing = preprocessing
        self.memo = memo
        self.name = name
        self.classes = _check_class_counts(self.stages, self.labels)
        if preprocessing is not None:
            for st in self.stages:
                if st.input == IMAGE:
                    _check_input_shape(st, preprocessing)
        self.energy_hook: Optional[Callable[[int, float, float], None]] = None
        self.counters = CascadeCounters()
        self.reset_counters()
        self._steps: List[_Step] = []
        self._calls: Dict[Tuple[int, int, Tuple[str, ...]], BoundCall] = {}  # (stage, runner id, outputs) -> call
        self._fingerprint = ""
        self._checked: List[bool] = []
        self._pre_fits = False
        self._writer: Optional[Callable[[np.ndarray], None]] = None  # preprocesses into stage 1's bound input
        self._warned_broken: set = set()  # stages whose non-finite outputs were reported (once each)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "combine":  # checked when set, so a bad rule never reaches a run
            check_combine(value)
        object.__setattr__(self, name, value)
        if name in ("stages", "combine", "preprocessing"):
            _bump()

    # -- configuration -------------------------------------------------------------------------
    def reset_counters(self) -> None:
        n = len(self.stages)
        self.counters = CascadeCounters(0, [0] * n, [0] * n, [0.0] * n)

    def stage_index(self, stage: Any) -> int:
        """The index of ``stage``: its position counted from 0 (``retune --stage`` counts from 1), or its name;
        a one-line :class:`ConfigError` naming the valid stages otherwise."""
        n = len(self.stages)
        if isinstance(stage, str):
            for k, st in enumerate(self.stages):
                if st.name == stage:
                    return k
        elif isinstance(stage, numbers.Integral) and not isinstance(stage, bool) and 0 <= stage < n:
            return int(stage)
        raise ConfigError("no stage %r in this cascade: give a stage's index, counted from 0 here (0..%d; `edgeconf "
                          "retune --stage` counts from 1), or its name (%s)"
                          % (stage, n - 1, ", ".join(st.name for st in self.stages)))

    def set_threshold(self, stage: Any, threshold: float) -> None:
        """Change one stage's exit threshold at run time (the memo fingerprint follows).

        ``stage``: the stage's index, counted from 0 (``edgeconf retune --stage`` counts from 1), or its name.
        ``threshold``: a number in [0, 1]."""
        st = self.stages[self.stage_index(stage)]
        st.threshold = check_threshold(threshold, "stage %s" % st.name)

    def set_ood_threshold(self, stage: Any, threshold: Optional[float], escalate: Any = "keep") -> None:
        """Change (or, with None, switch off) one stage's OOD threshold at run time (the memo fingerprint follows).

        ``stage``: the stage's index, counted from 0 (``edgeconf retune --stage`` counts from 1), or its name.
        ``threshold``: a number (inf or None: never unknown). ``escalate``: the doubt band's lower edge, a number
        no higher than the threshold (None: no band); by default (``"keep"``) the stage's band is kept (its edge
        lowered to the new threshold when that is below it)."""
        st = self.stages[self.stage_index(stage)]
        if st.ood is None:
            raise ConfigError("stage %s has no OOD rule; add one with `edgeconf ood`" % st.name)
        if threshold is not None and (not _is_number(threshold) or threshold != threshold):
            raise ConfigError("stage %s: the OOD threshold must be a number (None or inf: never unknown), got %r"
                              % (st.name, threshold))
        keep = isinstance(escalate, str) and escalate == "keep"
        if not keep and escalate is not None and (not _is_number(escalate) or escalate != escalate):
            raise ConfigError("stage %s: escalate must be a number no higher than the OOD threshold, None (no doubt "
                              "band) or 'keep' (the stage's band), got %r" % (st.name, escalate))
        value = float("inf") if threshold is None else float(threshold)
        band = escalate
        if keep:
            band = None if st.ood.escalate is None else min(st.ood.escalate, value)
        rule = OodRule(value, st.ood.score, st.ood.output, None if band is None else float(band))
        rule.validate(st.name)
        st.ood = rule

    @property
    def thresholds(self) -> List[float]:
        return [s.threshold for s in self.stages]

    def fingerprint(self) -> str:
        """Hash of everything that decides an answer: models, scores, thresholds, temperatures, rule.

        Recomputed only after a stage or the cascade changed (see ``_EPOCH``); the memo asks on every input.
        """
        if self._epoch != _EPOCH[0]:
            self._refresh()
        return self._fingerprint

    @property
    def remote_stages(self) -> Tuple[int, ...]:
        """Indices of the stages served remotely (e.g. by a Triton server): their time is a wait on the server and the
        network, not this machine's compute."""
        return tuple(k for k, st in enumerate(self.stages) if getattr(st.runner, "remote", False))

    def _refresh(self) -> None:
        """Rebuild the call plan, the fingerprint and the preprocessing check after a configuration change."""
        steps = []
        for k, st in enumerate(self.stages):
            nxt = self.stages[k + 1] if k + 1 < len(self.stages) else None
            forward = nxt.input if nxt is not None and nxt.input != IMAGE else None
            names = st.needed_outputs(forward)
            remote = bool(getattr(st.runner, "remote", False))
            call = None if remote else self._calls.get((k, id(st.runner), tuple(names)))
            band = st.ood.escalate if st.ood is not None and st.ood.escalate is not None else float("inf")
            steps.append(_Step(st, st.runner.run_trusted, st.runner.inputs[0].name, names, st.graph_head_active(),
                               float(st.threshold), forward, call, remote, float(band)))
        if len(self.counters.calls) != len(steps):
            self.reset_counters()
        self._steps = steps
        self._checked = [False] * len(steps)
        self._fingerprint = self._compute_fingerprint()
        self._pre_fits = self._preprocessing_fits()
        self._writer = self._make_writer(steps[0].call)
        self._epoch = _EPOCH[0]

    def _make_writer(self, call: Optional[BoundCall]) -> Optional[Callable[[np.ndarray], None]]:
        if call is None or not self._pre_fits or self.preprocessing is None:
            return None
        return self.preprocessing.writer(call.input)

    def _preprocessing_fits(self) -> bool:
        """True when every array the preprocessing makes fits the first model (so it needs no check per call)."""
        pre = self.preprocessing
        if pre is None:
            return False
        try:
            validate_input(self.stages[0].runner.inputs[0], np.zeros((1,) + tuple(pre.input_shape), pre.dtype))
        except InputValidationError:
            return False  # checked on every call instead, so the error names the offending input
        return True

    def _compute_fingerprint(self) -> str:
        desc = {
            "combine": self.combine,
            "stages": [{"model": s.model_sha256 or id(s.runner), "score": s.score, "threshold": float(s.threshold),
                        "temperature": float(s.temperature), "input": s.input, "logits": s.logits,
                        "ood": None if s.ood is None else [s.ood.score, s.ood.output, float(s.ood.threshold)]
                        + ([float(s.ood.escalate)] if s.ood.escalate is not None else [])}
                       for s in self.stages],
            "preprocessing": self.preprocessing.to_json() if self.preprocessing else None,
        }
        return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:32]

    # -- running -------------------------------------------------------------------------------
    def _validate(self, x: np.ndarray) -> None:
        """User arrays are checked once, against the first stage; later stages get trusted arrays."""
        if not isinstance(x, np.ndarray) or x.ndim < 1:
            raise InputValidationError("the cascade needs a numpy array, got %s" % type(x).__name__)
        validate_input(self.stages[0].runner.inputs[0], x)

    def _check_output(self, k: int, out: Dict[str, np.ndarray], names: List[str], n: int) -> None:
        """A stage's first output must be (batch, classes): checked on its first call after each change."""
        value = out.get(names[0])
        if value is None or value.ndim != 2 or value.shape[0] != n or (self.classes and value.shape[1] != self.classes):
            raise InputValidationError("stage %s output %r has shape %s; expected (%d, %s)" % (
                self.stages[k].name, names[0], getattr(value, "shape", None), n, self.classes or "classes"))
        if n == 1:
            self._checked[k] = True

    def _broken(self, stages: np.ndarray) -> None:
        """Warn once per stage that its outputs were not finite for some inputs (answered unknown)."""
        counts = np.bincount(stages, minlength=len(self.stages))
        for k in np.flatnonzero(counts):
            if k not in self._warned_broken:
                self._warned_broken.add(int(k))
                log.warning("stage %d (%s) produced non-finite outputs for %d input%s, answered unknown; the model "
                            "is broken for these inputs (overflow in fp16/INT8?)", k + 1, self.stages[k].name,
                            counts[k], "" if counts[k] == 1 else "s")

    def run_batch(self, x: np.ndarray) -> BatchResult:
        """Run model-ready inputs ``(N, …)``; only not-yet-confident inputs reach later stages.

        A non-finite (NaN) confidence is unsure: the input goes on to the next stage. Where no stage is left, an
        answer whose confidence is not finite is ``unknown`` (class ``UNKNOWN``, confidence NaN, null in JSON)
        rather than a class read off broken outputs, and the stage is named once in a warning; ``run`` and the
        batch-1 path do the same."""
        self._validate(x)
        return self._run_batch(x)

    def _run_batch(self, x: np.ndarray) -> BatchResult:
        if self._epoch != _EPOCH[0]:
            self._refresh()
        n = x.shape[0]
        n_stages = len(self._steps)
        if n == 0:
            empty = np.zeros(0, dtype=np.int64)
            return BatchResult(empty, np.zeros(0), empty, empty, np.zeros((0, 0)), [], [], [])
        class_ids = np.zeros(n, dtype=np.int64)
        conf = np.zeros(n, dtype=np.float64)
        stage_of = np.zeros(n, dtype=np.int64)
        stages_run = np.zeros(n, dtype=np.int64)
        unknown = np.zeros(n, dtype=bool)
        ood = np.full(n, np.nan)
        probs: Optional[np.ndarray] = None
        seconds: List[float] = []
        counts: List[int] = []
        spans: List[Tuple[float, float]] = []
        active = np.arange(n)
        feed = x
        hook = self.energy_hook
        clock = time.perf_counter
        failed: Dict[int, str] = {}
        mean = self.combine == "mean"
        summed: Optional[np.ndarray] = None  # mean: running sum of the probabilities of the active inputs
        for k, step in enumerate(self._steps):
            if step.remote:
                self.counters.remote_inputs += int(active.size)
            t0 = clock()
            try:
                out = step.run({step.input_name: feed}, step.names)
            except RemoteStageError as exc:  # keep the answers held so far (the last local stage's)
                if k == 0 or not step.remote:
                    raise
                t1 = clock()
                seconds.append(t1 - t0)
                counts.append(int(active.size))
                spans.append((t0, t1))
                failed = {int(i): exc.reason for i in active}
                self.counters.remote_failed(len(failed), exc.reason, exc.sent)
                break
            t1 = clock()
            if step.remote:
                self.counters.remote_sent += int(active.size)
            if hook is not None:
                hook(k, t0, t1)
            self._check_output(k, out, step.names, int(active.size))
            seconds.append(t1 - t0)
            counts.append(int(active.size))
            spans.append((t0, t1))
            with np.errstate(invalid="ignore"):  # a broken (inf/NaN) output is handled below, not warned of
                p, c = (out[PROBS], out[CONFIDENCE]) if step.head else step.stage.answer(out)
                if mean:
                    p, c, summed = _mean_answer(step.stage.score, k, p, c, summed)
            o, unk = step.stage.unknown(out)
            if probs is None:  # stage 1 answers every input: whole-array writes, no index
                probs = p.astype(np.float64)
                conf[:] = c
                class_ids[:] = p.argmax(axis=1)
                stages_run[:] = 1
            else:
                stages_run[active] = k + 1
                if self.combine != "best":
                    idx, pk, ck = active, p, c
                else:  # best: keep the answer with the higher score (an unknown verdict always stands; any
                    held = conf[active]  # answer replaces one whose confidence is NaN)
                    take = (c > held) | np.isnan(held) if unk is None else (c > held) | np.isnan(held) | unk
                    idx, pk, ck = active[take], p[take], c[take]
                probs[idx] = pk
                conf[idx] = ck
                class_ids[idx] = pk.argmax(axis=1)
                stage_of[idx] = k
            if unk is not None:  # unknown inputs are always among those whose answer is kept
                ood[active] = o
                unknown[active[unk]] = True
                class_ids[active[unk]] = UNKNOWN
            if k + 1 == n_stages:
                break
            unsure = ~(c >= step.threshold)  # NaN-safe: a NaN confidence is unsure and goes on
            if unk is not None:
                doubt = step.stage.doubt(o, unk)
                if doubt is not None:
                    unsure |= doubt  # in the doubt band: this stage may not answer, the next one judges it
                unsure &= ~unk  # an unknown input leaves here: no later stage spends energy on it
            active = active[unsure]
            if active.size == 0:
                break
            if summed is not None:
                summed = summed[unsure]
            feed = x[active] if step.next_input is None else out[step.next_input][unsure]
        broken = ~np.isfinite(conf)
        if broken.any():  # no answer from a broken output: unknown, never a class (see _broken)
            unknown |= broken
            class_ids[broken] = UNKNOWN
            self._broken(stage_of[broken])
        c = self.counters
        c.inputs += n
        exits = np.bincount(stage_of, minlength=n_stages)
        for k in range(n_stages):
            c.exits[k] += int(exits[k])
        for k, cnt in enumerate(counts):
            c.calls[k] += cnt
            c.stage_seconds[k] += seconds[k]
        c.unknown += int(unknown.sum())
        return BatchResult(class_ids, conf, stage_of, stages_run, probs if probs is not None else np.zeros((n, 0)),
                           seconds, counts, spans, failed, unknown, ood)

    def run(self, x: np.ndarray) -> CascadeResult:
        """Run one model-ready input (no batch axis). A lean path of ``run_batch`` for batch 1."""
        if not isinstance(x, np.ndarray):
            raise InputValidationError("the cascade needs a numpy array, got %s" % type(x).__name__)
        x = x[None]
        self._validate(x)
        return self._run_one(x)

    def _bind(self, k: int, step: _Step, x: np.ndarray) -> BoundCall:
        call = step.stage.runner.bind(x.shape, x.dtype, step.names)
        self._calls[(k, id(step.stage.runner), tuple(step.names))] = call
        step.call = call
        if k == 0:
            self._writer = self._make_writer(call)
        return call

    def _run_one(self, x: np.ndarray) -> CascadeResult:
        """One trusted input with a batch axis of 1: each stage once, while the last one was unsure.

        Each stage runs through its bound call (IO binding on ONNX Runtime): the input is copied into the
        call's buffer unless it is already there (``classify`` preprocesses straight into it), and only the
        kept probabilities are copied out of the output buffers.
        """
        if self._epoch != _EPOCH[0]:
            self._refresh()
        feed = x
        best_p: Optional[np.ndarray] = None
        best_c, best_k = 0.0, 0
        last_ood: Optional[float] = None
        unknown = False
        seconds: List[float] = []
        waited = 0.0  # a failed remote stage's wait
        hook = self.energy_hook
        clock = time.perf_counter
        checked = self._checked
        steps = self._steps
        last = len(steps) - 1
        best = self.combine == "best"
        mean = self.combine == "mean"
        summed: Optional[np.ndarray] = None
        failure: Optional[str] = None
        for k, step in enumerate(steps):
            call = step.call
            if step.remote:
                self.counters.remote_inputs += 1
            elif call is None:
                call = self._bind(k, step, feed)
            if call is not None and feed is not call.input:
                if feed.shape == call.input.shape and feed.dtype == call.input.dtype:
                    np.copyto(call.input, feed)
                else:  # another input shape than the one bound: the plain call
                    call = None
            t0 = clock()
            try:
                out = call.run() if call is not None else step.run({step.input_name: feed}, step.names)
            except RemoteStageError as exc:  # keep the answer held so far (the last local stage's)
                if k == 0 or not step.remote:
                    raise
                failure = exc.reason
                self.counters.remote_failed(1, failure, exc.sent)
                self.counters.calls[k] += 1
                waited = clock() - t0
                self.counters.stage_seconds[k] += waited
                break
            t1 = clock()
            if step.remote:
                self.counters.remote_sent += 1
            if hook is not None:
                hook(k, t0, t1)
            seconds.append(t1 - t0)
            if not checked[k]:
                self._check_output(k, out, step.names, 1)
            if step.head:
                p, c = out[PROBS][0], float(out[CONFIDENCE][0])
            else:
                pb, cs = step.stage.answer(out)
                p, c = pb[0], float(cs[0])
            if mean:
                pm, cm, summed = _mean_answer(step.stage.score, k, p[None], None, summed)
                p, c = pm[0], float(cm[0])
            o, unk = step.stage.unknown(out)
            unknown = bool(unk[0]) if unk is not None else False
            if o is not None:
                last_ood = float(o[0])
            if best_p is None or not best or c > best_c or unknown or best_c != best_c:  # NaN held: replaced
                best_p, best_c, best_k = p, c, k
            if k == last or unknown:
                break
            if c >= step.threshold and not (o is not None and o[0] > step.escalate):  # not in the doubt band
                break
            if step.next_input is not None:
                feed = out[step.next_input]
        if best_c - best_c != 0.0 and not unknown:  # NaN or ±inf: a broken output, answered unknown
            unknown = True
            self._broken(np.array([best_k]))
        counters = self.counters
        counters.inputs += 1
        counters.exits[best_k] += 1
        calls, secs = counters.calls, counters.stage_seconds
        for k, sec in enumerate(seconds):
            calls[k] += 1
            secs[k] += sec
        cid = UNKNOWN if unknown else int(best_p.argmax())  # type: ignore[union-attr]
        counters.unknown += int(unknown)
        # a copy: the row may live in a bound output buffer that the next input overwrites
        # a remote stage that failed was invoked too: its wait is listed after the stages that answered
        timed = tuple(seconds) + ((waited,) if failure is not None else ())
        return CascadeResult(cid, best_c, best_k, best_p.copy(), timed, len(seconds),  # type: ignore[union-attr]
                             label_of(cid, self.labels), remote_failure=failure, unknown=unknown, ood_score=last_ood)

    def _classify_one(self, image: np.ndarray) -> CascadeResult:
        """One raw image, preprocessed straight into the first stage's bound input when it fits."""
        if self._epoch != _EPOCH[0]:
            self._refresh()
        write = self._writer
        if write is not None:
            write(image)
            return self._run_one(self._steps[0].call.input)  # type: ignore[union-attr]
        return self._run_one(self._model_input(image))

    def _model_input(self, image: np.ndarray) -> np.ndarray:
        """One raw image → a trusted batch-1 model input (the preprocessing validates the image itself)."""
        x = self.preprocessing(image)[None]  # type: ignore[misc]
        if self._epoch != _EPOCH[0]:
            self._refresh()
        if not self._pre_fits:
            self._validate(x)
        return x

    def _model_batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        x = self.preprocessing.batch(images)  # type: ignore[union-attr]
        if self._epoch != _EPOCH[0]:
            self._refresh()
        if not self._pre_fits:
            self._validate(x)
        return x

    def classify_batch(self, images: Sequence[np.ndarray]) -> Answers:
        """Raw images → answers (arrays, and one :class:`CascadeResult` per input when read), through
        preprocessing and the memo cache (when set).

        ``images``: a list or tuple of images, an ``(N, H, W[, C])`` uint8 array, or any other iterable of images
        (a generator: read into a list first)."""
        if self.preprocessing is None:
            raise ConfigError("this cascade has no preprocessing; use run_batch with model-ready arrays")
        if not isinstance(images, (list, tuple, np.ndarray)):
            images = _image_list(images)
        if not len(images):
            return Answers.of_results([])
        if len(images) == 1:
            return Answers.of_results([self.classify(images[0])])
        memo = self.memo
        if memo is None:
            return self._classify_misses(images)
        fp = self.fingerprint()
        if not all(_raw_image_ok(img) for img in images):  # before the memo, as in classify
            images = [img if _raw_image_ok(img) else _raw_image(img, i) for i, img in enumerate(images)]
        clock = memo.clock
        t0 = clock()
        try:
            found = memo.lookup_batch(images, fp)
        except Exception:
            _check_images(images)  # a bad image gets a one-line InputValidationError, not the hash's error
            raise
        t1 = clock()
        results: List[Optional[CascadeResult]] = [None] * len(images)
        for i, hit in found.hits.items():
            results[i] = self._memo_result(hit)
        t2 = t3 = t1
        if found.misses:
            answers = self._classify_misses([images[i] for i in found.misses])
            t2 = clock()
            for i, res in zip(found.misses, answers):
                results[i] = res
                if res.remote_failure is None:  # a fallback answer is never remembered
                    memo.put(found.keys[i], fp, res, found.prekeys[i], found.check(i))
            t3 = clock()
        for i, first in found.repeats.items():
            results[i] = _as_memo_hit(results[first])  # type: ignore[arg-type]
        memo.observe_batch(found.looked_up, found.looked_up_hits, t1 - t0, len(found.misses), t2 - t1, t3 - t2)
        return Answers.of_results([r for r in results if r is not None])

    def _classify_misses(self, images: Sequence[np.ndarray]) -> Answers:
        """Raw images the memo did not answer (or all, without a memo) → answers, in one batch run."""
        return Answers.of_batch(self._run_batch(self._model_batch(images)), self.labels)

    def classify(self, image: np.ndarray) -> CascadeResult:
        """One raw image → its answer (the batch-1 path: memo lookup, then the lean run)."""
        if self.preprocessing is None:
            raise ConfigError("this cascade has no preprocessing; use run with model-ready arrays")
        memo = self.memo
        if memo is None:
            return self._classify_one(image)
        try:
            if memo.skip(image):  # its sampling skips this input (the cascade's own run validates it)
                return self._classify_one(image)
            if not _raw_image_ok(image):  # before a lookup: a near-duplicate key must never answer a bad image
                image = _raw_image(image)
            hit, res = memo.lookup_answer(image, self.fingerprint(), self._classify_one)
        except InputValidationError:
            raise
        except Exception:
            _check_images([image], single=True)  # a bad image gets a one-line error, not the hash's
            raise
        return res if hit is None else self._memo_result(hit)

    def _memo_result(self, hit: "Answer") -> CascadeResult:
        """A stored answer served again; an unknown one (class ``UNKNOWN``) stays unknown, never a class."""
        cid = hit.class_id
        return CascadeResult(cid, hit.confidence, hit.stage, hit.probs, (), 0, label_of(cid, self.labels),
                             memo_hit=True, unknown=cid == UNKNOWN, ood_score=hit.ood_score)

    def close(self) -> None:
        """Free the models. Every later call (``classify``, ``classify_batch``, ``run``, ``run_batch``) raises a
        :class:`ConfigError`: load the bundle again. Safe to call twice."""
        for st in self.stages:
            if not isinstance(st.runner, _ClosedRunner):
                st.runner.close()
                st.runner = _ClosedRunner(st.runner)  # (a stage change: the next call rebuilds its plan from it)
        fused = getattr(self, "fused_runner", None)  # a FusedCascade's graph (its own close closes it)
        if fused is not None and not isinstance(fused, _ClosedRunner):
            fused.close()
            self.fused_runner = _ClosedRunner(fused)
            self._bound = None
        self._calls.clear()  # bound calls hold the closed sessions' buffers
        self._writer = None
        if self.memo is not None:
            self.memo.clear()  # no stored answer either (its counters stay readable)

    def __enter__(self) -> "Cascade":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ClosedRunner:
    """What a closed cascade's stages hold instead of their runner: its description (inputs, outputs, metadata…)
    stays readable, and every call raises the one error that says what to do."""

    def __init__(self, runner: Any) -> None:
        self._closed = runner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_closed"], name)

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise ConfigError("this cascade was closed (close(), or the end of its `with` block); load the bundle again "
                          "to classify")

    run = run_trusted = bind = _refuse

    def close(self) -> None:
        pass


def _static_classes(stage: Stage) -> Optional[int]:
    """The class count a stage's logits output declares, or None when that axis is dynamic."""
    shape = stage.runner.output(stage.logits).shape
    n = shape[-1] if shape else None
    return n if isinstance(n, int) and n > 0 else None


def _check_class_counts(stages: Sequence[Stage], labels: Optional[Sequence[str]]) -> int:
    """Every stage must answer over the same classes, as many as there are labels; returns that count (0: unknown)."""
    counts = [(st.name, _static_classes(st)) for st in stages]
    known = [(name, n) for name, n in counts if n is not None]
    if labels:
        for name, n in known:
            if n != len(labels):
                raise ConfigError("stage %s answers over %d classes but there are %d labels; give one label per class"
                                  % (name, n, len(labels)))
        return len(labels)
    if len({n for _, n in known}) > 1:
        raise ConfigError("the stages answer over different numbers of classes (%s); every stage must have the same "
                          "classes" % ", ".join("%s: %d" % (name, n) for name, n in known))
    return known[0][1] if known else 0


def _check_input_shape(stage: Stage, preprocessing: "Preprocessing") -> None:
    """The preprocessing must make what the first stage takes (where the model fixes the size)."""
    spec = stage.runner.inputs[0]
    want = tuple(spec.shape[1:])
    made = preprocessing.input_shape
    if len(want) != len(made) or any(isinstance(w, int) and w > 0 and w != m for w, m in zip(want, made)):
        shown = "x".join(str(w) if isinstance(w, int) else "?" for w in want)
        problem = preprocessing.model_input_problem(want) or ""
        hint = problem[problem.index("; set"):] if "; set" in problem else \
            "; fix the bundle's preprocessing (size, channels, layout)"
        raise ConfigError("preprocessing makes inputs of shape %s (%s) but stage %s takes %s%s"
                          % ("x".join(map(str, made)), preprocessing.layout, stage.name, shown, hint))
    if spec.dtype != preprocessing.dtype:
        raise ConfigError("preprocessing makes %s inputs but stage %s takes %s; set preprocessing.dtype to %r"
                          % (preprocessing.dtype, stage.name, spec.dtype, spec.dtype))


def _mean_answer(score_name: str, k: int, p: np.ndarray, c: Optional[np.ndarray], summed: Optional[np.ndarray]
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``mean`` rule after stage ``k``: (mean probabilities, their confidence, the new running sum).

    Sums in the probabilities' own dtype, in stage order, then divides by the stage count: the fused graph
    does the same float32 operations, so both forms give the same answers. The sum is a fresh array (the
    probabilities may live in a bound output buffer that the next call overwrites).
    """
    if summed is None:
        summed = np.array(p)
        return summed, (c if c is not None else score(score_name, summed)), summed
    summed = summed + p
    m = summed / summed.dtype.type(k + 1)
    return m, score(score_name, m), summed


def _as_memo_hit(res: CascadeResult) -> CascadeResult:
    """A stored answer served again: an unknown one stays unknown (the memo never turns it into a class)."""
    return CascadeResult(res.class_id, res.confidence, res.stage, res.probs, (), 0, res.label, memo_hit=True,
                         unknown=res.unknown, ood_score=res.ood_score)


_UINT8 = np.dtype(np.uint8)


def _raw_image_ok(image: Any) -> bool:
    """A cheap test of the raw-image contract (uint8 H×W or H×W×{1,3,4}, at least one pixel), made before a memo
    lookup: the memo's near-duplicate keys would otherwise answer an image the cascade refuses (a float32 or
    channels-first copy of a stored one). False sends the image to :func:`_raw_image`, which says what is wrong."""
    return (type(image) is np.ndarray and image.dtype is _UINT8 and image.size > 0
            and (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))))


def _raw_image(image: Any, index: Optional[int] = None) -> np.ndarray:
    """The image as a raw-image array, or the one-line :class:`InputValidationError` saying what is wrong."""
    from edgeconf.preprocess import check_image

    return check_image(image, index)


def _image_list(images: Any) -> List[Any]:
    """Any iterable of images as a list; anything else (None, a string, a mapping) a one-line error."""
    if images is None or isinstance(images, (str, bytes, dict)) or not hasattr(images, "__iter__"):
        raise InputValidationError("classify_batch needs a sequence of raw images (a list, or a uint8 array of shape "
                                   "(N, H, W[, C])), got %s; for one image use classify" % type(images).__name__)
    return list(images)


def _check_images(images: Sequence[Any], single: bool = False) -> None:
    """Raise the one-line :class:`InputValidationError` for the first bad raw image (called only on failure)."""
    from edgeconf.preprocess import check_image

    for i, img in enumerate(images):
        check_image(img, None if single else i)
