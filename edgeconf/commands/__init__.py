"""Command-line verbs of the core, each imported at first use by edgeconf.cli, and options they share."""
from __future__ import annotations

from typing import Any, Callable, Optional

THREADS_HELP = ("ONNX Runtime intra-op threads per model [default: chosen for the device and the batch: "
                "1 for batch-1 work, spinning off; `edgeconf devices` shows the choice].")


def _check_threads(ctx: Any, param: Any, value: Optional[int]) -> Optional[int]:
    from edgeconf.backends.threads import check_threads

    return None if value is None else check_threads(value, "--threads")


def finite_range(*args: Any, **kwargs: Any) -> Any:
    """``click.FloatRange(...)`` that also refuses NaN and ±inf (a FloatRange alone lets ``nan`` through: every
    comparison with it is false), as a usage error naming the option."""
    import math

    import click

    class FiniteFloatRange(click.FloatRange):
        def convert(self, value: Any, param: Any, ctx: Any) -> Any:
            number = click.FLOAT.convert(value, param, ctx)
            if math.isnan(number) or math.isinf(number):
                self.fail("%s is not a finite number" % (value,), param, ctx)
            return super().convert(number, param, ctx)

    return FiniteFloatRange(*args, **kwargs)


def threads_option(help_text: str = THREADS_HELP) -> Callable[[Any], Any]:
    """``--threads N`` (N >= 1; 0 or negative is refused in one line)."""
    import click

    return click.option("--threads", type=int, default=None, callback=_check_threads, help=help_text)
