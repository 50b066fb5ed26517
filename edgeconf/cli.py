"""The ``edgeconf`` command line.

The root group holds no command code: each verb is named here with its module and one line of help,
and its module is imported only when someone runs it (the way Polygraphy registers its tools). So
``edgeconf --help`` needs only the base install, the core never imports ``export`` or ``gui``, and a
verb whose optional extra is missing says what to install when it is run.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import signal
import sys
from typing import Any, Dict, Iterator, List, Optional, Tuple

import click

from edgeconf import __version__
from edgeconf.atomic import Terminated, check_termination, request_termination
from edgeconf.devices.errors import DeviceError
from edgeconf.errors import EdgeconfError, MissingDependencyError
from edgeconf.lazy import MODULES, extra_hint, install_hint, python_too_old

#: verb -> (module, attribute, one-line help, extra that provides it)
COMMANDS: Dict[str, Tuple[str, str, str, str]] = {
    "inspect": ("edgeconf.commands.inspect", "inspect_cmd", "Show what an ONNX model, a bundle or an engine carries.", ""),
    "classify": ("edgeconf.commands.classify", "classify_cmd", "Classify images, folders, arrays or labelled data sets with a bundle (accuracy when labelled).", ""),
    "devices": ("edgeconf.commands.devices", "devices_cmd", "Show the board, its profile, power sensors and live readings.", ""),
    "run": ("edgeconf.live.cli", "run_cmd", "Run a bundle on a camera, stream, video or image folder.", ""),
    "demo": ("edgeconf.live.cli", "demo_cmd", "Run the shipped bundle on the built-in synthetic scene.", ""),
    "bench": ("edgeconf.bench.cli", "bench_cmd", "Measure cascade vs baseline cost and accuracy (paper protocol).", ""),
    "export": ("edgeconf.export.cli", "export_cmd", "Export a classifier to a confidence-aware ONNX model.", "torch"),
    "retune": ("edgeconf.export.cli", "retune_cmd", "Change the threshold or temperature stored in an exported model.", ""),
    "pair": ("edgeconf.export.cli", "pair_cmd", "Rank pairs of models by complementarity and cascade accuracy/cost.", ""),
    "cascade": ("edgeconf.export.cli", "cascade_cmd", "Build a cascade bundle from models, data and a threshold policy.", ""),
    "fuse": ("edgeconf.export.fuse_cli", "fuse_cmd", "Write a bundle's cascade as one ONNX graph (fused.onnx) into the bundle.", ""),
    "triton-repo": ("edgeconf.export.triton_repo", "triton_repo_cmd", "Write a Triton model repository for a bundle's server-side stages.", ""),
    "ood": ("edgeconf.export.ood_cli", "ood_cmd", "Fit an out-of-distribution score: inputs that are no class answer 'unknown'.", ""),
    "engine": ("edgeconf.export.engine_cli", "engine_cmd", "Build, check or strip TensorRT engines for a model or bundle.", "tensorrt"),
    "gui": ("edgeconf.gui.cli", "gui_cmd", "Open the Qt operator window (camera, confidence, tracker, power).", "gui"),
}


def _placeholder(name: str, help_text: str, reason: str) -> click.Command:
    """A command that explains why the real one cannot run here."""

    @click.command(name=name, help="%s\n\nUnavailable here: %s" % (help_text, reason),
                   context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def _missing(args: Tuple[str, ...]) -> None:
        raise MissingDependencyError("edgeconf %s is unavailable: %s" % (name, reason))

    return _missing


def load_command(name: str) -> click.Command:
    """Import the module behind ``name`` and return its click command (or an explaining placeholder)."""
    module, attr, help_text, extra = COMMANDS[name]
    try:
        mod = importlib.import_module(module)
        return getattr(mod, attr)
    except MissingDependencyError as exc:
        return _placeholder(name, help_text, str(exc))
    except ImportError as exc:
        hint = ""
        if extra:
            hint = "; %s" % (python_too_old(extra) or "install it with: %s" % extra_hint(extra))
        return _placeholder(name, help_text, "cannot import %s (%s)%s" % (module, exc, hint))
    except AttributeError:
        return _placeholder(name, help_text, "%s has no command %s in this version" % (module, attr))


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> List[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        if cmd_name not in COMMANDS:
            return None
        return load_command(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, spec[2]) for name, spec in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def configure_logging(verbose: int, quiet: int) -> int:
    """``-v``/``-q`` → the ``logging`` level of edgeconf's loggers (WARNING by default, on stderr); returns it.

    OpenCV's own messages (a stream that cannot be opened prints a warning per attempt) are shown only
    with ``-v``: edgeconf reports what failed in its own one-line error.
    """
    level = min(logging.CRITICAL, max(logging.DEBUG, logging.WARNING + 10 * (quiet - verbose)))
    root = logging.getLogger("edgeconf")
    root.setLevel(level)
    if not any(getattr(h, "_edgeconf", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("edgeconf: %(levelname)s: %(message)s"))
        handler._edgeconf = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    os.environ.setdefault("OPENCV_LOG_LEVEL", "INFO" if level <= logging.DEBUG else "WARNING" if verbose else "ERROR")
    # FFmpeg's own lines ("[tcp @ 0x…] Failed to resolve hostname"): AV_LOG_QUIET (-8) unless -v, AV_LOG_WARNING (24)
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "24" if verbose else "-8")
    return level


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeconf")
@click.option("-v", "--verbose", count=True, help="More log messages on stderr (-v info, -vv debug).")
@click.option("-q", "--quiet", count=True, help="Fewer log messages (-q errors only, -qq none).")
def cli(verbose: int, quiet: int) -> None:
    """edgeconf: confidence-aware classifier cascades with a memo cache, for NVIDIA Jetson boards.

    Run 'edgeconf COMMAND --help' for a command's options. Every command that prints a result takes --json
    (the result as JSON on stdout); files are written by --out/--report (atomically).
    """
    configure_logging(verbose, quiet)


def usage_message(exc: click.UsageError) -> str:
    """Click's message for a usage error on one line, with where to look: ``... (see 'edgeconf CMD --help')``."""
    message = " ".join(exc.format_message().split())
    path = exc.ctx.command_path if exc.ctx is not None else "edgeconf"
    return "%s (see '%s --help')" % (message, path)


#: click >= 8.2 raises this for a bare group (older clicks print the help and exit 0 themselves; () matches nothing)
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _terminate(signum: int, frame: Any) -> None:
    request_termination()  # holds even where Python drops the exception (see edgeconf.atomic.Terminated)
    raise Terminated()


def _verbose(args: List[str]) -> bool:
    """Whether the group's -v/--verbose is among the arguments before the command's name."""
    for a in args:
        if a == "--verbose" or (a.startswith("-v") and set(a[1:]) == {"v"}):
            return True
        if not a.startswith("-"):
            return False
    return False


@contextlib.contextmanager
def _native_stdout_on_stderr(active: bool) -> Iterator[None]:
    """With -v, OpenCV prints FFmpeg's messages on the process's stdout (file descriptor 1), where they would break
    --json output: point descriptor 1 at stderr for native code, and give Python's ``sys.stdout`` the real stdout."""
    try:
        real_fd = sys.stdout.fileno() if active else -1
    except (AttributeError, OSError, ValueError):  # a stdout without a descriptor (a test's capture): nothing to do
        real_fd = -1
    if real_fd != 1:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    old = sys.stdout
    os.dup2(2, 1)
    sys.stdout = io.TextIOWrapper(io.FileIO(saved, "w", closefd=False), encoding=old.encoding,
                                  errors=old.errors, line_buffering=True)
    try:
        yield
    finally:
        try:
            sys.stdout.flush()
        finally:
            sys.stdout = old
            os.dup2(saved, 1)
            os.close(saved)


def main(argv: Optional[List[str]] = None) -> None:
    """Console entry point: user errors print one line on stderr (``edgeconf: error: ...``) and exit 1; usage errors
    (click's: a bad option value, a missing option) print one line too and exit 2; Ctrl-C exits 130, SIGTERM 143
    (both after cleaning up, as a failed run does: no temporary file is left behind)."""
    request_termination(False)
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread (main() called from a thread): leave SIGTERM alone
        previous = None
    try:
        with _native_stdout_on_stderr(_verbose(sys.argv[1:] if argv is None else list(argv))):
            rv = cli.main(args=argv, prog_name="edgeconf", standalone_mode=False)
        check_termination()  # a SIGTERM whose exception Python dropped (in a callback) still ends in 143
    except Terminated:
        click.echo("edgeconf: terminated", err=True)
        sys.exit(143)
    except (EdgeconfError, DeviceError) as exc:
        click.echo("edgeconf: error: %s" % str(exc).replace("\n", " "), err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("edgeconf: aborted", err=True)
        sys.exit(130)
    except _NO_ARGS_IS_HELP as exc:  # bare 'edgeconf': the help text, as click prints it
        exc.show()
        sys.exit(exc.exit_code)
    except click.UsageError as exc:  # a bad option value, a missing option or argument, an unknown option/command
        click.echo("edgeconf: error: %s" % usage_message(exc), err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo("edgeconf: error: %s" % exc.format_message().replace("\n", " "), err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("edgeconf: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except ModuleNotFoundError as exc:  # an optional dependency imported directly (cv2, onnxruntime, ...)
        top = (exc.name or "").split(".")[0]
        if top not in MODULES:
            raise
        click.echo("edgeconf: error: %s is not installed; %s" % (top, install_hint(top)), err=True)
        sys.exit(1)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    sys.exit(rv if isinstance(rv, int) else 0)
