"""The runner contract every backend implements: prepare once, run many times."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from edgeconf.errors import InputValidationError

Dim = Union[int, str, None]


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (None or a string for dynamic axes) and numpy dtype of one model input or output."""

    name: str
    shape: Tuple[Dim, ...]
    dtype: str

    def describe(self) -> str:
        dims = ",".join("?" if not isinstance(d, int) else str(d) for d in self.shape)
        return "%s[%s] %s" % (self.name, dims, self.dtype)

    def to_json(self) -> dict:
        return {"name": self.name, "shape": [d if isinstance(d, int) else None for d in self.shape], "dtype": self.dtype}


def _finite_fast(value: np.ndarray) -> bool:
    flat = value.reshape(-1)
    return math.isfinite(float(flat.dot(flat))) if value.dtype.itemsize >= 4 else bool(np.isfinite(value.sum()))


def validate_input(spec: TensorSpec, value: np.ndarray) -> np.ndarray:
    """Check ``value`` against ``spec``: rank, fixed dimensions, dtype and finite values."""
    if not isinstance(value, np.ndarray):
        raise InputValidationError("input %r must be a numpy array, got %s" % (spec.name, type(value).__name__))
    if value.ndim != len(spec.shape):
        raise InputValidationError(
            "input %r expects %d dimensions %s, got shape %s"
            % (spec.name, len(spec.shape), spec.describe(), tuple(value.shape))
        )
    for axis, (want, got) in enumerate(zip(spec.shape, value.shape)):
        if isinstance(want, int) and want > 0 and want != got:
            raise InputValidationError(
                "input %r dimension %d must be %d, got %d (expected %s, got shape %s)"
                % (spec.name, axis, want, got, spec.describe(), tuple(value.shape))
            )
    if value.dtype != np.dtype(spec.dtype):
        raise InputValidationError(
            "input %r must have dtype %s, got %s; convert it with .astype(np.%s)"
            % (spec.name, spec.dtype, value.dtype, spec.dtype)
        )
    # a finite sum of squares proves every value finite (one BLAS call); only a non-finite one (NaN, inf,
    # or an overflow of huge finite values) needs the full check
    if value.dtype.kind == "f" and not _finite_fast(value) and not np.isfinite(value).all():
        bad = int(value.size - np.isfinite(value).sum())
        raise InputValidationError("input %r contains %d NaN or infinite values" % (spec.name, bad))
    return value


class BoundCall:
    """A batch-1 call of one runner whose input and outputs live in arrays bound once.

    The caller writes the input into :attr:`input` (or copies it there) and calls :meth:`run`, which
    returns the requested outputs. The returned arrays may be the runner's own buffers, overwritten by
    the next :meth:`run`: copy what you keep. This default calls :meth:`Runner.run_trusted`; backends
    that can bind buffers (ONNX Runtime's IO binding) return a subclass that skips building feeds and
    outputs on every call. A bound call belongs to its caller: do not share one between threads.
    """

    def __init__(self, runner: "Runner", input_name: str, input: np.ndarray, output_names: Sequence[str]) -> None:
        self.runner = runner
        self.input_name = input_name
        self.input = input
        self.output_names: List[str] = list(output_names)

    def run(self) -> Dict[str, np.ndarray]:
        return self.runner.run_trusted({self.input_name: self.input}, self.output_names)


class Runner(ABC):
    """One loaded model on one backend. Subclasses set the specs and implement :meth:`run_trusted`.

    Two ways to call it: :meth:`run` checks the feeds against the specs (names, rank, dimensions, dtype,
    finite values) and is what user code calls; :meth:`run_trusted` skips every check and is for callers
    that built or validated the arrays themselves (the cascade validates once at its entry and then feeds
    its stages arrays it made). Runners are context managers; ``close`` frees what the backend holds.
    """

    backend: str = ""
    inputs: Tuple[TensorSpec, ...] = ()
    outputs: Tuple[TensorSpec, ...] = ()
    #: the model runs on another machine: ``run_trusted`` may raise ``RemoteStageError`` (slow, down, error),
    #: which the cascade turns into the last local answer
    remote: bool = False

    def run(self, feeds: Union[np.ndarray, Mapping[str, np.ndarray]], output_names: Optional[Sequence[str]] = None,
            validate: bool = True) -> Dict[str, np.ndarray]:
        """Run the model; ``feeds`` is one array (single-input models) or a name → array map."""
        if isinstance(feeds, np.ndarray):
            if len(self.inputs) != 1:
                names = ", ".join(s.name for s in self.inputs)
                raise InputValidationError("this model has %d inputs (%s); pass a dict of arrays" % (len(self.inputs), names))
            feeds = {self.inputs[0].name: feeds}
        elif not isinstance(feeds, Mapping):
            raise InputValidationError("model inputs must be a numpy array or a dict of numpy arrays, got %s"
                                       % type(feeds).__name__)
        if validate:
            known = {s.name: s for s in self.inputs}
            missing = [n for n in known if n not in feeds]
            extra = [n for n in feeds if n not in known]
            if missing or extra:
                raise InputValidationError(
                    "inputs do not match the model: missing %s, unexpected %s (model inputs: %s)"
                    % (missing or "none", extra or "none", ", ".join(known))
                )
            feeds = {n: validate_input(known[n], v) for n, v in feeds.items()}
        if output_names is not None:
            outs = {s.name for s in self.outputs}
            unknown = [n for n in output_names if n not in outs]
            if unknown:
                raise InputValidationError("unknown outputs %s; the model has %s" % (unknown, ", ".join(sorted(outs))))
        return self.run_trusted(dict(feeds), list(output_names) if output_names is not None else None)

    @abstractmethod
    def run_trusted(self, feeds: Dict[str, np.ndarray], output_names: Optional[list]) -> Dict[str, np.ndarray]:
        """Run feeds without any check: every input by name, arrays of the right shape and dtype.

        Returns the requested outputs (all when ``output_names`` is None). Wrong feeds give whatever error
        the backend raises, so call :meth:`run` unless the arrays are known to be right.
        """

    def bind(self, shape: Tuple[int, ...], dtype: Union[str, np.dtype], output_names: Sequence[str]) -> BoundCall:
        """A :class:`BoundCall` for a single-input model: inputs of ``shape``/``dtype``, these outputs.

        Like :meth:`run_trusted`, nothing is checked: the caller makes inputs that fit the model.
        """
        return BoundCall(self, self.inputs[0].name, np.zeros(shape, dtype=dtype), output_names)

    def output(self, name: str) -> TensorSpec:
        for spec in self.outputs:
            if spec.name == name:
                return spec
        raise InputValidationError("the model has no output %r; outputs: %s" % (name, ", ".join(s.name for s in self.outputs)))

    def close(self) -> None:
        """Free what the backend holds. Safe to call twice."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
