"""docs/tutorial.md runs as written: its files are written, its commands run in order, in an empty folder.

Blocks tagged ``python title="FILE"`` are written to FILE; ``sh`` blocks are run line by line (the venv's
``python`` and ``edgeconf`` first on PATH); untitled ``python`` blocks are run as scripts; ``text`` blocks
are sample output. Each command must succeed; the test then checks what the tutorial says they produce.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorial.md"
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```\s*$", re.S | re.M)


def blocks(text: str) -> List[Tuple[str, str]]:
    """(info string, body) of every fenced block, in order."""
    return [(m.group(1).strip(), m.group(2)) for m in FENCE.finditer(text)]


def test_the_tutorial_has_the_steps_the_issue_asks_for():
    kinds = [info for info, _ in blocks(TUTORIAL.read_text(encoding="utf-8"))]
    assert set(kinds) <= {"sh", "python", "text"} | {k for k in kinds if k.startswith("python title=")}
    commands = " ".join(body for info, body in blocks(TUTORIAL.read_text(encoding="utf-8")) if info == "sh")
    for verb in ("edgeconf export", "edgeconf pair", "edgeconf cascade", "edgeconf bench", "edgeconf classify",
                 "edgeconf retune", "edgeconf inspect"):
        assert verb in commands, verb


@pytest.mark.slow
@pytest.mark.torch
def test_the_tutorial_runs_as_written(tmp_path):
    pytest.importorskip("torch")
    if not os.path.isdir(os.environ.get("EDGECONF_FASHION_MNIST") or "/usr/share/datasets/fashion-mnist"):
        pytest.skip("the Debian package dataset-fashion-mnist is not installed")
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
               PYTHONPATH="", COLUMNS="80")
    ran: List[str] = []
    for info, body in blocks(TUTORIAL.read_text(encoding="utf-8")):
        title = re.fullmatch(r'python title="([^"]+)"', info)
        if title:
            (tmp_path / title.group(1)).write_text(body, encoding="utf-8")
        elif info == "python":
            (tmp_path / "snippet.py").write_text(body, encoding="utf-8")
            out = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, env=env, capture_output=True,
                                 text=True, timeout=120)
            assert out.returncode == 0, out.stderr
            assert "->" in out.stdout
        elif info == "sh":
            for line in body.replace("\\\n", " ").splitlines():
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                out = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True,
                                     timeout=240)
                assert out.returncode == 0, "%s\n%s%s" % (line, out.stdout, out.stderr)
                assert "Traceback" not in out.stderr, line
                ran.append(line)
                if line.startswith("edgeconf export"):
                    assert "accuracy on the 2000 calibration samples" in out.stdout, out.stdout
                    assert "warning" not in out.stderr, out.stderr  # the preprocessing is right: no near-chance warning
                if line.startswith("edgeconf cascade"):
                    assert "takes NHWC input: a Transpose in front of it" in out.stdout, out.stdout
                if line.startswith("edgeconf bench"):
                    assert "dual_memo_exact" in out.stdout and "test_images" in out.stdout
                if line.startswith("edgeconf classify"):
                    assert "accuracy" in out.stderr and "on 1000 labelled inputs" in out.stderr, out.stderr
    assert len(ran) >= 9
    rows = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert len(rows) == 1000 and all("correct" in r for r in rows)
    from edgeconf.bundle import load_bundle

    with load_bundle(str(tmp_path / "my_bundle")) as cascade:
        assert cascade.thresholds[0] == 0.6  # the retune step, stored as given
        assert cascade.preprocessing.channels == 3 and cascade.preprocessing.layout == "NCHW"
