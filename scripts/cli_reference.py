"""Write docs/cli.md: every command's ``--help``, as ``edgeconf COMMAND --help`` prints it (100 columns).

    .venv/bin/python scripts/cli_reference.py [--out docs/cli.md] [--check]

``--check`` compares instead of writing and exits 1 when the file is out of date (tests/test_docs.py runs it).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDTH = 100


def reference() -> str:
    """The Markdown text of docs/cli.md."""
    import click

    from edgeconf.cli import COMMANDS, cli, load_command

    lines: List[str] = ["# Command reference", "",
                        "Every command's `--help`, as it prints it; written by `scripts/cli_reference.py` (a test checks "
                        "that it is current). The guides explain when to use which option: [tutorial.md](tutorial.md), "
                        "[bench.md](bench.md), [pipeline.md](pipeline.md), [fleet.md](fleet.md), [gui.md](gui.md), "
                        "[fused.md](fused.md), [unknown.md](unknown.md), [int8.md](int8.md), [data.md](data.md).", ""]
    group = click.Context(cli, info_name="edgeconf", terminal_width=WIDTH, max_content_width=WIDTH,
                          help_option_names=cli.context_settings.get("help_option_names", ["--help"]))
    lines += ["## edgeconf", "", "```text", cli.get_help(group).rstrip(), "```", ""]
    for name in COMMANDS:
        cmd = load_command(name)
        ctx = click.Context(cmd, info_name=name, parent=group, terminal_width=WIDTH, max_content_width=WIDTH)
        lines += ["## edgeconf %s" % name, "", "```text", cmd.get_help(ctx).rstrip(), "```", ""]
    return "\n".join(lines)


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "cli.md"))
    ap.add_argument("--check", action="store_true", help="exit 1 if --out differs from what would be written")
    args = ap.parse_args(argv)
    text = reference()
    if args.check:
        current = open(args.out, encoding="utf-8").read() if os.path.isfile(args.out) else ""
        if current != text:
            import difflib

            diff = list(difflib.unified_diff(current.splitlines(), text.splitlines(), lineterm=""))[:20]
            print("%s is out of date: run .venv/bin/python scripts/cli_reference.py\n%s" % (args.out, "\n".join(diff)),
                  file=sys.stderr)
            return 1
        return 0
    from edgeconf.atomic import write_text

    write_text(args.out, text)
    print("wrote %s" % args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
