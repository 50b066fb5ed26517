"""Installing edgeconf on a Jetson must not replace NVIDIA's ONNX Runtime or JetPack's OpenCV.

pip's own resolver decides (``pip install --dry-run --report -``) against a virtual environment that holds an
installed ``onnxruntime-gpu`` distribution (the Jetson Zoo wheel) and a ``cv2`` package without pip metadata
(JetPack's GStreamer build). Every distribution comes from a local wheelhouse of metadata-only wheels plus
edgeconf's own wheel, built from this checkout: no network.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: What the wheelhouse offers: what edgeconf depends on, and the CPU builds that must not be planned on a Jetson.
OFFERED = {"numpy": "1.26.0", "onnx": "1.16.0", "click": "8.1.0", "rich": "13.0.0", "tomli": "2.0.0",
           "onnxruntime": "1.17.0", "opencv-python-headless": "4.9.0.80", "opencv-python": "4.9.0.80"}


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return "%s,sha256=%s,%d" % (name, digest, len(data))


def fake_wheel(folder: Path, name: str, version: str) -> Path:
    """A valid, metadata-only wheel of ``name`` ``version`` (no dependencies)."""
    dist = "%s-%s" % (name.replace("-", "_"), version)
    files = {
        "%s.dist-info/METADATA" % dist: ("Metadata-Version: 2.1\nName: %s\nVersion: %s\n" % (name, version)).encode(),
        "%s.dist-info/WHEEL" % dist: b"Wheel-Version: 1.0\nGenerator: edgeconf-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    path = folder / ("%s-py3-none-any.whl" % dist)
    with zipfile.ZipFile(path, "w") as z:
        for arc, data in files.items():
            z.writestr(arc, data)
        record = "%s.dist-info/RECORD" % dist
        z.writestr(record, "\n".join([_record_line(a, d) for a, d in files.items()] + [record + ",,"]) + "\n")
    return path


def make_env(folder: Path, jetson: bool) -> Path:
    """A virtual environment (no pip in it); on a 'Jetson' it holds onnxruntime-gpu and a metadata-less cv2."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    if jetson:
        info = site / "onnxruntime_gpu-1.16.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime-gpu\nVersion: 1.16.0\n")
        (info / "INSTALLER").write_text("pip\n")
        (info / "RECORD").write_text("onnxruntime/__init__.py,,\n")
        (site / "onnxruntime").mkdir()
        (site / "onnxruntime" / "__init__.py").write_text("__version__ = '1.16.0'  # NVIDIA's GPU build\n")
        (site / "cv2").mkdir()  # JetPack's OpenCV: importable, invisible to pip
        (site / "cv2" / "__init__.py").write_text("__version__ = '4.8.0'\n")
    return python


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    house = tmp_path_factory.mktemp("wheelhouse")
    for name, version in OFFERED.items():
        fake_wheel(house, name, version)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
                    "--no-build-isolation", "-w", str(house), str(ROOT)], check=True, capture_output=True)
    return house


def plan(house: Path, python: Path, requirement: str) -> dict:
    """pip's report of what ``pip install requirement`` would install into the environment of ``python``."""
    out = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--dry-run", "--quiet",
                          "--report", "-", "--no-index", "--find-links", str(house), "--disable-pip-version-check",
                          requirement], check=True, capture_output=True, text=True)
    report = json.loads(out.stdout)
    return {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in report["install"]}


@pytest.mark.slow
def test_installing_on_a_jetson_plans_no_onnxruntime_and_no_opencv(wheelhouse, tmp_path):
    planned = plan(wheelhouse, make_env(tmp_path / "jetson", jetson=True), "edgeconf")
    assert "edgeconf" in planned and {"numpy", "onnx", "click", "rich"} <= set(planned)
    assert "onnxruntime" not in planned, planned  # would overwrite onnxruntime-gpu's onnxruntime/ folder
    assert not [n for n in planned if n.startswith("opencv")], planned  # would shadow JetPack's GStreamer OpenCV


@pytest.mark.slow
def test_the_cpu_extra_brings_onnxruntime_and_opencv_elsewhere(wheelhouse, tmp_path):
    planned = plan(wheelhouse, make_env(tmp_path / "desktop", jetson=False), "edgeconf[cpu]")
    assert planned["onnxruntime"] == OFFERED["onnxruntime"]
    assert planned["opencv-python-headless"] == OFFERED["opencv-python-headless"]


def test_the_declared_floors_match_the_floor_run():
    """pyproject's floors are exactly the versions scripts/test_floor.sh installs on Python 3.8."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {}
    for req in project["dependencies"] + project["optional-dependencies"]["cpu"]:
        name, _, rest = req.partition(">=")
        declared[name.strip()] = rest.split(";")[0].strip()
    pins = {}
    for line in (ROOT / "requirements" / "floor.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip()] = version.strip()
    for name, floor in declared.items():
        assert name in pins, name
        assert pins[name] == floor or pins[name].startswith(floor + "."), (name, floor, pins[name])


def test_missing_onnxruntime_and_opencv_name_what_to_install(tmp_path):
    """At first use: the Jetson wheels on a Jetson (fake /etc/nv_tegra_release), the [cpu] extra elsewhere."""
    from edgeconf.lazy import install_hint

    assert "pip install 'onnxruntime>=1.12.0' (edgeconf's [cpu] extra" in install_hint("onnxruntime", root=str(tmp_path))
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nv_tegra_release").write_text("# R35 (release), REVISION: 4.1, GCID: 1, BOARD: t186ref\n")
    hint = install_hint("onnxruntime", root=str(tmp_path))
    assert "L4T 35.4.1" in hint and "onnxruntime-gpu wheel" in hint and "Jetson Zoo" in hint
    assert "not pip's onnxruntime (the [cpu] extra)" in hint
    assert "JetPack's OpenCV" in install_hint("cv2", root=str(tmp_path))
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "hide"))
    (tmp_path / "hide" / "cv2").mkdir(parents=True)
    (tmp_path / "hide" / "cv2" / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'cv2'\", name='cv2')\n")
    # 28×28 arrays need no OpenCV at all (the memo's dHash of small images is numpy)...
    out = subprocess.run([sys.executable, "-m", "edgeconf", "classify", str(ROOT / "edgeconf/data/zoo/bundle"),
                          str(ROOT / "edgeconf/data/fashion_sample.npz")], capture_output=True, text=True, env=env,
                         cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    # ...an image file does (decoding): the error names what to install
    import cv2

    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((28, 28), np.uint8))
    out = subprocess.run([sys.executable, "-m", "edgeconf", "classify", str(ROOT / "edgeconf/data/zoo/bundle"),
                          str(tmp_path / "x.png")], capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(
        "edgeconf: error: cv2 is not installed; pip install 'opencv-python-headless>=4.5.1' (edgeconf's [cpu] extra")



def test_the_hints_name_exactly_the_extras_packages():
    """edgeconf.lazy.EXTRAS (what the install hints name, edgeconf not being on PyPI) is pyproject.toml's extras,
    and EXTRA_MIN_PYTHON names exactly the extras that install nothing below Python 3.10."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib
    from edgeconf.lazy import EXTRA_MIN_PYTHON, EXTRAS, MODULES

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    declared = {k: v for k, v in declared.items() if k != "dev"}
    assert {k: tuple(r.split(";")[0].strip() for r in v) for k, v in declared.items()} == EXTRAS
    newer = {k for k, v in declared.items() if all("python_version >= '3.10'" in r for r in v)}
    assert newer == set(EXTRA_MIN_PYTHON) and set(EXTRA_MIN_PYTHON.values()) == {(3, 10)}
    assert {extra for extra, _ in MODULES.values() if extra} == set(EXTRAS)


def test_every_folder_that_ships_is_a_declared_package():
    """setuptools warns "package would be ignored" (and editable installs miss it) for an undeclared folder."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(setup["packages"])
    missing = []
    for name, folder in setup["package-dir"].items():
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_dir() and "__pycache__" not in path.parts and any(p.is_file() for p in path.iterdir()):
                package = ".".join([name] + list(path.relative_to(ROOT / folder).parts))
                if package not in declared:
                    missing.append(package)
    assert not missing, "add to [tool.setuptools] packages in pyproject.toml: %s" % ", ".join(missing)


def test_the_repository_tracks_no_links_and_no_environments():
    """A clean clone must set itself up: no tracked symlink (a worktree's link to a local venv once broke setup)
    and nothing under a virtual environment's folder."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-s"], capture_output=True, text=True, check=True).stdout
    links = [line.split("\t", 1)[1] for line in out.splitlines() if line.startswith("120000 ")]
    assert not links, "tracked symlinks: %s" % links
    envs = [p for p in (line.split("\t", 1)[1] for line in out.splitlines())
            if p.split("/", 1)[0] in (".venv", ".venv38", ".venv-triton")]
    assert not envs, "tracked files of a virtual environment: %s" % envs[:5]
