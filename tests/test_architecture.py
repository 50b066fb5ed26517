"""Layering rules of DESIGN.md, the base install without heavy modules, and Python 3.8 for the runtime."""
from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from import_graph import describe_cycle, find_cycles, internal_edges, module_files  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: the runtime's sub-packages that build on it; the runtime never imports them
UPPER_PARTS = ("edgeconf.live", "edgeconf.bench")
HEAVY = ("torch", "PySide6", "tensorrt", "pycuda", "pyqtgraph", "onnxscript", "scipy", "matplotlib", "motmetrics",
         "jtop", "pynvml")


def _imports(path: Path):
    """(module, line) for every import statement in a file, lazy ones inside functions included."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level:
            yield "." * node.level + (node.module or ""), node.lineno


def _files(folder: str):
    return sorted((ROOT / folder).rglob("*.py"))


def _violations(folder: str, forbidden) -> list:
    bad = []
    for f in _files(folder):
        for mod, line in _imports(f):
            if any(mod == p or mod.startswith(p + ".") for p in forbidden):
                bad.append("%s:%d imports %s" % (f.relative_to(ROOT), line, mod))
    return bad


def test_devices_is_the_base_layer():
    allowed_third_party = {"numpy", "tomli", "tomllib", "jtop", "pynvml"}
    bad = []
    for f in _files("devices"):
        for mod, line in _imports(f):
            top = mod.split(".")[0]
            if mod.startswith("."):
                continue
            if top == "edgeconf" and not mod.startswith("edgeconf.devices"):
                bad.append("%s:%d imports %s" % (f.relative_to(ROOT), line, mod))
            elif top not in sys.stdlib_module_names and top not in allowed_third_party and top != "edgeconf":
                bad.append("%s:%d imports third-party %s" % (f.relative_to(ROOT), line, mod))
    assert not bad, "devices/ may import only the standard library and numpy:\n" + "\n".join(bad)


def test_core_never_imports_export_gui_torch_or_qt():
    bad = _violations("edgeconf", ("edgeconf.export", "edgeconf.gui", "torch", "PySide6", "pyqtgraph", "onnxscript"))
    assert not bad, "the core must not import these (not even lazily):\n" + "\n".join(bad)


def test_runtime_never_imports_live_or_bench():
    """The cascade runtime (edgeconf/ minus live/ and bench/) names their verbs in the CLI but never imports them."""
    bad = []
    for f in _files("edgeconf"):
        rel = f.relative_to(ROOT / "edgeconf").parts
        if rel[0] in ("live", "bench", "data"):
            continue
        for mod, line in _imports(f):
            if any(mod == p or mod.startswith(p + ".") for p in UPPER_PARTS):
                bad.append("%s:%d imports %s" % (f.relative_to(ROOT), line, mod))
    assert not bad, "the runtime must not import edgeconf.live or edgeconf.bench:\n" + "\n".join(bad)


def test_the_runtime_folder_stays_small():
    """At most 16 top-level modules in edgeconf/: new parts go into a sub-package with one job."""
    modules = sorted(p.name for p in (ROOT / "edgeconf").glob("*.py"))
    assert len(modules) <= 16, modules


def test_live_and_bench_build_only_on_the_runtime_and_devices():
    assert not _violations("edgeconf/live", ("edgeconf.bench", "edgeconf.export", "edgeconf.gui")), "live reaches up"
    assert not _violations("edgeconf/bench", ("edgeconf.live", "edgeconf.export", "edgeconf.gui")), "bench reaches up"


def test_no_import_cycles_in_the_distribution():
    mods = module_files(ROOT)
    assert {"edgeconf.cascade", "edgeconf.live.sources", "edgeconf.bench.benchmark", "edgeconf.export.cli",
            "edgeconf.gui.window", "edgeconf.devices.meter"} <= set(mods)
    edges = internal_edges(mods)
    cycles = find_cycles(edges)
    assert not cycles, "\n".join(describe_cycle(c, edges, mods, ROOT) for c in cycles)


def _write_tree(root: Path, files: dict) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_cycle_checker_finds_lazy_relative_and_from_cycles_and_skips_type_checking(tmp_path):
    _write_tree(tmp_path, {
        "edgeconf/__init__.py": "",
        "edgeconf/a.py": "from edgeconf.b import thing\n",
        "edgeconf/b.py": "def f():\n    import edgeconf.a\n",  # lazy import closes a <-> b
        "edgeconf/sub/__init__.py": "",
        "edgeconf/sub/c.py": "from . import d\n",
        "edgeconf/sub/d.py": "from edgeconf.sub import c\n",  # `from package import module` closes c <-> d
        "edgeconf/e.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from edgeconf.f import F\n",
        "edgeconf/f.py": "import edgeconf.e\n",  # the back edge e -> f exists only for type checkers
        "devices/__init__.py": "",
        "devices/g.py": "from edgeconf.h import x\n",  # across mapped folders: edgeconf.devices.g <-> edgeconf.h
        "edgeconf/h.py": "def f():\n    from edgeconf.devices.g import y\n",
    })
    mods = module_files(tmp_path, {"edgeconf": "edgeconf", "devices": "edgeconf.devices"})
    cycles = find_cycles(internal_edges(mods))
    assert sorted(cycles) == [["edgeconf.a", "edgeconf.b"], ["edgeconf.devices.g", "edgeconf.h"],
                              ["edgeconf.sub.c", "edgeconf.sub.d"]]
    _write_tree(tmp_path, {"edgeconf/b.py": "def f():\n    return 1\n", "edgeconf/sub/d.py": "",
                           "edgeconf/h.py": ""})
    assert find_cycles(internal_edges(module_files(tmp_path, {"edgeconf": "edgeconf", "devices": "edgeconf.devices"}))) == []


def test_export_and_gui_are_independent():
    assert not _violations("export", ("edgeconf.gui", "PySide6")), "export imports gui"
    assert not _violations("gui", ("edgeconf.export", "torch")), "gui imports export"


BLOCKER = r"""
import importlib.abc, sys
HEAVY = %r
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in HEAVY:
            raise ImportError('blocked heavy module ' + name)
sys.meta_path.insert(0, Block())
"""


def test_base_install_imports_and_help_without_heavy_modules():
    """Import every core and devices module and run 'edgeconf --help' with heavy modules unimportable."""
    modules = []
    for folder, pkg in (("edgeconf", "edgeconf"), ("devices", "edgeconf.devices")):
        for f in _files(folder):
            rel = f.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if "data" in parts or parts[-1:] == ["__main__"]:
                continue
            modules.append(".".join([pkg] + parts))
    code = BLOCKER % (HEAVY,) + r"""
import importlib, json
for m in %r:
    importlib.import_module(m)
from edgeconf.cli import main
try:
    main(['--help'])
except SystemExit as e:
    assert e.code == 0, e.code
print(json.dumps(sorted(n for n in sys.modules if n.split('.')[0] in HEAVY)))
""" % (modules,)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Commands:" in out.stdout
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_missing_extra_is_explained_only_when_the_verb_runs():
    code = BLOCKER % (("torch", "PySide6", "pyqtgraph", "onnxscript"),) + r"""
from edgeconf.cli import main
main(['gui'])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("edgeconf: error: edgeconf gui is unavailable")
    assert "(edgeconf's [gui] extra)" in out.stderr and "edgeconf[" not in out.stderr


@pytest.mark.skipif(shutil.which("vermin") is None and not (Path(sys.executable).parent / "vermin").exists(),
                    reason="vermin is not installed")
def test_runtime_core_is_valid_python_38():
    vermin = shutil.which("vermin") or str(Path(sys.executable).parent / "vermin")
    targets = [str(ROOT / "edgeconf"), str(ROOT / "devices")]
    out = subprocess.run([vermin, "-t=3.8-", "--no-tips", "--violations", "--eval-annotations", "--backport",
                          "typing", "--exclude-regex", r"edgeconf/data/.*"] + targets,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
