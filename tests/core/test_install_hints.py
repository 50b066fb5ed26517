"""What a missing optional module's message tells the user to install (edgeconf.lazy).

The board is faked with an ``etc/nv_tegra_release`` under a temporary root and the Python version is passed in, so
every case runs here. This file also runs in the Python 3.8 floor run (scripts/test_floor.sh), where the last two
tests check the real messages of ``edgeconf gui`` and ``edgeconf export`` on a Python too old for their extras.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeconf.lazy import EXTRAS, MODULES, extra_hint, install_hint, jetpack_python, python_too_old

NANO = "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64, DATE: Sat Feb 19 17:05:08 UTC 2022\n"
ORIN_JP5 = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023\n"
ORIN_JP6 = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n"


def board(tmp_path: Path, release: str) -> str:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nv_tegra_release").write_text(release)
    return str(tmp_path)


def every_hint(root: str):
    for python in ((3, 6), (3, 8), (3, 9), (3, 10), (3, 11), (3, 12)):
        for top in MODULES:
            yield install_hint(top, root=root, python=python)
        for extra in EXTRAS:
            yield extra_hint(extra, python=python)


@pytest.mark.parametrize("release", [None, NANO, ORIN_JP5, ORIN_JP6])
def test_no_hint_names_a_package_that_is_not_on_pypi(tmp_path, release):
    root = board(tmp_path, release) if release else str(tmp_path)
    for hint in every_hint(root):
        assert "edgeconf[" not in hint and "\n" not in hint, hint
        assert "on this machine" not in hint and "2.13.0" not in hint, hint  # no developer-machine advice


def test_off_a_jetson_the_hints_name_the_packages(tmp_path):
    root = str(tmp_path)
    assert install_hint("onnxruntime", root=root).startswith("pip install 'onnxruntime>=1.12.0' (edgeconf's [cpu] extra")
    assert install_hint("cv2", root=root).startswith("pip install 'opencv-python-headless>=4.5.1'")
    assert install_hint("tritonclient", root=root).startswith("pip install 'tritonclient[grpc,http]>=2.30'")
    torch = install_hint("torch", root=root, python=(3, 11))
    assert torch.startswith("pip install 'torch>=2.1'")
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in torch and "Jetson" in torch
    assert extra_hint("gui", python=(3, 12)) == ("pip install 'PySide6-Essentials>=6.5,!=6.12.0' 'pyqtgraph>=0.13' "
                                                 "(edgeconf's [gui] extra; in a clone of edgeconf: pip install '.[gui]')")
    assert install_hint("pynvml", root=root) == "pip install nvidia-ml-py"
    assert install_hint("somethingelse", root=root) == "pip install somethingelse"


@pytest.mark.parametrize("extra, top", [("gui", "PySide6"), ("gui", "pyqtgraph"), ("torch", "torch"),
                                        ("torch", "onnxscript"), ("torch", "safetensors")])
def test_extras_for_python_310_say_so_on_an_older_python(tmp_path, extra, top):
    for python in ((3, 8), (3, 9)):
        for hint in (install_hint(top, root=str(tmp_path), python=python), extra_hint(extra, python=python)):
            assert hint.startswith("this needs Python >= 3.10, and this is Python %d.%d" % python), hint
            assert "pip install" not in hint
        assert python_too_old(extra, python)
    assert python_too_old(extra, (3, 10)) is None
    assert install_hint(top, root=str(tmp_path), python=(3, 10)).startswith("pip install ")
    assert python_too_old("cpu", (3, 8)) is None and install_hint("cv2", root=str(tmp_path), python=(3, 8)).startswith("pip")


def test_jetpack_python_per_l4t_release():
    assert jetpack_python("32.7.1") == (3, 6)  # JetPack 4 (Nano): Ubuntu 18.04
    assert jetpack_python("35.4.1") == (3, 8)  # JetPack 5: Ubuntu 20.04
    assert jetpack_python("36.4.3") == (3, 10)  # JetPack 6: Ubuntu 22.04
    assert jetpack_python("99.1") is None and jetpack_python(None) is None


def test_on_a_nano_in_a_python_38_venv_the_hints_follow_the_readme(tmp_path):
    """README's Nano steps: no JetPack OpenCV or TensorRT bindings for 3.8; pip's headless OpenCV is fine there."""
    root = board(tmp_path, NANO)
    cv2 = install_hint("cv2", root=root, python=(3, 8))
    assert "L4T 32.7.1, JetPack 4.6.1" in cv2 and "built for Python 3.6 only, not this Python 3.8" in cv2
    assert "pip install opencv-python-headless" in cv2 and "-D WITH_GSTREAMER=ON" in cv2 and "csi://" in cv2
    assert "apt install" not in cv2
    trt = install_hint("tensorrt", root=root, python=(3, 8))
    assert "python3-libnvinfer) are built for Python 3.6 only, not this Python 3.8" in trt and "apt install" not in trt
    assert "TensorRT provider" in trt and "TensorRT OSS" in trt
    ort = install_hint("onnxruntime", root=root, python=(3, 8))
    assert "onnxruntime-gpu wheel for JetPack 4.6.1 and Python 3.8" in ort and "Jetson Zoo" in ort
    # JetPack's own Python 3.6 does have them
    assert "sudo apt install python3-opencv" in install_hint("cv2", root=root, python=(3, 6))
    assert "sudo apt install python3-libnvinfer" in install_hint("tensorrt", root=root, python=(3, 6))


@pytest.mark.parametrize("release, own", [(ORIN_JP5, (3, 8)), (ORIN_JP6, (3, 10))])
def test_on_jetpack_5_and_6_the_system_python_uses_jetpacks_packages(tmp_path, release, own):
    root = board(tmp_path, release)
    cv2 = install_hint("cv2", root=root, python=own)
    assert "sudo apt install python3-opencv" in cv2 and "--system-site-packages" in cv2
    assert "do not pip install opencv-python" in cv2
    assert "sudo apt install python3-libnvinfer" in install_hint("tensorrt", root=root, python=own)
    ort = install_hint("onnxruntime", root=root, python=own)
    assert "onnxruntime-gpu wheel" in ort and "not pip's onnxruntime (the [cpu] extra)" in ort
    other = install_hint("cv2", root=root, python=(3, 12))
    assert "built for Python %d.%d only, not this Python 3.12" % own in other and "apt install" not in other


def _edgeconf(args, cwd):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    return subprocess.run([sys.executable, "-m", "edgeconf"] + args, capture_output=True, text=True, cwd=str(cwd),
                          env=env, timeout=120)


@pytest.mark.skipif(sys.version_info >= (3, 10), reason="checks Python < 3.10 (runs in the Python 3.8 floor run)")
def test_gui_on_an_old_python_says_it_needs_python_310(tmp_path):
    out = _edgeconf(["gui"], tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1 and "edgeconf gui is unavailable" in out.stderr, out.stderr
    assert "this needs Python >= 3.10, and this is Python 3.%d" % sys.version_info[1] in out.stderr, out.stderr


@pytest.mark.skipif(sys.version_info >= (3, 10), reason="checks Python < 3.10 (runs in the Python 3.8 floor run)")
def test_export_from_pytorch_on_an_old_python_says_it_needs_python_310(tmp_path):
    (tmp_path / "net.py").write_text("def build():\n    raise AssertionError('not reached')\n")
    out = _edgeconf(["export", "--out", str(tmp_path / "x.onnx"), "--input-shape", "1,28,28", "net.py:build"], tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert "torch is needed" in out.stderr and "this needs Python >= 3.10" in out.stderr, out.stderr
    assert "[torch] extra installs nothing" in out.stderr and "pip install" not in out.stderr, out.stderr


@pytest.mark.parametrize("version", [(3, 8, 18), (3, 12, 1)])
def test_a_verb_whose_extra_cannot_be_imported_says_what_to_install(monkeypatch, version):
    import types

    from click.testing import CliRunner

    import edgeconf.cli as cli
    import edgeconf.lazy as lazy

    monkeypatch.setitem(cli.COMMANDS, "nowhere", ("edgeconf_no_such_module", "cmd", "A verb.", "gui"))
    monkeypatch.setattr(lazy, "sys", types.SimpleNamespace(version_info=version))
    res = CliRunner().invoke(cli.load_command("nowhere"), [])
    assert res.exit_code != 0 and isinstance(res.exception, cli.MissingDependencyError)
    msg = str(res.exception)
    assert msg.startswith("edgeconf nowhere is unavailable: cannot import edgeconf_no_such_module (") and "edgeconf[" not in msg
    if version < (3, 10):
        assert msg.endswith("); this needs Python >= 3.10, and this is Python 3.8, on which edgeconf's [gui] extra "
                            "installs nothing: run it where Python 3.10 or newer is installed"), msg
    else:
        assert msg.endswith("); install it with: pip install 'PySide6-Essentials>=6.5,!=6.12.0' 'pyqtgraph>=0.13' "
                            "(edgeconf's [gui] extra; in a clone of edgeconf: pip install '.[gui]')"), msg
