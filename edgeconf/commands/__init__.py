"""Command-line verbs of the core, each imported at first use by edgeconf.cli, and options they share."""
from __future__ import annotations

from typing import Any, Callable, Optional

THREADS_HELP = ("ONNX Runtime intra-op threads per model [default: chosen for the device and the batch: "
                "1 for batch-1 work, spinning off; `edgeconf devices` shows the choice].")


def checked_by(check: Callable[[Any], Any]) -> Callable[[Any, Any, Any], Any]:
    """A click option callback: ``check(value)`` raises a ConfigError for a bad value, which becomes a usage error
    naming the option (exit 2, "see 'edgeconf CMD --help'"); a good value passes on unchanged."""

    def callback(ctx: Any, param: Any, value: Any) -> Any:
        import click

        from edgeconf.errors import ConfigError

        if value is None or value == ():
            return value
        try:
            check(value)
        except ConfigError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
        return value

    return callback


def _check_threads(ctx: Any, param: Any, value: Optional[int]) -> Optional[int]:
    """``--threads``: 0, negative or above the cap is a usage error (exit 2, naming the command's --help)."""
    from edgeconf.backends.threads import check_threads

    return None if value is None else checked_by(lambda v: check_threads(v, "--threads"))(ctx, param, value)


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
    """``--threads N`` (N >= 1; 0 or negative is refused in one line, as a usage error)."""
    import click

    return click.option("--threads", type=int, default=None, callback=_check_threads, help=help_text)
