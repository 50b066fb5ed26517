"""The export package imports without torch; torch paths then say what to install."""
from __future__ import annotations

import subprocess
import sys


def test_export_package_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import edgeconf.export, edgeconf.export.cli, edgeconf.export.torch_export, edgeconf.export.head, "
            "edgeconf.export.early_exit, edgeconf.export.quantize, edgeconf.export.build, edgeconf.export.pairing\n"
            "from edgeconf.errors import MissingDependencyError\n"
            "try:\n    edgeconf.export.torch_export.export_torch(None, None, 'x.onnx')\n"
            "except MissingDependencyError as e:\n    print('OK', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("OK") and "torch" in out.stdout
