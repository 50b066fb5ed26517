"""Cascades: ordered stages where a later stage runs only on the inputs an earlier one is unsure of."""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgeconf.backends.base import Runner, validate_input
from edgeconf.confidence import OOD_SCORES, SCORES, energy, score, softmax
from edgeconf.errors import ConfigError, InputValidationError, RemoteStageError

if TYPE_CHECKING:
    from edgeconf.memo import MemoCache
    from edgeconf.preprocess import Preprocessing

COMBINE_RULES = ("last", "best")
IMAGE = "image"
PROBS = "probs"  # outputs of the confidence head that edgeconf.export appends
CONFIDENCE = "confidence"
#: class id and label of an answer whose input is no class the model knows (its OOD score is past the threshold)
UNKNOWN = -1
UNKNOWN_LABEL = "unknown"


@dataclass(frozen=True)
class OodRule:
    """When a stage calls its input ``unknown``: its out-of-distribution score is above ``threshold``.

    ``output`` names the model output that holds the score (the OOD head ``edgeconf.export.ood`` appends);
    without one, ``score`` must be a score the runtime computes from the logits (``energy``).
    """

    threshold: float
    score: str = "graph"
    output: Optional[str] = "ood"

    def validate(self, stage: str) -> None:
        if np.isnan(float(self.threshold)):
            raise ConfigError("stage %s: the OOD threshold must be a number (inf: never unknown), got %r"
                              % (stage, self.threshold))
        if self.output is None and self.score not in OOD_SCORES:
            raise ConfigError("stage %s: OOD score %r is not computed by the runtime (%s); name the model output "
                              "that holds it" % (stage, self.score, ", ".join(OOD_SCORES)))


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

    def graph_head_active(self) -> bool:
        return self.head is not None and self.head[0] == self.score and self.head[1] == float(self.temperature)

    def validate(self) -> None:
        if self.score not in SCORES:
            raise ConfigError("stage %s: unknown score %r; choose one of %s" % (self.name, self.score, ", ".join(SCORES)))
        if not (0.0 <= float(self.threshold) <= 1.0):
            raise ConfigError("stage %s: threshold must be in [0, 1], got %r" % (self.name, self.threshold))
        if not float(self.temperature) > 0:
            raise ConfigError("stage %s: temperature must be > 0, got %r" % (self.name, self.temperature))
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
        head = (json.loads(meta["edgeconf.score"]), float(json.loads(meta["edgeconf.temperature"])))
    except (KeyError, ValueError, TypeError):
        return None
    return head if head[0] in SCORES else None


@dataclass
class CascadeResult:
    """The answer for one input."""

    class_id: int
    confidence: float
    stage: int  # index of the stage whose answer was kept
    probs: np.ndarray
    stage_seconds: Tuple[float, ...]  # own model time of each invoked stage (batch share for batches)
    stages_run: int
    label: Optional[str] = None
    memo_hit: bool = False
    #: why a remote stage gave no answer (``timeout``, ``unavailable``, ``error``, ``circuit_open``): the answer
    #: is then the last local stage's; None when no remote stage failed
    remote_failure: Optional[str] = None
    #: the input is no class the model knows: ``class_id`` is ``UNKNOWN`` and ``label`` is ``"unknown"``
    unknown: bool = False
    ood_score: Optional[float] = None  # OOD score of the last stage with an OOD rule that ran on this input

    @property
    def seconds(self) -> float:
        return float(sum(self.stage_seconds))

    def to_json(self) -> dict:
        d = {"class": self.class_id, "label": self.label, "confidence": round(float(self.confidence), 6),
             "stage": self.stage, "stages_run": self.stages_run, "memo_hit": self.memo_hit,
             "unknown": self.unknown, "ood": None if self.ood_score is None else round(float(self.ood_score), 6),
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

    def item(self, i: int, labels: Optional[Sequence[str]] = None) -> CascadeResult:
        n = int(self.stages_run[i])
        secs = tuple(self.stage_seconds[k] / max(1, self.stage_counts[k]) for k in range(n))
        cid = int(self.class_ids[i])
        unknown = bool(self.unknown[i]) if self.unknown is not None else False
        ood = float(self.ood[i]) if self.ood is not None and np.isfinite(self.ood[i]) else None
        return CascadeResult(cid, float(self.confidence[i]), int(self.stage[i]), self.probs[i], secs, n,
                             label=label_of(cid, labels), unknown=unknown, ood_score=ood,
                             remote_failure=self.remote_failures.get(i))


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
    remote_inputs: int = 0  # inputs sent to remote stages
    remote_failures: int = 0  # of those, answered by the last local stage instead (reasons in remote_reasons)
    remote_reasons: Dict[str, int] = field(default_factory=dict)

    def remote_failed(self, n: int, reason: str) -> None:
        self.remote_failures += n
        self.remote_reasons[reason] = self.remote_reasons.get(reason, 0) + n

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
                "remote_reasons": dict(self.remote_reasons)}


class Cascade:
    """Ordered stages and a combine rule; optionally preprocessing, labels and a memo cache.

    ``run_batch`` takes model-ready arrays; ``classify`` takes raw images and goes through
    preprocessing and the memo cache.
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
        if combine not in COMBINE_RULES:
            raise ConfigError("unknown combine rule %r; choose one of %s" % (combine, ", ".join(COMBINE_RULES)))
        if stages[0].input != IMAGE:
            raise ConfigError("the first stage must take the image as input, not %r" % stages[0].input)
        for prev, st in zip(stages, stages[1:]):
            if st.input != IMAGE:
                prev.runner.output(st.input)  # raises if the previous stage lacks that output
        self.stages = list(stages)
        self.combine = combine
        self.labels = list(labels) if labels else None
        self.preprocessing = preprocessing
        self.memo = memo
        self.name = name
        self.energy_hook: Optional[Callable[[int, float, float], None]] = None
        self.counters = CascadeCounters()
        self.reset_counters()
        self._input_names = []
        for st in self.stages:
            if len(st.runner.inputs) != 1:
                raise ConfigError("stage %s: a cascade stage needs a model with exactly one input, this one has %d"
                                  % (st.name, len(st.runner.inputs)))
            self._input_names.append(st.runner.inputs[0].name)
        self.classes = _check_class_counts(self.stages, self.labels)
        if preprocessing is not None:
            for st in self.stages:
                if st.input == IMAGE:
                    _check_input_shape(st, preprocessing)
        self._fingerprint_key: Any = None
        self._fingerprint = ""

    # -- configuration -------------------------------------------------------------------------
    def reset_counters(self) -> None:
        n = len(self.stages)
        self.counters = CascadeCounters(0, [0] * n, [0] * n, [0.0] * n)

    def set_threshold(self, stage: int, threshold: float) -> None:
        """Change one stage's exit threshold at run time (the memo fingerprint follows)."""
        if not (0.0 <= float(threshold) <= 1.0):
            raise ConfigError("threshold must be in [0, 1], got %r" % (threshold,))
        self.stages[stage].threshold = float(threshold)

    def set_ood_threshold(self, stage: int, threshold: Optional[float]) -> None:
        """Change (or, with None, switch off) one stage's OOD threshold at run time (the memo fingerprint follows)."""
        st = self.stages[stage]
        if st.ood is None:
            raise ConfigError("stage %s has no OOD rule; add one with `edgeconf ood`" % st.name)
        rule = OodRule(float("inf") if threshold is None else float(threshold), st.ood.score, st.ood.output)
        rule.validate(st.name)
        st.ood = rule

    @property
    def thresholds(self) -> List[float]:
        return [s.threshold for s in self.stages]

    def fingerprint(self) -> str:
        """Hash of everything that decides an answer: models, scores, thresholds, temperatures, rule.

        Cached against a cheap tuple of the same values, since the memo asks for it on every input.
        """
        key = (self.combine, self.preprocessing, tuple(
            (s.model_sha256 or id(s.runner), s.score, s.threshold, s.temperature, s.input, s.logits, s.head, s.ood)
            for s in self.stages))
        if key != self._fingerprint_key:
            self._fingerprint_key = key
            self._fingerprint = self._compute_fingerprint()
        return self._fingerprint

    def _compute_fingerprint(self) -> str:
        desc = {
            "combine": self.combine,
            "stages": [{"model": s.model_sha256 or id(s.runner), "score": s.score, "threshold": float(s.threshold),
                        "temperature": float(s.temperature), "input": s.input, "logits": s.logits,
                        "ood": None if s.ood is None else [s.ood.score, s.ood.output, float(s.ood.threshold)]}
                       for s in self.stages],
            "preprocessing": self.preprocessing.to_json() if self.preprocessing else None,
        }
        return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:32]

    # -- running -------------------------------------------------------------------------------
    def _output_names(self, k: int) -> List[str]:
        nxt = self.stages[k + 1] if k + 1 < len(self.stages) else None
        forward = nxt.input if nxt is not None and nxt.input != IMAGE else None
        return self.stages[k].needed_outputs(forward)

    def _validate(self, x: np.ndarray) -> None:
        """Inputs are checked once, against the first stage; later stages get trusted arrays."""
        if not isinstance(x, np.ndarray) or x.ndim < 1:
            raise InputValidationError("the cascade needs a numpy array, got %s" % type(x).__name__)
        validate_input(self.stages[0].runner.inputs[0], x)

    def _invoke(self, k: int, feed: np.ndarray, names: List[str]) -> Tuple[Dict[str, np.ndarray], float, float]:
        st = self.stages[k]
        feeds = {self._input_names[k]: feed}
        t0 = time.perf_counter()
        out = st.runner.run_trusted(feeds, names)  # inputs were validated once, at the cascade's entry
        t1 = time.perf_counter()
        if self.energy_hook is not None:
            self.energy_hook(k, t0, t1)
        first = names[0]
        value = out.get(first)
        if value is None or value.ndim != 2 or value.shape[0] != feed.shape[0] \
                or (self.classes and value.shape[1] != self.classes):
            raise InputValidationError("stage %s output %r has shape %s; expected (%d, %s)" % (
                st.name, first, getattr(value, "shape", None), feed.shape[0], self.classes or "classes"))
        return out, t0, t1

    def run_batch(self, x: np.ndarray) -> BatchResult:
        """Run model-ready inputs ``(N, …)``; only not-yet-confident inputs reach later stages."""
        self._validate(x)
        n = x.shape[0]
        n_stages = len(self.stages)
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
        failed: Dict[int, str] = {}
        for k, st in enumerate(self.stages):
            if st.runner.remote:
                self.counters.remote_inputs += int(active.size)
            t_try = time.perf_counter()
            try:
                out, t0, t1 = self._invoke(k, feed, self._output_names(k))
            except RemoteStageError as exc:  # keep the answers held so far (the last local stage's)
                if k == 0:
                    raise
                t1 = time.perf_counter()
                seconds.append(t1 - t_try)
                counts.append(int(active.size))
                spans.append((t_try, t1))
                failed = {int(i): exc.reason for i in active}
                self.counters.remote_failed(len(failed), exc.reason)
                break
            seconds.append(t1 - t0)
            counts.append(int(active.size))
            spans.append((t0, t1))
            p, c = st.answer(out)
            o, unk = st.unknown(out)
            if probs is None:
                probs = np.zeros((n, p.shape[1]), dtype=np.float64)
            stages_run[active] = k + 1
            if k == 0 or self.combine == "last":
                take = None
                idx, pk, ck = active, p, c
            else:  # best: keep the answer with the higher score (an unknown verdict always stands)
                take = c > conf[active] if unk is None else (c > conf[active]) | unk
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
            unsure = c < st.threshold
            if unk is not None:
                unsure &= ~unk  # an unknown input leaves here: no later stage spends energy on it
            active = active[unsure]
            if active.size == 0:
                break
            nxt = self.stages[k + 1]
            feed = x[active] if nxt.input == IMAGE else out[nxt.input][unsure]
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
        x = np.asarray(x)[None]
        self._validate(x)
        feed = x
        best_p: Optional[np.ndarray] = None
        best_c, best_k = 0.0, 0
        last_ood: Optional[float] = None
        unknown = False
        seconds: List[float] = []
        last = len(self.stages) - 1
        failure: Optional[str] = None
        for k, st in enumerate(self.stages):
            if st.runner.remote:
                self.counters.remote_inputs += 1
            t_try = time.perf_counter()
            try:
                out, t0, t1 = self._invoke(k, feed, self._output_names(k))
            except RemoteStageError as exc:  # keep the answer held so far (the last local stage's)
                if k == 0:
                    raise
                failure = exc.reason
                self.counters.remote_failed(1, failure)
                waited = time.perf_counter() - t_try
                self.counters.calls[k] += 1
                self.counters.stage_seconds[k] += waited
                break
            seconds.append(t1 - t0)
            p, cs = st.answer(out)
            c = float(cs[0])
            o, unk = st.unknown(out)
            unknown = bool(unk[0]) if unk is not None else False
            if o is not None:
                last_ood = float(o[0])
            if best_p is None or self.combine == "last" or c > best_c or unknown:
                best_p, best_c, best_k = p[0], c, k
            if k == last or c >= st.threshold or unknown:
                break
            nxt = self.stages[k + 1]
            feed = x if nxt.input == IMAGE else out[nxt.input]
        counters = self.counters
        counters.inputs += 1
        counters.exits[best_k] += 1
        for k, sec in enumerate(seconds):
            counters.calls[k] += 1
            counters.stage_seconds[k] += sec
        assert best_p is not None
        cid = UNKNOWN if unknown else int(best_p.argmax())
        counters.unknown += int(unknown)
        return CascadeResult(cid, best_c, best_k, best_p, tuple(seconds), len(seconds), label_of(cid, self.labels),
                             unknown=unknown, ood_score=last_ood, remote_failure=failure)

    def classify_batch(self, images: Sequence[np.ndarray]) -> List[CascadeResult]:
        """Raw images → answers, through preprocessing and the memo cache (when set)."""
        if self.preprocessing is None:
            raise ConfigError("this cascade has no preprocessing; use run_batch with model-ready arrays")
        if not len(images):
            return []
        if len(images) == 1:
            return [self.classify(images[0])]
        if self.memo is None:
            batch = self.run_batch(self.preprocessing.batch(images))
            return [batch.item(j, self.labels) for j in range(len(images))]
        fp = self.fingerprint()
        try:
            found = self.memo.lookup_batch(images, fp)
        except Exception:
            _check_images(images)  # a bad image gets a one-line InputValidationError, not the hash's error
            raise
        results: List[Optional[CascadeResult]] = [None] * len(images)
        for i, hit in found.hits.items():
            results[i] = _as_memo_hit(hit)
        if found.misses:
            batch = self.run_batch(self.preprocessing.batch([images[i] for i in found.misses]))
            for j, i in enumerate(found.misses):
                res = batch.item(j, self.labels)
                results[i] = res
                if res.remote_failure is None:  # a fallback answer is never remembered
                    self.memo.put(found.keys[i], fp, res)
        for i, first in found.repeats.items():
            results[i] = _as_memo_hit(results[first])  # type: ignore[arg-type]
        return [r for r in results if r is not None]

    def classify(self, image: np.ndarray) -> CascadeResult:
        """One raw image → its answer (the batch-1 path: memo lookup, then the lean ``run``)."""
        if self.preprocessing is None:
            raise ConfigError("this cascade has no preprocessing; use run with model-ready arrays")
        if self.memo is None:
            return self.run(self.preprocessing(image))
        fp = self.fingerprint()
        try:
            key = self.memo.key(image)
        except Exception:
            _check_images([image], single=True)
            raise
        hit = self.memo.get(key, fp)
        if hit is not None:
            return _as_memo_hit(hit)
        res = self.run(self.preprocessing(image))
        if res.remote_failure is None:  # a fallback answer is never remembered
            self.memo.put(key, fp, res)
        return res

    def close(self) -> None:
        for st in self.stages:
            st.runner.close()

    def __enter__(self) -> "Cascade":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


def _as_memo_hit(res: CascadeResult) -> CascadeResult:
    """A stored answer served again: an unknown one stays unknown (the memo never turns it into a class)."""
    return CascadeResult(res.class_id, res.confidence, res.stage, res.probs, (), 0, res.label, memo_hit=True,
                         unknown=res.unknown, ood_score=res.ood_score)


def _check_images(images: Sequence[Any], single: bool = False) -> None:
    """Raise the one-line :class:`InputValidationError` for the first bad raw image (called only on failure)."""
    from edgeconf.preprocess import check_image

    for i, img in enumerate(images):
        check_image(img, None if single else i)
