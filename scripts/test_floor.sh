#!/usr/bin/env bash
# The runtime's tests (tests/core, tests/devices) under a real Python 3.8 with exactly the declared floor
# versions (requirements/floor.txt) in their own virtual environment, .venv38. The wheel is built there too, by
# Python 3.8 with the oldest setuptools pyproject.toml allows on it (62.3.0), as `pip install .` builds it on a
# JetPack 5 board; and installed there.
# Skips, saying why, where no Python 3.8 exists. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

py38=${EDGECONF_PY38:-}
if [ -z "$py38" ]; then
    for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.8*/bin/python3.8 "$(command -v python3.8 || true)"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 8)' 2>/dev/null; then
            py38=$candidate
            break
        fi
    done
fi
if [ -z "$py38" ] || ! "$py38" -c 'import sys; assert sys.version_info[:2] == (3, 8)' 2>/dev/null; then
    echo "floor: SKIPPED: no Python 3.8 interpreter here (looked for pyenv's 3.8.x and python3.8 on PATH;" \
         "set EDGECONF_PY38=/path/to/python3.8); the static check (vermin -t=3.8-) still runs in the suite"
    exit 0
fi

venv=.venv38
stamp=$venv/.floor-installed
if [ ! -f "$stamp" ] || [ requirements/floor.txt -nt "$stamp" ]; then
    echo "floor: creating $venv with $("$py38" --version) and the floor versions"
    rm -rf "$venv"
    "$py38" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r requirements/floor.txt
    touch "$stamp"
fi

wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
"$venv/bin/pip" wheel -q --disable-pip-version-check --no-deps --no-build-isolation -w "$wheels" . >/dev/null
"$venv/bin/pip" install -q --disable-pip-version-check --no-deps --force-reinstall "$wheels"/edgeconf-*.whl
"$venv/bin/pip" check --disable-pip-version-check
echo "floor: $("$venv/bin/python" -c 'import sys, numpy, onnx, onnxruntime, cv2, click, rich
print("Python %d.%d.%d" % sys.version_info[:3], "numpy", numpy.__version__, "onnx", onnx.__version__,
      "onnxruntime", onnxruntime.__version__, "opencv", cv2.__version__, "click", click.__version__,
      "rich", __import__("importlib.metadata").metadata.version("rich"))')"
# run from another folder: the checkout's edgeconf/ must not shadow the installed wheel (python -m edgeconf)
root=$(pwd)
cd "$wheels"
"$root/$venv/bin/pytest" -q -p no:cacheprovider -c "$root/pyproject.toml" --rootdir "$root" \
    "$root/tests/core" "$root/tests/devices" "$@"
