"""Conventions every verb keeps: ``--help`` works, and ``--json`` is a flag that prints the machine-readable result
on stdout (files are written by ``--out``/``--report``/``--events``/``--record``, never by ``--json PATH``)."""
from __future__ import annotations

import click
import click.testing
import pytest

from edgeconf.cli import COMMANDS, load_command


@pytest.mark.parametrize("verb", sorted(COMMANDS))
def test_json_is_a_flag_and_help_works(verb):
    cmd = load_command(verb)
    assert "Unavailable here" not in (cmd.help or ""), cmd.help
    for param in cmd.params:
        if isinstance(param, click.Option) and "--json" in param.opts:
            assert param.is_flag, "%s --json must be a flag (write files with --out)" % verb
    result = click.testing.CliRunner().invoke(cmd, ["--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


@pytest.mark.parametrize("verb", sorted(COMMANDS))
def test_float_ranges_refuse_nan_and_infinity_as_usage_errors(verb):
    """click.FloatRange alone lets ``nan`` through (every comparison with it is false): every range option is a
    finite_range, and ``nan`` is a usage error (exit 2) naming the option."""
    cmd = load_command(verb)
    ranged = [p for p in cmd.params if isinstance(p, click.Option) and isinstance(p.type, click.FloatRange)]
    for param in ranged:
        assert type(param.type).__name__ == "FiniteFloatRange", "%s %s" % (verb, param.opts[0])
        for bad in ("nan", "inf", "-inf"):
            with pytest.raises(click.BadParameter, match="is not a finite number"):
                param.type.convert(bad, param, None)
    if ranged:
        result = click.testing.CliRunner().invoke(cmd, [ranged[0].opts[0], "nan"])
        assert result.exit_code == 2 and "is not a finite number" in result.output
