"""The README and the docs name only paths that exist, and link only to files that exist."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "devices" / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
TOP = ("edgeconf", "export", "gui", "devices", "tests", "benchmarks", "scripts", "docs", "requirements", ".ci")
#: `path` in backticks that starts with a top-level folder of the repository
CODE_PATH = re.compile(r"`((?:%s)/[\w./-]*)`" % "|".join(re.escape(t) for t in TOP))
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _named_paths(doc: Path):
    text = doc.read_text(encoding="utf-8")
    for m in CODE_PATH.finditer(text):
        path = m.group(1).split("::")[0].rstrip(".")
        if any(ch in path for ch in "*{}<>") or path.endswith("/N"):
            continue  # a pattern, not a path
        yield path, ROOT / path
    for m in LINK.finditer(text):
        target = m.group(1)
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        yield target, (doc.parent / target)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_name_only_existing_paths(doc):
    missing = sorted({name for name, path in _named_paths(doc) if not path.exists()})
    assert not missing, "%s names paths that do not exist: %s" % (doc.relative_to(ROOT), ", ".join(missing))


def test_the_command_reference_is_current():
    """docs/cli.md is every command's --help as it prints now (scripts/cli_reference.py writes it). Checked in a fresh
    process: click caches a command's help option, so commands invoked on their own earlier in this process would
    print '--help' where edgeconf prints '-h, --help'."""
    import subprocess
    import sys

    from edgeconf.cli import COMMANDS, load_command

    missing = [n for n in COMMANDS if "Unavailable here" in (load_command(n).help or "")]
    if missing:
        pytest.skip("commands unavailable in this environment (optional extras missing): %s" % ", ".join(missing))
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "cli_reference.py"), "--check"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
