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
