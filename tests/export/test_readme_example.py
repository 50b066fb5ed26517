"""The README's Python example for a user's own PyTorch model runs, as written."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _example() -> str:
    section = README.read_text(encoding="utf-8").split("## Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    torch_blocks = [b for b in blocks if "export_model" in b]
    assert len(torch_blocks) == 1, "the README's Python section needs one example of exporting your own model"
    return torch_blocks[0]


@pytest.mark.torch
@pytest.mark.slow
def test_the_readme_pytorch_example_runs(tmp_path):
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", x=rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8),
             y=np.arange(200) % 10)
    (tmp_path / "example.py").write_text(_example(), encoding="utf-8")
    out = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    assert "tiny accuracy on calib.npz:" in out.stdout and "test accuracy" in out.stdout
    from edgeconf.bundle import read_manifest

    man = read_manifest(str(tmp_path / "my_bundle"))
    assert man.stages[0].threshold == 0.4 and man.preprocessing.channels == 3 and man.preprocessing.mean == (0.5,) * 3
