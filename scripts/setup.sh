#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian machine: the Debian packages the tests and the demo use, and a
# virtual environment at .venv with edgeconf (editable) and every extra that runs on a CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# xcb libraries: the Qt window under Xvfb (PySide6 wheels bundle Qt but not these)
# mosquitto: the MQTT broker the fleet tests start on 127.0.0.1 (never left running as a service here)
# python3, python3-venv: `python3 -m venv` (without python3-venv, Debian's Python has no ensurepip)
apt_packages="python3 python3-venv dataset-fashion-mnist ffmpeg mosquitto xvfb libxcb-cursor0 libxkbcommon-x11-0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-shape0"
missing=""
for p in $apt_packages; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "setup: installing Debian packages:$missing"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q $missing
    # the package may start a system broker; the tests start their own on a free port, so stop it
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet mosquitto 2>/dev/null; then
        $sudo systemctl stop mosquitto || true
        $sudo systemctl disable mosquitto >/dev/null 2>&1 || true
    fi
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=.venv/.edgeconf-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements/constraints.txt -nt "$stamp" ]; then
    echo "setup: installing edgeconf and its extras into .venv"
    # torch first, alone: the CPU build the constraints pin (PyPI has only the CUDA build, with GBs of nvidia-*
    # packages). From the local wheels or indexes pip is configured with where they hold it; else from PyTorch's
    # CPU index, which is asked only then.
    torch_pin=$(grep -E '^torch==' requirements/constraints.txt)
    if ! .venv/bin/pip install -q --disable-pip-version-check --no-deps "$torch_pin" 2>/dev/null; then
        echo "setup: $torch_pin is not in pip's configured sources; from https://download.pytorch.org/whl/cpu"
        .venv/bin/pip install -q --disable-pip-version-check --no-deps --index-url https://download.pytorch.org/whl/cpu \
            "$torch_pin"
    fi
    .venv/bin/pip install -q --disable-pip-version-check -c requirements/constraints.txt \
        -e '.[cpu,dev,torch,gui,pipeline,bench,fleet]'
    touch "$stamp"
fi

# The Triton server the fleet tests and benchmarks/bench_fleet.py talk to: NVIDIA PyTriton bundles a real Triton
# Inference Server that runs on CPU. It needs Python 3.12 (PyTriton 0.7.0's Python-backend stub fails under 3.11),
# so it gets its own environment; scripts/fleet_servers.py starts it with that interpreter's lib/ on LD_LIBRARY_PATH.
# Without a 3.12 interpreter the fleet tests that need the server skip and say why.
py312=${PYTHON312:-}
if [ -z "$py312" ]; then
    for c in "$HOME"/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12 /usr/local/bin/python3.12; do
        [ -x "$c" ] && { py312=$c; break; }
    done
fi
tstamp=.venv-triton/.edgeconf-installed
if [ -n "$py312" ] && [ "$(uname -m)" = x86_64 ] && { [ ! -f "$tstamp" ] || [ scripts/setup.sh -nt "$tstamp" ]; }; then
    echo "setup: installing the PyTriton server environment into .venv-triton ($py312)"
    [ -x .venv-triton/bin/python ] || "$py312" -m venv .venv-triton
    .venv-triton/bin/pip install -q --disable-pip-version-check 'nvidia-pytriton==0.7.0' 'onnxruntime>=1.17' 'numpy<2'
    touch "$tstamp"
fi
