"""Command-line verbs of the core, each imported at first use by edgeconf.cli, and options they share."""
from __future__ import annotations

from typing import Any, Callable, Optional

THREADS_HELP = ("ONNX Runtime intra-op threads per model [default: chosen for the device and the batch: "
                "1 for batch-1 work, spinning off; `edgeconf devices` shows the choice].")


def _check_threads(ctx: Any, param: Any, value: Optional[int]) -> Optional[int]:
    """``--threads``: 0 or negative is a usage error (exit 2, naming the command's --help)."""
    import click

    from edgeconf.backends.threads import check_threads
    from edgeconf.errors import ConfigError

    try:
        return None if value is None else check_threads(value, "--threads")
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def threads_option(help_text: str = THREADS_HELP) -> Callable[[Any], Any]:
    """``--threads N`` (N >= 1; 0 or negative is refused in one line, as a usage error)."""
    import click

    return click.option("--threads", type=int, default=None, callback=_check_threads, help=help_text)
